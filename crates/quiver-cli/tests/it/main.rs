//! The `quiver` command line's tests, each running the real binary: one
//! binary, one module per area.

mod bench_cli;
mod common;
mod demo_cli;
mod docs;
#[cfg(feature = "kafka")]
mod kafka;
mod outputs;
mod poison_batches;
mod train_cli;
