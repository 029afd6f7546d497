//! Record batches through the store: every common Arrow type, across
//! processes, read zero-copy, kept alive past deletion, and clear errors
//! for bytes that are not a batch.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, Int8Array, LargeStringArray, NullArray, RecordBatch, RecordBatchOptions, StringArray, StructArray,
    TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
};
use arrow_data::ArrayData;
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;
use quiver::{BatchError, BatchReader, BatchWriter, ObjectId, Store};

use crate::common::{run_harness, TestStore, LONG};

/// One batch with a column of every common type, nulls included.
pub fn every_type_batch(rows: usize, seed: i64) -> RecordBatch {
    let n = rows;
    let opt = |i: usize| i % 5 != 3; // every fifth value is null
    let mut list = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        if opt(i) {
            for j in 0..(i % 4) {
                list.values().append_value(format!("v{}", seed + (i * j) as i64));
            }
            list.append(true);
        } else {
            list.append_null();
        }
    }
    let strct = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int32, true)),
            Arc::new(Int32Array::from_iter((0..n).map(|i| opt(i).then_some(i as i32 * 3)))) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, false)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("s{i}")))) as ArrayRef,
        ),
    ]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("i8", Arc::new(Int8Array::from_iter((0..n).map(|i| opt(i).then_some(i as i8))))),
        ("i16", Arc::new(Int16Array::from_iter_values((0..n).map(|i| i as i16 - 7)))),
        ("i32", Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32 * 11)))),
        ("i64", Arc::new(Int64Array::from_iter((0..n).map(|i| opt(i).then_some(seed + i as i64))))),
        ("u8", Arc::new(UInt8Array::from_iter_values((0..n).map(|i| i as u8)))),
        ("u16", Arc::new(UInt16Array::from_iter_values((0..n).map(|i| i as u16)))),
        ("u32", Arc::new(UInt32Array::from_iter_values((0..n).map(|i| i as u32)))),
        ("u64", Arc::new(UInt64Array::from_iter_values((0..n).map(|i| i as u64 * 1_000_003)))),
        ("f32", Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32 / 3.0)))),
        ("f64", Arc::new(Float64Array::from_iter((0..n).map(|i| opt(i).then_some(i as f64 * 0.25))))),
        ("bool", Arc::new(BooleanArray::from_iter((0..n).map(|i| opt(i).then_some(i % 2 == 0))))),
        ("utf8", Arc::new(StringArray::from_iter((0..n).map(|i| opt(i).then(|| format!("row {i} ✓")))))),
        ("large_utf8", Arc::new(LargeStringArray::from_iter_values((0..n).map(|i| "x".repeat(i % 7))))),
        ("binary", Arc::new(BinaryArray::from_iter_values((0..n).map(|i| vec![i as u8; i % 3])))),
        ("date", Arc::new(Date32Array::from_iter_values((0..n).map(|i| 19_000 + i as i32)))),
        ("ts", Arc::new(TimestampMicrosecondArray::from_iter_values((0..n).map(|i| seed * 1000 + i as i64)))),
        ("list", Arc::new(list.finish())),
        ("struct", Arc::new(strct)),
        ("null", Arc::new(NullArray::new(n))),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

fn round_trip(store: &Store, batch: &RecordBatch, offset: u64) -> RecordBatch {
    let mut writer = BatchWriter::new(store, batch.schema()).unwrap();
    let id = ObjectId::sequential(5, 0, offset);
    writer.put_batch(id, batch).unwrap();
    BatchReader::new(store).get_batch(id, Duration::ZERO).unwrap().unwrap()
}

#[test]
fn batches_of_every_common_type_round_trip() {
    let t = TestStore::new("arrowtypes");
    let store = t.create(16 << 20);
    for (n, rows) in [0usize, 1, 7, 1000].into_iter().enumerate() {
        let batch = every_type_batch(rows, n as i64);
        assert_eq!(round_trip(&store, &batch, n as u64), batch, "{rows} rows");
    }
    // Zero columns, with a row count.
    let empty_schema = Arc::new(Schema::empty());
    let options = RecordBatchOptions::new().with_row_count(Some(42));
    let no_columns = RecordBatch::try_new_with_options(empty_schema, vec![], &options).unwrap();
    let back = round_trip(&store, &no_columns, 10);
    assert_eq!((back.num_columns(), back.num_rows()), (0, 42));
}

