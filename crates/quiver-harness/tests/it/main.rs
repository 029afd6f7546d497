//! The multi-process tests: real processes of the `quiver` and
//! `quiver-harness` binaries put, get, hold the lock, die inside it and
//! scribble over stores; the fuzzers' regressions replayed; and
//! ARCHITECTURE.md's invariants checked against the source tree. One
//! binary, one module per area.

mod common;
mod crash_points;
mod fuzz_regressions;
mod hostile;
mod invariants;
mod shard_processes;
mod store_files;
mod store_processes;
mod stream_processes;
