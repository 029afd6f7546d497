//! Outputs replace only regular files (issue 25, item 1): every writer
//! writes beside its target and renames over it, so a FIFO, a symlink, a
//! directory or a store there is refused before anything is read or
//! consumed, and a regular file gets the mode the umask gives.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

fn fill(t: &TestStore, dir: &std::path::Path) {
    let csv = dir.join("in.csv");
    std::fs::write(&csv, "x,y\n1,2\n2,4\n3,6\n").unwrap();
    let out = run_quiver(
        &["produce", "--store", &t.name, "--stream", "s", "--from", csv.to_str().unwrap(), "--groups", "g", "--close"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `quiver consume` of group g of stream s into `to`.
fn consume_args(t: &TestStore, to: &std::path::Path) -> Vec<String> {
    let args = ["consume", "--store", &t.name, "--stream", "s", "--group", "g", "--timeout", "1", "--to"];
    args.iter().map(|a| a.to_string()).chain([to.display().to_string()]).collect()
}

fn consume_to(t: &TestStore, to: &std::path::Path) -> std::process::Output {
    let args = consume_args(t, to);
    run_quiver(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60))
}

#[test]
fn outputs_refuse_what_is_not_a_regular_file_and_consume_nothing_then() {
    let t = TestStore::new("outputs");
    let other = TestStore::new("outputs-other");
    let dir = tempfile::tempdir().unwrap();
    fill(&t, dir.path());
    fill(&other, dir.path());
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let kept = dir.path().join("kept");
    std::fs::write(&kept, b"keep").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    let store_bytes = std::fs::read(&other.path).unwrap();
    for (target, what) in [
        (fifo.as_path(), "a FIFO"),
        (link.as_path(), "a symlink"),
        (dir.path(), "a directory"),
        (other.path.as_path(), "a quiver store"),
    ] {
        let out = consume_to(&t, target);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{target:?} was replaced");
        assert!(stderr.contains(what) && stderr.contains("not a regular file"), "{target:?}: {stderr}");
    }
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::symlink_metadata(&fifo).unwrap().file_type()));
    assert_eq!(std::fs::read(&kept).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&other.path).unwrap().len(), store_bytes.len());
    // Nothing was consumed: a regular target gets every row, with the
    // mode a plain file gets under the umask (027 here), not the
    // temporary's 0600.
    let to = dir.path().join("out.arrow");
    std::fs::write(&to, b"an older output").unwrap();
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "umask 027; exec \"$0\" \"$@\""]).arg(binary("quiver")).args(consume_args(&t, &to));
    let out = run_command(command, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 rows"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::metadata(&to).unwrap().permissions().mode() & 0o777, 0o640);
    // No temporary left beside the targets.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn train_and_predict_refuse_a_model_or_output_that_is_not_a_regular_file_before_reading() {
    let t = TestStore::new("outputs-train");
    let dir = tempfile::tempdir().unwrap();
    fill(&t, dir.path());
    let kept = dir.path().join("kept");
    std::fs::write(&kept, b"keep").unwrap();
    let link = dir.path().join("model.json");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    let train = |model: &std::path::Path| {
        let m = model.to_str().unwrap();
        let args = crate::common::train_args(&t.name, m);
        run_quiver(&args, Duration::from_secs(60))
    };
    let out = train(&link);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("a symlink"), "{stderr}");
    assert_eq!(std::fs::read(&kept).unwrap(), b"keep");
    // The group read nothing: a model at a regular path trains on every row.
    let model = dir.path().join("real.json");
    let out = train(&model);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("trained 3 rows"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = dir.path().join("in.csv");
    let dir_str = dir.path().to_str().unwrap().to_string();
    let with_to =
        ["predict", "--model", model.to_str().unwrap(), "--from", csv.to_str().unwrap(), "--to", dir_str.as_str()];
    let out = run_quiver(&with_to, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("a directory"), "{stderr}");
}
