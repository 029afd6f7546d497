//! Streams through the library API: offsets, end of stream, seek, groups,
//! retention and back-pressure. (Windows: `stream_windows`; other processes:
//! `stream_processes`.)

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use quiver::store::{ObjectId, Store};
use quiver::stream::{BackPressure, ConsumerConfig, Polled, StartAt, Stream, StreamBatch, StreamConfig};
use quiver::{StoreConfig, StreamError};

use crate::common::TestStore;

pub use quiver_harness::{seq_batch as batch, seq_schema as schema, seqs};

pub fn first_seq(b: &StreamBatch) -> i64 {
    seqs(&b.batch)[0]
}

/// Polls once with a generous timeout and expects a batch.
pub fn next(consumer: &mut quiver::Consumer) -> StreamBatch {
    match consumer.poll(Duration::from_secs(10)).unwrap() {
        Polled::Batch(b) => b,
        other => panic!("expected a batch, got {other:?}"),
    }
}

fn small_store(t: &TestStore, capacity: u64) -> Store {
    Store::create(StoreConfig::new(&t.name).capacity(capacity).max_objects(1024)).unwrap()
}

#[test]
fn appends_take_consecutive_offsets_round_robin_or_explicit() {
    let t = TestStore::new("stream-offsets");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(3)).unwrap();
    let mut producer = stream.producer().unwrap();
    let placed: Vec<(u32, u64)> =
        (0..7).map(|i| producer.append(&batch(0, i, 4)).unwrap()).map(|a| (a.partition, a.offset)).collect();
    assert_eq!(placed, [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]);
    let a = producer.append_to(2, &batch(0, 100, 4)).unwrap();
    assert_eq!((a.partition, a.offset), (2, 2));
    assert!(matches!(producer.append_to(3, &batch(0, 0, 1)), Err(StreamError::NoSuchPartition { .. })));
    // Each batch is the object the documented ID names.
    assert!(store.contains(stream.object_id(2, 2)).unwrap());
    let id = stream.object_id(0, 2);
    assert_eq!(id.as_bytes()[0], b'S');
    assert_eq!(id, ObjectId::sequential(u64::from_le_bytes(id.as_bytes()[8..16].try_into().unwrap()), 0, 2));
    assert!(store.contains(id).unwrap());
    let stats = stream.stats().unwrap();
    let heads: Vec<u64> = stats.partitions.iter().map(|p| p.head).collect();
    assert_eq!(heads, [3, 2, 3]);
    assert_eq!(stats.appended, 8);
    assert_eq!(stats.partitions[0].appended_rows, 12);
}

#[test]
fn a_batch_of_another_schema_is_refused() {
    let t = TestStore::new("stream-schema");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    let other = RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)]).unwrap();
    assert!(matches!(producer.append(&other), Err(StreamError::Batch(quiver::BatchError::SchemaMismatch { .. }))));
    assert_eq!(stream.stats().unwrap().partitions[0].head, 0, "a refused batch takes no offset");
}

