//! Numbered crash points for the crash-point enumeration (`quiver-harness
//! crash-points`, the `crash_points` test): each mutation of the store's
//! state calls [`point`] between its steps, under the lock. With the
//! `test-hooks` feature a test process sets a countdown
//! (`quiver::test_hooks::crash_at`), and the point it reaches aborts the
//! process there, lock held, as SQLite's and redb's crash tests do; the
//! next opener must repair. Without the feature a point is nothing.

#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Points reached so far in this process.
#[cfg(feature = "test-hooks")]
pub(crate) static REACHED: AtomicU64 = AtomicU64::new(0);

/// The point to abort at (1-based; 0: never).
#[cfg(feature = "test-hooks")]
pub(crate) static ABORT_AT: AtomicU64 = AtomicU64::new(0);

/// A crash point: aborts the process if it is the one the countdown names.
#[inline(always)]
pub(crate) fn point() {
    #[cfg(feature = "test-hooks")]
    {
        let n = REACHED.fetch_add(1, Relaxed) + 1;
        if n == ABORT_AT.load(Relaxed) {
            std::process::abort();
        }
    }
}
