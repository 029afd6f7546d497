//! The shard manager across processes of the real binary: a member killed
//! while it holds a task, and members killed at random moments while a
//! producer appends.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quiver::shm::rand::SplitMix64;
use quiver::stream::{Stream, StreamConfig};
use quiver::{Next, Outcome, ShardConfig, ShardManager, ShardSize, Store, StoreConfig};

use crate::common::{harness, Proc, TestStore, LONG};
use quiver_harness::{seq_batch as batch, seq_schema as schema};

fn worker(t: &TestStore, log: Option<&Path>, extra: &[&str]) -> Proc {
    let mut args = vec!["shard-worker", "--store", &t.name, "--stream", "s", "--group", "g", "--shard-size", "4"];
    let log = log.map(|l| l.display().to_string());
    if let Some(log) = &log {
        args.extend(["--log", log]);
    }
    args.extend(extra);
    harness(&args)
}

#[test]
fn a_killed_members_task_goes_back_to_the_front_of_todo() {
    let t = TestStore::new("shard-kill-one");
    let store = Store::create(StoreConfig::new(&t.name).capacity(16 << 20)).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..12 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    let mut holder = worker(&t, None, &["--hold"]);
    holder.expect_line("ready", LONG);
    let cfg = ShardConfig::new().shard_size(ShardSize::Batches(4));
    let mut me = ShardManager::join(&stream, "g", cfg).unwrap();
    // The holder takes the first shard; this member gets the next ones.
    let held = loop {
        let stats = me.stats().unwrap();
        if stats.doing == 1 {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(held.doing, 1);
    holder.kill();
    let deadline = Instant::now() + LONG;
    let task = loop {
        assert!(Instant::now() < deadline, "the killed member's task never came back");
        if let Next::Task(task) = me.next_task(Duration::from_secs(5)).unwrap() {
            if task.start == 0 {
                break task;
            }
            me.report(task, Outcome::Done).unwrap();
        }
    };
    assert_eq!((task.partition, task.start, task.end), (0, 0, 4));
    me.report(task, Outcome::Done).unwrap();
    assert_eq!(me.stats().unwrap().requeued, 1);
}

/// `task ID PARTITION START END` lines of a worker's log (complete lines only).
fn read_log(path: &Path) -> Vec<(u32, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(at) => &text[..=at],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let f: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
            (f[1] as u32, f[2], f[3])
        })
        .collect()
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn members_killed_at_random_moments_lose_nothing_and_duplicate_only_what_they_held() {
    let t = TestStore::new("shard-chaos");
    let dir = Dir(std::env::temp_dir().join(format!("{}-logs", t.name)));
    std::fs::create_dir_all(&dir.0).unwrap();
    let store = Store::create(StoreConfig::new(&t.name).capacity(32 << 20)).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let seed = quiver::shm::clock::wall_ns();
    println!("seed {seed}");
    let mut rng = SplitMix64::new(seed);
    let mut next = move |n: u64| rng.below(n);
    let total = 600u64;
    let appender = {
        let stream = Stream::open(&Store::open(&t.name).unwrap(), "s").unwrap();
        std::thread::spawn(move || {
            let mut producer = stream.producer().unwrap();
            for i in 0..total {
                producer.append(&batch(0, i as i64, 1)).unwrap();
                if i % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            stream.close().unwrap();
        })
    };
    let mut spawned = 0;
    let mut spawn = |workers: &mut Vec<(Proc, PathBuf)>| {
        let log = dir.0.join(format!("worker-{spawned}.log"));
        spawned += 1;
        workers.push((worker(&t, Some(&log), &["--work-ms", "3"]), log));
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        spawn(&mut workers);
    }
    let mut killed_logs = HashSet::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20 + next(80)));
        let victim = next(workers.len() as u64) as usize;
        let (mut proc, log) = workers.remove(victim);
        proc.kill();
        killed_logs.insert(log);
        spawn(&mut workers);
    }
    appender.join().unwrap();
    for (proc, _) in &mut workers {
        assert!(proc.wait(LONG).success(), "a worker failed (seed {seed})");
    }
    // The manager's truth: every offset committed, nothing dead.
    let stats = stream.stats().unwrap();
    let heads: Vec<u64> = stats.partitions.iter().map(|p| p.head).collect();
    assert_eq!(heads.iter().sum::<u64>(), total);
    assert_eq!(stats.groups[0].committed, heads, "seed {seed}");
    // The workers' logs: every offset processed at least once, and an offset
    // processed twice was in a task a killed worker had held.
    let mut seen: HashMap<(u32, u64), Vec<bool>> = HashMap::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let path = entry.unwrap().path();
        let killed = killed_logs.contains(&path);
        for (p, start, end) in read_log(&path) {
            for o in start..end {
                seen.entry((p, o)).or_default().push(killed);
            }
        }
    }
    let duplicated = seen.values().filter(|by| by.len() > 1).count();
    println!("{} workers killed, {duplicated} offsets processed twice", killed_logs.len());
    for (p, &head) in heads.iter().enumerate() {
        for o in 0..head {
            let by = seen
                .get(&(p as u32, o))
                .unwrap_or_else(|| panic!("offset {o} of partition {p} never processed (seed {seed})"));
            if by.len() > 1 {
                assert!(
                    by.iter().any(|&k| k),
                    "offset {o} of partition {p} processed twice by live workers (seed {seed})"
                );
            }
        }
    }
}