#[test]
fn streams_are_found_by_name_from_another_handle() {
    let t = TestStore::new("stream-open");
    let store = t.create(4 << 20);
    let created = Stream::create(&store, StreamConfig::new("events", schema()).partitions(2)).unwrap();
    assert!(matches!(Stream::create(&store, StreamConfig::new("events", schema())), Err(StreamError::Exists(_))));
    let other = Store::open(&t.name).unwrap();
    let opened = Stream::open(&other, "events").unwrap();
    assert_eq!(opened.partitions(), 2);
    assert_eq!(**opened.schema(), *schema());
    assert_eq!(opened.object_id(1, 5), created.object_id(1, 5));
    assert!(matches!(Stream::open(&other, "nope"), Err(StreamError::NotFound(_))));
    // open_or_create opens the existing one, and refuses a different shape.
    let again = Stream::open_or_create(&other, StreamConfig::new("events", schema()).partitions(2)).unwrap();
    assert_eq!(again.object_id(0, 0), created.object_id(0, 0));
    // ... saying what differs.
    match Stream::open_or_create(&other, StreamConfig::new("events", schema()).partitions(3)) {
        Err(e @ StreamError::ConfigMismatch { .. }) => {
            assert!(e.to_string().contains("2 partitions, not 3"), "{e}");
        }
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }
    // Bad configurations are clear errors.
    for bad in [
        StreamConfig::new("", schema()),
        StreamConfig::new("x", schema()).partitions(0),
        StreamConfig::new("x", schema()).partitions(65),
        StreamConfig::new("x", schema()).group("g").group("g"),
        StreamConfig::new("x", schema()).max_bytes(0),
    ] {
        assert!(matches!(Stream::create(&store, bad), Err(StreamError::InvalidConfig(_))));
    }
    // A bad argument is not a bad configuration.
    assert!(matches!(created.add_group("", StartAt::Oldest), Err(StreamError::InvalidArgument(_))));
    assert_eq!(Stream::list(&store).unwrap().len(), 1);
    Stream::remove(&store, "events").unwrap();
    assert!(matches!(created.stats(), Err(StreamError::Removed(_))));
    assert!(Stream::list(&store).unwrap().is_empty());
    assert_eq!(store.stats().unwrap().objects, 1, "only the schema object is left");
}

#[test]
fn a_closed_stream_drains_then_ends_and_a_timeout_is_not_the_end() {
    let t = TestStore::new("stream-close");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2)).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    assert!(matches!(consumer.poll(Duration::ZERO).unwrap(), Polled::TimedOut));
    assert!(matches!(consumer.poll(Duration::from_millis(20)).unwrap(), Polled::TimedOut));
    let mut producer = stream.producer().unwrap();
    for i in 0..3 {
        producer.append(&batch(0, i, 2)).unwrap();
    }
    producer.close().unwrap();
    assert!(stream.is_closed().unwrap());
    assert!(matches!(producer.append(&batch(0, 9, 2)), Err(StreamError::Closed(_))));
    let mut got: Vec<i64> = (0..3).map(|_| first_seq(&next(&mut consumer))).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    for _ in 0..2 {
        assert!(matches!(consumer.poll(Duration::from_secs(1)).unwrap(), Polled::EndOfStream));
    }
}

#[test]
fn a_blocked_poll_wakes_on_append_and_on_close() {
    let t = TestStore::new("stream-wake");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    let producer_stream = Stream::open(&Store::open(&t.name).unwrap(), "s").unwrap();
    let appender = std::thread::spawn(move || {
        let mut producer = producer_stream.producer().unwrap();
        let parked = || producer_stream.debug_waiters(Some(0)).unwrap() > 0;
        crate::common::wait_until("the consumer parked", parked);
        producer.append(&batch(0, 7, 1)).unwrap();
        crate::common::wait_until("the consumer parked again", parked);
        producer.close().unwrap();
    });
    assert_eq!(first_seq(&next(&mut consumer)), 7);
    assert!(matches!(consumer.poll(Duration::from_secs(30)).unwrap(), Polled::EndOfStream));
    appender.join().unwrap();
}

#[test]
fn seek_replays_like_a_log() {
    let t = TestStore::new("stream-seek");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..6 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    let first: Vec<u64> = (0..6).map(|_| next(&mut consumer).offset).collect();
    assert_eq!(first, [0, 1, 2, 3, 4, 5]);
    consumer.seek(0, 2).unwrap();
    assert_eq!(consumer.position(0), Some(2));
    let again: Vec<i64> = (0..4).map(|_| first_seq(&next(&mut consumer))).collect();
    assert_eq!(again, [2, 3, 4, 5]);
    assert!(matches!(consumer.seek(0, 7), Err(StreamError::OffsetOutOfRange { offset: 7, head: 6, .. })));
    assert!(matches!(consumer.seek(1, 0), Err(StreamError::NoSuchPartition { .. })));
    consumer.seek(0, 6).unwrap();
    assert!(matches!(consumer.poll(Duration::ZERO).unwrap(), Polled::TimedOut));
    // A reader that starts at the newest sees only what comes next.
    let mut newest = stream.consumer(ConsumerConfig::reader().start(StartAt::Newest)).unwrap();
    producer.append(&batch(0, 6, 1)).unwrap();
    assert_eq!(next(&mut newest).offset, 6);
}

