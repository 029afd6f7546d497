//! Nothing left behind, however a command ends.
//!
//! - An error, or a Ctrl-C turned into a return (`quiver demo`): the
//!   guards drop. [`RemoveOnDrop`] removes a store file; the supervisor
//!   kills and reaps its workers.
//! - A stop signal to a command that does not poll for one (`quiver
//!   bench`, `bench-train`): [`stop_on_signals`] runs a thread that, on
//!   SIGINT, SIGTERM or SIGHUP, kills the workers and removes the stores
//!   the command made (both registered here as they are made), then ends
//!   the process as the signal would have.
//! - The command killed outright (SIGKILL, SIGPIPE): its workers get a
//!   signal from the kernel (see `supervisor::worker::stop_with_parent`),
//!   and one of them removes the command's store, named to it in
//!   [`RUN_STORE`], once it sees that its parent is gone.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// What a stop signal must not leave behind: the stores this command made
/// for its run and the workers it started.
#[derive(Default)]
struct Owned {
    stores: Vec<PathBuf>,
    workers: Vec<u32>,
}

static OWNED: Mutex<Owned> = Mutex::new(Owned { stores: Vec::new(), workers: Vec::new() });

fn owned() -> std::sync::MutexGuard<'static, Owned> {
    OWNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The variable that names, to a worker, the store its command made for
/// the run: the worker removes it if the command dies first.
pub(crate) const RUN_STORE: &str = "QUIVER_RUN_STORE";

/// Removes a file (a store this command made) on drop, and on a stop
/// signal if [`stop_on_signals`] runs.
pub(crate) struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    pub(crate) fn new(path: &Path) -> RemoveOnDrop {
        owned().stores.push(path.to_path_buf());
        RemoveOnDrop(path.to_path_buf())
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        owned().stores.retain(|p| *p != self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Records a worker this command started (the supervisor does), so that a
/// stop signal kills it.
pub(crate) fn started(pid: u32) {
    owned().workers.push(pid);
}

/// Forgets a worker that was reaped (its pid may be reused).
pub(crate) fn reaped(pid: u32) {
    owned().workers.retain(|&p| p != pid);
}

/// On SIGINT, SIGTERM or SIGHUP: kill the workers and remove the stores
/// registered here, say so, and end the process as the signal would have
/// (so a caller sees death by that signal). For commands that do not
/// poll for a stop (`bench`, `bench-train`). Call once, early.
pub(crate) fn stop_on_signals() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let owned = owned();
            for &pid in &owned.workers {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            for store in &owned.stores {
                let _ = std::fs::remove_file(store);
            }
            eprintln!("quiver: interrupted: every process stopped and the store removed");
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}

/// The stop signal a worker watching its run's store received (0: none).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// The supervisor a worker watching its run's store was started by (0: none).
static PARENT: AtomicUsize = AtomicUsize::new(0);

/// How long a signalled worker waits to see whether its command is dying
/// (the kernel sends the parent-death signal as the thread that started
/// the worker exits, which may be before the rest of its process).
const DYING_PARENT_WAIT: Duration = Duration::from_millis(200);

/// In a worker whose command named its run's store ([`RUN_STORE`]): when
/// the command that made the store is gone, remove it. The kernel sends
/// SIGTERM when the command dies (see `stop_with_parent`). The signal is
/// noted (signal-hook's flag), and a watcher thread removes the store as
/// soon as the worker is orphaned, and after a signal ends the process as
/// the signal would have (unless it polls a stop flag of its own,
/// [`crate::signals::install`]: such a worker returns from `main`, and
/// [`worker_exits`] removes the store then). A worker signalled while its
/// command lives leaves the store to the command.
pub(crate) fn remove_run_store_if_orphaned(parent: u32) {
    let Some(store) = std::env::var_os(RUN_STORE).map(PathBuf::from) else {
        return;
    };
    PARENT.store(parent as usize, SeqCst);
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let _ = signal_hook::flag::register_usize(signal, &RECEIVED, signal as usize);
    }
    std::thread::spawn(move || {
        let mut signalled_at = None;
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let orphaned = std::os::unix::process::parent_id() != parent;
            if orphaned {
                let _ = std::fs::remove_file(&store);
            }
            let signal = RECEIVED.load(SeqCst) as i32;
            if signal != 0 {
                let at = *signalled_at.get_or_insert_with(Instant::now);
                if (orphaned || at.elapsed() >= DYING_PARENT_WAIT) && !crate::signals::installed() {
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            }
        }
    });
}

/// As a worker returns from `main`: if a stop signal came and its command
/// is gone (or goes within [`DYING_PARENT_WAIT`]), removes the run's store.
pub(crate) fn worker_exits() {
    let (parent, store) = (PARENT.load(SeqCst) as u32, std::env::var_os(RUN_STORE));
    let (Some(store), true) = (store, parent != 0 && RECEIVED.load(SeqCst) != 0) else {
        return;
    };
    let deadline = Instant::now() + DYING_PARENT_WAIT;
    while std::os::unix::process::parent_id() == parent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if std::os::unix::process::parent_id() != parent {
        let _ = std::fs::remove_file(store);
    }
}