#[test]
fn batches_round_trip_across_processes() {
    let t = TestStore::new("arrowprocs");
    let store = t.create(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<_> = (0..5).map(|i| every_type_batch(100 + i * 37, i as i64)).collect();
    let mut writer = BatchWriter::new(&store, batches[0].schema()).unwrap();
    for (i, batch) in batches.iter().enumerate() {
        writer.put_batch(ObjectId::sequential(9, 0, i as u64), batch).unwrap();
    }
    // Another process decodes every batch from the store and writes what it
    // read to an Arrow IPC file; this process compares.
    let out = dir.path().join("read.arrows");
    let out_arg = out.display().to_string();
    let run = run_harness(&["read-batches", "--store", &t.name, "--ns", "9", "--count", "5", "--out", &out_arg], LONG);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let file = std::fs::File::open(&out).unwrap();
    let read: Vec<_> = arrow_ipc::reader::StreamReader::try_new(file, None).unwrap().map(Result::unwrap).collect();
    assert_eq!(read, batches);
}

/// Every buffer of `data` and of its children.
fn buffers(data: &ArrayData, out: &mut Vec<(usize, usize)>) {
    for b in data.buffers() {
        out.push((b.as_ptr() as usize, b.len()));
    }
    if let Some(nulls) = data.nulls() {
        out.push((nulls.buffer().as_ptr() as usize, nulls.buffer().len()));
    }
    for child in data.child_data() {
        buffers(child, out);
    }
}

#[test]
fn decoded_columns_point_into_the_shared_mapping() {
    let t = TestStore::new("zerocopy");
    let store = t.create(16 << 20);
    let batch = round_trip(&store, &every_type_batch(5000, 3), 0);
    let mapping = store.mapped_range();
    let mut all = Vec::new();
    for column in batch.columns() {
        buffers(&column.to_data(), &mut all);
    }
    assert!(all.len() > 30);
    for (ptr, len) in all {
        if len == 0 {
            continue;
        }
        assert!(mapping.contains(&ptr) && ptr + len <= mapping.end, "buffer at {ptr:#x} is outside the mapping");
        assert_eq!(ptr % 8, 0, "buffer at {ptr:#x} is misaligned");
    }
}

#[test]
fn a_batch_outlives_the_deletion_of_its_object() {
    let t = TestStore::new("keepalive");
    let store = t.create(16 << 20);
    let original = every_type_batch(300, 1);
    let mut writer = BatchWriter::new(&store, original.schema()).unwrap();
    let id = ObjectId::sequential(1, 0, 0);
    writer.put_batch(id, &original).unwrap();
    let batch = BatchReader::new(&store).get_batch(id, Duration::ZERO).unwrap().unwrap();
    let column = batch.column(3).clone(); // keep one column beyond the batch
    store.delete(id).unwrap();
    assert!(!store.contains(id).unwrap());
    // The object is deleted but still allocated; overwriting the store does not touch it.
    for i in 0..50 {
        writer.put_batch(ObjectId::sequential(2, 0, i), &every_type_batch(300, 99)).unwrap();
    }
    assert_eq!(batch, original);
    let objects_before = store.stats().unwrap().objects;
    drop(batch);
    assert_eq!(store.stats().unwrap().objects, objects_before, "a column still holds the object");
    assert_eq!(&column, original.column(3));
    drop(column);
    assert_eq!(store.stats().unwrap().objects, objects_before - 1, "the last buffer freed the object");
}

#[test]
fn schemas_are_checked_on_both_sides() {
    let t = TestStore::new("schemas");
    let store = t.create(16 << 20);
    let batch = every_type_batch(10, 0);
    let other = RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)]).unwrap();
    let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
    assert!(matches!(writer.put_batch(ObjectId::random(), &other), Err(BatchError::SchemaMismatch { .. })));
    let id = ObjectId::random();
    writer.put_batch(id, &batch).unwrap();
    let mut reader = BatchReader::new(&store).expect_schema(other.schema());
    assert!(matches!(reader.get_batch(id, Duration::ZERO), Err(BatchError::SchemaMismatch { .. })));
    // A second writer of the same schema shares the schema object.
    let before = store.stats().unwrap().objects;
    BatchWriter::new(&store, batch.schema()).unwrap();
    assert_eq!(store.stats().unwrap().objects, before);
    // Dictionary columns are refused with a clear error.
    let dict = Schema::new(vec![Field::new(
        "d",
        DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
        true,
    )]);
    let err = BatchWriter::new(&store, Arc::new(dict)).unwrap_err();
    assert!(matches!(err, BatchError::Unsupported(_)) && err.to_string().contains("\"d\""), "{err}");
}

/// Copies `data` into a new object with batch metadata `meta`.
fn raw_object(store: &Store, id: ObjectId, data: &[u8], meta: &[u8]) {
    let mut b = store.create_object(id, data.len() as u64, meta).unwrap();
    b.data_mut().copy_from_slice(data);
    b.seal().unwrap();
}

