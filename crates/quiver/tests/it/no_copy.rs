//! Batches of fixed-width columns: written from a per-row-count layout
//! (the same bytes arrow-ipc's encoder writes), built in place with no copy
//! (`BatchWriter::reserve`, `Producer::reserve`), and read back through the
//! reader's cached layout, which must refuse what a full decode refuses.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array, Int64Array, Int8Array,
    RecordBatch, TimestampMicrosecondArray, UInt32Array, UInt8Array,
};
use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_ipc::MetadataVersion;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use proptest::prelude::*;
use quiver::{
    BatchError, BatchReader, BatchWriter, ConsumerConfig, CreateOptions, ObjectId, Polled, Store, StoreError, Stream,
    StreamConfig,
};

use crate::common::TestStore;

/// The message arrow-ipc's own encoder writes for `batch`, as quiver
/// configures it (64-byte alignment, metadata V5).
fn encoder_bytes(batch: &RecordBatch) -> Vec<u8> {
    let options = IpcWriteOptions::try_new(64, false, MetadataVersion::V5).unwrap();
    let mut encoder = StreamEncoder::try_new_with_options(&batch.schema(), options).unwrap();
    encoder.encode(&RecordBatch::new_empty(batch.schema())).unwrap();
    encoder.encode(batch).unwrap().iter().flat_map(|b| b.as_slice().to_vec()).collect()
}

fn object_bytes(store: &Store, id: ObjectId) -> (Vec<u8>, Vec<u8>) {
    let view = store.get(id, Duration::ZERO).unwrap().unwrap();
    (view.data().to_vec(), view.metadata().to_vec())
}

/// A batch of fixed-width columns of many types: `nulls: Some(p)` puts a
/// null in every `p`th row of the nullable ones.
fn fixed_batch(rows: usize, seed: i64, nulls: Option<usize>) -> RecordBatch {
    let null = |i: usize| nulls.is_some_and(|p| i % p == 3);
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("i8", Arc::new(Int8Array::from_iter_values((0..rows).map(|i| (i as i64 + seed) as i8))), false),
        ("i16", Arc::new(Int16Array::from_iter((0..rows).map(|i| (!null(i)).then_some(i as i16 - 3)))), true),
        ("u8", Arc::new(UInt8Array::from_iter_values((0..rows).map(|i| i as u8))), false),
        ("u32", Arc::new(UInt32Array::from_iter((0..rows).map(|i| (!null(i)).then_some(i as u32 * 7)))), true),
        ("i64", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| seed * 1000 + i as i64))), false),
        ("f32", Arc::new(Float32Array::from_iter_values((0..rows).map(|i| i as f32 / 3.0))), false),
        ("f64", Arc::new(Float64Array::from_iter((0..rows).map(|i| (!null(i)).then_some(i as f64 * 0.5)))), true),
        ("bool", Arc::new(BooleanArray::from_iter((0..rows).map(|i| (!null(i)).then_some(i % 3 == 0)))), true),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| seed + i as i64)).with_timezone("UTC"),
            ),
            false,
        ),
    ];
    let fields: Vec<Field> =
        columns.iter().map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable)).collect();
    let arrays = columns.into_iter().map(|(_, array, _)| array).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Written from its layout (no encoder), a batch is byte for byte the
    /// message arrow-ipc writes, sliced or not, with or without nulls; and
    /// the reader gives it back, decoded in full the first time and from
    /// its cached layout after.
    #[test]
    fn the_layout_path_writes_what_arrow_ipc_writes(
        rows in 0usize..300, offset in 0usize..40, nulls in any::<bool>(), seed in -50i64..50,
    ) {
        let t = TestStore::new("layoutbytes");
        let store = t.create(8 << 20);
        let full = fixed_batch(rows + offset, seed, nulls.then_some(7));
        let batch = full.slice(offset, rows);
        let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
        let mut reader = BatchReader::new(&store);
        for i in 0..3 {
            let id = ObjectId::sequential(9, 0, i);
            writer.put_batch(id, &batch).unwrap();
            let (data, _) = object_bytes(&store, id);
            prop_assert_eq!(&data, &encoder_bytes(&batch));
            let read = reader.get_batch(id, Duration::ZERO).unwrap().unwrap();
            prop_assert_eq!(&read, &batch);
        }
    }

    /// With a layout cached from a good batch, a copy with bytes flipped or
    /// cut off decodes to an error or to a valid batch, never a panic.
    #[test]
    fn flipped_bytes_past_a_cached_layout_never_panic(
        cut in 0usize..3000, flips in proptest::collection::vec((0usize..3000, any::<u8>()), 1..4),
    ) {
        let t = TestStore::new("layoutfuzz");
        let store = t.create(4 << 20);
        let batch = fixed_batch(40, 1, Some(7));
        let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
        let good = ObjectId::random();
        writer.put_batch(good, &batch).unwrap();
        let mut reader = BatchReader::new(&store);
        prop_assert_eq!(reader.get_batch(good, Duration::ZERO).unwrap().unwrap(), batch);
        let (mut data, meta) = object_bytes(&store, good);
        data.truncate(cut.max(8).min(data.len()));
        for (at, byte) in flips {
            let n = data.len();
            data[at % n] ^= byte;
        }
        let id = ObjectId::random();
        let mut b = store.create_object(id, data.len() as u64, &meta).unwrap();
        b.data_mut().copy_from_slice(&data);
        b.seal().unwrap();
        if let Ok(Some(decoded)) = reader.get_batch(id, Duration::ZERO) {
            for column in decoded.columns() {
                prop_assert!(column.to_data().validate_full().is_ok());
            }
        }
    }
}