#[test]
fn two_groups_read_everything_at_their_own_pace_and_retention_frees_what_both_committed() {
    let t = TestStore::new("stream-groups");
    let store = t.create(8 << 20);
    let config = StreamConfig::new("s", schema()).partitions(2).group("fast").group("slow");
    let stream = Stream::create(&store, config).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..10 {
        producer.append(&batch(0, i, 3)).unwrap();
    }
    let mut fast = stream.consumer(ConsumerConfig::group("fast")).unwrap();
    let mut slow = stream.consumer(ConsumerConfig::group("slow")).unwrap();
    let mut fast_seen: Vec<i64> = (0..10).map(|_| first_seq(&next(&mut fast))).collect();
    fast_seen.sort();
    assert_eq!(fast_seen, (0..10).collect::<Vec<_>>());
    fast.commit().unwrap();
    assert_eq!((fast.committed(0).unwrap(), fast.committed(1).unwrap()), (5, 5));
    // The slow group holds everything.
    let stats = stream.stats().unwrap();
    assert_eq!(stats.partitions.iter().map(|p| p.tail).collect::<Vec<_>>(), [0, 0]);
    for p in 0..2 {
        for o in 0..5 {
            assert!(store.contains(stream.object_id(p, o)).unwrap());
        }
    }
    // The slow group reads 4 batches and commits.
    let mut slow_next = [0u64; 2];
    for _ in 0..4 {
        let b = next(&mut slow);
        slow_next[b.partition as usize] = b.offset + 1;
    }
    slow.commit().unwrap();
    let stats = stream.stats().unwrap();
    assert_eq!(stats.partitions.iter().map(|p| p.tail).collect::<Vec<_>>(), slow_next, "freed up to the slow group");
    for p in 0..2u32 {
        let tail = slow_next[p as usize];
        for o in 0..5 {
            let kept = store.contains(stream.object_id(p, o)).unwrap();
            assert_eq!(kept, o >= tail, "partition {p} offset {o}: freed once committed by both groups");
        }
    }
    let lag = |name: &str| stats.groups.iter().find(|g| g.name == name).map(|g| (g.lag_batches, g.lag_rows)).unwrap();
    assert_eq!(lag("fast"), (0, 0));
    assert_eq!(lag("slow"), (6, 18));
    assert_eq!(stats.partitions[0].rows, (5 - slow_next[0]) * 3);
    // Removing the slow group frees the rest.
    stream.remove_group("slow").unwrap();
    assert!(matches!(slow.commit(), Err(StreamError::NoSuchGroup { .. })));
    let stats = stream.stats().unwrap();
    assert_eq!(stats.partitions.iter().map(|p| p.tail).collect::<Vec<_>>(), [5, 5]);
    assert_eq!(stats.bytes, 0);
}

#[test]
fn committed_offsets_survive_a_consumer_restart_and_late_groups_start_where_asked() {
    let t = TestStore::new("stream-restart");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..5 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    {
        let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
        for _ in 0..3 {
            next(&mut consumer);
        }
        consumer.commit().unwrap();
        next(&mut consumer); // read but not committed: delivered again
    }
    let other = Store::open(&t.name).unwrap();
    let mut restarted = Stream::open(&other, "s").unwrap().consumer(ConsumerConfig::group("g")).unwrap();
    assert_eq!(restarted.position(0), Some(3));
    assert_eq!(first_seq(&next(&mut restarted)), 3);
    // A group made now starts at the oldest retained batch (3: g freed 0..3)...
    let mut late = stream.consumer(ConsumerConfig::group("late")).unwrap();
    assert_eq!(next(&mut late).offset, 3);
    // ...or at the head, if it asks.
    let mut newest = stream.consumer(ConsumerConfig::group("newest").start(StartAt::Newest)).unwrap();
    assert!(matches!(newest.poll(Duration::ZERO).unwrap(), Polled::TimedOut));
    assert_eq!(newest.committed(0).unwrap(), 5);
    // A reader has no committed offsets.
    let mut reader = stream.consumer(ConsumerConfig::reader()).unwrap();
    assert!(matches!(reader.commit(), Err(StreamError::InvalidConfig(_))));
}

