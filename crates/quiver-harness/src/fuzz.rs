//! Entry points for the fuzz targets under `fuzz/` and for the test that
//! replays their regression inputs (`tests/it/fuzz_regressions.rs`). Each
//! takes arbitrary bytes and must return without panicking, whatever they
//! are: errors are the expected outcome for bad bytes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::fixtures::{exercise_store, populate, sample_batch};
use quiver::shard::Checkpoint;
use quiver::store::{ObjectId, OpenConfig, Store, StoreConfig};
use quiver::{BatchReader, BatchWriter};

/// Checkpoint files: parse; whatever parses must write back and parse again
/// to the same value.
pub fn checkpoint_bytes(data: &[u8]) {
    if let Ok(checkpoint) = Checkpoint::from_bytes(data) {
        let again = checkpoint.to_bytes().expect("a parsed checkpoint encodes");
        assert_eq!(Checkpoint::from_bytes(&again).expect("its encoding parses"), checkpoint);
    }
}

/// Model files (`quiver train`'s JSON): parse; whatever parses must train
/// on a batch of its columns (or refuse it), save, and load back equal.
pub fn model_file(data: &[u8]) {
    let Ok(saved) = quiver_train::SavedModel::from_json(data) else { return };
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("m.json");
    saved.save(&path).expect("a model that loads saves");
    assert_eq!(quiver_train::SavedModel::load(&path).expect("and loads back"), saved);
    let columns: Vec<(String, arrow_array::ArrayRef)> = saved
        .features
        .iter()
        .chain([&saved.target])
        .map(|name| (name.clone(), std::sync::Arc::new(arrow_array::Float64Array::from(vec![1.0, -2.0, 3.5])) as _))
        .collect();
    // Repeated names make no batch: nothing to train on.
    let Ok(batch) = arrow_array::RecordBatch::try_from_iter(columns) else { return };
    let mut model = saved.model.clone();
    let features = saved.feature_names();
    if model.partial_fit(&batch, &features, &saved.target).is_ok() {
        let _ = model.predict(&batch, &features);
        let _ = model.score(&batch, &features, &saved.target);
    } else {
        assert_eq!(model, saved.model, "a refused batch changes nothing");
    }
}

/// A model file that loads, for the fuzzer to start from.
pub fn sample_model_file() -> Vec<u8> {
    let mut model = quiver_train::SgdRegressor::new();
    let mut data = quiver_train::LinearData::new(1);
    model.partial_fit(&data.batch(20), &["x"], "y").expect("the demo's rows train");
    let saved = quiver_train::SavedModel::new(model, vec!["x".into()], "y".into());
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("m.json");
    saved.save(&path).expect("it saves");
    std::fs::read(&path).expect("it reads")
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

/// A batch of a fixed-width schema decoded from the reader's cached layout:
/// the reader has verified a good message, and the input becomes the null
/// counts (its first 16 bytes, as two i64) and the body (the rest, repeated)
/// of a message with that same header. Decoding must give a valid batch or
/// an error, as the full decode would.
pub fn cached_layout(data: &[u8]) {
    type Fixed = (Store, Vec<u8>, Vec<u8>, [usize; 2]);
    static FIXED: OnceLock<Option<Fixed>> = OnceLock::new();
    thread_local! {
        static READER: std::cell::RefCell<Option<BatchReader>> = const { std::cell::RefCell::new(None) };
    }
    let Some((store, message, meta, null_counts)) = FIXED.get_or_init(|| {
        let path = scratch("layout-store");
        let _ = std::fs::remove_file(&path);
        let config = StoreConfig::at_path(&path).capacity(4 << 20).max_objects(256).prefault(false);
        let store = Store::create(config).ok()?;
        let _ = std::fs::remove_file(&path);
        let (one, two) = (fixed_batch(1), fixed_batch(2));
        let mut writer = BatchWriter::new(&store, one.schema()).ok()?;
        let (a, b) = (ObjectId::sequential(1, 0, 0), ObjectId::sequential(1, 0, 1));
        writer.put_batch(a, &one).ok()?;
        writer.put_batch(b, &two).ok()?;
        let (va, vb) = (store.get(a, Duration::ZERO).ok()??, store.get(b, Duration::ZERO).ok()??);
        // The two headers differ only in the two columns' null counts.
        let header = 8 + i32::from_le_bytes(va.data().get(4..8)?.try_into().ok()?) as usize;
        let mut at: Vec<usize> = (0..header).filter(|&i| va.data()[i] != vb.data()[i]).map(|i| i & !7).collect();
        at.dedup();
        let null_counts = [*at.first()?, *at.get(1)?];
        let (message, meta) = (va.data().to_vec(), va.metadata().to_vec());
        drop((va, vb));
        let mut reader = BatchReader::new(&store);
        reader.get_batch(a, Duration::ZERO).ok()??;
        READER.with(|r| *r.borrow_mut() = Some(reader));
        Some((store, message, meta, null_counts))
    }) else {
        return;
    };
    let mut bytes = message.clone();
    if let Some(counts) = data.get(..16) {
        bytes[null_counts[0]..null_counts[0] + 8].copy_from_slice(&counts[..8]);
        bytes[null_counts[1]..null_counts[1] + 8].copy_from_slice(&counts[8..]);
        let header = 8 + i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        for (byte, value) in bytes[header..].iter_mut().zip(data[16..].iter().cycle()) {
            *byte = *value;
        }
    }
    let id = ObjectId::random();
    let Ok(mut builder) = store.create_object(id, bytes.len() as u64, meta) else { return };
    builder.data_mut().copy_from_slice(&bytes);
    if builder.seal().is_err() {
        return;
    }
    READER.with(|r| {
        let mut r = r.borrow_mut();
        let reader = r.get_or_insert_with(|| BatchReader::new(store));
        if let Ok(Some(batch)) = reader.get_batch(id, Duration::ZERO) {
            for column in batch.columns() {
                assert!(arrow_array::Array::to_data(column.as_ref()).validate_full().is_ok(), "an invalid array");
            }
        }
    });
    let _ = store.delete(id);
}

/// 40 rows of a fixed-width schema (Int64, nullable Float64, nullable
/// Boolean) with a null every `every` rows in the nullable columns.
fn fixed_batch(every: usize) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
    use std::sync::Arc;
    let null = |i: usize| i % (every * 7) == 3;
    let columns: [(&str, ArrayRef); 3] = [
        ("id", Arc::new(Int64Array::from_iter_values(0..40))),
        ("x", Arc::new(Float64Array::from_iter((0..40).map(|i| (!null(i)).then_some(i as f64 * 0.5))))),
        ("ok", Arc::new(BooleanArray::from_iter((0..40).map(|i| (!null(i)).then_some(i % 2 == 0))))),
    ];
    arrow_array::RecordBatch::try_from_iter_with_nullable(columns.map(|(n, a)| (n, a, true))).expect("a valid batch")
}

