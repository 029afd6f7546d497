//! Arrow layer benchmarks, each beside its baseline in the same run:
//!
//! - `arrow/put/SIZE`: encode a batch into a new object and seal it (and
//!   delete it), beside `arrow/memcpy/SIZE`, copying the same bytes;
//! - `arrow/get/SIZE`: get the object and decode it zero-copy; this must
//!   stay nearly flat as batches grow;
//!
//! `arrow/pipeline/*` (producer and consumer processes of `quiver bench`)
//! is in the `quiver-cli` crate, whose binary it runs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::{BatchReader, BatchWriter, ObjectId, Store, StoreConfig};

const SIZES: [(&str, usize); 4] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)];

/// A batch of about `bytes` bytes: two 8-byte columns, as `quiver bench` makes.
fn batch(bytes: usize) -> RecordBatch {
    let rows = (bytes / 16).max(1);
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let value: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)));
    RecordBatch::try_from_iter([("seq", seq), ("value", value)]).unwrap()
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn put_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("arrow");
    let name = format!("bench-arrow-{}", std::process::id());
    let store = Store::create(StoreConfig::new(&name).capacity(128 << 20)).unwrap();
    let _cleanup = Cleanup(store.path().to_path_buf());
    for (label, size) in SIZES {
        let batch = batch(size);
        let bytes = batch.get_array_memory_size();
        group.throughput(Throughput::Bytes(bytes as u64));
        let mut writer = BatchWriter::new(&store, batch.schema()).unwrap();
        let id = ObjectId::sequential(1, 0, 0);

        let source: Vec<u8> = vec![7; bytes];
        let mut dest = vec![0u8; bytes + 4096];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| {
                dest[64..64 + bytes].copy_from_slice(black_box(&source));
                black_box(&dest);
            })
        });
        group.bench_function(BenchmarkId::new("put", label), |b| {
            b.iter(|| {
                writer.put_batch(id, black_box(&batch)).unwrap();
                store.delete(id).unwrap();
            })
        });
        writer.put_batch(id, &batch).unwrap();
        let mut reader = BatchReader::new(&store);
        group.bench_function(BenchmarkId::new("get", label), |b| {
            b.iter(|| {
                let decoded = reader.get_batch(id, Duration::ZERO).unwrap().unwrap();
                black_box(decoded.num_rows());
            })
        });
        store.delete(id).unwrap();
    }
    group.finish();
}

criterion_group!(benches, put_get);
criterion_main!(benches);
