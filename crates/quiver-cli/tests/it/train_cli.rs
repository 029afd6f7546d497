//! `quiver train` and `quiver predict` as users run them, and the shared
//! model of `quiver demo --mode shared`: one model every worker process
//! trains, beside the average of separate models.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use quiver_train::{LinearData, Loss, SgdSettings};
use quiver_train::{SavedModel, SgdRegressor};

use crate::common::{run_quiver, TestStore, LONG};

/// `y = 4 + 3a - 2b + noise` with integer features (as a CSV of whole
/// numbers becomes), in batches of 50 rows, written as an Arrow IPC file.
fn write_data(path: &Path, rows: usize, seed: u64) -> Vec<RecordBatch> {
    let mut data = LinearData::new(seed);
    let mut batches = Vec::new();
    for first in (0..rows).step_by(50) {
        let n = 50.min(rows - first);
        let noise_batch = data.batch(n);
        let noise = noise_batch.column_by_name("y").unwrap().as_primitive::<Float64Type>();
        let a: Vec<i64> = (0..n).map(|i| ((first + i) * 7 % 11) as i64).collect();
        let b: Vec<i64> = (0..n).map(|i| ((first + i) * 5 % 9) as i64 - 4).collect();
        // Noise of mean 0: the demo's y less its own line.
        let x = noise_batch.column_by_name("x").unwrap().as_primitive::<Float64Type>();
        let y: Vec<f64> = (0..n)
            .map(|i| 4.0 + 3.0 * a[i] as f64 - 2.0 * b[i] as f64 + (noise.value(i) - 4.0 - 3.0 * x.value(i)))
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("a", Arc::new(Int64Array::from(a))),
            ("b", Arc::new(Int64Array::from(b))),
            ("y", Arc::new(arrow_array::Float64Array::from(y))),
        ];
        batches.push(RecordBatch::try_from_iter(columns).unwrap());
    }
    let file = std::fs::File::create(path).unwrap();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    batches
}

fn ok(args: &[&str]) -> String {
    let out = run_quiver(args, LONG);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The batches of `file` as a closed stream of `t`, declaring group `g`.
fn produce(t: &TestStore, stream: &str, file: &Path) {
    let file = file.display().to_string();
    ok(&["produce", "--store", &t.name, "--stream", stream, "--from", &file, "--groups", "g", "--close"]);
}

#[test]
fn train_save_load_predict_equals_training_in_memory_and_resume_equals_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.arrow"), dir.path().join("second.arrow"));
    let mut batches = write_data(&first, 3_000, 1);
    batches.extend(write_data(&second, 2_000, 2));
    let t = TestStore::new("train-cli");
    produce(&t, "first", &first);
    produce(&t, "second", &second);
    let model = dir.path().join("model.json");
    let m = model.display().to_string();
    let flags = ["--features", "a,b", "--target", "y", "--model", &m, "--loss", "huber", "--epsilon", "0.5"];
    let train = |stream: &str, extra: &[&str]| {
        let mut args = vec!["train", "--store", &t.name, "--stream", stream, "--group", "g"];
        args.extend(flags);
        args.extend(extra);
        ok(&args)
    };
    let report = train("first", &[]);
    assert!(report.contains("trained 3000 rows"), "{report}");
    // The same in memory, batch by batch in the stream's order.
    let settings = SgdSettings { loss: Loss::Huber { epsilon: 0.5 }, ..SgdSettings::default() };
    let mut memory = SgdRegressor::with_settings(settings).unwrap();
    for b in &batches[..60] {
        memory.partial_fit(b, &["a", "b"], "y").unwrap();
    }
    assert_eq!(SavedModel::load(&model).unwrap().model, memory, "the file holds the model trained in memory");
    // Resumed on the rest, it is the model of one run over everything.
    train("second", &["--resume"]);
    for b in &batches[60..] {
        memory.partial_fit(b, &["a", "b"], "y").unwrap();
    }
    let saved = SavedModel::load(&model).unwrap();
    assert_eq!(saved.model, memory, "resume equals an uninterrupted run");
    assert_eq!(saved.features, ["a", "b"]);
    // Predictions for a file, with the score of its labels.
    let out = dir.path().join("out.arrow");
    let report =
        ok(&["predict", "--model", &m, "--from", &second.display().to_string(), "--to", &out.display().to_string()]);
    assert!(report.contains("wrote 2000 predictions") && report.contains("R²"), "{report}");
    let imported = quiver::arrow::import::read_path(&out, 1 << 16).unwrap();
    let mut predicted = Vec::new();
    for b in &imported.batches {
        predicted
            .extend(b.column_by_name("prediction").unwrap().as_primitive::<Float64Type>().values().iter().copied());
    }
    let expected: Vec<f64> = batches[60..].iter().flat_map(|b| memory.predict(b, &["a", "b"]).unwrap()).collect();
    assert_eq!(predicted, expected);
    let score = memory.score(&batches[60], &["a", "b"], "y").unwrap();
    assert!(score.r2 > 0.9, "{score:?}");
    // An existing model file is not replaced by a fresh start unawares.
    let mut again = vec!["train", "--store", &t.name, "--stream", "second", "--group", "g2"];
    again.extend(flags);
    let refused = run_quiver(&again, LONG);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume to go on from it"), "{refused:?}");
    // --resume of a model of other columns is refused, clearly.
    let mut args = vec!["train", "--store", &t.name, "--stream", "second", "--group", "g"];
    args.extend(["--features", "a", "--target", "y", "--model", &m, "--resume"]);
    let refused = run_quiver(&args, LONG);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is a model of"), "{refused:?}");
}