#[test]
fn quiver_checkpoint_show_and_stat_print_the_group() {
    use crate::common::run_quiver;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quiver/tests/fixtures/checkpoint-v1.qvck");
    let out = run_quiver(&["checkpoint", "show", &fixture.display().to_string(), "--json"], LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["stream"].as_str(), v["group"].as_str()), (Some("samples"), Some("trainer")));
    assert_eq!(v["dead_letters"][0]["retries"], 4);
    let text = run_quiver(&["checkpoint", "show", &fixture.display().to_string()], LONG);
    assert!(String::from_utf8_lossy(&text.stdout).contains("dead letter  task      3"));
    // A file that is not a checkpoint is a clear error.
    let t = TestStore::new("shard-cli");
    let bogus = t.path.with_extension("bogus");
    std::fs::write(&bogus, b"not a checkpoint").unwrap();
    let out = run_quiver(&["checkpoint", "show", &bogus.display().to_string()], LONG);
    let _ = std::fs::remove_file(&bogus);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a quiver checkpoint"));
    // `quiver stat` shows the shard-managed group and its dead letters.
    let store = Store::create(StoreConfig::new(&t.name).capacity(16 << 20)).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    stream.producer().unwrap().append(&batch(0, 0, 1)).unwrap();
    stream.close().unwrap();
    let cfg = ShardConfig::new().max_retries(0);
    let mut m = ShardManager::join(&stream, "g", cfg).unwrap();
    let task = m.get_task().unwrap().task().unwrap();
    m.report(task, Outcome::Failed).unwrap();
    let out = run_quiver(&["stat", &t.name, "--json"], LONG);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shard_groups"][0]["group"], "g");
    assert_eq!(v["shard_groups"][0]["dead_letters"][0]["id"], task.id);
    let text = String::from_utf8_lossy(&run_quiver(&["stat", &t.name], LONG).stdout).to_string();
    assert!(text.contains("shard-managed group g of stream s"), "{text}");
    assert!(text.contains("dead letter: task"), "{text}");
}

#[test]
fn checkpoint_kill_everything_remove_the_store_restore_and_replay_loses_nothing() {
    let t = TestStore::new("shard-disaster");
    let dir = Dir(std::env::temp_dir().join(format!("{}-logs", t.name)));
    std::fs::create_dir_all(&dir.0).unwrap();
    let checkpoint = dir.0.join("group.qvck");
    let total = 240u64;
    // The source: batch i goes to partition i % 2, so a replay recreates
    // the same offsets.
    let replay = |stream: &Stream, upto: u64| {
        let mut producer = stream.producer().unwrap();
        for i in 0..upto {
            producer.append_to((i % 2) as u32, &batch(0, i as i64, 1)).unwrap();
        }
    };
    let cfg = ShardConfig::new().shard_size(ShardSize::Batches(4));
    {
        let store = Store::create(StoreConfig::new(&t.name).capacity(32 << 20)).unwrap();
        let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
        replay(&stream, total);
        let observer = ShardManager::join(&stream, "g", cfg).unwrap();
        let mut workers: Vec<Proc> =
            (0..2).map(|w| worker(&t, Some(&dir.0.join(format!("before-{w}.log"))), &["--work-ms", "2"])).collect();
        // Let them get some way, then checkpoint while they work.
        let deadline = Instant::now() + LONG;
        while observer.stats().unwrap().done < 10 {
            assert!(Instant::now() < deadline, "the workers made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        observer.checkpoint(&checkpoint).unwrap();
        for w in &mut workers {
            w.kill();
        }
        std::mem::forget(observer); // killed too: no goodbye
    }
    std::fs::remove_file(&t.path).unwrap();
    // A new store: restore the group, replay the source, run new workers.
    let store = Store::create(StoreConfig::new(&t.name).capacity(32 << 20)).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2)).unwrap();
    let restored = ShardManager::restore(&stream, "g", &checkpoint).unwrap();
    replay(&stream, total);
    stream.close().unwrap();
    let mut workers: Vec<Proc> = (0..2).map(|w| worker(&t, Some(&dir.0.join(format!("after-{w}.log"))), &[])).collect();
    for w in &mut workers {
        assert!(w.wait(LONG).success());
    }
    drop(restored);
    assert_eq!(stream.stats().unwrap().groups[0].committed, [total / 2, total / 2]);
    // Every offset was processed before the checkpoint (and so is known done
    // to it) or after the restore.
    let mut processed = HashSet::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            for (p, start, end) in read_log(&path) {
                processed.extend((start..end).map(|o| (p, o)));
            }
        }
    }
    for p in 0..2u32 {
        for o in 0..total / 2 {
            assert!(processed.contains(&(p, o)), "offset {o} of partition {p} was lost");
        }
    }
}
