//! Issue 12, case 8: one batch that cannot be decoded used to block its
//! group for good (every consume failed at the same offset). Now the error
//! names the batch, the group can skip it on purpose (`Consumer::skip`, or
//! `ConsumerConfig::skip_corrupt` / `consume --skip-corrupt`), and skipped
//! batches are counted and listed (offset, reason) in the stream's stats
//! and `quiver stat`.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use quiver::stream::{ConsumerConfig, Polled, StartAt, Stream, StreamConfig};
use quiver::StreamError;

use crate::common::{run_quiver, TestStore};

const MARKER: &[u8] = b"POISON-7b3f1c9e-text";

/// One row: `(n, note)`; batch `n == 1` carries the marker that
/// [`poison`] damages in the store file.
fn batch(n: i64) -> RecordBatch {
    let note = if n == 1 { std::str::from_utf8(MARKER).unwrap().to_string() } else { format!("note {n}") };
    let schema =
        Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false), Field::new("note", DataType::Utf8, false)]));
    let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![n])), Arc::new(StringArray::from(vec![note]))];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Damages the batch holding [`MARKER`] in the store file, as a stray
/// write or bad memory would: its text is no longer UTF-8, so the batch
/// fails validation when a consumer decodes it.
fn poison(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(MARKER.len()).position(|w| w == MARKER).expect("the marked batch is in the file");
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[0xff, 0xfe], at as u64).unwrap();
}

fn values(polled: Polled) -> i64 {
    match polled {
        Polled::Batch(b) => b.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0),
        other => panic!("expected a batch, got {other:?}"),
    }
}

#[test]
fn a_corrupt_batch_stops_its_group_until_skipped_and_the_skip_is_counted_and_listed() {
    let t = TestStore::new("poison-api");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", batch(0).schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for n in 0..4 {
        producer.append(&batch(n)).unwrap();
    }
    poison(&t.path);
    let wait = Duration::from_secs(10);
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert_eq!(values(consumer.poll(wait).unwrap()), 0);
    // The same error every time, naming the batch: nothing passes it silently.
    for _ in 0..2 {
        match consumer.poll(wait) {
            Err(StreamError::CorruptBatch { partition: 0, offset: 1, .. }) => {}
            other => panic!("expected the corrupt batch at offset 1, got {other:?}"),
        }
        assert_eq!(consumer.position(0), Some(1));
    }
    // Only the batch the consumer stands on can be skipped.
    assert!(matches!(consumer.skip(0, 2, "no"), Err(StreamError::InvalidArgument(_))));
    consumer.skip(0, 1, "invalid UTF-8 in note").unwrap();
    assert_eq!(values(consumer.poll(wait).unwrap()), 2);
    assert_eq!(consumer.skipped(), 1);
    let stats = stream.stats().unwrap();
    assert_eq!((stats.skipped_total, stats.groups[0].skipped), (1, 1));
    let listed = &stats.skipped[0];
    assert_eq!((listed.group.as_deref(), listed.partition, listed.offset), (Some("g"), 0, 1));
    assert_eq!(listed.reason, "invalid UTF-8 in note");

    // A consumer of the group that never saw the commit meets the batch
    // again; skipping it again does not count it twice.
    let mut again = stream.consumer(ConsumerConfig::group("g").skip_corrupt(true)).unwrap();
    let seen: Vec<i64> = (0..3).map(|_| values(again.poll(wait).unwrap())).collect();
    assert_eq!(seen, [0, 2, 3], "skip_corrupt passes the batch");
    assert_eq!(again.skipped(), 1);
    let stats = stream.stats().unwrap();
    assert_eq!((stats.skipped_total, stats.groups[0].skipped, stats.skipped.len()), (1, 1, 1));

    // A group that skips by itself records the decoder's reason.
    let mut other = stream.consumer(ConsumerConfig::group("h").start(StartAt::Oldest).skip_corrupt(true)).unwrap();
    let seen: Vec<i64> = (0..3).map(|_| values(other.poll(wait).unwrap())).collect();
    assert_eq!(seen, [0, 2, 3]);
    let stats = stream.stats().unwrap();
    assert_eq!(stats.skipped_total, 2);
    let h = stats.skipped.iter().find(|k| k.group.as_deref() == Some("h")).unwrap();
    assert!(h.reason.to_lowercase().contains("utf8"), "{}", h.reason);
}

