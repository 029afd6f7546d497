//! Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP: the handler only sets a
//! flag; the long-running commands (`demo`, `chaos`) look at it in every
//! loop and return, so their guards kill their processes and remove their
//! stores.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

/// Set by the handler of SIGINT (Ctrl-C), SIGTERM and SIGHUP; every loop
/// of the demo looks at it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn install() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `sigaction` gets a zeroed, then filled, struct.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub(crate) fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: every process stopped and the store removed");
    }
    Ok(())
}
