//! The one worker supervisor: every command that runs worker processes of
//! its own binary (`quiver demo`, `bench`, `train --workers`, and `chaos`
//! in `quiver-harness`) starts, watches and stops them through
//! [`Supervisor`], and every worker speaks through [`worker`].
//!
//! - **Spawn**: [`Supervisor::spawn`] starts `exe ARGS` (this binary by
//!   default), optionally in its own process group (so Ctrl-C reaches the
//!   command alone, which then stops its workers in order) and with its
//!   output read as lines or discarded.
//! - **The line protocol**, one line on stdout each: `ready`, `progress N
//!   N ...` (numbers) and anything else, a report (a JSON object, for the
//!   command to parse). [`Supervisor::wait_ready`] is the handshake;
//!   [`Supervisor::recv`] gives the lines as they come, tagged with the
//!   worker's index.
//! - **Exits**: [`Supervisor::check`] fails when a worker exited before it
//!   reported, or failed; [`Supervisor::exited`] says whether one has.
//! - **Kill on drop**: dropping the supervisor kills and reaps every worker,
//!   so an error or an interrupt in the command leaves no process behind.
//! - **A dead parent stops its children**: a worker calls
//!   [`worker::stop_with_parent`], which has the kernel kill it when the
//!   process that started it dies (and checks that it has not already);
//!   a worker whose stdout is gone exits quietly instead of panicking.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The variable that tells a worker which process started it, so it can
/// tell that the supervisor is gone even if it died before the worker ran.
const SUPERVISOR_PID: &str = "QUIVER_SUPERVISOR_PID";

/// What a worker said: one line of its stdout.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// `ready`: set up and working.
    Ready,
    /// `progress N N ...`: numbers whose meaning the command knows.
    Progress(Vec<u64>),
    /// Any other line: a report (a JSON object) for the command to parse.
    Report(String),
}

impl Line {
    fn parse(text: String) -> Line {
        if text == "ready" {
            return Line::Ready;
        }
        if let Some(rest) = text.strip_prefix("progress ") {
            if let Ok(numbers) = rest.split_whitespace().map(str::parse).collect() {
                return Line::Progress(numbers);
            }
        }
        Line::Report(text)
    }
}

/// How to start one worker.
#[derive(Clone, Debug)]
pub struct Spawn {
    args: Vec<OsString>,
    lines: bool,
    own_group: bool,
}

impl Spawn {
    /// A worker running `exe ARGS`, whose stdout lines the supervisor reads.
    pub fn new<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Spawn {
        Spawn { args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(), lines: true, own_group: false }
    }

    /// Discards the worker's stdout (a worker that logs to a file).
    pub fn quiet(mut self) -> Spawn {
        self.lines = false;
        self
    }

    /// Puts the worker in a process group of its own: a Ctrl-C on the
    /// terminal reaches the command only, which stops its workers itself.
    pub fn own_process_group(mut self) -> Spawn {
        self.own_group = true;
        self
    }
}

struct Worker {
    child: Child,
    spawn: Spawn,
    /// How many times it was started again (lines of an earlier
    /// incarnation are dropped).
    incarnation: u32,
    exited: Option<ExitStatus>,
    /// Every line it wrote has been received (its stdout closed), or it
    /// writes none: an exit seen then is not ahead of its last lines.
    heard_out: bool,
}

/// What a worker's reader thread passes on.
enum Heard {
    Line(Line),
    /// Its stdout closed: nothing more comes from this incarnation.
    Closed,
}

/// Worker processes, started, watched, and killed on drop (see the module
/// docs).
pub struct Supervisor {
    exe: PathBuf,
    /// The store the command made for this run, named to every worker
    /// (see [`crate::guard::RUN_STORE`]).
    run_store: Option<PathBuf>,
    workers: Vec<Worker>,
    sender: mpsc::Sender<(usize, u32, Heard)>,
    heard: mpsc::Receiver<(usize, u32, Heard)>,
}

impl Supervisor {
    /// A supervisor of workers of this binary.
    pub fn new() -> Result<Supervisor> {
        Ok(Supervisor::of(std::env::current_exe().context("find this program's binary")?))
    }

    /// A supervisor of workers of `exe`.
    pub fn of(exe: impl Into<PathBuf>) -> Supervisor {
        let (sender, heard) = mpsc::channel();
        Supervisor { exe: exe.into(), run_store: None, workers: Vec::new(), sender, heard }
    }

    /// Names `store`, which the command made for this run, to every worker
    /// it starts from now on: if the command dies without removing it, a
    /// worker does (see [`worker::stop_with_parent`]).
    pub fn with_run_store(mut self, store: &std::path::Path) -> Supervisor {
        self.run_store = Some(store.to_path_buf());
        self
    }

