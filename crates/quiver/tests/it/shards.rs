//! The shard manager through the library: DLRover's splitter case, tasks
//! and leases, retries and dead letters, linger, checkpoints.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use quiver::shard::{Checkpoint, ShardUnit, TaskRecord};
use quiver::stream::{ConsumerConfig, Stream, StreamConfig};
use quiver::{
    CheckpointError, Next, Outcome, ShardConfig, ShardError, ShardManager, ShardSize, Store, StoreConfig, Task,
};

use crate::common::TestStore;
use crate::streams::{batch, schema};

fn store(t: &TestStore) -> Store {
    Store::create(StoreConfig::new(&t.name).capacity(64 << 20).max_objects(8192)).unwrap()
}

fn config(size: u64) -> ShardConfig {
    ShardConfig::new().shard_size(ShardSize::Batches(size))
}

/// A stream with `partitions` partitions holding `per_partition` one-row batches each.
fn filled(store: &Store, partitions: u32, per_partition: u64) -> Stream {
    let stream = Stream::create(store, StreamConfig::new("s", schema()).partitions(partitions).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for p in 0..partitions {
        for i in 0..per_partition {
            producer.append_to(p, &batch(p as i64, i as i64, 1)).unwrap();
        }
    }
    stream
}

fn shard(t: &Task) -> (u32, u64, u64) {
    (t.partition, t.start, t.end)
}

/// Takes tasks and reports them done until the end; returns them.
fn drain(manager: &mut ShardManager) -> Vec<Task> {
    let mut done = Vec::new();
    loop {
        match manager.next_task(Duration::from_secs(10)).unwrap() {
            Next::Task(task) => {
                manager.report(task, Outcome::Done).unwrap();
                done.push(task);
            }
            Next::End => return done,
            Next::TimedOut => panic!("no task and no end within 10 s"),
        }
    }
}

/// Asserts the shards are disjoint and cover `[0, head)` of every partition.
fn assert_exact_cover(tasks: &[Task], heads: &[u64]) {
    let mut by_partition: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    for t in tasks {
        by_partition.entry(t.partition).or_default().push((t.start, t.end));
    }
    for (p, &head) in heads.iter().enumerate() {
        let mut ranges = by_partition.remove(&(p as u32)).unwrap_or_default();
        ranges.sort();
        let mut at = 0;
        for (start, end) in ranges {
            assert_eq!(start, at, "partition {p}: a gap or an overlap at {at}");
            at = end;
        }
        assert_eq!(at, head, "partition {p} covered up to {at} of {head}");
    }
}

#[test]
fn the_splitter_cuts_dlrovers_case_exactly() {
    let t = TestStore::new("shard-dlrover");
    let store = store(&t);
    let stream = filled(&store, 2, 700);
    // Partition offsets {0: 1, 1: 0}: the group has committed offset 1 of partition 0.
    stream.consumer(ConsumerConfig::group("g")).unwrap().commit_offsets(&[(0, 1)]).unwrap();
    let mut manager = ShardManager::join(&stream, "g", config(200)).unwrap();
    let shards: Vec<_> = (0..5).map(|_| shard(&manager.get_task().unwrap().task().unwrap())).collect();
    assert_eq!(shards, [(0, 1, 201), (1, 0, 200), (0, 201, 401), (1, 200, 400), (0, 401, 601)]);
}

#[test]
fn no_shard_is_handed_out_twice_and_the_group_commits_everything() {
    let t = TestStore::new("shard-once");
    let store = store(&t);
    let stream = filled(&store, 3, 50);
    stream.close().unwrap();
    let mut a = ShardManager::join(&stream, "g", config(7)).unwrap();
    let mut b = ShardManager::join(&stream, "g", config(7)).unwrap();
    // Two members take turns; a partial shard is cut at the end (closed).
    let mut tasks = Vec::new();
    loop {
        let (ta, tb) = (a.get_task().unwrap().task(), b.get_task().unwrap().task());
        if ta.is_none() && tb.is_none() {
            break;
        }
        for (m, task) in [(&mut a, ta), (&mut b, tb)] {
            if let Some(task) = task {
                m.report(task, Outcome::Done).unwrap();
                tasks.push(task);
            }
        }
    }
    assert_exact_cover(&tasks, &[50, 50, 50]);
    let ids: std::collections::HashSet<u64> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(ids.len(), tasks.len(), "task ids are unique");
    assert!(matches!(a.next_task(Duration::from_secs(1)).unwrap(), Next::End));
    let stats = stream.stats().unwrap();
    assert_eq!(stats.groups[0].committed, [50, 50, 50]);
    assert_eq!(stats.bytes, 0, "retention freed everything the group finished");
    let shards = a.stats().unwrap();
    assert_eq!((shards.todo, shards.doing, shards.done), (0, 0, tasks.len() as u64));
    let done_batches: u64 = shards.members.iter().flat_map(|m| m.done_batches.iter()).sum();
    assert_eq!(done_batches, 150);
}

#[test]
fn run_is_the_whole_member_loop_and_a_failing_work_gives_its_task_back() {
    let t = TestStore::new("shard-run");
    let store = store(&t);
    let stream = filled(&store, 3, 20);
    stream.close().unwrap();
    let mut manager = ShardManager::join(&stream, "g", config(4)).unwrap();
    // Work that fails gives its task back uncounted, and run returns the error.
    let failed =
        manager.run(Duration::from_secs(10), |_, _| Err::<Outcome, _>(ShardError::InvalidArgument("no".into())));
    assert!(matches!(failed, Err(ShardError::InvalidArgument(_))), "{failed:?}");
    let stats = manager.stats().unwrap();
    assert_eq!((stats.failed, stats.doing, stats.requeued), (0, 0, 1), "the task went back to todo, uncounted");
    let mut seen = Vec::new();
    let done = manager
        .run(Duration::from_secs(10), |task, batches| {
            assert_eq!(batches.len() as u64, task.end - task.start);
            seen.push(*task);
            Ok::<_, ShardError>(Outcome::Done)
        })
        .unwrap();
    assert_eq!(done, 15);
    assert_exact_cover(&seen, &[20, 20, 20]);
    assert_eq!(stream.stats().unwrap().groups[0].committed, vec![20, 20, 20]);
}

#[test]
fn commits_wait_for_the_contiguous_run_of_done_shards() {
    let t = TestStore::new("shard-contiguous");
    let store = store(&t);
    let stream = filled(&store, 1, 30);
    let mut m = ShardManager::join(&stream, "g", config(10)).unwrap();
    let first = m.get_task().unwrap().task().unwrap();
    let second = m.get_task().unwrap().task().unwrap();
    let third = m.get_task().unwrap().task().unwrap();
    m.report(third, Outcome::Done).unwrap();
    m.report(second, Outcome::Done).unwrap();
    assert_eq!(stream.stats().unwrap().groups[0].committed, [0], "shard [0, 10) is not done yet");
    m.report(first, Outcome::Done).unwrap();
    assert_eq!(stream.stats().unwrap().groups[0].committed, [30]);
    assert_eq!(stream.stats().unwrap().partitions[0].tail, 30);
}

#[test]
fn a_task_that_fails_too_often_becomes_a_dead_letter_and_is_kept() {
    let t = TestStore::new("shard-dead");
    let store = store(&t);
    let stream = filled(&store, 2, 10);
    stream.close().unwrap();
    let cfg = config(10).max_retries(2);
    let mut m = ShardManager::join(&stream, "g", cfg).unwrap();
    let poisoned = m.get_task().unwrap().task().unwrap();
    assert_eq!(shard(&poisoned), (0, 0, 10));
    m.report(poisoned, Outcome::Failed).unwrap();
    // A failed task goes to the back: the other partition's shard comes first.
    let other = m.get_task().unwrap().task().unwrap();
    assert_eq!(shard(&other), (1, 0, 10));
    m.report(other, Outcome::Done).unwrap();
    for retries in 1..=2 {
        let again = m.get_task().unwrap().task().unwrap();
        assert_eq!((again.id, again.retries), (poisoned.id, retries));
        m.report(again, Outcome::Failed).unwrap();
    }
    assert!(matches!(m.next_task(Duration::from_secs(1)).unwrap(), Next::End));
    let stats = m.stats().unwrap();
    let dead: Vec<_> = stats.dead_letters.iter().map(|d| (d.id, d.start, d.end, d.retries)).collect();
    assert_eq!(dead, [(poisoned.id, 0, 10, 3)]);
    assert_eq!(stats.committed, [10, 10], "a dead letter does not hold the group back");
    let path = t.path.with_extension("ckpt");
    let checkpoint = m.checkpoint(&path).unwrap();
    assert_eq!(checkpoint.dead_letters.len(), 1, "the checkpoint keeps the dead letters");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_expired_lease_hands_the_task_to_another_member() {
    let t = TestStore::new("shard-lease");
    let store = store(&t);
    let stream = filled(&store, 1, 10);
    let cfg = config(10).lease(Duration::from_millis(50));
    let mut slow = ShardManager::join(&stream, "g", cfg).unwrap();
    let mut other = ShardManager::join(&stream, "g", cfg).unwrap();
    let task = slow.get_task().unwrap().task().unwrap();
    assert_eq!(other.get_task().unwrap(), Next::TimedOut);
    let again = loop {
        if let Next::Task(task) = other.next_task(Duration::from_secs(10)).unwrap() {
            break task;
        }
    };
    assert_eq!((again.id, shard(&again)), (task.id, shard(&task)));
    assert!(matches!(slow.report(task, Outcome::Done), Err(ShardError::TaskNotHeld(_))));
    other.report(again, Outcome::Done).unwrap();
    assert_eq!(other.stats().unwrap().requeued, 1);
}

#[test]
fn a_member_that_leaves_gives_its_tasks_back_to_the_front() {
    let t = TestStore::new("shard-leave");
    let store = store(&t);
    let stream = filled(&store, 1, 30);
    let mut a = ShardManager::join(&stream, "g", config(10)).unwrap();
    let mut b = ShardManager::join(&stream, "g", config(10)).unwrap();
    let held = a.get_task().unwrap().task().unwrap();
    drop(a);
    assert_eq!(b.get_task().unwrap().task().unwrap().id, held.id);
}

#[test]
fn a_partial_shard_is_cut_only_after_the_linger_or_at_the_close() {
    let t = TestStore::new("shard-linger");
    let store = store(&t);
    let stream = filled(&store, 1, 3);
    let cfg = config(10).linger(Duration::from_millis(200));
    let mut m = ShardManager::join(&stream, "g", cfg).unwrap();
    let started = std::time::Instant::now();
    let task = loop {
        if let Next::Task(task) = m.next_task(Duration::from_secs(10)).unwrap() {
            break task;
        }
    };
    assert!(started.elapsed() >= Duration::from_millis(100), "cut before the partition was idle");
    assert_eq!(shard(&task), (0, 0, 3));
    m.report(task, Outcome::Done).unwrap();
    // After the close, a partial shard is cut at once.
    let mut producer = stream.producer().unwrap();
    producer.append(&batch(0, 3, 1)).unwrap();
    stream.close().unwrap();
    let cfg_long = config(10).linger(Duration::from_secs(3600));
    let mut late = ShardManager::join(&stream, "g", cfg_long).unwrap();
    assert_eq!(shard(&late.get_task().unwrap().task().unwrap()), (0, 3, 4));
}

#[test]
fn row_shards_hold_whole_batches_until_the_rows_reach_the_size() {
    let t = TestStore::new("shard-rows");
    let store = store(&t);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for rows in [4, 4, 4, 10, 1, 1] {
        producer.append(&batch(0, 0, rows)).unwrap();
    }
    stream.close().unwrap();
    let cfg = ShardConfig::new().shard_size(ShardSize::Rows(8));
    let mut m = ShardManager::join(&stream, "g", cfg).unwrap();
    let shards: Vec<_> = drain(&mut m).iter().map(shard).collect();
    assert_eq!(shards, [(0, 0, 2), (0, 2, 4), (0, 4, 6)]);
    let rows: u64 = m.stats().unwrap().members[0].done_rows.iter().sum();
    assert_eq!(rows, 24);
}

#[test]
fn read_task_returns_the_shards_batches_in_order() {
    let t = TestStore::new("shard-read");
    let store = store(&t);
    let stream = filled(&store, 2, 12);
    let mut m = ShardManager::join(&stream, "g", config(5)).unwrap();
    let task = m.get_task().unwrap().task().unwrap();
    let batches = m.read_task(&task, Duration::from_secs(5)).unwrap().unwrap();
    let offsets: Vec<u64> = batches.iter().map(|b| b.offset).collect();
    assert_eq!(offsets, (task.start..task.end).collect::<Vec<_>>());
    assert!(batches.iter().all(|b| b.partition == task.partition));
    // A task turned around is a bad argument; a bad group name too.
    let mut backwards = task;
    (backwards.start, backwards.end) = (task.end, task.start);
    assert!(matches!(m.read_task(&backwards, Duration::ZERO), Err(ShardError::InvalidArgument(_))));
    assert!(matches!(
        ShardManager::join(&stream, "", config(5)),
        Err(ShardError::Stream(quiver::StreamError::InvalidArgument(_)))
    ));
}

fn sample_checkpoint() -> Checkpoint {
    let task = |id, partition, start, end, retries| TaskRecord { id, partition, start, end, retries };
    Checkpoint {
        stream: "samples".into(),
        group: "trainer".into(),
        partitions: 2,
        shard_size: 200,
        unit: ShardUnit::Batches,
        linger_ns: 100_000_000,
        lease_ns: 30_000_000_000,
        max_retries: 3,
        next_task_id: 9,
        next_partition: 1,
        next_cut: vec![801, 600],
        committed: vec![201, 200],
        todo: vec![task(5, 0, 401, 601, 0), task(8, 0, 601, 801, 0)],
        doing: vec![task(4, 1, 200, 400, 1)],
        done: vec![task(6, 1, 400, 600, 0)],
        dead_letters: vec![task(3, 0, 201, 401, 4)],
        taken_ns: 1_763_780_000_000_000_000,
    }
}

#[test]
fn a_committed_checkpoint_fixture_keeps_loading() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1.qvck");
    let loaded = Checkpoint::read(&path).unwrap();
    assert_eq!(loaded, sample_checkpoint());
}

#[test]
fn checkpoint_files_cut_short_or_damaged_give_errors_never_panics() {
    let bytes = sample_checkpoint().to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), sample_checkpoint());
    for len in 0..bytes.len() {
        assert!(Checkpoint::from_bytes(&bytes[..len]).is_err(), "{len} bytes were accepted");
    }
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(Checkpoint::from_bytes(&bad).is_err(), "a flipped byte at {at} was accepted");
    }
    assert!(matches!(Checkpoint::from_bytes(b"PAR1 not ours at all"), Err(CheckpointError::NotACheckpoint)));
    let mut newer = bytes.clone();
    newer[8] = 2;
    assert!(matches!(Checkpoint::from_bytes(&newer), Err(CheckpointError::VersionMismatch { found: 2, .. })));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(Checkpoint::from_bytes(&longer), Err(CheckpointError::Corrupted(_))));
}

