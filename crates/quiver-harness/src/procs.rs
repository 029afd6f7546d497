//! The tests' child processes: unique store names that clean up after
//! themselves, and child processes of the real binaries (`quiver`, what
//! users run, and `quiver-harness`, chaos and the helper processes) with a
//! deadline on every wait.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quiver::{Store, StoreConfig};

/// A unique store name whose file is removed when the guard drops, even
/// if the test fails.
pub struct TestStore {
    pub name: String,
    pub path: PathBuf,
}

impl TestStore {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("test-{tag}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = quiver::store::store_path(&name).unwrap();
        TestStore { name, path }
    }

    pub fn create(&self, capacity: u64) -> Store {
        Store::create(StoreConfig::new(&self.name).capacity(capacity)).unwrap()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The path of the workspace binary `name` (`quiver`, the shipped one, or
/// `quiver-harness`): beside the running test's own directory, where
/// `cargo test --workspace` puts every binary of the workspace before any
/// test runs. Panics, saying how to build it, if it is not there.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("a test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "no {name} binary at {}: run the tests with `cargo test --workspace` (scripts/test), which builds it",
        path.display()
    );
    path
}

/// A child running a real binary; killed on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

/// Starts `quiver ARGS`.
pub fn quiver(args: &[&str]) -> Proc {
    spawn(&binary("quiver"), args)
}

/// Starts `quiver-harness ARGS` (a helper process, or chaos).
pub fn harness(args: &[&str]) -> Proc {
    spawn(&binary("quiver-harness"), args)
}

fn spawn(exe: &std::path::Path, args: &[&str]) -> Proc {
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {exe:?}: {e}"));
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc { child, lines }
}

impl Proc {
    /// Waits (at most `within`) for a line of output equal to `want`.
    pub fn expect_line(&mut self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => continue,
                Err(_) => panic!("no line {want:?} within {within:?} (status {:?})", self.child.try_wait()),
            }
        }
    }

    /// Waits (at most `within`) for the process to exit.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process still running after {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait(Duration::from_secs(10));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `quiver ARGS` to completion, killing it (and failing) if it runs
/// longer than `within`; returns its status and output.
pub fn run_quiver(args: &[&str], within: Duration) -> Output {
    run(&binary("quiver"), args, within)
}

/// Runs `quiver-harness ARGS` to completion, as [`run_quiver`] does.
pub fn run_harness(args: &[&str], within: Duration) -> Output {
    run(&binary("quiver-harness"), args, within)
}

fn run(exe: &std::path::Path, args: &[&str], within: Duration) -> Output {
    let mut command = Command::new(exe);
    command.args(args);
    run_command(command, within)
}

/// Runs `command` to completion (its output captured), killing it (and
/// failing) if it runs longer than `within`.
pub fn run_command(mut command: Command, within: Duration) -> Output {
    let (exe, args) = (command.get_program().to_owned(), command.get_args().map(|a| a.to_owned()).collect::<Vec<_>>());
    let mut child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {exe:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{exe:?} {args:?} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

pub const LONG: Duration = Duration::from_secs(60);

/// Waits (at most 30 s) until `ready` holds: for a waiter to be parked, say,
/// instead of sleeping and hoping it is.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
