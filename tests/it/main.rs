//! quiver's integration tests: one binary, one module per area.

mod arrow_batches;
mod bench_cli;
mod common;
mod demo_cli;
mod fuzz_regressions;
mod hostile;
#[cfg(feature = "kafka")]
mod kafka;
mod no_copy;
mod poison_batches;
mod shard_processes;
mod shards;
mod store_api;
mod store_files;
mod store_processes;
mod stream_processes;
mod stream_windows;
mod streams;
mod train_cli;