#[test]
fn a_restore_puts_doing_then_todo_back_and_keeps_each_shards_partition() {
    let t = TestStore::new("shard-restore");
    let path = t.path.with_extension("ckpt");
    let checkpoint = {
        let store = store(&t);
        let stream = filled(&store, 2, 40);
        let mut m = ShardManager::join(&stream, "g", config(10)).unwrap();
        let first = m.get_task().unwrap().task().unwrap();
        let second = m.get_task().unwrap().task().unwrap();
        m.report(first, Outcome::Done).unwrap();
        let third = m.get_task().unwrap().task().unwrap(); // doing, with `second`
        let checkpoint = m.checkpoint(&path).unwrap();
        assert_eq!(checkpoint.doing.iter().map(|d| d.id).collect::<Vec<_>>(), [second.id, third.id]);
        assert!(!checkpoint.todo.is_empty());
        // Taking the checkpoint changed nothing: both tasks are still held.
        m.report(second, Outcome::Done).unwrap();
        m.report(third, Outcome::Done).unwrap();
        checkpoint
    };
    assert_eq!(Checkpoint::read(&path).unwrap(), checkpoint);
    // Every process gone, the store removed; a new store, the same stream.
    std::fs::remove_file(&t.path).unwrap();
    let store = store(&t);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2)).unwrap();
    let mut m = ShardManager::restore(&stream, "g", &path).unwrap();
    let expected: Vec<(u64, u32, u64, u64)> =
        checkpoint.doing.iter().chain(&checkpoint.todo).map(|t| (t.id, t.partition, t.start, t.end)).collect();
    let order: Vec<(u64, u32, u64, u64)> = (0..expected.len())
        .map(|_| m.get_task().unwrap().task().unwrap())
        .map(|t| (t.id, t.partition, t.start, t.end))
        .collect();
    assert_eq!(order, expected, "doing first, then todo, each shard in its partition");
    assert_eq!(stream.stats().unwrap().groups[0].committed, checkpoint.committed);
    let _ = std::fs::remove_file(&path);
    // A checkpoint of another stream or group is refused.
    let other = Stream::create(&store, StreamConfig::new("other", schema()).partitions(2)).unwrap();
    let path2 = t.path.with_extension("ckpt2");
    m.checkpoint(&path2).unwrap();
    let mismatch = |r: Result<ShardManager, ShardError>| {
        matches!(r, Err(ShardError::Checkpoint(CheckpointError::Mismatch { .. })))
    };
    assert!(mismatch(ShardManager::restore(&other, "g", &path2)));
    assert!(mismatch(ShardManager::restore(&stream, "h", &path2)));
    let _ = std::fs::remove_file(&path2);
}

