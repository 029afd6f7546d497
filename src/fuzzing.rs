//! Entry points for the fuzz targets under `fuzz/` and for the tests that
//! replay their regression inputs (`tests/it/fuzz_regressions.rs`). Each
//! takes arbitrary bytes and must return without panicking, whatever they
//! are: errors are the expected outcome for bad bytes.
//!
//! Not a stable API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use crate::shard::{Checkpoint, ShardConfig, ShardManager, ShardSize};
use crate::store::{ObjectId, OpenConfig, Store, StoreConfig};
use crate::stream::{ConsumerConfig, Polled, Stream, StreamConfig};
use crate::{BatchReader, BatchWriter};

/// Checkpoint files: parse; whatever parses must write back and parse again
/// to the same value.
pub fn checkpoint_bytes(data: &[u8]) {
    if let Ok(checkpoint) = Checkpoint::from_bytes(data) {
        let again = checkpoint.to_bytes().expect("a parsed checkpoint encodes");
        assert_eq!(Checkpoint::from_bytes(&again).expect("its encoding parses"), checkpoint);
    }
}

fn sample_batch() -> RecordBatch {
    let columns: [(&str, ArrayRef); 3] = [
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("x", Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5]))),
        ("name", Arc::new(StringArray::from(vec![Some("a"), None, Some("ccc")]))),
    ];
    RecordBatch::try_from_iter(columns).expect("a valid batch")
}

/// A scratch file of this process (each is removed as soon as it is used
/// or mapped).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("quiver-fuzz-{}-{name}", std::process::id()))
}

/// A small store with objects, a stream with batches and a group, and a
/// shard-managed group with tasks, made once per process: the template
/// that [`store_patches`] mutates.
fn template() -> &'static (PathBuf, Vec<u8>) {
    static TEMPLATE: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let path = scratch("template");
        let _ = std::fs::remove_file(&path);
        let config = StoreConfig::at_path(&path).capacity(256 << 10).max_objects(64).prefault(false);
        let store = Store::create(config).expect("create the template store");
        populate(&store).expect("populate the template store");
        drop(store);
        let bytes = std::fs::read(&path).expect("read the template");
        let _ = std::fs::remove_file(&path);
        (path, bytes)
    })
}

/// Puts something of every layer in `store`: objects `(1, 0, 0..4)`, a
/// stream `"s"` (2 partitions, group `"g"`) with 6 batches, and a
/// shard-managed group with a task done and one held by a member that is
/// never seen again.
pub fn populate(store: &Store) -> Result<(), crate::shard::ShardError> {
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
    let config = ShardConfig { shard_size: ShardSize::Batches(2), ..Default::default() };
    let mut manager = ShardManager::join(&stream, "g", config)?;
    if let Some(task) = manager.get_task()?.task() {
        manager.report(task, crate::shard::Outcome::Done)?;
    }
    let _held = manager.get_task()?.task();
    // Kept, never dropped, as if its process had died holding the task (a
    // copy of the file sees a dead client; a leak checker sees no leak).
    static HELD: std::sync::Mutex<Vec<ShardManager>> = std::sync::Mutex::new(Vec::new());
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(manager);
    Ok(())
}

/// The store file: the template store with the input applied as patches
/// (`[offset: u32][len: u8][bytes]…`, offsets taken modulo the metadata part
/// of the file), then opened and used. Every call must give `Ok` or `Err`.
pub fn store_patches(data: &[u8]) {
    let (_, template) = template();
    let mut bytes = template.clone();
    // Patches land in everything but the data arena (the last 256 KiB),
    // whose payload bytes a live peer is trusted not to rewrite.
    let meta_len = bytes.len().saturating_sub(256 << 10).max(1);
    let mut rest = data;
    while rest.len() >= 5 {
        let offset = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize % meta_len;
        let len = rest[4] as usize;
        rest = &rest[5..];
        let take = len.min(rest.len()).min(bytes.len() - offset);
        bytes[offset..offset + take].copy_from_slice(&rest[..take]);
        rest = &rest[take..];
    }
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let path = scratch(&format!("patched-{thread}"));
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    exercise(&path);
    let _ = std::fs::remove_file(&path);
}

