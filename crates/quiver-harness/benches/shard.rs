//! Shard manager benchmarks:
//!
//! - `shard/get_report/PROCESSES`: PROCESSES member processes of one group
//!   take tasks (one-batch shards) and report them done as fast as they
//!   can, without reading the batches: the manager's own cost per task,
//!   including the commit and the retention that frees each batch. The
//!   time reported is per task, from the members' own clocks (process
//!   start-up is not counted). Target: at least 200,000 pairs per second
//!   from one process.
//! - `shard/checkpoint/10000`: a checkpoint of a group holding 10,000
//!   tasks, written atomically (fsync, rename, fsync of the directory)
//!   into a temporary directory. Target: under 50 ms.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::{ShardConfig, ShardManager, ShardSize, Store, StoreConfig, Stream, StreamConfig};

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tiny() -> RecordBatch {
    RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1i64])) as ArrayRef)]).unwrap()
}

/// A store holding a closed one-partition stream of `batches` one-row batches.
fn filled(name: &str, batches: u64) -> (Store, Stream, Cleanup) {
    let store = Store::create(StoreConfig::new(name).capacity(256 << 20).max_objects(batches + 1024)).unwrap();
    let cleanup = Cleanup(store.path().to_path_buf());
    let batch = tiny();
    let stream = Stream::create(&store, StreamConfig::new("s", batch.schema()).group("g")).unwrap();
    let mut producer = stream.producer().unwrap();
    for _ in 0..batches {
        producer.append(&batch).unwrap();
    }
    stream.close().unwrap();
    (store, stream, cleanup)
}

fn get_report(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard/get_report");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for processes in [1u32, 2, 4] {
        group.bench_function(BenchmarkId::from_parameter(processes), |b| {
            b.iter_custom(|iters| {
                let tasks = iters.max(40_000);
                let name = format!("bench-shard-{}-{processes}", std::process::id());
                let (_store, _stream, _cleanup) = filled(&name, tasks);
                let children: Vec<_> = (0..processes)
                    .map(|_| {
                        Command::new(env!("CARGO_BIN_EXE_quiver-harness"))
                            .args(["shard-worker", "--store", &name, "--stream", "s", "--group", "g"])
                            .args(["--shard-size", "1", "--no-read"])
                            .stdout(Stdio::piped())
                            .spawn()
                            .expect("start a shard worker")
                    })
                    .collect();
                let mut done = 0u64;
                let mut slowest = 0f64;
                for child in children {
                    let out = child.wait_with_output().unwrap();
                    assert!(out.status.success(), "a shard worker failed");
                    let text = String::from_utf8_lossy(&out.stdout);
                    let report: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
                    done += report["tasks"].as_u64().unwrap();
                    slowest = slowest.max(report["seconds"].as_f64().unwrap());
                }
                assert_eq!(done, tasks, "every task done exactly once");
                Duration::from_secs_f64(slowest).mul_f64(iters as f64 / tasks as f64)
            })
        });
    }
    group.finish();
}

fn checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard/checkpoint");
    group.sample_size(20);
    let name = format!("bench-shard-ckpt-{}", std::process::id());
    let (_store, stream, _cleanup) = filled(&name, 10_000);
    let config = ShardConfig::new().shard_size(ShardSize::Batches(1));
    let mut manager = ShardManager::join(&stream, "g", config).unwrap();
    let mut held = Vec::new();
    while let Some(task) = manager.get_task().unwrap().task() {
        held.push(task);
    }
    assert_eq!(held.len(), 10_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.qvck");
    group.bench_function(BenchmarkId::from_parameter(10_000), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let written = manager.checkpoint(&path).unwrap();
                assert_eq!(written.doing.len(), 10_000);
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, get_report, checkpoint);
criterion_main!(benches);