#[test]
fn checkpoint_restore_and_replay_from_the_source_loses_nothing() {
    let t = TestStore::new("shard-replay");
    let path = t.path.with_extension("ckpt");
    let source = |stream: &Stream| {
        let mut producer = stream.producer().unwrap();
        for i in 0..120 {
            producer.append_to((i % 3) as u32, &batch(0, i, 1)).unwrap();
        }
    };
    let mut done_before = Vec::new();
    {
        let store = store(&t);
        let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(3).group("g")).unwrap();
        source(&stream);
        let mut m = ShardManager::join(&stream, "g", config(6)).unwrap();
        for _ in 0..4 {
            let task = m.get_task().unwrap().task().unwrap();
            m.report(task, Outcome::Done).unwrap();
            done_before.push(task);
        }
        let _held = m.get_task().unwrap().task().unwrap(); // in flight when everything dies
        m.checkpoint(&path).unwrap();
        std::mem::forget(m); // as if killed: no leave
    }
    std::fs::remove_file(&t.path).unwrap();
    let store = store(&t);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(3)).unwrap();
    let mut m = ShardManager::restore(&stream, "g", &path).unwrap();
    source(&stream); // replay from the source
    stream.close().unwrap();
    let mut all = done_before.clone();
    all.extend(drain(&mut m));
    assert_exact_cover(&all, &[40, 40, 40]);
    let _ = std::fs::remove_file(&path);
}

