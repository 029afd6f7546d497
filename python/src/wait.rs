//! Waits that behave in Python: the GIL is released while the library
//! waits (other Python threads run), and the wait is cut into slices so
//! that a signal (Ctrl-C's KeyboardInterrupt) is raised within one slice.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// A wait is cut into slices this long: Ctrl-C interrupts within about this.
const SLICE: Duration = Duration::from_millis(50);

/// A Python timeout: `None` waits for ever.
pub(crate) fn timeout(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds.map(self::seconds).transpose()
}

/// Seconds from Python: a finite number at least 0.
pub(crate) fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| crate::errors::invalid(format!("{s} is not a number of seconds >= 0")))
}

/// Runs `attempt(slice)` without the GIL, slice after slice, until it gives
/// `Some`, the timeout runs out (`Ok(None)`), or a signal handler raises
/// (Ctrl-C). `attempt` must return `None` only when its slice ran out.
pub(crate) fn sliced<T: Send, E: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: impl FnMut(Duration) -> Result<Option<T>, E> + Send,
    error: impl Fn(E) -> PyErr,
) -> PyResult<Option<T>> {
    // A zero timeout looks once, with the GIL released all the same.
    if timeout == Some(Duration::ZERO) {
        return py.detach(|| attempt(Duration::ZERO)).map_err(error);
    }
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        if let Some(found) = py.detach(|| attempt(slice)).map_err(&error)? {
            return Ok(Some(found));
        }
        py.check_signals()?;
        if slice.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}
