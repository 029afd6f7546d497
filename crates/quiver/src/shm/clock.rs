//! The clocks, in one place: which one a time is read from is part of what
//! it means.
//!
//! - [`monotonic_ns`] (`CLOCK_MONOTONIC`) for everything that measures an
//!   interval or a deadline that other processes compare: leases, sweeps,
//!   liveness stamps. On Linux it is one clock for the whole system (within
//!   one time namespace), so a deadline one process stores in the file means
//!   the same instant to every other, and a step of the wall clock (NTP, an
//!   administrator) moves none of them.
//! - [`wall_ns`] (`CLOCK_REALTIME`, nanoseconds since the Unix epoch) for
//!   times shown to users and for the times that are documented as epoch
//!   times: a batch's append time (and so time windows and `max_age`), a
//!   checkpoint's `taken_ns`. [`wall_coarse_ns`] is the same clock at tick
//!   resolution (a few ms), for ages that need no more.
//!
//! Deadlines inside one process use `std::time::Instant`, which is
//! `CLOCK_MONOTONIC` too. The one other reading of the wall clock is the
//! robust mutex's timed lock, whose POSIX API takes a `CLOCK_REALTIME`
//! deadline (built from [`wall_ns`] in `lock.rs`).

use rustix::time::{clock_gettime, ClockId};

fn ns(clock: ClockId) -> u64 {
    let t = clock_gettime(clock);
    // Both fields are non-negative for these clocks; u64 nanoseconds since the
    // epoch last until 2554, and since boot for as long as any machine runs.
    (t.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process on the
/// host, for leases, deadlines and liveness stamps kept in the shared file.
pub fn monotonic_ns() -> u64 {
    ns(ClockId::Monotonic)
}

/// [`monotonic_ns`] at the kernel tick's resolution: a few nanoseconds to
/// read, for deadlines that tolerate a few milliseconds.
pub fn monotonic_coarse_ns() -> u64 {
    ns(ClockId::MonotonicCoarse)
}

/// Wall-clock nanoseconds since the Unix epoch (`CLOCK_REALTIME`), for times
/// shown to users and append times.
pub fn wall_ns() -> u64 {
    ns(ClockId::Realtime)
}

/// [`wall_ns`] at the kernel tick's resolution (`CLOCK_REALTIME_COARSE`):
/// a few nanoseconds to read, for ages that need milliseconds at most.
pub fn wall_coarse_ns() -> u64 {
    ns(ClockId::RealtimeCoarse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_move_forward_and_agree_with_std() {
        let (a, b) = (monotonic_ns(), monotonic_ns());
        assert!(b >= a);
        let std_wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        // Generous bounds: only a wrong clock or unit is off by a minute.
        assert!(wall_ns().abs_diff(std_wall) < 60_000_000_000);
        assert!(wall_coarse_ns().abs_diff(std_wall) < 60_000_000_000);
    }
}
