//! Stopping cleanly on Ctrl-C, SIGTERM and SIGHUP: a handler that only sets
//! a flag (signal-hook's), for the long-running commands (`quiver demo`,
//! `quiver kafka`, and `chaos` in `quiver-harness`) that call
//! [`interrupted`] in every loop and return, so their guards kill their
//! processes and remove their stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};

/// Set by the handler.
static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Whether [`install`] ran: a stop signal then sets the flag (and ends
/// the process only through the command's own return).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether this process polls a stop flag (read in signal handlers).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    INSTALLED.store(true, Ordering::SeqCst);
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        // Registering fails only for signals that cannot be caught
        // (SIGKILL, SIGSTOP), which these are not.
        let _ = signal_hook::flag::register(signal, Arc::clone(flag()));
    }
}

/// An error once a stop signal arrived.
pub fn interrupted() -> Result<()> {
    if flag().load(Ordering::SeqCst) {
        bail!("interrupted: every process stopped and the store removed");
    }
    Ok(())
}
