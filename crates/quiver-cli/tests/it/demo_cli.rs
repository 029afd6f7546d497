//! The main job and the data commands, run as users run them: `quiver demo`
//! in both modes (the Plasma SGD example ported: broadcast mode), Ctrl-C in
//! the middle of a demo, and `quiver produce` / `quiver consume` round trips.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};

use crate::common::{quiver, run_quiver, TestStore, LONG};

fn demo(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["demo", "--json"];
    args.extend_from_slice(extra);
    let out = run_quiver(&args, LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn near(v: &serde_json::Value, key: &str, truth: f64) -> bool {
    (v[key].as_f64().unwrap() - truth).abs() <= 0.3
}

#[test]
fn the_demo_broadcasts_the_plasma_example_to_every_consumer() {
    let v = demo(&["--consumers", "3"]);
    assert_eq!(v["mode"], "broadcast");
    assert_eq!(v["rows"], 10_000);
    assert_eq!(v["ok"], true);
    let consumers = v["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 3);
    for c in consumers {
        assert_eq!(c["rows"], 10_000, "{c}");
        assert_eq!(c["checksum"], v["producer_checksum"], "{c}");
        assert!(near(c, "intercept", 4.0) && near(c, "slope", 3.0), "{c}");
        assert!(c["name"].as_str().unwrap().starts_with("consumer-"));
    }
}

#[test]
fn the_shared_demo_splits_the_stream_and_checkpoints_the_group() {
    let t = TestStore::new("demo-ckpt");
    let path = t.path.with_extension("qvck");
    let v = demo(&[
        "--mode",
        "shared",
        "--consumers",
        "2",
        "--batch-rows",
        "5..20",
        "--checkpoint",
        &path.display().to_string(),
    ]);
    assert_eq!(v["mode"], "shared");
    assert_eq!(v["ok"], true);
    let consumers = v["consumers"].as_array().unwrap();
    let rows: u64 = consumers.iter().map(|c| c["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, v["rows"].as_u64().unwrap(), "every row trained on once");
    assert!(near(&v["average"], "intercept", 4.0) && near(&v["average"], "slope", 3.0), "{v}");
    let show = run_quiver(&["checkpoint", "show", &path.display().to_string(), "--json"], LONG);
    let _ = std::fs::remove_file(&path);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let checkpoint: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(checkpoint["group"], "trainers");
    assert_eq!(checkpoint["todo"].as_array().unwrap().len(), 0, "the last checkpoint is of a finished group");
}

#[test]
fn the_demo_refuses_nonsense() {
    for args in [&["demo", "--consumers", "0"][..], &["demo", "--batch-rows", "5..2"], &["demo", "--checkpoint", "x"]] {
        let out = run_quiver(args, LONG);
        assert!(!out.status.success(), "{args:?} was accepted");
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn ctrl_c_stops_every_process_and_removes_the_store() {
    let mut demo = quiver(&["demo", "--rows", "2000000000", "--consumers", "2"]);
    let pid = demo.child.id();
    let store = Path::new("/dev/shm").join(format!("quiver-demo-{pid}"));
    let needle = format!("demo-{pid}");
    let deadline = Instant::now() + LONG;
    while !(store.exists() && processes_mentioning(&needle).len() >= 2) {
        assert!(Instant::now() < deadline, "the demo never started its consumers");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200)); // let it run a little
                                                    // The child is ours and not reaped yet: its pid is still its own.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("a child's pid"),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = demo.wait(LONG);
    assert!(!status.success(), "an interrupted demo does not claim success");
    assert!(!store.exists(), "the store was left in /dev/shm");
    let deadline = Instant::now() + LONG;
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "consumer processes were left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes a file on drop, even if the test fails.
struct Remove(std::path::PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_demo_killed_outright_takes_its_consumers_and_its_store_with_it() {
    let mut demo = quiver(&["demo", "--rows", "2000000000", "--consumers", "2"]);
    let pid = demo.child.id();
    // Removed by the consumers; by the guard too if the test fails.
    let store = Path::new("/dev/shm").join(format!("quiver-demo-{pid}"));
    let _store = Remove(store.clone());
    let needle = format!("demo-{pid}");
    let deadline = Instant::now() + LONG;
    while processes_mentioning(&needle).len() < 2 {
        assert!(Instant::now() < deadline, "the demo never started its consumers");
        std::thread::sleep(Duration::from_millis(10));
    }
    let consumers = processes_mentioning(&needle);
    demo.kill();
    // The kernel kills each consumer as its parent dies (they are reaped by
    // whoever adopts them).
    let deadline = Instant::now() + LONG;
    while consumers.iter().any(|&c| alive(c)) {
        assert!(Instant::now() < deadline, "consumers {consumers:?} outlived their demo");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ... and the first to see its parent gone removed the store.
    while store.exists() {
        assert!(Instant::now() < deadline, "the store of a killed demo was left in /dev/shm");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `signal` to a child process of the test (not reaped yet: its pid
/// is still its own).
fn signal(child: &std::process::Child, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid"), signal)
        .unwrap();
}

/// Waits until `path` exists and `n` processes mention `needle`.
fn wait_for_run(path: &Path, needle: &str, n: usize) {
    let deadline = Instant::now() + LONG;
    while !(path.exists() && processes_mentioning(needle).len() >= n) {
        assert!(Instant::now() < deadline, "the command never started its workers");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until nothing of a run is left: its store, its workers.
fn wait_for_nothing_left(path: &Path, needle: &str) {
    let deadline = Instant::now() + LONG;
    while path.exists() || !processes_mentioning(needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: store {} {}, workers {:?}",
            path.display(),
            path.exists(),
            processes_mentioning(needle)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bench_and_bench_train_stopped_by_a_signal_or_killed_leave_nothing_behind() {
    // `bench` polls no stop flag: SIGTERM kills its workers and removes
    // its store from a thread, and it says so.
    let mut bench = quiver(&["bench", "--seconds", "600", "--consumers", "2"]);
    let store = Path::new("/dev/shm").join(format!("quiver-bench-{}", bench.child.id()));
    let _store = Remove(store.clone());
    wait_for_run(&store, "bench-worker", 2);
    signal(&bench.child, rustix::process::Signal::TERM);
    let status = bench.wait(LONG);
    assert!(!status.success(), "an interrupted bench does not claim success");
    wait_for_nothing_left(&store, "bench-worker");
    // `bench-train` with workers, killed outright: a worker removes the store.
    // Enough rows that its workers train for seconds, few enough for /dev/shm.
    let mut train = quiver(&["bench-train", "--rows", "4000000", "--workers", "2"]);
    let store = Path::new("/dev/shm").join(format!("quiver-bench-train-{}", train.child.id()));
    let _train_store = Remove(store.clone());
    wait_for_run(&store, "train-worker", 2);
    train.kill();
    wait_for_nothing_left(&store, "train-worker");
}

#[test]
fn a_fifo_as_a_model_or_an_input_is_refused_at_once_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    // Nobody ever writes to it: an `open` that blocked would never return.
    for args in [
        vec!["predict", "--model", fifo, "--from", fifo],
        [crate::common::train_args("no-such-store", fifo), vec!["--resume"]].concat(),
        vec!["produce", "--store", "no-such-store", "--stream", "s", "--from", fifo],
        vec!["checkpoint", "show", fifo],
    ] {
        let out = run_quiver(&args, LONG);
        let err = String::from_utf8_lossy(&out.stderr);
        let said = err.contains("FIFO") || err.contains("not a regular file");
        assert!(!out.status.success() && said, "{args:?}: {err}");
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn sample() -> RecordBatch {
    let columns: [(&str, ArrayRef); 4] = [
        ("id", Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(4)]))),
        ("score", Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.25), Some(-1.0)]))),
        ("ok", Arc::new(BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]))),
        ("name", Arc::new(StringArray::from(vec![Some("a"), Some("b, \"quoted\""), Some("c"), None]))),
    ];
    RecordBatch::try_from_iter_with_nullable(columns.map(|(n, a)| (n, a, true))).unwrap()
}

fn read_ipc(path: &Path) -> Vec<RecordBatch> {
    let reader = arrow_ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    reader.map(Result::unwrap).collect()
}

#[test]
fn produce_then_consume_gives_back_the_same_data_for_every_group() {
    let t = TestStore::new("io-roundtrip");
    let dir = tempfile::tempdir().unwrap();
    // An Arrow IPC file in, through the store, to one file per group.
    let input = dir.path().join("in.arrow");
    let batch = sample();
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(std::fs::File::create(&input).unwrap(), &batch.schema()).unwrap();
    writer.write(&batch).unwrap();
    writer.write(&batch.slice(1, 2)).unwrap();
    writer.finish().unwrap();
    let from = input.display().to_string();
    let out = run_quiver(
        &["produce", "--store", &t.name, "--stream", "s", "--from", &from, "--groups", "a,b", "--close"],
        LONG,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for group in ["a", "b"] {
        let to = dir.path().join(format!("{group}.arrow"));
        let out = run_quiver(
            &["consume", "--store", &t.name, "--stream", "s", "--group", group, "--to", &to.display().to_string()],
            LONG,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("end of stream"));
        assert_eq!(read_ipc(&to), vec![batch.clone(), batch.slice(1, 2)], "group {group}");
    }
    // CSV in: the schema is inferred, and the data comes back.
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "id,score,ok,name\n1,0.5,true,a\n2,,false,\"b, \"\"quoted\"\"\"\n,2.25,,c\n4,-1,true,\n")
        .unwrap();
    let from = csv.display().to_string();
    let out = run_quiver(
        &["produce", "--store", &t.name, "--stream", "csv", "--from", &from, "--groups", "g", "--close"],
        LONG,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let to = dir.path().join("csv.arrow");
    let out = run_quiver(
        &["consume", "--store", &t.name, "--stream", "csv", "--group", "g", "--to", &to.display().to_string()],
        LONG,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_ipc(&to), vec![batch]);
    // A stream that is not closed: consume stops after its timeout.
    let out = run_quiver(&["produce", "--store", &t.name, "--stream", "open", "--from", &from], LONG);
    assert!(out.status.success());
    let to = dir.path().join("open.arrow");
    let out = run_quiver(
        &[
            "consume",
            "--store",
            &t.name,
            "--stream",
            "open",
            "--group",
            "g",
            "--to",
            &to.display().to_string(),
            "--timeout",
            "0.2",
        ],
        LONG,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("before the timeout"));
    assert_eq!(read_ipc(&to).iter().map(RecordBatch::num_rows).sum::<usize>(), 4);
}

#[test]
fn consume_writes_through_an_exclusive_temporary_and_a_planted_symlink_is_refused_not_followed() {
    let t = TestStore::new("io-exclusive");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "id\n1\n2\n").unwrap();
    let from = csv.display().to_string();
    let out = run_quiver(
        &["produce", "--store", &t.name, "--stream", "s", "--from", &from, "--groups", "g", "--close"],
        LONG,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Someone plants a symlink at the output's name, pointing at a file of
    // theirs (the victim would overwrite it if the symlink were followed).
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let to = dir.path().join("out.arrow");
    std::os::unix::fs::symlink(&victim, &to).unwrap();
    let consume = || {
        run_quiver(
            &["consume", "--store", &t.name, "--stream", "s", "--group", "g", "--to", &to.display().to_string()],
            LONG,
        )
    };
    let out = consume();
    assert!(!out.status.success(), "the symlink was replaced");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a symlink"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the symlink was followed");
    assert!(std::fs::symlink_metadata(&to).unwrap().file_type().is_symlink(), "the symlink was replaced");
    // Nothing was consumed: with the link gone, every row is written.
    std::fs::remove_file(&to).unwrap();
    let out = consume();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_ipc(&to).iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    // Nothing else is left in the directory (no temporary).
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["in.csv", "out.arrow", "victim"]);
}

#[test]
fn checkpoint_show_refuses_a_device_and_bench_refuses_nonsense_seconds() {
    let out = run_quiver(&["checkpoint", "show", "/dev/zero"], LONG);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
    for seconds in ["-1", "NaN", "inf", "0"] {
        let out = run_quiver(&["bench", "--seconds", seconds], LONG);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--seconds {seconds}: {err}");
        assert!(!err.contains("panicked"), "--seconds {seconds}: {err}");
    }
    let out = run_quiver(&["bench", "--batch-bytes", "18446744073709551615"], LONG);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_os_error_is_said_once_and_a_device_is_not_a_store() {
    let out = run_quiver(&["stat", "--path", "/nonexistent-quiver-dir/store"], LONG);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let started = Instant::now();
    let out = run_quiver(&["stat", "--path", "/dev/null"], LONG);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a quiver store"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "retried as if it were being created");
}

#[test]
fn a_small_demo_checks_every_checksum_and_says_its_models_are_not_judged() {
    // 500 rows: far too few for SGD to come within 0.3, and every checksum
    // must still match.
    for mode in ["broadcast", "shared"] {
        let v = demo(&["--rows", "500", "--consumers", "2", "--mode", mode]);
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["model_check"].as_str().unwrap().starts_with("not judged"), "{v}");
    }
    let v = demo(&["--consumers", "1"]);
    assert_eq!(v["model_check"], "within 0.3 of the truth", "{v}");
}

#[test]
fn batches_bigger_than_the_commit_count_allows_do_not_deadlock_the_demo() {
    // A 1 MiB store holds about three of these 320 KB batches: consumers
    // that committed only every 32 batches would never free room.
    let v = demo(&["--capacity", "1048576", "--batch-rows", "20000..20000", "--rows", "200000", "--consumers", "1"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["batches"], 10, "{v}");
}