#[test]
fn a_cached_layout_refuses_a_null_count_its_bitmap_does_not_have() {
    let t = TestStore::new("layoutnulls");
    let store = t.create(4 << 20);
    // Same columns with nulls, so the same layout: 7 nulls against 10.
    let clean = fixed_batch(50, 2, Some(7));
    let with_nulls = fixed_batch(50, 2, Some(5));
    let mut writer = BatchWriter::new(&store, clean.schema()).unwrap();
    let (a, c) = (ObjectId::random(), ObjectId::random());
    writer.put_batch(a, &clean).unwrap();
    writer.put_batch(c, &with_nulls).unwrap();
    let mut reader = BatchReader::new(&store);
    assert_eq!(reader.get_batch(a, Duration::ZERO).unwrap().unwrap(), clean);
    // The headers differ only in the null counts: graft those of the batch
    // with more nulls onto the bytes of the other.
    let ((data_a, meta), (data_c, _)) = (object_bytes(&store, a), object_bytes(&store, c));
    let header = 8 + i32::from_le_bytes(data_a[4..8].try_into().unwrap()) as usize;
    let differing: Vec<usize> = (0..header).filter(|&i| data_a[i] != data_c[i]).collect();
    assert!(!differing.is_empty(), "the null counts are in the header");
    let mut lying = data_a.clone();
    for i in differing {
        lying[i] = data_c[i];
    }
    let id = ObjectId::random();
    let mut b = store.create_object(id, lying.len() as u64, &meta).unwrap();
    b.data_mut().copy_from_slice(&lying);
    b.seal().unwrap();
    let err = reader.get_batch(id, Duration::ZERO).unwrap_err();
    assert!(matches!(&err, BatchError::NotABatch { why, .. } if why.contains("nulls")), "{err}");
    // A fresh reader, decoding in full, refuses it too.
    assert!(BatchReader::new(&store).get_batch(id, Duration::ZERO).is_err());
    // And the reader still reads good batches.
    assert_eq!(reader.get_batch(c, Duration::ZERO).unwrap().unwrap(), with_nulls);
}

fn slot_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("flag", DataType::Boolean, false),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("tag", DataType::FixedSizeBinary(3), true),
        Field::new("small", DataType::Int32, true),
    ]))
}

/// What the slot test below builds in place, built the usual way.
fn slot_reference(rows: usize) -> RecordBatch {
    let value_null = |i: usize| i == 3 || i + 1 == rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i as i64 * 10))),
        Arc::new(Float64Array::from_iter((0..rows).map(|i| (!value_null(i)).then_some(i as f64 / 4.0)))),
        Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 1)))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| 1_700_000_000 + i as i64))
                .with_timezone("UTC"),
        ),
        Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size((0..rows).map(|i| Some([i as u8, 1, 2])), 3).unwrap(),
        ),
        Arc::new(arrow_array::Int32Array::from_iter_values((0..rows).map(|i| -(i as i32)))),
    ];
    RecordBatch::try_new(slot_schema(), columns).unwrap()
}

/// Fills a slot with what `slot_reference` holds.
fn fill(slot: &mut quiver::BatchSlot) {
    let rows = slot.num_rows();
    for (i, v) in slot.values_mut::<Int64Type>(0).unwrap().iter_mut().enumerate() {
        *v = i as i64 * 10;
    }
    for (i, v) in slot.values_mut::<Float64Type>(1).unwrap().iter_mut().enumerate() {
        *v = i as f64 / 4.0;
    }
    if rows > 3 {
        slot.set_null(1, 3).unwrap();
    }
    slot.set_null(1, rows - 1).unwrap();
    let bits = slot.bytes_mut(2).unwrap();
    bits.fill(0);
    for i in (1..rows).step_by(2) {
        bits[i / 8] |= 1 << (i % 8);
    }
    for (i, v) in slot.values_mut::<TimestampMicrosecondType>(3).unwrap().iter_mut().enumerate() {
        *v = 1_700_000_000 + i as i64;
    }
    for (i, v) in slot.bytes_mut(4).unwrap().chunks_mut(3).enumerate() {
        v.copy_from_slice(&[i as u8, 1, 2]);
    }
    for (i, v) in slot.values_mut::<Int32Type>(5).unwrap().iter_mut().enumerate() {
        *v = -(i as i32);
    }
}