#[test]
fn train_with_workers_shares_one_model_and_refuses_what_is_not_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.arrow");
    let batches = write_data(&file, 12_000, 3);
    let t = TestStore::new("train-workers");
    produce(&t, "s", &file);
    let model = dir.path().join("model.json");
    let m = model.display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g", "--features", "a,b", "--target", "y"];
    let report = ok(&[&args[..], &["--model", &m, "--workers", "3"]].concat());
    assert!(report.contains("12000 rows in the model"), "{report}");
    let saved = SavedModel::load(&model).unwrap();
    assert_eq!(saved.model.rows_seen(), 12_000, "every row trained once, by one of the workers");
    // Near one model trained on every row in order.
    let mut in_order = SgdRegressor::new();
    for b in &batches {
        in_order.partial_fit(b, &["a", "b"], "y").unwrap();
    }
    let (got, want) = (saved.model.coef(), in_order.coef());
    assert!((got[0] - want[0]).abs() < 0.1 && (got[1] - want[1]).abs() < 0.1, "{saved:?} {in_order:?}");
    assert!((saved.model.intercept() - in_order.intercept()).abs() < 0.1, "{saved:?} {in_order:?}");
    // A feature that is not a number fails the worker and the command.
    let bad = run_quiver(&["train", "--store", &t.name, "--stream", "s", "--group", "h", "--features", "nope"], LONG);
    assert!(!bad.status.success());
    let m2 = dir.path().join("m2.json").display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g2", "--features", "a", "--target", "nope"];
    let missing = run_quiver(&[&args[..], &["--model", &m2]].concat(), LONG);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no column \"nope\""), "{missing:?}");
}

#[test]
fn the_shared_demo_ends_with_one_model_near_the_truth_and_the_in_order_model() {
    let out = run_quiver(&["demo", "--mode", "shared", "--json"], LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 30_000);
    assert_eq!(v["ok"], true, "{v}");
    let (shared, in_order) = (&v["shared"], &v["in_order"]);
    assert_eq!(shared["rows"], 30_000);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    for (key, truth) in [("intercept", 4.0), ("slope", 3.0)] {
        assert!((f(shared, key) - truth).abs() <= 0.1, "{key}: {v}");
        // Scheduling moves the shared model around the in-order one (0.054
        // seen on a loaded machine): the truth's bound.
        assert!((f(shared, key) - f(in_order, key)).abs() <= 0.1, "{key}: {v}");
    }
}

