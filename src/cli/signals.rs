//! Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP: a handler that only sets
//! a flag, for the long-running commands (`quiver demo`, and `chaos` in
//! `quiver-harness`, which includes this file) that call [`interrupted`] in
//! every loop and return, so their guards kill their processes and remove
//! their stores.
//!
//! The one `unsafe` block outside `shm` and the zero-copy decode: neither
//! std nor rustix installs a signal handler safely, and a crate for it
//! (signal-hook) would be a dependency for these few lines.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

/// Set by the handler.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub(crate) fn install() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `sigaction` gets a zeroed (valid for this plain C
    // struct), then filled, struct and a null pointer for the old action.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// An error once a stop signal arrived.
pub(crate) fn interrupted() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: every process stopped and the store removed");
    }
    Ok(())
}
