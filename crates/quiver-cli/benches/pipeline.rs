//! `arrow/pipeline/TRANSPORT/SIZE`: a producer process to a consumer
//! process through the store (parking or spinning consumer), beside the same
//! batches as Arrow IPC over a Unix socket. Each sample runs `quiver bench
//! --count N --json` and takes the time it reports (process start-up and
//! store creation are not counted).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The batch `quiver bench --batch-bytes bytes` sends: two 8-byte columns.
fn batch(bytes: usize) -> RecordBatch {
    let rows = (bytes / 16).max(1);
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let value: ArrayRef = Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)));
    RecordBatch::try_from_iter([("seq", seq), ("value", value)]).expect("two columns of one length")
}

/// Runs `quiver bench` for `count` batches and returns the time it reports.
fn quiver_bench(count: u64, bytes: usize, extra: &[&str]) -> Duration {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["bench", "--json", "--count", &count.to_string(), "--batch-bytes", &bytes.to_string()])
        .args(extra)
        .output()
        .expect("run quiver bench");
    assert!(out.status.success(), "quiver bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Duration::from_secs_f64(report["seconds"].as_f64().unwrap())
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("arrow/pipeline");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    for (label, size) in [("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let bytes = batch(size).get_array_memory_size();
        group.throughput(Throughput::Bytes(bytes as u64));
        let transports: [(&str, &[&str]); 3] =
            [("shm_park", &[]), ("shm_spin", &["--spin-us", "100"]), ("socket", &["--baseline", "socket"])];
        for (transport, extra) in transports {
            group.bench_function(BenchmarkId::new(transport, label), |b| {
                // At least a few hundred batches per run, so that the fixed
                // costs of a run stay small beside the batches.
                b.iter_custom(|iters| {
                    let count = iters.max(200);
                    quiver_bench(count, size, extra).mul_f64(iters as f64 / count as f64)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