#[test]
fn consume_stops_at_a_corrupt_batch_until_skip_corrupt_and_stat_lists_it() {
    let t = TestStore::new("poison-cli");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let marker = std::str::from_utf8(MARKER).unwrap();
    std::fs::write(&csv, format!("n,note\n0,a\n1,{marker}\n2,c\n")).unwrap();
    let wait = Duration::from_secs(60);
    // One row per batch, so the damaged row is a batch of its own.
    let out = run_quiver(
        &[
            "produce",
            "--store",
            &t.name,
            "--stream",
            "s",
            "--from",
            csv.to_str().unwrap(),
            "--groups",
            "g",
            "--batch-rows",
            "1",
            "--close",
        ],
        wait,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    poison(&t.path);
    let to = dir.path().join("out.arrow");
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "--store", &t.name, "--stream", "s", "--group", "g", "--timeout", "2"];
        args.extend_from_slice(&["--to", to.to_str().unwrap()]);
        args.extend_from_slice(extra);
        run_quiver(&args, wait)
    };
    for _ in 0..2 {
        let out = consume(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("offset 1 of partition 0") && stderr.contains("--skip-corrupt"), "{stderr}");
        assert!(!to.exists(), "nothing is written or committed when the consume fails");
    }
    let out = consume(&["--skip-corrupt"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("wrote 2 batches") && stdout.contains("skipped 1 corrupt"), "{stdout}");
    let out = run_quiver(&["stat", &t.name], wait);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.contains("skipped (corrupt)") && l.ends_with(" 1 batches")), "{stdout}");
    assert!(stdout.contains("skipped: group g partition 0 offset 1:"), "{stdout}");
    // The group committed past it: a later consume sees the end at once.
    let out = consume(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("wrote 0 batches"), "{stdout}{stderr}");
}

/// Issue 25: a batch whose metadata cannot be read (its row count) used to
/// stop a group cut by rows at that batch, every `get_task` failing with
/// `Corrupted` until an operator acted. Now the splitter counts it as no
/// rows and goes on; the member that reads its shard meets the damage.
#[test]
fn a_batch_with_damaged_metadata_does_not_stop_the_splitter() {
    use quiver::{Next, ShardConfig, ShardManager, ShardSize};
    let t = TestStore::new("poison-splitter");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", batch(0).schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    for n in 0..6 {
        producer.append(&batch(n)).unwrap();
    }
    stream.close().unwrap();
    // The batch's metadata follows its data: damage the first metadata
    // magic after the marked batch's text.
    {
        use std::os::unix::fs::FileExt;
        let bytes = std::fs::read(&t.path).unwrap();
        let marker = bytes.windows(MARKER.len()).position(|w| w == MARKER).unwrap();
        let magic = marker + bytes[marker..].windows(4).position(|w| w == b"QVRB").expect("the batch's metadata");
        let file = std::fs::OpenOptions::new().write(true).open(&t.path).unwrap();
        file.write_all_at(b"XXXX", magic as u64).unwrap();
    }
    let mut m = ShardManager::join(&stream, "g", ShardConfig::new().shard_size(ShardSize::Rows(2))).unwrap();
    let mut covered = 0;
    loop {
        match m.next_task(Duration::from_secs(10)).unwrap() {
            Next::Task(task) => {
                covered += task.end - task.start;
                // The member skips what it cannot read (here: reports it done).
                m.report(task, quiver::Outcome::Done).unwrap();
            }
            Next::End => break,
            Next::TimedOut => panic!("no task within 10 s"),
        }
    }
    assert_eq!(covered, 6, "every offset was in a shard, the damaged one too");
}