#[test]
fn block_waits_for_a_consumer_that_stops_then_resumes_and_nothing_is_lost() {
    let t = TestStore::new("stream-block");
    let store = small_store(&t, 1 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap().with_timeout(Duration::from_millis(50));
    // Fill the store: the append that does not fit fails after its timeout.
    let mut appended = 0;
    let err = loop {
        match producer.append(&batch(0, appended * 1000, 1000)) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StreamError::Full { .. }), "{err}");
    assert!(appended > 10);
    let stats = stream.stats().unwrap();
    assert_eq!((stats.dropped, stats.expired, stats.trimmed), (0, 0, 0));
    assert_eq!(stats.partitions[0].head, appended as u64, "the failed append took no offset");
    // A consumer in another thread reads slowly; a producer with a long
    // timeout blocks whenever the store is full and goes on as it frees.
    let reader_stream = Stream::open(&Store::open(&t.name).unwrap(), "s").unwrap();
    let total = appended + 60;
    let reader = std::thread::spawn(move || {
        let mut consumer = reader_stream.consumer(ConsumerConfig::group("g")).unwrap();
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            let b = next(&mut consumer);
            seen.push(first_seq(&b) / 1000);
            if seen.len() % 5 == 0 {
                std::thread::sleep(Duration::from_millis(2));
                consumer.commit().unwrap();
            }
        }
        consumer.commit().unwrap();
        seen
    });
    let mut producer = producer.with_timeout(Duration::from_secs(30));
    for i in appended..total {
        producer.append(&batch(0, i * 1000, 1000)).unwrap();
    }
    let seen = reader.join().unwrap();
    assert_eq!(seen, (0..total).collect::<Vec<_>>(), "every batch, once, in order");
    let stats = stream.stats().unwrap();
    assert_eq!((stats.dropped, stats.appended), (0, total as u64));
}

#[test]
fn drop_oldest_makes_room_and_counts_every_batch_it_drops() {
    let t = TestStore::new("stream-drop");
    let store = small_store(&t, 1 << 20);
    let config = StreamConfig::new("s", schema()).partitions(2).group("g").back_pressure(BackPressure::DropOldest);
    let stream = Stream::create(&store, config).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    let total = 200u64;
    for i in 0..total {
        producer.append(&batch(0, i as i64, 1000)).unwrap();
    }
    let stats = stream.stats().unwrap();
    let retained: u64 = stats.partitions.iter().map(|p| p.head - p.tail).sum();
    assert!(stats.dropped > 0);
    assert_eq!(stats.dropped + retained, total, "every batch is retained or counted as dropped");
    assert!(stats.dropped_bytes > 0);
    // The consumer skips what was dropped, counts it, and reads the rest.
    let mut read = 0;
    while let Polled::Batch(_) = consumer.poll(Duration::ZERO).unwrap() {
        read += 1;
    }
    assert_eq!(read, retained);
    assert_eq!(consumer.missed(), stats.dropped);
}