    /// Starts a worker; returns its index. Call it from a thread that lives
    /// as long as the workers should (the command's main thread): a
    /// worker's parent-death signal follows the thread that started it.
    pub fn spawn(&mut self, spawn: Spawn) -> Result<usize> {
        let i = self.workers.len();
        let child = self.start(i, 0, &spawn)?;
        self.workers.push(Worker { child, heard_out: !spawn.lines, spawn, exited: None, incarnation: 0 });
        Ok(i)
    }

    /// Starts worker `i` again as it was first started (after it died).
    pub fn respawn(&mut self, i: usize) -> Result<()> {
        let (spawn, incarnation) = (self.worker(i)?.spawn.clone(), self.worker(i)?.incarnation + 1);
        let child = self.start(i, incarnation, &spawn)?;
        let worker = self.worker_mut(i)?;
        let mut old = std::mem::replace(&mut worker.child, child);
        (worker.exited, worker.heard_out, worker.incarnation) = (None, !spawn.lines, incarnation);
        let _ = old.kill();
        let _ = old.wait();
        crate::guard::reaped(old.id());
        Ok(())
    }

    fn start(&self, i: usize, incarnation: u32, spawn: &Spawn) -> Result<Child> {
        let mut command = Command::new(&self.exe);
        command.args(&spawn.args).env(SUPERVISOR_PID, std::process::id().to_string());
        match &self.run_store {
            Some(store) => command.env(crate::guard::RUN_STORE, store),
            None => command.env_remove(crate::guard::RUN_STORE),
        };
        command.stdout(if spawn.lines { Stdio::piped() } else { Stdio::null() });
        if spawn.own_group {
            command.process_group(0);
        }
        let mut child = command.spawn().with_context(|| format!("start {:?}", self.exe))?;
        crate::guard::started(child.id());
        if let Some(stdout) = child.stdout.take() {
            let sender = self.sender.clone();
            std::thread::spawn(move || {
                for text in BufReader::new(stdout).lines().map_while(std::io::Result::ok) {
                    if sender.send((i, incarnation, Heard::Line(Line::parse(text)))).is_err() {
                        return;
                    }
                }
                let _ = sender.send((i, incarnation, Heard::Closed));
            });
        }
        Ok(child)
    }

    fn worker(&self, i: usize) -> Result<&Worker> {
        self.workers.get(i).with_context(|| format!("no worker {i}"))
    }

    fn worker_mut(&mut self, i: usize) -> Result<&mut Worker> {
        self.workers.get_mut(i).with_context(|| format!("no worker {i}"))
    }

