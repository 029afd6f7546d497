//! Store benchmarks, each beside its baseline in the same run:
//!
//! - `store/cycle/SIZE`: create, fill, seal, get, release, delete in one
//!   process, beside `store/memcpy/SIZE` (copying the same bytes);
//! - `store/resident/N`: a 1 KiB cycle with N other objects in the store
//!   (10 vs 1,000,000: the table's cost must not grow).
//!
//! `store/wake/*` (a hand-off between two processes) is in the
//! `quiver-harness` crate, whose helper process it needs.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::{ObjectId, Store, StoreConfig};

const SIZES: [(&str, usize); 4] = [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20), ("16MiB", 16 << 20)];

fn unique(tag: &str) -> String {
    format!("bench-{tag}-{}", std::process::id())
}

/// Removes the store file when dropped.
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let name = unique("cycle");
    let store = Store::create(StoreConfig::new(&name).capacity(64 << 20)).unwrap();
    let _cleanup = Cleanup(store.path().to_path_buf());
    let id = ObjectId::sequential(1, 0, 0);
    for (label, size) in SIZES {
        let source = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        // The destination starts 64 bytes into its buffer, as a payload starts
        // after its block header: source and destination at the same offset
        // within a page make copies of some sizes several times slower
        // (4K aliasing), which would flatter the store.
        let mut dest = vec![0u8; size + 4096];
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| {
                dest[64..64 + size].copy_from_slice(black_box(&source));
                black_box(&dest);
            })
        });
        group.bench_function(BenchmarkId::new("cycle", label), |b| {
            b.iter(|| {
                let mut builder = store.create_object(id, size as u64, &[]).unwrap();
                builder.data_mut().copy_from_slice(black_box(&source));
                builder.seal().unwrap();
                let view = store.get(id, Duration::ZERO).unwrap().unwrap();
                black_box(view.data()[size - 1]);
                drop(view);
                store.delete(id).unwrap();
            })
        });
    }
    group.finish();
}

fn resident(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let source = vec![0x5Au8; 1024];
    for resident in [10u64, 1_000_000] {
        let name = unique(&format!("resident{resident}"));
        // Resident objects of 64 bytes (one 128-byte block each) plus room to cycle.
        let config = StoreConfig::new(&name).capacity(resident * 128 + (16 << 20)).max_objects(resident + 1024);
        let store = Store::create(config).unwrap();
        let _cleanup = Cleanup(store.path().to_path_buf());
        for i in 0..resident {
            store.create_object(ObjectId::sequential(2, 0, i), 64, &[]).unwrap().seal().unwrap();
        }
        let pinned = quiver::CreateOptions::new().pinned(true);
        let id = ObjectId::sequential(1, 0, 0);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("resident", resident), |b| {
            b.iter(|| {
                let mut builder = store.create_object_with(id, 1024, &[], pinned).unwrap();
                builder.data_mut().copy_from_slice(&source);
                builder.seal().unwrap();
                drop(store.get(id, Duration::ZERO).unwrap().unwrap());
                store.delete(id).unwrap();
            })
        });
        assert_eq!(store.stats().unwrap().objects, resident);
    }
    group.finish();
}

criterion_group!(benches, cycle, resident);
criterion_main!(benches);