/// Opens the store at `path` and runs the operations of every layer on it.
fn exercise(path: &Path) {
    let config =
        OpenConfig::at_path(path).prefault(false).ready_timeout(Duration::ZERO).lock_timeout(Duration::from_millis(50));
    if let Ok(store) = Store::open_with(config) {
        exercise_store(&store);
    }
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
    let _ = crate::shard::list(store);
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
        let config = ShardConfig { shard_size: ShardSize::Batches(2), ..Default::default() };
        if let Ok(mut manager) = ShardManager::join(&stream, "g", config) {
            if let Ok(crate::Next::Task(task)) = manager.get_task() {
                let _ = manager.read_task(&task, Duration::ZERO);
                let _ = manager.report(task, crate::shard::Outcome::Done);
            }
            let _ = manager.stats();
        }
    }
    let _ = store.recover_dead_clients();
}

/// The data of a real batch object (an encapsulated IPC message of
/// `sample_batch`'s rows): the seed of the `ipc_object` target. Its first
/// byte is 0xFF, which the target reads as the row count, so the seed's
/// metadata disagrees with it at first; the fuzzer finds the way from there.
pub fn sample_message() -> Vec<u8> {
    let path = scratch("sample-store");
    let _ = std::fs::remove_file(&path);
    let config = StoreConfig::at_path(&path).capacity(1 << 20).max_objects(16).prefault(false);
    let store = Store::create(config).expect("a scratch store");
    let _ = std::fs::remove_file(&path);
    let mut writer = BatchWriter::new(&store, sample_batch().schema()).expect("a writer");
    let id = ObjectId::sequential(1, 0, 0);
    writer.put_batch(id, &sample_batch()).expect("put");
    let view = store.get(id, Duration::ZERO).expect("get").expect("sealed");
    view.data().to_vec()
}

/// IPC bytes inside an object: the input becomes the data of a batch object
/// whose metadata names a real schema; decoding must give a batch or an
/// error. (The first byte picks the row count the metadata claims.)
pub fn ipc_object(data: &[u8]) {
    static STORE: OnceLock<Option<(Store, u64)>> = OnceLock::new();
    let Some((store, fingerprint)) = STORE.get_or_init(|| {
        let path = scratch("ipc-store");
        let _ = std::fs::remove_file(&path);
        let config = StoreConfig::at_path(&path).capacity(4 << 20).max_objects(256).prefault(false);
        let store = Store::create(config).ok()?;
        let _ = std::fs::remove_file(&path); // the mapping stays; nothing is left behind
        let writer = BatchWriter::new(&store, sample_batch().schema()).ok()?;
        Some((store, writer.fingerprint()))
    }) else {
        return;
    };
    let rows = data.first().copied().unwrap_or(0) as u64;
    let mut meta = [0u8; 32];
    meta[..4].copy_from_slice(b"QVRB");
    meta[4] = 1;
    meta[8..16].copy_from_slice(&fingerprint.to_le_bytes());
    meta[24..32].copy_from_slice(&rows.to_le_bytes());
    let id = ObjectId::random();
    let Ok(mut builder) = store.create_object(id, data.len() as u64, &meta) else { return };
    builder.data_mut().copy_from_slice(data);
    if builder.seal().is_err() {
        return;
    }
    let mut reader = BatchReader::new(store);
    if let Ok(Some(batch)) = reader.get_batch(id, Duration::ZERO) {
        // Touch every value, as a consumer would.
        for column in batch.columns() {
            let _ = arrow_array::Array::to_data(column.as_ref()).validate_full();
        }
    }
    let _ = store.delete(id);
}