#[test]
fn a_batch_built_in_place_is_the_batch_appended() {
    let t = TestStore::new("slot");
    let store = t.create(8 << 20);
    let mut writer = BatchWriter::new(&store, slot_schema()).unwrap();
    let mut reader = BatchReader::new(&store);
    for (i, rows) in [37usize, 37, 1000, 8, 1].into_iter().enumerate() {
        let id = ObjectId::sequential(3, 0, i as u64);
        // Leave stale bytes behind in the arena first: the slot must not
        // depend on zeroed memory for anything but the values it is given.
        let junk = ObjectId::random();
        let mut b = store.create_object(junk, 64 << 10, &[]).unwrap();
        b.data_mut().fill(0xA5);
        b.seal().unwrap();
        store.delete(junk).unwrap();
        let mut slot = writer.reserve(id, rows, CreateOptions::default()).unwrap();
        assert_eq!((slot.num_rows(), slot.id()), (rows, id));
        fill(&mut slot);
        slot.seal().unwrap();
        let reference = slot_reference(rows);
        let (_, meta) = object_bytes(&store, id);
        assert_eq!(u64::from_le_bytes(meta[24..32].try_into().unwrap()), rows as u64);
        // Decoded in full, header checks and all, by a reader that has
        // cached nothing.
        let fresh = BatchReader::new(&store).get_batch(id, Duration::ZERO).unwrap().unwrap();
        assert_eq!(fresh, reference, "{rows} rows");
        let (read, got) = reader.get_batch_with_meta(id, Duration::ZERO).unwrap().unwrap();
        assert_eq!(read, reference);
        assert!(got.append_ns > 0);
        assert_eq!(read.column(1).null_count(), if rows > 3 { 2 } else { 1 });
    }
}

#[test]
fn reserve_refuses_what_it_cannot_build_and_a_dropped_slot_leaves_nothing() {
    let t = TestStore::new("slotrefuse");
    let store = t.create(4 << 20);
    let strings = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
    let mut writer = BatchWriter::new(&store, strings).unwrap();
    let err = writer.reserve(ObjectId::random(), 10, CreateOptions::default()).unwrap_err();
    assert!(matches!(err, BatchError::Unsupported(_)), "{err}");

    let mut writer = BatchWriter::new(&store, slot_schema()).unwrap();
    // More rows than the store could ever hold: refused before anything
    // the size of the batch is allocated.
    for rows in [usize::MAX / 2, 1 << 40, 1 << 20] {
        let err = writer.reserve(ObjectId::random(), rows, CreateOptions::default()).unwrap_err();
        assert!(matches!(err, BatchError::Store(StoreError::TooLarge { .. })), "{rows}: {err}");
    }
    let before = store.stats().unwrap();
    let id = ObjectId::random();
    let mut slot = writer.reserve(id, 16, CreateOptions::default()).unwrap();
    assert!(matches!(slot.values_mut::<Int32Type>(0), Err(BatchError::SchemaMismatch { .. })));
    assert!(slot.values_mut::<Int64Type>(6).is_err(), "no column 6");
    assert!(slot.validity_mut(0).is_err(), "seq is not nullable");
    assert!(slot.set_null(1, 16).is_err(), "row 16 of 16");
    assert!(slot.bytes_mut(7).is_err());
    drop(slot);
    assert!(!store.contains(id).unwrap(), "a dropped slot is aborted");
    assert_eq!(store.stats().unwrap().objects, before.objects);
    let slot = writer.reserve(id, 16, CreateOptions::default()).unwrap();
    slot.abort().unwrap();
    assert!(!store.contains(id).unwrap());
}

