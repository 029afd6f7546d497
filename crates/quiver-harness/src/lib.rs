//! quiver's test machinery, never shipped: what the tests, benchmarks and
//! fuzzers of every crate share. Not a stable API.
//!
//! - [`fuzz`]: the fuzz targets' entry points (`fuzz/`), which the test
//!   replaying `fuzz/regressions/` calls too;
//! - [`populate`] and [`exercise_store`]: something of every layer in a
//!   store, and every layer's operations on it (the fuzz template, the
//!   hostile-peer test and its victims), with [`sample_batch`] and
//!   [`pattern`];
//! - [`procs`]: the tests' child processes of the real binaries, with a
//!   deadline on every wait, and store names that clean up after
//!   themselves;
//! - [`test_hooks`]: the core's hooks (a creation stopped before publish,
//!   the raw futex baseline), re-exported.
//!
//! The processes of the multi-process tests (helpers that put, get, hold,
//! die inside the lock, scribble over a store, …) and `chaos` are the
//! `quiver-harness` binary (`src/bin/quiver-harness/`), built on this
//! crate and the public API.

mod fixtures;
pub mod fuzz;
pub mod procs;

pub use fixtures::{exercise_store, pattern, populate, sample_batch, seq_batch, seq_schema, seqs, varied_batch};
pub use quiver::test_hooks;