/// A file given to `quiver produce --from`: read as Arrow IPC (file or
/// stream format) or CSV; whatever reads must validate in full, and each
/// batch must go into a store object and come back out equal, as an append
/// and a poll would take it.
pub fn import_file(data: &[u8]) {
    static STORE: OnceLock<Option<Store>> = OnceLock::new();
    let Ok(imported) = quiver::arrow::import::read_bytes(data, 7) else { return };
    for batch in &imported.batches {
        assert_eq!(batch.schema(), imported.schema, "every batch has the file's schema");
        for column in batch.columns() {
            arrow_array::Array::to_data(column.as_ref()).validate_full().expect("an imported batch is valid");
        }
    }
    let Some(store) = STORE.get_or_init(|| {
        let path = scratch("import-store");
        let _ = std::fs::remove_file(&path);
        let config = StoreConfig::at_path(&path).capacity(4 << 20).max_objects(64).prefault(false);
        let store = Store::create(config).ok()?;
        let _ = std::fs::remove_file(&path);
        Some(store)
    }) else {
        return;
    };
    // A schema the store cannot carry is refused here, as an append would.
    let Ok(mut writer) = BatchWriter::new(store, imported.schema.clone()) else { return };
    let mut reader = BatchReader::new(store);
    for batch in &imported.batches {
        let id = ObjectId::random();
        if writer.put_batch(id, batch).is_ok() {
            let back = reader.get_batch(id, Duration::ZERO).expect("a batch just written decodes");
            assert_eq!(back.as_ref(), Some(batch), "a batch comes back out as it went in");
            let _ = store.delete(id);
        }
    }
    let _ = store.delete(ObjectId::schema(writer.fingerprint()));
}

/// Seed files for [`import_file`]: a varied batch (nested, temporal,
/// boolean, nullable columns) in the Arrow file format and in the stream
/// format, and a CSV file, as `(name, bytes)`.
pub fn sample_import_files() -> Vec<(&'static str, Vec<u8>)> {
    let batches = [crate::fixtures::varied_batch(0), crate::fixtures::varied_batch(5)];
    let schema = batches[0].schema();
    let mut file = arrow_ipc::writer::FileWriter::try_new(Vec::new(), &schema).expect("a file writer");
    let mut stream = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).expect("a stream writer");
    for batch in &batches {
        file.write(batch).expect("write to the file");
        stream.write(batch).expect("write to the stream");
    }
    let file = file.into_inner().expect("finish the file");
    let stream = stream.into_inner().expect("finish the stream");
    let csv = b"id,x,flag,day,note\n1,0.5,true,2024-01-31,\"a,b\"\n-2,,false,2024-02-01,\n3,1e3,,,plain\n".to_vec();
    vec![("seed-file", file), ("seed-stream", stream), ("seed-csv", csv)]
}

/// `count` corruptions of `bytes`, reproducible from `seed`: each flips,
/// overwrites, cuts or duplicates a few bytes, as a damaged disk or a
/// hostile file would.
pub fn mutants(bytes: &[u8], seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = quiver::shm::rand::SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let mut m = bytes.to_vec();
            for _ in 0..=rng.below(3) {
                if m.is_empty() {
                    break;
                }
                let at = rng.below(m.len() as u64) as usize;
                match rng.below(5) {
                    0 => m[at] ^= 1 << rng.below(8),
                    1 => m[at] = rng.next_u64() as u8,
                    2 => m[at] = [0, 0xff, 0x7f, 0x80][rng.below(4) as usize],
                    3 => m.truncate(at),
                    _ => {
                        let end = (at + 1 + rng.below(16) as usize).min(m.len());
                        let piece = m[at..end].to_vec();
                        m.splice(at..at, piece);
                    }
                }
            }
            m
        })
        .collect()
}