#[test]
fn the_error_policy_fails_at_once_and_a_stream_without_groups_keeps_its_data() {
    let t = TestStore::new("stream-error");
    let store = small_store(&t, 1 << 20);
    let config = StreamConfig::new("s", schema()).back_pressure(BackPressure::Error);
    let stream = Stream::create(&store, config).unwrap();
    let mut producer = stream.producer().unwrap().with_timeout(Duration::from_secs(3600));
    let mut appended = 0;
    let err = loop {
        match producer.append(&batch(0, appended, 1000)) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    // Error never waits for the producer's timeout (an hour here).
    assert!(matches!(err, StreamError::Full { waited: Duration::ZERO, .. }), "{err:?}");
    // No group: a reader reads all of it, and nothing was freed.
    let mut reader = stream.consumer(ConsumerConfig::reader()).unwrap();
    let mut read = 0;
    while let Polled::Batch(_) = reader.poll(Duration::ZERO).unwrap() {
        read += 1;
    }
    assert_eq!(read, appended);
}

#[test]
fn a_refused_append_leaves_the_store_as_it_was_and_never_asks_for_a_repair() {
    let t = TestStore::new("stream-refused");
    let store = small_store(&t, 1 << 20);
    let config = StreamConfig::new("s", schema()).back_pressure(BackPressure::Error);
    let stream = Stream::create(&store, config).unwrap();
    let mut producer = stream.producer().unwrap();
    let mut appended = 0;
    let full = loop {
        match producer.append(&batch(0, appended, 1000)) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, StreamError::Full { .. }), "{full:?}");
    let before = store.stats().unwrap();
    stream.close().unwrap();
    let closed = producer.append(&batch(0, appended, 10)).unwrap_err();
    assert!(matches!(closed, StreamError::Closed(_)), "{closed:?}");
    let removed = Stream::open(&store, "s").unwrap();
    Stream::remove(&store, "s").unwrap();
    let gone = removed.producer().and_then(|mut p| p.append(&batch(0, 0, 10))).unwrap_err();
    assert!(matches!(gone, StreamError::Removed(_)), "{gone:?}");
    // A lock taken after the refusals would have run a repair had any of
    // them marked the store: none did, and no object was left behind.
    let after = store.stats().unwrap();
    assert_eq!(after.repairs, 0);
    assert_eq!(before.repairs, 0);
    assert!(store.list().unwrap().iter().all(|o| o.state == quiver::ObjectState::Sealed), "no unsealed leftovers");
    assert_eq!(stream.stats().map(|s| s.appended).ok(), None, "the handle sees the stream removed");
}

#[test]
fn max_bytes_and_max_age_drop_the_oldest_and_count_them() {
    let t = TestStore::new("stream-limits");
    let store = t.create(8 << 20);
    let one = batch(0, 0, 100);
    let stream = Stream::create(&store, StreamConfig::new("bytes", schema()).max_bytes(20_000)).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..50 {
        producer.append(&batch(0, i, 100)).unwrap();
    }
    let stats = stream.stats().unwrap();
    assert!(stats.bytes <= 20_000, "{} bytes retained", stats.bytes);
    assert!(stats.trimmed > 0);
    assert_eq!(stats.trimmed, stats.partitions[0].tail);
    drop(one);

    let aged = Stream::create(&store, StreamConfig::new("age", schema()).max_age(Duration::from_millis(100))).unwrap();
    let mut producer = aged.producer().unwrap();
    for i in 0..5 {
        producer.append(&batch(0, i, 10)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(150));
    aged.enforce_retention().unwrap();
    let stats = aged.stats().unwrap();
    assert_eq!((stats.expired, stats.partitions[0].tail, stats.bytes), (5, 5, 0));
}

#[test]
fn keyed_appends_send_equal_keys_to_the_same_partition_in_order() {
    let t = TestStore::new("stream-keyed");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(4)).unwrap();
    let mut producer = stream.producer().unwrap();
    let mut where_key: std::collections::HashMap<i64, u32> = Default::default();
    for round in 0..3 {
        // seq is the key: the same 32 keys every round.
        let b = batch(round, 0, 32);
        let appended = producer.append_keyed(&b, "seq").unwrap();
        assert!(appended.len() > 1, "32 keys over 4 partitions land in more than one");
        assert!(appended.windows(2).all(|w| w[0].partition < w[1].partition));
    }
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    let mut rows = 0;
    while let Polled::Batch(b) = consumer.poll(Duration::ZERO).unwrap() {
        let keys = seqs(&b.batch);
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "rows keep their order");
        for k in keys {
            assert_eq!(*where_key.entry(k).or_insert(b.partition), b.partition, "key {k} moved partitions");
            rows += 1;
        }
    }
    assert_eq!(rows, 96);
    assert!(matches!(producer.append_keyed(&batch(0, 0, 1), "value"), Err(StreamError::InvalidConfig(_))));
    assert!(matches!(producer.append_keyed(&batch(0, 0, 1), "nope"), Err(StreamError::InvalidConfig(_))));
}

