//! Streams across processes of the real binary: concurrent producers, a
//! producer killed mid-append, and `quiver stat`'s streams section.

use std::collections::HashMap;
use std::time::Duration;

use quiver::stream::{ConsumerConfig, Polled, Stream, StreamConfig};
use quiver::Store;

use crate::common::{harness, run_quiver, TestStore, LONG};
use quiver_harness::{seq_batch as batch, seq_schema as schema, seqs};

fn column(b: &arrow_array::RecordBatch, name: &str) -> Vec<i64> {
    use arrow_array::Array;
    let col = b.column_by_name(name).unwrap();
    col.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap().values().to_vec()
}

#[test]
fn concurrent_producer_processes_get_dense_offsets_and_keep_their_order() {
    let t = TestStore::new("stream-producers");
    let store = t.create(32 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let count = 60u64;
    let mut producers: Vec<_> = (0..3)
        .map(|p| {
            let (p, count) = (p.to_string(), count.to_string());
            harness(&["stream-produce", "--store", &t.name, "--stream", "s", "--producer", &p, "--count", &count])
        })
        .collect();
    for p in &mut producers {
        p.expect_line(&format!("appended {count}"), LONG);
        assert!(p.wait(LONG).success());
    }
    stream.close().unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut offsets: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut last_seq: HashMap<(u32, i64), i64> = HashMap::new();
    let mut batches = 0;
    loop {
        match consumer.poll(Duration::from_secs(10)).unwrap() {
            Polled::Batch(b) => {
                batches += 1;
                offsets.entry(b.partition).or_default().push(b.offset);
                let (producer, seq) = (column(&b.batch, "producer")[0], seqs(&b.batch)[0]);
                if let Some(before) = last_seq.insert((b.partition, producer), seq) {
                    assert!(before < seq, "producer {producer}'s batches out of order in partition {}", b.partition);
                }
            }
            Polled::EndOfStream => break,
            Polled::TimedOut => panic!("a batch below the head never arrived"),
        }
    }
    assert_eq!(batches, 3 * count);
    for (p, got) in offsets {
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>(), "partition {p}: dense and in order");
    }
    assert_eq!(consumer.holes(), 0);
}

#[test]
fn a_producer_killed_mid_append_leaves_a_hole_that_consumers_skip() {
    let t = TestStore::new("stream-dead-producer");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut holder = harness(&["stream-append-and-hold", "--store", &t.name, "--stream", "s"]);
    holder.expect_line("holding 0", LONG);
    stream.producer().unwrap().append(&batch(0, 1, 1)).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    // Offset 0 is being written: nothing to read yet, and that is not a hole.
    assert!(matches!(consumer.poll(Duration::from_millis(50)).unwrap(), Polled::TimedOut));
    assert_eq!(consumer.holes(), 0);
    holder.kill();
    // The poll notices the dead producer, recovery aborts its object, and
    // the poll skips the hole.
    match consumer.poll(Duration::from_secs(30)).unwrap() {
        Polled::Batch(b) => assert_eq!((b.offset, seqs(&b.batch)), (1, vec![1])),
        other => panic!("{other:?}"),
    }
    assert_eq!(consumer.holes(), 1);
    consumer.commit().unwrap();
    assert_eq!(stream.stats().unwrap().partitions[0].tail, 2);
}

#[test]
fn quiver_stat_shows_streams_partitions_groups_and_counters() {
    let t = TestStore::new("stream-stat");
    let store = t.create(8 << 20);
    let config = StreamConfig::new("events", schema()).partitions(2).group("trainer");
    let stream = Stream::create(&store, config).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..4 {
        producer.append(&batch(0, i, 10)).unwrap();
    }
    let out = run_quiver(&["stat", &t.name, "--json"], LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["name"], "events");
    assert_eq!(s["appended"], 4);
    assert_eq!(s["back_pressure"], "block");
    assert_eq!(s["partitions"][1]["head"], 2);
    assert_eq!(s["groups"][0]["name"], "trainer");
    assert_eq!(s["groups"][0]["lag_batches"], 4);
    assert_eq!(s["groups"][0]["lag_rows"], 40);
    let text = run_quiver(&["stat", &t.name], LONG);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("stream events (open, 2 partitions"), "{text}");
    assert!(text.contains("group trainer"), "{text}");
    drop(Store::open(&t.name).unwrap());
}

/// A process stopped inside the store's lock (SIGSTOP, Ctrl-Z, a debugger)
/// stalls no reader: opening the store and the stream, joining a group,
/// draining every sealed batch and committing, `stat` and timed calls all
/// go on. (The rates and times are measured by `quiver-harness
/// stopped-holder`, not here: this machine may be loaded.)
#[test]
fn a_stopped_lock_holder_stalls_no_reader() {
    let t = TestStore::new("stopped-reader");
    let config = quiver::StoreConfig::new(&t.name).capacity(8 << 20).lock_timeout(Duration::from_secs(600));
    let store = Store::create(config).unwrap();
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    let count = 200;
    for i in 0..count {
        producer.append(&batch(0, i, 3)).unwrap();
    }
    // A shard-group member that took a task before the holder stopped.
    let mut member = quiver::ShardManager::join(
        &stream,
        "shards",
        quiver::ShardConfig::new().shard_size(quiver::ShardSize::Batches(8)),
    )
    .unwrap();
    let quiver::Next::Task(task) = member.next_task(LONG).unwrap() else { panic!("a task") };
    drop((producer, stream, store));
    let mut holder = harness(&["hold-lock", "--store", &t.name]);
    holder.expect_line("locked", LONG);
    let pid = rustix::process::Pid::from_raw(holder.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let resume = Resume(pid);
    // Far below the store's 600 s lock timeout: none of this waits for it.
    let started = std::time::Instant::now();
    let store = Store::open(&t.name).unwrap();
    let stream = Stream::open(&store, "s").unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut seen = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(200)).unwrap() {
            Polled::Batch(b) => {
                seen.extend(seqs(&b.batch).into_iter().step_by(3));
                consumer.commit().unwrap();
            }
            Polled::TimedOut => break,
            Polled::EndOfStream => panic!("the stream is open"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..count).collect::<Vec<_>>(), "every sealed batch, once");
    // The member reads its shard's sealed batches.
    let batches = member.read_task(&task, Duration::from_secs(5)).unwrap().expect("the shard's batches");
    assert_eq!(batches.len() as u64, task.end - task.start);
    // The commit held: a new consumer of the group starts past everything.
    let mut again = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert!(matches!(again.poll(Duration::ZERO).unwrap(), Polled::TimedOut));
    // The store's figures, and who holds the lock.
    let stats = store.stats_unlocked().unwrap();
    let who = stats.lock_held_by.unwrap();
    assert!(who.contains(&format!("process {}", pid.as_raw_nonzero())) && who.contains("stopped"), "{who}");
    let out = run_quiver(&["stat", &t.name], LONG);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("lock is held by process") && text.contains("stopped"), "{text}");
    // The whole of it took seconds at most, not the lock's 600.
    assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
    drop(resume);
    holder.kill();
}

/// Resumes a stopped process when dropped, even if the test fails.
struct Resume(rustix::process::Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}