#[test]
fn predict_refuses_a_file_that_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"format\": \"something else\"}").unwrap();
    let data = dir.path().join("d.arrow");
    write_data(&data, 100, 4);
    let out =
        run_quiver(&["predict", "--model", &bad.display().to_string(), "--from", &data.display().to_string()], LONG);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a quiver model"), "{out:?}");
}

#[test]
fn bench_train_reports_rows_per_second_for_each_worker_count() {
    let report = ok(&["bench-train", "--rows", "20000", "--rounds", "1", "--workers", "0,2"]);
    assert!(report.lines().any(|l| l.starts_with("alone")), "{report}");
    assert!(report.lines().any(|l| l.starts_with("2 ")), "{report}");
}

/// Processes whose command line has `a` and `b` among its arguments.
fn processes_with(a: &str, b: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&c| c == 0).collect();
        if args.contains(&a.as_bytes()) && args.contains(&b.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn train_with_workers_on_an_open_stream_stops_when_told_and_its_workers_follow_a_dead_parent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.arrow");
    write_data(&file, 3_000, 5);
    let t = TestStore::new("train-open");
    let f = file.display().to_string();
    // Not closed: the workers wait for more.
    ok(&["produce", "--store", &t.name, "--stream", "s", "--from", &f, "--groups", "g"]);
    let m = dir.path().join("m.json").display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g", "--features", "a,b", "--target", "y"];
    let report = ok(&[&args[..], &["--model", &m, "--workers", "2", "--seconds", "2"]].concat());
    assert!(report.contains("3000 rows in the model"), "{report}");
    assert_eq!(SavedModel::load(Path::new(&m)).unwrap().model.rows_seen(), 3_000);
    let deadline = std::time::Instant::now() + LONG;
    while !processes_with("train-worker", &t.name).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the workers outlived --seconds");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The command killed outright: its workers notice and stop.
    let m2 = dir.path().join("m2.json").display().to_string();
    let mut train = crate::common::quiver(&[&args[..], &["--model", &m2, "--workers", "2"]].concat());
    let deadline = std::time::Instant::now() + LONG;
    while processes_with("train-worker", &t.name).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no workers started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    train.kill();
    while !processes_with("train-worker", &t.name).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the workers outlived their command");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_worker_killed_by_a_signal_is_replaced_and_no_row_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.arrow"), dir.path().join("second.arrow"));
    write_data(&first, 3_000, 6);
    write_data(&second, 3_000, 7);
    let t = TestStore::new("train-replace");
    let f = first.display().to_string();
    ok(&["produce", "--store", &t.name, "--stream", "s", "--from", &f, "--groups", "g"]);
    let m = dir.path().join("m.json").display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g", "--features", "a,b", "--target", "y"];
    let mut train = crate::common::quiver(&[&args[..], &["--model", &m, "--workers", "2"]].concat());
    let store = quiver::Store::open(&t.name).unwrap();
    let shared = quiver_train::SharedModel::open(&store, "train/s/g", LONG).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while shared.rows_seen() < 3_000 || processes_with("train-worker", &t.name).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the first rows were not trained");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let victims = processes_with("train-worker", &t.name);
    let _ = std::process::Command::new("kill").args(["-9", &victims[0].to_string()]).status();
    while processes_with("train-worker", &t.name).iter().filter(|p| !victims.contains(p)).count() < 1 {
        assert!(std::time::Instant::now() < deadline, "no replacement started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = second.display().to_string();
    ok(&["produce", "--store", &t.name, "--stream", "s", "--from", &s, "--close"]);
    assert!(train.wait(LONG).success(), "the command finished its stream");
    let saved = SavedModel::load(Path::new(&m)).unwrap();
    assert!(saved.model.rows_seen() >= 6_000, "every row trained at least once: {}", saved.model.rows_seen());
}

#[test]
fn a_shared_model_held_by_killed_processes_is_freed_once_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.arrow");
    write_data(&file, 1_000, 8);
    let t = TestStore::new("train-dead-holder");
    let f = file.display().to_string();
    ok(&["produce", "--store", &t.name, "--stream", "s", "--from", &f, "--groups", "g"]);
    let m = dir.path().join("m.json").display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g", "--features", "a,b", "--target", "y"];
    let mut train = crate::common::quiver(&[&args[..], &["--model", &m, "--workers", "1"]].concat());
    let store = quiver::Store::open(&t.name).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    let worker = loop {
        let shared = quiver_train::SharedModel::try_open(&store, "train/s/g").unwrap();
        let workers = processes_with("train-worker", &t.name);
        if shared.is_some_and(|s| s.rows_seen() == 1_000) && workers.len() == 1 {
            break workers[0];
        }
        assert!(std::time::Instant::now() < deadline, "the worker trained nothing");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Both killed outright: the command first, so nothing replaces the worker.
    train.kill();
    let _ = std::process::Command::new("kill").args(["-9", &worker.to_string()]).status();
    while !processes_with("train-worker", &t.name).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the worker lives on");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Model objects (ID kind M) in the table, freed or not yet.
    let models = || store.list().unwrap().iter().filter(|o| o.id.as_bytes()[0] == b'M').count();
    assert_eq!(models(), 1);
    quiver_train::SharedModel::remove(&store, "train/s/g").unwrap();
    assert!(quiver_train::SharedModel::try_open(&store, "train/s/g").unwrap().is_none(), "gone from the index at once");
    assert_eq!(models(), 1, "held by the dead: not freed yet");
    // The dead holders' references are swept, and the cells freed (a
    // process whose command line is gone may still be exiting: its
    // liveness lock goes last, so the sweep may need a second look).
    loop {
        store.recover_dead_clients().unwrap();
        if models() == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the model was never freed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Issue 25: a worker of `train --workers` stopped with SIGSTOP used to
/// keep the command waiting for ever. Its shard goes to the other worker
/// when its (renewed) lease runs out; once every other worker has ended,
/// the command kills it, says so, and saves a model of every row.
#[test]
fn a_stopped_worker_is_noticed_and_the_command_ends() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.arrow");
    // Enough rows that the workers train for seconds: one must be seen
    // (and stopped) before the others finish, even on a fast machine.
    write_data(&file, 600_000, 5);
    let t = TestStore::new("train-stopped-worker");
    produce(&t, "s", &file);
    let m = dir.path().join("model.json").display().to_string();
    let args = ["train", "--store", &t.name, "--stream", "s", "--group", "g", "--features", "a,b", "--target", "y"];
    let mut train = crate::common::quiver(&[&args[..], &["--model", &m, "--workers", "2"]].concat());
    let deadline = std::time::Instant::now() + LONG;
    let worker = loop {
        let found: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("train-worker") && c.contains(&t.name)
                })
            })
            .collect();
        if let Some(&pid) = found.first() {
            break pid;
        }
        assert!(train.child.try_wait().unwrap().is_none(), "the command ended before a worker was seen");
        assert!(std::time::Instant::now() < deadline, "no worker started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let pid = rustix::process::Pid::from_raw(worker as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let status = train.wait(LONG);
    // Whatever happened, the stopped worker must not outlive the test.
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    assert!(status.success(), "the command failed with a stopped worker: {status:?}");
    let saved = SavedModel::load(Path::new(&m)).unwrap();
    assert!(saved.model.rows_seen() >= 600_000, "{} rows in the model", saved.model.rows_seen());
}