    /// How many workers were started.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Worker `i`'s process ID.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.workers.get(i).map(|w| w.child.id())
    }

    /// The next line any worker said, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<(usize, Line)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let heard = self.heard.recv_timeout(left).ok()?;
            if let Some(line) = self.take(heard) {
                return Some(line);
            }
        }
    }

    /// A line a worker already said, without waiting.
    pub fn try_recv(&mut self) -> Option<(usize, Line)> {
        loop {
            let heard = self.heard.try_recv().ok()?;
            if let Some(line) = self.take(heard) {
                return Some(line);
            }
        }
    }

    /// Notes what a reader thread passed on; the line, if it is one of a
    /// worker's current incarnation.
    fn take(&mut self, (i, incarnation, heard): (usize, u32, Heard)) -> Option<(usize, Line)> {
        let worker = self.workers.get_mut(i).filter(|w| w.incarnation == incarnation)?;
        match heard {
            Heard::Line(line) => Some((i, line)),
            Heard::Closed => {
                worker.heard_out = true;
                None
            }
        }
    }

    /// Waits until every worker has said `ready`, calling `stop` between
    /// waits (an interrupt); fails if one exits first. Lines other than
    /// `ready` said meanwhile are dropped.
    pub fn wait_ready(&mut self, stop: impl Fn() -> Result<()>) -> Result<()> {
        let mut ready = vec![false; self.workers.len()];
        while !ready.iter().all(|&r| r) {
            stop()?;
            self.check("worker", &[])?;
            if let Some((i, Line::Ready)) = self.recv(Duration::from_millis(50)) {
                if let Some(r) = ready.get_mut(i) {
                    *r = true;
                }
            }
        }
        Ok(())
    }

    /// Worker `i`'s exit status, if it has exited (reaped then).
    pub fn exited(&mut self, i: usize) -> Result<Option<ExitStatus>> {
        let worker = self.worker_mut(i)?;
        if worker.exited.is_none() {
            worker.exited = worker.child.try_wait()?;
            if worker.exited.is_some() {
                crate::guard::reaped(worker.child.id());
            }
        }
        Ok(worker.exited)
    }

    /// Fails if worker `i` has exited before `done[i]` was set (and every
    /// line it wrote was received: its last ones are not counted as lost
    /// while they are on their way), or failed: the command must not wait
    /// for a process that is gone. `what` names the workers in the error
    /// (`consumer-2 exited early`).
    pub fn check(&mut self, what: &str, done: &[bool]) -> Result<()> {
        for i in 0..self.workers.len() {
            if let Some(status) = self.exited(i)? {
                if !status.success() {
                    bail!("{what}-{i} failed ({status})");
                }
                if !done.get(i).copied().unwrap_or(false) && self.workers[i].heard_out {
                    bail!("{what}-{i} exited early ({status})");
                }
            }
        }
        Ok(())
    }

    /// Waits for one report line from every worker and for its exit,
    /// calling `stop` between waits (an interrupt); other lines are
    /// dropped. Fails if a worker exits without a report, or fails.
    pub fn reports(&mut self, what: &str, stop: impl Fn() -> Result<()>) -> Result<Vec<String>> {
        let mut reports: Vec<Option<String>> = vec![None; self.workers.len()];
        while reports.iter().any(Option::is_none) {
            stop()?;
            let done: Vec<bool> = reports.iter().map(Option::is_some).collect();
            self.check(what, &done)?;
            if let Some((i, Line::Report(text))) = self.recv(Duration::from_millis(50)) {
                if let Some(slot) = reports.get_mut(i) {
                    *slot = Some(text);
                }
            }
        }
        for i in 0..self.workers.len() {
            let status = self.wait(i, Duration::from_secs(60))?;
            if !status.success() {
                bail!("{what}-{i} failed ({status})");
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// Waits for worker `i` to exit, at most `timeout` (then kills it and
    /// fails).
    pub fn wait(&mut self, i: usize, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited(i)? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill(i);
                bail!("worker {i} still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills worker `i` (SIGKILL) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(worker) = self.workers.get_mut(i) {
            let _ = worker.child.kill();
            if let Ok(status) = worker.child.wait() {
                worker.exited = Some(status);
                crate::guard::reaped(worker.child.id());
            }
        }
    }

    /// Kills every worker still running; they are reaped as they exit (by
    /// [`exited`](Self::exited)) or on drop.
    pub fn kill_all(&mut self) {
        for worker in &mut self.workers {
            if worker.exited.is_none() {
                let _ = worker.child.kill();
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
            crate::guard::reaped(worker.child.id());
        }
    }
}

/// The worker's side of the protocol.
pub mod worker {
    use std::io::Write;

    use super::SUPERVISOR_PID;

    /// Whether this process is a worker started by a supervisor.
    pub fn is_worker() -> bool {
        std::env::var_os(SUPERVISOR_PID).is_some()
    }

    /// Writes one line to stdout; a worker whose supervisor closed the pipe
    /// (it is gone: the pipe closes only when it exits) removes the store
    /// its command made for the run, if any, and exits quietly rather than
    /// panic. (The kernel's parent-death signal comes later than the
    /// closed pipe.)
    fn say(line: std::fmt::Arguments<'_>) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            if let Some(store) = std::env::var_os(crate::guard::RUN_STORE) {
                let _ = std::fs::remove_file(store);
            }
            std::process::exit(3);
        }
    }

    /// Says `ready`.
    pub fn ready() {
        say(format_args!("ready"));
    }

    /// Says `progress` with `numbers`.
    pub fn progress(numbers: &[u64]) {
        let text: Vec<String> = numbers.iter().map(u64::to_string).collect();
        say(format_args!("progress {}", text.join(" ")));
    }

    /// Says `report` as one line of JSON.
    pub fn report(report: &impl serde::Serialize) -> anyhow::Result<()> {
        let text = serde_json::to_string(report)?;
        say(format_args!("{text}"));
        Ok(())
    }

    /// In a worker started by a [`Supervisor`](super::Supervisor): has the
    /// kernel kill this process when the supervisor dies
    /// (`PR_SET_PDEATHSIG`), and fails at once if it already has. A worker
    /// told its command's store (`QUIVER_RUN_STORE`) gets SIGTERM
    /// instead, removes that store, and then dies of the signal. A process
    /// started otherwise (by hand, by a test) is left as it is.
    pub fn stop_with_parent() -> anyhow::Result<()> {
        let Some(expected) = std::env::var(SUPERVISOR_PID).ok().and_then(|p| p.parse::<u32>().ok()) else {
            return Ok(());
        };
        // A worker that may have to remove its command's store is told
        // with SIGTERM, which it handles; any other is killed.
        let signal = match std::env::var_os(crate::guard::RUN_STORE) {
            Some(_) => {
                crate::guard::remove_run_store_if_orphaned(expected);
                rustix::process::Signal::TERM
            }
            None => rustix::process::Signal::KILL,
        };
        rustix::process::set_parent_process_death_signal(Some(signal))?;
        // Set after the fork: a supervisor that died before is seen here.
        if std::os::unix::process::parent_id() != expected {
            if let Some(store) = std::env::var_os(crate::guard::RUN_STORE) {
                let _ = std::fs::remove_file(store);
            }
            anyhow::bail!("the process that started this worker is gone");
        }
        Ok(())
    }
}