#[test]
fn a_deleted_batch_is_a_hole_that_consumers_skip_and_count() {
    let t = TestStore::new("stream-hole");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..3 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    store.delete(stream.object_id(0, 1)).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    assert_eq!(next(&mut consumer).offset, 0);
    assert_eq!(next(&mut consumer).offset, 2);
    assert_eq!(consumer.holes(), 1);
}

#[test]
fn a_consumer_assigned_some_partitions_reads_only_those() {
    let t = TestStore::new("stream-assign");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(3)).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..9 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    let mut consumer = stream.consumer(ConsumerConfig::reader().partitions(vec![2, 0])).unwrap();
    let mut got = Vec::new();
    while let Polled::Batch(b) = consumer.poll(Duration::ZERO).unwrap() {
        got.push((b.partition, b.offset));
    }
    got.sort();
    assert_eq!(got, [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]);
    assert!(stream.consumer(ConsumerConfig::reader().partitions(vec![3])).is_err());
    assert!(stream.consumer(ConsumerConfig::reader().partitions(vec![])).is_err());
    assert!(stream.consumer(ConsumerConfig::reader().partitions(vec![1, 1])).is_err());
}

#[test]
fn polled_batches_are_zero_copy_views_of_the_mapping() {
    let t = TestStore::new("stream-zero-copy");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema())).unwrap();
    stream.producer().unwrap().append(&batch(0, 0, 64)).unwrap();
    let b = next(&mut stream.consumer(ConsumerConfig::reader()).unwrap());
    let range = store.mapped_range();
    for column in b.batch.columns() {
        let at = column.to_data().buffers()[0].as_ptr() as usize;
        assert!(range.contains(&at), "column data at {at:#x} lies outside the mapping");
    }
}

#[test]
fn a_seek_drops_what_was_read_ahead_and_a_trailing_hole_is_passed() {
    let t = TestStore::new("stream-read-ahead");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for i in 0..6 {
        producer.append(&batch(0, i, 1)).unwrap();
    }
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert_eq!(next(&mut consumer).offset, 0);
    assert_eq!(next(&mut consumer).offset, 1);
    consumer.seek(0, 0).unwrap();
    let replay: Vec<u64> = (0..6).map(|_| next(&mut consumer).offset).collect();
    assert_eq!(replay, [0, 1, 2, 3, 4, 5]);
    // A hole at the end: the position moves past it, so the group can
    // commit the whole partition.
    producer.append(&batch(0, 6, 1)).unwrap();
    store.delete(stream.object_id(0, 6)).unwrap();
    stream.close().unwrap();
    assert!(matches!(consumer.poll(Duration::from_secs(5)).unwrap(), Polled::EndOfStream));
    assert_eq!((consumer.position(0), consumer.holes()), (Some(7), 1));
    consumer.commit().unwrap();
    assert_eq!(stream.stats().unwrap().groups[0].lag_batches, 0);
}

#[test]
fn an_aborted_append_is_a_hole_that_leaves_the_counters_right() {
    let t = TestStore::new("stream-abort");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).max_bytes(1 << 20)).unwrap();
    let mut producer = stream.producer().unwrap();
    let (builder, appended) = producer.debug_begin_append(0, &batch(0, 0, 100)).unwrap();
    assert_eq!(appended.offset, 0);
    drop(builder); // aborted: offset 0 is a hole
    producer.append(&batch(0, 1, 10)).unwrap();
    let stats = stream.stats().unwrap();
    assert_eq!((stats.appended, stats.partitions[0].rows, stats.partitions[0].head), (1, 10, 2));
    let mut consumer = stream.consumer(ConsumerConfig::reader()).unwrap();
    assert_eq!(next(&mut consumer).offset, 1);
    assert_eq!(consumer.holes(), 1);
    // Only the sealed batch is counted, so retention sees the true size.
    let payload = store
        .list()
        .unwrap()
        .iter()
        .filter(|o| o.pinned && o.id.as_bytes()[0] == b'S')
        .map(|o| o.data_size + o.metadata_size)
        .sum::<u64>();
    assert_eq!(stats.bytes, payload);
}

