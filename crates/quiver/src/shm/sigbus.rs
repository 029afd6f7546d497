//! A store file truncated while it is mapped must not kill its clients.
//!
//! Touching a page of a shared file mapping past the file's end raises
//! SIGBUS, whose default action kills the process; another process (or a
//! careless `truncate`) can cut a store's file at any time. Its size
//! cannot be sealed (a tmpfs file opened by path refuses `F_ADD_SEALS`), so
//! every mapping is watched instead: on a SIGBUS whose faulting address
//! lies in a watched mapping, the handler maps a private page of zeros over
//! the faulting page (`MAP_FIXED`), marks the mapping truncated, and
//! returns, so the access goes on and reads zeros. Every call of the store
//! checks the mark first (and again once it holds the lock) and fails with
//! `StoreError::Shrunk`; what a view read after the cut is zeros, which
//! validation refuses wherever it looks. A SIGBUS that is not ours goes to
//! the handler that was there before (Rust's own, for stack overflows), or
//! gets the default action.
//!
//! The handler is installed with `sigaction` by hand, not through
//! signal-hook's registry: the registry calls the previous handler before
//! its actions, and Rust's resets SIGBUS to its default when the fault is
//! not a stack overflow, so the next truncated page would kill.

use std::ops::Range;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::OnceLock;

/// How many mappings can be watched at once; more are mapped unwatched
/// (a truncation then kills, as it would without this module).
const SLOTS: usize = 512;

/// One watched mapping: `[start, end)`; `end` is 0 for a free slot and
/// `usize::MAX` while the slot is being claimed.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    truncated: AtomicBool,
}

static WATCHED: [Slot; SLOTS] =
    [const { Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), truncated: AtomicBool::new(false) } }; SLOTS];

/// The page size, read when the handler is installed.
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// The SIGBUS disposition before ours (read in the handler: a `OnceLock`
/// read is an atomic load).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A watched mapping; unwatched when dropped (before it is unmapped).
#[derive(Debug)]
pub(crate) struct Watch {
    slot: usize,
}

impl Watch {
    /// Whether a page of the mapping was found cut off (and replaced by
    /// zeros).
    pub(crate) fn truncated(&self) -> bool {
        WATCHED[self.slot].truncated.load(Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        WATCHED[self.slot].end.store(0, Release);
    }
}

/// Watches the mapping at `range` (installing the handler on first use).
/// `None` if every slot is taken or the handler could not be installed.
pub(crate) fn watch(range: Range<usize>) -> Option<Watch> {
    if !install() {
        return None;
    }
    for (slot, s) in WATCHED.iter().enumerate() {
        if s.end.compare_exchange(0, usize::MAX, AcqRel, Relaxed).is_ok() {
            s.truncated.store(false, Relaxed);
            s.start.store(range.start, Relaxed);
            s.end.store(range.end, Release);
            return Some(Watch { slot });
        }
    }
    None
}

/// Installs the handler once; whether it is installed.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // SAFETY: sysconf is always safe to call.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Relaxed);
        }
        // SAFETY: `action` and `previous` are valid, zero-initialised
        // sigaction structs (all-zero is a valid value), filled in before
        // use; `on_sigbus` has the signature SA_SIGINFO requires.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            // The previous disposition is set before ours can run.
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return false;
            }
            let _ = PREVIOUS.set(previous);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
        }
    })
}

/// The handler: see the module docs. Calls only async-signal-safe
/// functions (`mmap`, `sigaction`, `raise`) and reads atomics.
extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // A fault the kernel raised (si_code > 0), not a signal someone sent.
    if code > 0 {
        for s in &WATCHED {
            let end = s.end.load(Acquire);
            if end == 0 || end == usize::MAX || addr >= end || addr < s.start.load(Relaxed) {
                continue;
            }
            let page = PAGE.load(Relaxed);
            let at = addr & !(page - 1);
            // SAFETY: `at` is a page of a mapping this process made and
            // still has (its slot is freed before it is unmapped); a
            // private anonymous page replaces it, as MAP_FIXED does.
            let mapped = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                s.truncated.store(true, Relaxed);
                return;
            }
        }
    }
    // Not ours: the handler that was there before, or the default action.
    match PREVIOUS.get() {
        Some(previous) if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN => {
            let handler = previous.sa_sigaction as *const ();
            // SAFETY: a handler installed for SIGBUS before ours, called as
            // its flags say it expects to be called.
            unsafe {
                if previous.sa_flags & libc::SA_SIGINFO != 0 {
                    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(handler);
                    handler(signal, info, context);
                } else {
                    let handler: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                    handler(signal);
                }
            }
        }
        _ => {
            // SAFETY: resetting a disposition and raising a signal are
            // async-signal-safe; a fault that returns happens again, and
            // kills, under the default action.
            unsafe {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
                if code <= 0 {
                    libc::raise(libc::SIGBUS);
                }
            }
        }
    }
}
