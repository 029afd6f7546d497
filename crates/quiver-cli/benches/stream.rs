//! Stream benchmarks, each beside its baseline in the same run:
//!
//! - `stream/append_poll/SIZE/CONSUMERS`: a producer process appends to a
//!   one-partition stream and each consumer process (the one member of its
//!   own group) polls every batch, committing as it goes; retention frees
//!   what every group committed and `Block` back-pressure holds the producer
//!   to the store's size. Beside it, `stream/raw_pipeline/SIZE/CONSUMERS`
//!   moves the same batches as raw objects (`quiver bench` without
//!   `--stream`: the producer tracks the consumers' progress itself). The
//!   target: the stream costs at most 20% of the raw pipeline's throughput.
//! - `stream/latency_at_rate/64KiB/CONSUMERS`: the producer appends at a
//!   steady 2,000 batches per second; the time reported is the consumers'
//!   median append-to-read latency (their lag in time), and the run prints
//!   their backlog in batches.
//!
//! Each sample runs `quiver bench --json` and takes the time it reports
//! (process start-up and store creation are not counted).

use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [(&str, usize, u64); 3] = [("1KiB", 1 << 10, 4000), ("64KiB", 64 << 10, 1000), ("1MiB", 1 << 20, 200)];
const CONSUMERS: [u32; 3] = [1, 2, 4];

/// Runs `quiver bench` and returns its JSON report.
fn quiver_bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["bench", "--json"])
        .args(args)
        .output()
        .expect("run quiver bench");
    assert!(out.status.success(), "quiver bench failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("quiver bench prints JSON")
}

fn append_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream");
    group.sample_size(10).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(1));
    for (label, size, min_count) in SIZES {
        for consumers in CONSUMERS {
            let (size_arg, consumers_arg) = (size.to_string(), consumers.to_string());
            for (name, extra) in [("append_poll", &["--stream"][..]), ("raw_pipeline", &[][..])] {
                let id = BenchmarkId::new(format!("{name}/{label}"), consumers);
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        // Enough batches per run that its fixed costs stay small.
                        let count = iters.max(min_count);
                        let count_arg = count.to_string();
                        let mut args = vec!["--count", &count_arg, "--batch-bytes", &size_arg];
                        args.extend(["--consumers", &consumers_arg]);
                        args.extend(extra);
                        let report = quiver_bench(&args);
                        Duration::from_secs_f64(report["seconds"].as_f64().unwrap())
                            .mul_f64(iters as f64 / count as f64)
                    })
                });
            }
        }
    }
    group.finish();
}

fn latency_at_rate(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream/latency_at_rate");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    for consumers in CONSUMERS {
        let consumers_arg = consumers.to_string();
        let mut backlog = (0.0f64, 0.0f64);
        group.bench_function(BenchmarkId::new("64KiB", consumers), |b| {
            b.iter_custom(|iters| {
                let args = ["--stream", "--rate", "2000", "--count", "1000", "--consumers", &consumers_arg];
                let report = quiver_bench(&args);
                backlog = (report["backlog_p50"].as_f64().unwrap(), report["backlog_p99"].as_f64().unwrap());
                Duration::from_secs_f64(report["latency_us_p50"].as_f64().unwrap() / 1e6).mul_f64(iters as f64)
            })
        });
        eprintln!(
            "stream/latency_at_rate/64KiB/{consumers}: backlog p50 {:.0}, p99 {:.0} batches",
            backlog.0, backlog.1
        );
    }
    group.finish();
}

criterion_group!(benches, append_poll, latency_at_rate);
criterion_main!(benches);
