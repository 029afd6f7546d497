//! The core's integration tests, through its public API: one binary, one
//! module per area. The multi-process tests are in `quiver-harness` (they
//! need its helper processes) and the command line's in `quiver-cli`.

mod arrow_batches;
mod common;
mod damage;
mod no_copy;
mod shards;
mod store_api;
mod stream_windows;
mod streams;