#[test]
#[ignore = "writes tests/fixtures/checkpoint-v1.qvck; run by hand when the format version changes"]
fn write_the_checkpoint_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1.qvck");
    sample_checkpoint().write(&path).unwrap();
}

#[test]
fn data_dropped_before_it_was_cut_does_not_stall_the_group() {
    let t = TestStore::new("shard-dropped");
    let store = store(&t);
    let one = batch(0, 0, 100);
    let limited = StreamConfig::new("s", schema()).group("g").max_bytes(20 * (one.get_array_memory_size() as u64));
    let stream = Stream::create(&store, limited).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..200 {
        producer.append(&batch(0, i, 100)).unwrap();
    }
    stream.close().unwrap();
    let stats = stream.stats().unwrap();
    assert!(stats.trimmed > 0 && stats.partitions[0].tail > 0, "the limit dropped the oldest batches");
    let mut m = ShardManager::join(&stream, "g", config(10)).unwrap();
    let done = drain(&mut m);
    let tail = stats.partitions[0].tail;
    assert_eq!(done.first().unwrap().start, tail);
    assert_eq!(stream.stats().unwrap().groups[0].committed, [200]);
}

#[test]
fn an_old_handle_dropped_after_a_restore_does_not_disturb_the_new_members() {
    let t = TestStore::new("shard-old-handle");
    let path = t.path.with_extension("ckpt");
    let store = store(&t);
    let stream = filled(&store, 1, 40);
    let old = ShardManager::join(&stream, "g", config(10)).unwrap();
    old.checkpoint(&path).unwrap();
    let mut restored = ShardManager::restore(&stream, "g", &path).unwrap();
    let task = restored.get_task().unwrap().task().unwrap();
    drop(old); // same process, same member slot as before the restore
    restored.report(task, Outcome::Done).unwrap();
    assert_eq!(restored.stats().unwrap().members.len(), 1);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_checkpoint_whose_tasks_do_not_fit_together_is_refused() {
    let mut overlapping = sample_checkpoint();
    overlapping.todo[0].start = 350; // overlaps the dead letter [201, 401)
    assert!(matches!(Checkpoint::from_bytes(&overlapping.to_bytes().unwrap()), Err(CheckpointError::Corrupted(_))));
    let mut past_the_cut = sample_checkpoint();
    past_the_cut.todo[1].end = 900;
    assert!(matches!(Checkpoint::from_bytes(&past_the_cut.to_bytes().unwrap()), Err(CheckpointError::Corrupted(_))));
    let mut same_id = sample_checkpoint();
    same_id.todo[1].id = same_id.todo[0].id;
    assert!(matches!(Checkpoint::from_bytes(&same_id.to_bytes().unwrap()), Err(CheckpointError::Corrupted(_))));
}

#[test]
fn a_group_is_drained_once_the_closed_stream_has_no_shard_left_to_take() {
    let t = TestStore::new("drained");
    let store = store(&t);
    let stream = filled(&store, 2, 5);
    let mut a = ShardManager::join(&stream, "g", config(4)).unwrap();
    let mut b = ShardManager::join(&stream, "g", config(4)).unwrap();
    // Open: never drained, whatever is taken.
    assert!(!a.drained().unwrap());
    let first = a.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    stream.close().unwrap();
    let mut held = vec![first];
    while let Next::Task(task) = b.get_task().unwrap() {
        held.push(task);
    }
    // Every shard is held (none todo, nothing left to cut): drained, not ended.
    assert!(a.drained().unwrap() && b.drained().unwrap());
    assert_eq!(b.get_task().unwrap(), Next::TimedOut);
    // A held shard given back is todo again: not drained.
    let given_back = held.pop().unwrap();
    b.release(given_back).unwrap();
    assert!(!a.drained().unwrap());
    let again = a.get_task().unwrap().task().unwrap();
    assert_eq!(shard(&again), shard(&given_back));
    assert!(a.drained().unwrap());
    a.report(first, Outcome::Done).unwrap();
    a.report(again, Outcome::Done).unwrap();
    for task in held.into_iter().skip(1) {
        b.report(task, Outcome::Done).unwrap();
    }
    assert_eq!(a.get_task().unwrap(), Next::End);
    assert!(a.drained().unwrap());
}

#[test]
fn report_until_commits_the_part_before_and_keeps_the_rest_held() {
    let t = TestStore::new("report-until");
    let store = store(&t);
    let stream = filled(&store, 1, 10);
    let mut a = ShardManager::join(&stream, "g", config(8)).unwrap();
    let first = a.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    assert_eq!(shard(&first), (0, 0, 8));
    assert!(matches!(a.report_until(first, 9), Err(ShardError::InvalidArgument(_))));
    assert_eq!(a.report_until(first, 0).unwrap(), Some(first));
    let rest = a.report_until(first, 3).unwrap().unwrap();
    assert_eq!(shard(&rest), (0, 3, 8));
    assert_ne!(rest.id, first.id);
    // The part before is committed; the first task is no longer held.
    assert_eq!(committed(&stream), 3);
    assert!(matches!(a.report(first, Outcome::Done), Err(ShardError::TaskNotHeld(_))));
    let stats = a.stats().unwrap();
    assert_eq!((stats.doing, stats.todo), (1, 0));
    // The rest splits again, and released goes to another member whole.
    let rest = a.report_until(rest, 5).unwrap().unwrap();
    assert_eq!(committed(&stream), 5);
    a.release(rest).unwrap();
    let mut b = ShardManager::join(&stream, "g", config(8)).unwrap();
    let again = b.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    assert_eq!(shard(&again), (0, 5, 8));
    // The shard cut after the split ones links to the last part: the
    // committed run goes on through it.
    stream.close().unwrap();
    let last = b.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    assert_eq!(shard(&last), (0, 8, 10));
    b.report(last, Outcome::Done).unwrap();
    assert_eq!(committed(&stream), 5);
    assert_eq!(b.report_until(again, 8).unwrap(), None);
    assert_eq!(committed(&stream), 10);
    assert_eq!(b.next_task(Duration::from_secs(10)).unwrap(), Next::End);
    // The members' counts add up to every batch once.
    let done: u64 = b.stats().unwrap().members.iter().map(|m| m.done_batches[0]).sum();
    assert_eq!(done, 10);
}

fn committed(stream: &Stream) -> u64 {
    stream.stats().unwrap().groups[0].committed[0]
}

#[test]
fn shares_take_their_own_shards_in_offset_order_whoever_asks_first() {
    use quiver::Share;
    let t = TestStore::new("shares");
    let store = store(&t);
    // Two partitions of 10 one-row batches; shards of 2: shard k of
    // partition p is number 2k + p.
    let stream = filled(&store, 2, 10);
    stream.close().unwrap();
    let mut members: Vec<ShardManager> = (0..3)
        .map(|_| ShardManager::join(&stream, "g", config(2).linger(Duration::from_secs(3600))).unwrap())
        .collect();
    let share = |index| Share { index, of: 3 };
    assert!(matches!(
        members[0].next_task_in(Duration::ZERO, Share { index: 3, of: 3 }),
        Err(ShardError::InvalidArgument(_))
    ));
    let mut seen: Vec<Vec<(u32, u64, u64)>> = vec![Vec::new(); 3];
    // The members ask in a scrambled order; each still gets its numbers in order.
    for &m in [2, 2, 0, 1, 2, 0, 0, 1, 1, 2, 0, 1, 2, 0, 1, 1, 0, 2].iter() {
        match members[m].next_task_in(Duration::from_secs(10), share(m as u32)).unwrap() {
            Next::Task(task) => {
                seen[m].push(shard(&task));
                members[m].report(task, Outcome::Done).unwrap();
            }
            Next::End => {}
            Next::TimedOut => panic!("member {m} timed out"),
        }
    }
    for (m, shards) in seen.iter().enumerate() {
        let expected: Vec<(u32, u64, u64)> =
            (0..10u64).filter(|n| n % 3 == m as u64).map(|n| ((n % 2) as u32, (n / 2) * 2, (n / 2) * 2 + 2)).collect();
        assert_eq!(shards, &expected, "member {m}");
    }
    // Every share ends, and so does the group.
    assert_eq!(members[0].next_task_in(Duration::ZERO, share(0)).unwrap(), Next::End);
    assert_eq!(members[0].next_task(Duration::from_secs(10)).unwrap(), Next::End);
    assert_eq!(stream.stats().unwrap().groups[0].committed, [10, 10]);
}

#[test]
fn a_share_waits_for_a_lagging_partition_rather_than_change_its_order() {
    use quiver::Share;
    let t = TestStore::new("share-lag");
    let store = store(&t);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    // Partition 1 runs ahead: shards (k, p) numbered 2k + p; share 1 of 3
    // is numbers 1, 4, 7: (0, 1), (2, 0), (3, 1).
    for i in 0..8 {
        producer.append_to(1, &batch(1, i, 1)).unwrap();
    }
    let mut m = ShardManager::join(&stream, "g", config(2).linger(Duration::from_secs(3600))).unwrap();
    let share = Share { index: 1, of: 3 };
    // Number 1 is cut, but number 0, (0, 0), cannot be yet: wait for it.
    assert_eq!(m.next_task_in(Duration::from_millis(50), share).unwrap(), Next::TimedOut);
    for i in 0..4 {
        producer.append_to(0, &batch(0, i, 1)).unwrap();
    }
    let first = m.next_task_in(Duration::from_secs(10), share).unwrap().task().unwrap();
    assert_eq!(shard(&first), (1, 0, 2));
    // Number 7, (3, 1), is cut, but 4, (2, 0), is not yet: wait for it.
    assert_eq!(m.next_task_in(Duration::from_millis(50), share).unwrap(), Next::TimedOut);
    for i in 4..6 {
        producer.append_to(0, &batch(0, i, 1)).unwrap();
    }
    let second = m.next_task_in(Duration::from_secs(10), share).unwrap().task().unwrap();
    assert_eq!(shard(&second), (0, 4, 6));
    // Number 7 waits for number 6, (3, 0); once the stream is closed, a
    // partition that ended holds nothing back.
    assert_eq!(m.next_task_in(Duration::from_millis(50), share).unwrap(), Next::TimedOut);
    stream.close().unwrap();
    let third = m.next_task_in(Duration::from_secs(10), share).unwrap().task().unwrap();
    assert_eq!(shard(&third), (1, 6, 8));
}

#[test]
fn the_rest_of_a_split_shard_gets_a_fresh_lease() {
    let t = TestStore::new("split-lease");
    let store = store(&t);
    let stream = filled(&store, 1, 8);
    let mut m = ShardManager::join(&stream, "g", config(4).lease(Duration::from_millis(100))).unwrap();
    let task = m.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    // The lease runs out, but nobody has taken the shard back yet.
    std::thread::sleep(Duration::from_millis(150));
    let rest = m.report_until(task, 2).unwrap().unwrap();
    // Not handed out again while this member works on it.
    let next = m.next_task(Duration::from_secs(10)).unwrap().task().unwrap();
    assert_eq!(shard(&next), (0, 4, 8));
    assert_ne!(shard(&next), shard(&rest));
    m.report(rest, Outcome::Done).unwrap();
}

#[test]
fn a_checkpoint_replaces_only_a_regular_file() {
    let t = TestStore::new("ckpt-target");
    let store = store(&t);
    let stream = filled(&store, 1, 4);
    let m = ShardManager::join(&stream, "g", config(2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    std::fs::write(&kept, b"keep").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    for target in [link.as_path(), dir.path(), t.path.as_path()] {
        let err = m.checkpoint(target).unwrap_err();
        let chain: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
        assert!(chain.join(": ").contains("not a regular file"), "{target:?}: {chain:?}");
    }
    assert_eq!(std::fs::read(&kept).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // A regular file, or none, is replaced atomically; no temporary stays.
    m.checkpoint(&kept).unwrap();
    m.checkpoint(dir.path().join("new")).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(quiver::store::files::check_replaceable(&dir.path().join("missing")).is_ok());
}

#[test]
fn a_share_is_of_shards_of_batches() {
    use quiver::Share;
    let t = TestStore::new("share-rows");
    let store = store(&t);
    let stream = filled(&store, 1, 4);
    let mut m = ShardManager::join(&stream, "g", ShardConfig::new().shard_size(ShardSize::Rows(2))).unwrap();
    let share = Share { index: 0, of: 1 };
    assert!(matches!(m.next_task_in(Duration::ZERO, share), Err(ShardError::InvalidConfig(_))));
}

/// Issue 25: `run` renews the lease of the task its work is on (a
/// heartbeat), so a shard that takes several leases to process is not
/// handed to another member meanwhile and processed twice; a member that
/// stops renewing (dead or stopped) loses it when the lease runs out.
#[test]
fn run_keeps_the_lease_of_a_long_task_and_nobody_else_gets_it() {
    let t = TestStore::new("shard-heartbeat");
    let store = store(&t);
    let stream = filled(&store, 1, 4);
    stream.close().unwrap();
    let lease = Duration::from_millis(100);
    let mut slow = ShardManager::join(&stream, "g", config(4).lease(lease)).unwrap();
    let mut other = ShardManager::join(&stream, "g", config(4).lease(lease)).unwrap();
    let (mut seen_by_other, mut calls) = (Vec::new(), 0);
    let done = slow
        .run(Duration::from_secs(10), |task, batches| -> Result<Outcome, ShardError> {
            assert_eq!((shard(task), batches.len()), ((0, 0, 4), 4));
            calls += 1;
            if calls > 1 {
                // Handed out again (what this test catches): end the run.
                return Ok(Outcome::Done);
            }
            // Ten leases of work, while the other member looks for tasks.
            for _ in 0..10 {
                std::thread::sleep(lease);
                if let Next::Task(stolen) = other.get_task()? {
                    seen_by_other.push(shard(&stolen));
                }
            }
            Ok(Outcome::Done)
        })
        .unwrap();
    assert_eq!((done, calls), (1, 1), "the shard was worked on {calls} times");
    assert!(seen_by_other.is_empty(), "the other member was handed {seen_by_other:?} while it was being worked on");
    assert_eq!(stream.consumer(ConsumerConfig::group("g")).unwrap().committed(0).unwrap(), 4);
    // Without the heartbeat the lease runs out: the task goes to the other.
    let stream2 = {
        let s = Stream::create(&store, StreamConfig::new("s2", schema()).group("g")).unwrap();
        let mut p = s.producer().unwrap();
        for i in 0..4 {
            p.append(&batch(0, i, 1)).unwrap();
        }
        s.close().unwrap();
        s
    };
    let mut holder = ShardManager::join(&stream2, "g", config(4).lease(lease)).unwrap();
    let mut taker = ShardManager::join(&stream2, "g", config(4).lease(lease)).unwrap();
    let Next::Task(held) = holder.next_task(Duration::from_secs(10)).unwrap() else { panic!("a task") };
    std::thread::sleep(lease * 3);
    match taker.next_task(Duration::from_secs(10)).unwrap() {
        Next::Task(again) => assert_eq!(shard(&again), shard(&held)),
        other => panic!("the expired task was not handed out again: {other:?}"),
    }
}
