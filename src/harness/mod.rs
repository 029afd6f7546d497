//! Test machinery, compiled only with the `harness` feature (which the
//! package's own tests, benches and fuzzers turn on; the shipped library
//! and binary never do). Not a stable API.
//!
//! - [`fuzz`]: the fuzz targets' entry points (`fuzz/`), which the test
//!   replaying `fuzz/regressions/` calls too;
//! - [`populate`] and [`exercise_store`]: something of every layer in a
//!   store, and every layer's operations on it (the fuzz template, the
//!   hostile-peer test and its victims), with [`sample_batch`] and
//!   [`pattern`];
//! - [`FutexPair`]: two bare futex words in a file, the baseline of the
//!   wake benchmark.
//!
//! The processes of the multi-process tests (helpers that put, get, hold,
//! die inside the lock, scribble over a store, …) and `chaos` are the
//! `quiver-harness` binary (`src/bin/quiver-harness/`), built on this
//! module and the public API.

mod fixtures;
pub mod fuzz;
mod pingpong;

pub use fixtures::{exercise_store, pattern, populate, sample_batch};

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
pub use pingpong::FutexPair;