#[test]
fn objects_that_are_not_batches_give_errors() {
    let t = TestStore::new("notbatch");
    let store = t.create(16 << 20);
    let mut reader = BatchReader::new(&store);
    let id = ObjectId::random();
    raw_object(&store, id, b"plain bytes, no batch here", b"no metadata either");
    assert!(matches!(reader.get_batch(id, Duration::ZERO), Err(BatchError::NotABatch { .. })));
    // Batch metadata naming a schema that is not in the store.
    let mut meta = [0u8; 32];
    meta[..4].copy_from_slice(b"QVRB");
    meta[4] = 1;
    meta[8..16].copy_from_slice(&0xdead_beefu64.to_le_bytes());
    let id = ObjectId::random();
    raw_object(&store, id, &[0xFF, 0xFF, 0xFF, 0xFF, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &meta);
    assert!(matches!(reader.get_batch(id, Duration::ZERO), Err(BatchError::UnknownSchema { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A valid batch object cut short or with bytes flipped decodes to an
    /// error or to some batch, never a panic.
    #[test]
    fn truncated_or_flipped_ipc_bytes_never_panic(cut in 0usize..4000, flips in proptest::collection::vec((0usize..4000, any::<u8>()), 0..6)) {
        let t = TestStore::new("ipcfuzz");
        let store = t.create(4 << 20);
        let batch = every_type_batch(20, 5);
        let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
        let good = ObjectId::random();
        writer.put_batch(good, &batch).unwrap();
        let view = store.get(good, Duration::ZERO).unwrap().unwrap();
        let mut data = view.data().to_vec();
        let meta = view.metadata().to_vec();
        drop(view);
        data.truncate(cut.min(data.len()));
        for (at, byte) in flips {
            if !data.is_empty() {
                let n = data.len();
                data[at % n] ^= byte;
            }
        }
        let id = ObjectId::random();
        raw_object(&store, id, &data, &meta);
        let mut reader = BatchReader::new(&store);
        if let Ok(Some(decoded)) = reader.get_batch(id, Duration::ZERO) {
            // Whatever decodes must be safe to walk.
            for column in decoded.columns() {
                let _ = column.to_data().validate_full();
            }
        }
    }
}

#[test]
fn huge_lengths_that_no_buffer_backs_are_refused() {
    // A null column and an all-null list child need no data buffers, so
    // their lengths are the only thing between a few bytes and gigabytes of
    // validity bits. Patch each length in a real batch to 2^36.
    let t = TestStore::new("hugenodes");
    let store = t.create(4 << 20);
    let rows = 12_345usize;
    let batch = RecordBatch::try_from_iter([("n", Arc::new(NullArray::new(rows)) as ArrayRef)]).unwrap();
    let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
    let good = ObjectId::random();
    writer.put_batch(good, &batch).unwrap();
    let view = store.get(good, Duration::ZERO).unwrap().unwrap();
    let (data, meta) = (view.data().to_vec(), view.metadata().to_vec());
    drop(view);
    let needle = (rows as i64).to_le_bytes();
    let places: Vec<usize> = (0..data.len().saturating_sub(8)).filter(|&i| data[i..i + 8] == needle).collect();
    assert!(places.len() >= 2, "the row count appears as the batch length and a node length");
    let mut reader = BatchReader::new(&store);
    for at in places {
        let mut patched = data.clone();
        patched[at..at + 8].copy_from_slice(&(1i64 << 36).to_le_bytes());
        let id = ObjectId::random();
        raw_object(&store, id, &patched, &meta);
        let result = reader.get_batch(id, Duration::ZERO);
        assert!(result.is_err(), "a length of 2^36 at byte {at} was accepted");
    }
}

#[test]
fn a_fixed_size_list_child_cannot_claim_gigabytes() {
    use arrow_array::FixedSizeListArray;
    use arrow_buffer::NullBuffer;
    // The reviewer's shape: a nullable fixed-size list of nulls. Its child
    // has no buffers, so only its length says how many validity bits arrow
    // would expand. Patch the child's length (4 × rows) to 2^36.
    let t = TestStore::new("fixedlist");
    let store = t.create(4 << 20);
    let rows = 777usize;
    let child = Arc::new(NullArray::new(rows * 4)) as ArrayRef;
    let field = Arc::new(Field::new("item", DataType::Null, true));
    let nulls = NullBuffer::from_iter((0..rows).map(|i| i % 3 != 0));
    let list = FixedSizeListArray::try_new(field, 4, child, Some(nulls)).unwrap();
    let batch = RecordBatch::try_from_iter([("l", Arc::new(list) as ArrayRef)]).unwrap();
    let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
    let good = ObjectId::random();
    writer.put_batch(good, &batch).unwrap();
    let mut reader = BatchReader::new(&store);
    assert_eq!(reader.get_batch(good, Duration::ZERO).unwrap().unwrap(), batch);
    let view = store.get(good, Duration::ZERO).unwrap().unwrap();
    let (data, meta) = (view.data().to_vec(), view.metadata().to_vec());
    drop(view);
    let needle = ((rows * 4) as i64).to_le_bytes();
    let at = (0..data.len() - 8).find(|&i| data[i..i + 8] == needle).expect("the child's length is in the header");
    let mut patched = data.clone();
    patched[at..at + 8].copy_from_slice(&(1i64 << 36).to_le_bytes());
    let id = ObjectId::random();
    raw_object(&store, id, &patched, &meta);
    match reader.get_batch(id, Duration::ZERO) {
        Err(BatchError::NotABatch { why, .. }) => assert!(why.contains("node"), "{why}"),
        other => panic!("expected NotABatch, got {other:?}"),
    }
}
