//! A hostile (or buggy) peer scribbles random bytes over the store file's
//! metadata while other processes use every layer on it: they get errors or
//! recover, and never crash, hang or read out of bounds. And `quiver-harness chaos`:
//! processes killed at random, disasters restored from checkpoints.

use std::os::unix::process::ExitStatusExt;

use quiver::{Store, StoreConfig};

use crate::common::{harness, run_harness, TestStore, LONG};

#[test]
fn processes_survive_a_peer_scribbling_over_the_tables() {
    let t = TestStore::new("hostile");
    let store = Store::create(StoreConfig::new(&t.name).capacity(1 << 20).max_objects(256)).unwrap();
    quiver_harness::populate(&store).unwrap();
    let path = t.path.display().to_string();
    let mut victims: Vec<_> = (0..2).map(|_| harness(&["hostile-victim", "--path", &path, "--seconds", "3"])).collect();
    for v in &mut victims {
        v.expect_line("ready", LONG);
    }
    let mut scribbler = harness(&["scribble", "--path", &path, "--seconds", "2.5", "--seed", "7"]);
    // This process is a victim too, through the library.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        quiver_harness::exercise_store(&store);
    }
    assert!(scribbler.wait(LONG).success());
    for v in &mut victims {
        let status = v.wait(LONG);
        assert_eq!(status.signal(), None, "a victim was killed by a signal: {status}");
        assert!(status.success(), "a victim failed: {status}");
    }
}

#[test]
fn a_short_chaos_run_loses_nothing_and_leaks_nothing() {
    let out = run_harness(&["chaos", "--json", "--rounds", "24", "--batches", "4000"], LONG * 2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["leaked_bytes"], 0);
    assert_eq!(v["leaked_objects"], 0);
    // Every round kills or stops a process (issue 25: SIGSTOP, SIGCONT).
    let (kills, stops) = (v["kills"].as_u64().unwrap(), v["stops"].as_u64().unwrap());
    assert!(kills + stops >= 24 && kills >= 3 && stops >= 1, "{v}");
    assert!(v["restores"].as_u64().unwrap() >= 2, "{v}");
    // Issue 12, case 11: every disaster used to leak the ended epoch's
    // store mapping (its observers were forgotten), so shared memory grew
    // by a store per disaster until the OOM killer came. Now no removed
    // store stays mapped, and the driver never maps more than two stores'
    // worth (64 MiB of arena each, plus tables) at once.
    assert_eq!(v["removed_stores_still_mapped"], 0, "{v}");
    assert!(v["peak_shared_kib"].as_u64().unwrap() < 2 * 80 * 1024, "{v}");
}

/// Issue 12, case 5: chaos used to work in `$TMPDIR/quiver-chaos-<pid>`,
/// reusing whatever was there, so a symlink planted at that name sent its
/// logs (appended to, as root) wherever it pointed. The planted link here
/// names the very pid chaos runs as (`exec` keeps the shell's); chaos must
/// make its own directory and leave the link's target alone.
#[test]
fn chaos_never_works_in_a_directory_planted_at_a_predictable_name() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", r#"ln -s "$1" "$TMPDIR/quiver-chaos-$$" && exec "$0" chaos --json --rounds 3 --batches 300"#])
        .arg(crate::common::binary("quiver-harness"))
        .arg(target.path())
        .env("TMPDIR", tmp.path());
    let out = crate::common::run_command(command, LONG);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
    assert!(written.is_empty(), "chaos wrote through the planted symlink: {written:?}");
    let left: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left.len(), 1, "chaos removed its own directory and only that: {left:?}");
}

#[test]
fn chaos_refuses_a_duration_that_is_not_a_number_of_seconds() {
    for seconds in ["NaN", "-1", "inf", "0"] {
        let arg = format!("--seconds={seconds}");
        let out = crate::common::run_harness(&["chaos", &arg], crate::common::LONG);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--seconds {seconds} ran: {}", String::from_utf8_lossy(&out.stdout));
        assert!(err.contains("--seconds"), "--seconds {seconds}: {err}");
    }
}
