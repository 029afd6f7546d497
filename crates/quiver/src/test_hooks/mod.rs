//! Hooks into the core's insides for the test machinery (the
//! `quiver-harness` crate), compiled only with the `test-hooks` feature,
//! which no shipped crate turns on. Not a stable API.
//!
//! Beside the `debug_*` methods of [`Store`](crate::Store),
//! [`Stream`](crate::Stream) and [`Producer`](crate::Producer) (a lock
//! holder that hangs, a holder that dies half-way through a change, a
//! producer that dies mid-append, parked waiters counted):
//!
//! - [`begin_store_creation`]: what a creator killed before publishing
//!   leaves behind;
//! - [`FutexPair`]: two bare futex words in a file, the baseline of the
//!   wake benchmark;
//! - [`crash_at`] and [`crash_points_reached`]: the crash-point
//!   enumeration's countdown (see `shm::crash`).

mod pingpong;

pub use pingpong::FutexPair;

/// A store creation stopped before its store is published: what a creator
/// killed part-way leaves (see `Region::create`). Dropping it removes the
/// temporary, as a creator that fails does.
pub struct Creation(#[allow(dead_code)] crate::shm::Region);

/// Starts creating the store called `name` (its file reserved and mapped
/// under a temporary name, the creator lock held) and stops there.
pub fn begin_store_creation(name: &str, capacity: u64) -> Result<Creation, crate::StoreError> {
    let path = crate::store::store_path(name)?;
    Ok(Creation(crate::shm::Region::create(&path, capacity, false)?))
}

/// Aborts this process at the `n`th crash point it reaches from now on
/// (1-based; 0: never), lock held if the point is under it.
pub fn crash_at(n: u64) {
    crate::shm::crash::REACHED.store(0, std::sync::atomic::Ordering::Relaxed);
    crate::shm::crash::ABORT_AT.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// How many crash points this process reached since [`crash_at`].
pub fn crash_points_reached() -> u64 {
    crate::shm::crash::REACHED.load(std::sync::atomic::Ordering::Relaxed)
}