#[test]
fn a_store_removed_under_a_waiting_consumer_is_an_error_not_no_data() {
    let t = TestStore::new("stream-removed-file");
    let store = t.create(4 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("g")).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let waiting = std::thread::spawn(move || consumer.poll(Duration::from_secs(60)));
    crate::common::wait_until("the consumer parked", || stream.debug_waiters(Some(0)).unwrap() > 0);
    Store::remove(&t.name).unwrap();
    let polled = waiting.join().unwrap();
    assert!(matches!(polled, Err(StreamError::Store(quiver::StoreError::Removed(_)))), "{polled:?}");
    // A plain get that runs out of time says so too.
    let got = store.get(ObjectId::sequential(9, 0, 0), Duration::from_millis(10));
    assert!(matches!(got, Err(quiver::StoreError::Removed(_))), "{got:?}");
}

#[test]
fn skip_to_moves_only_an_empty_partition_forward_and_groups_read_from_there() {
    let t = TestStore::new("stream-skip-to");
    let store = t.create(16 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", schema()).partitions(2).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    producer.append_to(1, &batch(0, 0, 1)).unwrap();
    assert!(producer.skip_to(0, 10).unwrap(), "an empty partition moves");
    assert!(!producer.skip_to(0, 5).unwrap(), "never backwards");
    assert!(!producer.skip_to(1, 10).unwrap(), "a partition that holds a batch stays");
    assert!(producer.skip_to(7, 1).is_err(), "no such partition");
    assert_eq!(producer.append_to(0, &batch(0, 1, 1)).unwrap().offset, 10);
    assert_eq!(producer.append_to(1, &batch(0, 2, 1)).unwrap().offset, 1);
    // The group, at 0, passes the offsets skipped over as dropped.
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut got = Vec::new();
    while let Polled::Batch(b) = consumer.poll(Duration::from_millis(200)).unwrap() {
        got.push((b.partition, b.offset, first_seq(&b)));
        drop(b);
        consumer.commit().unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, [(0, 10, 1), (1, 0, 0), (1, 1, 2)]);
}

/// Issue 25: a producer blocked for space under `Block` back-pressure is
/// woken by the stream's close or removal and told so (`Closed`,
/// `Removed`), instead of `Full` once its own timeout runs out.
#[test]
fn closing_or_removing_a_stream_wakes_its_blocked_producers_with_the_reason() {
    for remove in [false, true] {
        let t = TestStore::new("stream-wake-blocked");
        let store = small_store(&t, 256 << 10);
        let stream = Stream::create(&store, StreamConfig::new("s", schema()).group("never-commits")).unwrap();
        let mut filler = stream.producer().unwrap().with_timeout(Duration::ZERO);
        let mut appended = 0;
        while filler.append(&batch(0, appended, 512)).is_ok() {
            appended += 1;
        }
        // Its timeout is the test's deadline: `Full` after it fails the test.
        let mut producer = stream.producer().unwrap().with_timeout(Duration::from_secs(60));
        assert!(appended > 0, "the store holds some batches");
        let blocked = std::thread::spawn(move || producer.append(&batch(0, appended, 512)));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "the producer waits for space");
        match remove {
            false => stream.close().unwrap(),
            true => Stream::remove(&store, "s").unwrap(),
        }
        // Before the fix, this waited the producer's 60 s and said `Full`.
        match (remove, blocked.join().unwrap()) {
            (false, Err(StreamError::Closed(_))) | (true, Err(StreamError::Removed(_))) => {}
            (_, other) => {
                panic!("expected the stream's {} error, got {other:?}", ["close", "removal"][remove as usize])
            }
        }
    }
}
