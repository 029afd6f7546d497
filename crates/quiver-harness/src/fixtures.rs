//! What the tests, the fuzzers and the helper processes put into a store
//! and do with it: [`populate`] (something of every layer), [`exercise_store`]
//! (every layer's operations, never waiting, errors ignored), the sample
//! batch they use, and [`pattern`], the bytes the `put` helper writes and the
//! `get` helper checks.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use quiver::shard::{ShardConfig, ShardManager, ShardSize};
use quiver::store::{ObjectId, Store};
use quiver::stream::{ConsumerConfig, Polled, Stream, StreamConfig};

/// The byte at position `j` of sequential object `i` in namespace `ns`, as
/// the `put` helper writes it.
pub fn pattern(ns: u64, i: u64, j: usize) -> u8 {
    (ns.wrapping_mul(131) ^ i.wrapping_mul(31) ^ (j as u64).wrapping_mul(7)) as u8
}

/// Three rows of `(id: Int64, x: Float64, name: Utf8 with a null)`.
pub fn sample_batch() -> RecordBatch {
    let columns: [(&str, ArrayRef); 3] = [
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("x", Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5]))),
        ("name", Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")]))),
    ];
    RecordBatch::try_from_iter(columns).expect("a valid batch")
}

/// Four rows of many kinds of column, shifted by `k`: Int32, Boolean,
/// Date32, Utf8, `List<Int64>` and `Struct{a: Float64, b: Binary}`, with nulls.
pub fn varied_batch(k: i32) -> RecordBatch {
    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_array::{BinaryArray, BooleanArray, Date32Array, Int32Array, StructArray};
    use arrow_schema::{DataType, Field};
    let mut list = ListBuilder::new(Int64Builder::new());
    for i in 0..4i64 {
        if i == 2 {
            list.append_null();
        } else {
            list.append_value((0..i).map(|v| Some(v + k as i64)));
        }
    }
    let inner = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Float64, true)),
            Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.0), Some(f64::from(k))])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Binary, true)),
            Arc::new(BinaryArray::from(vec![Some(&b"xy"[..]), Some(b""), None, Some(b"z")])) as ArrayRef,
        ),
    ]);
    let columns: [(&str, ArrayRef); 6] = [
        ("n", Arc::new(Int32Array::from(vec![k, k + 1, -k, i32::MAX]))),
        ("flag", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)]))),
        ("day", Arc::new(Date32Array::from(vec![Some(19_000 + k), None, Some(0), Some(-1)]))),
        ("text", Arc::new(StringArray::from(vec![Some("é"), None, Some(""), Some("long enough text")]))),
        ("list", Arc::new(list.finish())),
        ("pair", Arc::new(inner)),
    ];
    RecordBatch::try_from_iter(columns).expect("a valid batch")
}

/// Puts something of every layer in `store`: objects `(1, 0, 0..4)`, a
/// stream `"s"` (2 partitions, group `"g"`) with 6 batches, and a
/// shard-managed group with a task done and one held by a member that is
/// never seen again.
pub fn populate(store: &Store) -> Result<(), quiver::shard::ShardError> {
    for i in 0..4u64 {
        let mut b = store.create_object(ObjectId::sequential(1, 0, i), 100, b"meta")?;
        b.data_mut().fill(i as u8);
        b.seal()?;
    }
    let batch = sample_batch();
    let stream = Stream::create(store, StreamConfig::new("s", batch.schema()).partitions(2).group("g"))?;
    let mut producer = stream.producer()?;
    for _ in 0..6 {
        producer.append(&batch)?;
    }
    let config = ShardConfig::new().shard_size(ShardSize::Batches(2));
    let mut manager = ShardManager::join(&stream, "g", config)?;
    if let Some(task) = manager.get_task()?.task() {
        manager.report(task, quiver::shard::Outcome::Done)?;
    }
    let _held = manager.get_task()?.task();
    // Kept, never dropped, as if its process had died holding the task (a
    // copy of the file sees a dead client; a leak checker sees no leak).
    static HELD: std::sync::Mutex<Vec<ShardManager>> = std::sync::Mutex::new(Vec::new());
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(manager);
    Ok(())
}

/// Runs the operations of every layer on `store` once, never waiting:
/// what [`populate`] put there is read, changed and added to. Errors are
/// ignored: the point is that there is no panic, no hang and no crash.
pub fn exercise_store(store: &Store) {
    let _ = store.stats();
    let _ = store.list();
    for i in 0..5u64 {
        if let Ok(Some(view)) = store.get(ObjectId::sequential(1, 0, i), Duration::ZERO) {
            let _ = view.data().iter().map(|&b| b as u64).sum::<u64>();
        }
    }
    if let Ok(mut b) = store.create_object(ObjectId::sequential(9, 0, 0), 64, b"new") {
        b.data_mut().fill(7);
        let _ = b.seal();
        let _ = store.delete(ObjectId::sequential(9, 0, 0));
    }
    let _ = store.delete(ObjectId::sequential(1, 0, 0));
    let _ = Stream::list(store);
    let _ = quiver::shard::list(store);
    if let Ok(stream) = Stream::open(store, "s") {
        if let Ok(mut consumer) = stream.consumer(ConsumerConfig::group("g")) {
            for _ in 0..8 {
                match consumer.poll(Duration::ZERO) {
                    Ok(Polled::Batch(b)) => {
                        let _ = b.batch.num_rows();
                    }
                    _ => break,
                }
            }
            let _ = consumer.commit();
        }
        if let Ok(mut producer) = stream.producer().map(|p| p.with_timeout(Duration::ZERO)) {
            let _ = producer.append(&sample_batch());
        }
        let config = ShardConfig::new().shard_size(ShardSize::Batches(2));
        if let Ok(mut manager) = ShardManager::join(&stream, "g", config) {
            if let Ok(quiver::shard::Next::Task(task)) = manager.get_task() {
                let _ = manager.read_task(&task, Duration::ZERO);
                let _ = manager.report(task, quiver::shard::Outcome::Done);
            }
            let _ = manager.stats();
        }
    }
    let _ = store.recover_dead_clients();
}

/// The schema of [`seq_batch`]: `(producer: Int64, seq: Int64, value: Float64)`.
pub fn seq_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("producer", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `rows` rows of (producer, seq, value), seq counting from `first`.
pub fn seq_batch(producer: i64, first: i64, rows: usize) -> RecordBatch {
    let seq: Vec<i64> = (first..first + rows as i64).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![producer; rows])),
        Arc::new(Int64Array::from(seq.clone())),
        Arc::new(Float64Array::from_iter_values(seq.iter().map(|&s| s as f64 * 0.5))),
    ];
    RecordBatch::try_new(seq_schema(), columns).expect("columns of the schema")
}

/// The `seq` column of a [`seq_batch`] (empty for a batch without one).
pub fn seqs(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("seq")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .map(|c| c.values().to_vec())
        .unwrap_or_default()
}
