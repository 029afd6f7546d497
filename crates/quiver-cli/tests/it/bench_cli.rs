//! `quiver bench`, run as users run it: its JSON report, over the store and
//! over the socket baseline, with several consumers.

use crate::common::{run_quiver, LONG};

fn bench(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["bench", "--json", "--count", "300", "--batch-bytes", "4096"];
    args.extend_from_slice(extra);
    let out = run_quiver(&args, LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(report: &serde_json::Value, transport: &str, consumers: u64) {
    assert_eq!(report["transport"], transport);
    assert_eq!(report["consumers"], consumers);
    assert_eq!(report["batches"], 300);
    assert_eq!(report["batch_rows"], 256);
    assert!(report["batch_bytes"].as_u64().unwrap() >= 4096);
    for key in ["batches_per_s", "gb_per_s", "latency_us_p50", "latency_us_p99"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key} in {report}");
    }
    assert!(report["latency_us_p50"].as_f64() <= report["latency_us_p99"].as_f64());
}

#[test]
fn quiver_bench_reports_the_shared_memory_pipeline() {
    check(&bench(&["--consumers", "2"]), "shared-memory", 2);
    // A window smaller than the run, and spinning consumers.
    check(&bench(&["--window-bytes", "65536", "--spin-us", "20"]), "shared-memory", 1);
}

#[test]
fn quiver_bench_reports_the_socket_baseline() {
    check(&bench(&["--baseline", "socket", "--consumers", "2"]), "unix-socket", 2);
}

#[test]
fn quiver_bench_refuses_nonsense() {
    let out = run_quiver(&["bench", "--consumers", "0", "--count", "1"], LONG);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--consumers"));
}

#[test]
fn quiver_bench_reports_the_stream_pipeline_with_the_consumers_backlog() {
    let report = bench(&["--stream", "--consumers", "2", "--window-bytes", "65536"]);
    check(&report, "stream", 2);
    assert!(report["backlog_p99"].as_f64().unwrap() >= report["backlog_p50"].as_f64().unwrap());
    let paced = bench(&["--stream", "--rate", "5000"]);
    check(&paced, "stream", 1);
}

/// `--no-copy` runs twice, filling the same values into every batch: once
/// into an ordinary batch then appended, once in place. Its consumers check
/// the values of every batch, so a run that passes moved them all intact.
#[test]
fn quiver_bench_no_copy_runs_both_paths_and_the_consumers_check_every_batch() {
    for mode in [&[][..], &["--stream"][..]] {
        let mut args = vec!["bench", "--json", "--count", "300", "--batch-bytes", "4096", "--no-copy"];
        args.extend_from_slice(mode);
        args.extend_from_slice(&["--consumers", "2", "--window-bytes", "65536"]);
        let out = run_quiver(&args, LONG);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reports: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(reports.len(), 2, "{reports:?}");
        let transport = if mode.is_empty() { "shared-memory" } else { "stream" };
        for (report, publish) in reports.iter().zip(["fill-then-copy", "no-copy"]) {
            check(report, transport, 2);
            assert_eq!(report["publish"], publish);
        }
    }
}
