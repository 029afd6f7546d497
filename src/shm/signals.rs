//! Stopping on Ctrl-C, SIGTERM and SIGHUP: a handler that only sets a flag,
//! for long-running commands (the demo, chaos) that look at the flag in
//! every loop and return, so their guards kill their processes and remove
//! their stores.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the handler.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; `sigaction` gets a zeroed, then filled, struct.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether one of those signals arrived since the handler was installed.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