#[test]
fn a_reservation_commits_like_an_append_and_a_dropped_one_leaves_a_hole() {
    let t = TestStore::new("reserve");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", slot_schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    let mut reservation = producer.reserve(12).unwrap();
    assert_eq!(reservation.appended().offset, 0);
    fill(&mut reservation);
    let first = reservation.commit().unwrap();
    let dropped = producer.reserve_to(0, 12).unwrap();
    assert_eq!(dropped.appended().offset, 1);
    drop(dropped);
    let mut reservation = producer.reserve_to(0, 5).unwrap();
    fill(&mut reservation);
    let third = reservation.commit().unwrap();
    assert_eq!((first.offset, third.offset), (0, 2));
    assert!(third.append_ns >= first.append_ns);
    // An appended batch of the same rows after them, for the counters.
    producer.append(&slot_reference(12)).unwrap();
    assert!(matches!(producer.reserve_to(4, 1), Err(quiver::StreamError::NoSuchPartition { .. })));

    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let mut got = Vec::new();
    while let Polled::Batch(b) = consumer.poll(Duration::from_millis(200)).unwrap() {
        got.push((b.offset, b.batch.clone()));
    }
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [0, 2, 3], "the dropped reservation is a hole");
    assert_eq!(got[0].1, slot_reference(12));
    assert_eq!(got[1].1, slot_reference(5));
    assert_eq!(got[2].1, slot_reference(12));
    let stats = stream.stats().unwrap();
    assert_eq!(stats.partitions[0].rows, 12 + 5 + 12);
}

#[test]
fn a_reservation_apart_from_its_producer_commits_with_a_view_that_outlives_retention() {
    let t = TestStore::new("reserved");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", slot_schema()).group("g")).unwrap();
    let other = Stream::create(&store, StreamConfig::new("other", slot_schema())).unwrap();
    let mut producer = stream.producer().unwrap();
    let mut reserved = producer.reserve(12).unwrap().into_reserved();
    assert_eq!(reserved.appended().offset, 0);
    fill(&mut reserved);
    // Only a producer of the stream it was reserved in commits it.
    let mut stranger = other.producer().unwrap();
    let refused = stranger.commit_reserved(reserved, false).unwrap_err();
    assert!(refused.to_string().contains("another stream"), "{refused}");
    let mut reserved = producer.reserve(12).unwrap().into_reserved();
    fill(&mut reserved);
    let (appended, view) = producer.commit_reserved(reserved, true).unwrap();
    assert_eq!(appended.offset, 1, "the refused one is a hole");
    let view = view.expect("a view was asked for");
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    let Polled::Batch(b) = consumer.poll(Duration::from_secs(5)).unwrap() else { panic!("no batch") };
    assert_eq!((b.offset, b.batch.clone()), (1, slot_reference(12)));
    drop(b);
    consumer.commit().unwrap();
    stream.enforce_retention().unwrap();
    let bytes = view.data().to_vec();
    assert!(store.get(stream.object_id(0, 1), Duration::ZERO).unwrap().is_none(), "retention deleted it");
    assert_eq!(view.data(), &bytes[..], "the view still reads the batch");
}

#[test]
fn poll_ready_takes_what_is_there_and_leaves_the_rest_to_poll() {
    let t = TestStore::new("ready");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", slot_schema()).partitions(2).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert!(consumer.poll_ready().unwrap().is_none(), "nothing yet");
    for _ in 0..4 {
        producer.append(&slot_reference(3)).unwrap();
    }
    // A hole in partition 1: poll_ready stops at it, poll passes it.
    drop(producer.reserve_to(1, 3).unwrap());
    producer.append_to(1, &slot_reference(3)).unwrap();
    let mut got = Vec::new();
    while let Some(b) = consumer.poll_ready().unwrap() {
        got.push((b.partition, b.offset));
    }
    assert_eq!(got.len(), 4, "every batch before the hole: {got:?}");
    let Polled::Batch(b) = consumer.poll(Duration::from_secs(5)).unwrap() else { panic!("no batch past the hole") };
    assert_eq!((b.partition, b.offset), (1, 3));
    assert_eq!(consumer.holes(), 1);
    stream.close().unwrap();
    assert!(consumer.poll_ready().unwrap().is_none(), "the end is poll's to tell");
    assert!(matches!(consumer.poll(Duration::from_secs(5)).unwrap(), Polled::EndOfStream));
}

#[test]
fn a_commit_with_nothing_new_writes_nothing_and_still_finds_a_removed_group() {
    let t = TestStore::new("commit-free");
    let store = t.create(8 << 20);
    let stream = Stream::create(&store, StreamConfig::new("s", slot_schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    producer.append(&slot_reference(3)).unwrap();
    let mut consumer = stream.consumer(ConsumerConfig::group("g")).unwrap();
    assert!(matches!(consumer.poll(Duration::from_secs(5)).unwrap(), Polled::Batch(_)));
    consumer.commit().unwrap();
    consumer.commit().unwrap();
    assert_eq!(consumer.committed(0).unwrap(), 1);
    // Another member of the group moves the offset back: this one's commit
    // is not "nothing new" any more.
    let mut other = stream.consumer(ConsumerConfig::group("g")).unwrap();
    other.commit_offsets(&[(0, 0)]).unwrap();
    consumer.commit().unwrap();
    assert_eq!(consumer.committed(0).unwrap(), 1);
    Stream::remove(&store, "s").unwrap();
    assert!(consumer.commit().is_err(), "the stream is gone");
}
