//! quiver: a shared-memory producer/consumer runtime for single-host,
//! multi-process online learning.
//!
//! A producer writes Arrow record batches into an mmap-backed store in
//! shared memory, keyed by deterministic IDs; consumer processes wait for
//! them with timeouts and read them in place. There is no daemon: every
//! process maps the same file.
//!
//! ```no_run
//! use std::time::Duration;
//! use quiver::{ObjectId, Store, StoreConfig};
//!
//! # fn main() -> Result<(), quiver::StoreError> {
//! let store = Store::create(StoreConfig::new("example").capacity(64 << 20))?;
//! let id = ObjectId::sequential(1, 0, 0);
//! let mut builder = store.create_object(id, 5, b"meta")?;
//! builder.data_mut().copy_from_slice(b"hello");
//! builder.seal()?;
//!
//! // In any process: Store::open("example")?
//! let view = store.get(id, Duration::from_secs(1))?.expect("sealed above");
//! assert_eq!(view.data(), b"hello");
//! drop(view);
//! store.delete(id)?;
//! Store::remove("example")?;
//! # Ok(())
//! # }
//! ```
//!
//! The layers, each a module (see ARCHITECTURE.md): [`shm`] (the mapped
//! file, lock, futex, liveness), [`store`] (objects and their lifecycle),
//! [`arrow`] (record batches in objects, read zero-copy), [`stream`]
//! (partitioned logs of batches: producers, consumers that poll with
//! timeouts, consumer groups, retention, back-pressure, windows), [`shard`]
//! (a consumer group's shards, tasks, leases and checkpoints).
//!
//! This crate is the only one that sees the shared file's insides. Around
//! it, on its public API only: `quiver-train` (online SGD regression),
//! `quiver-kafka` (Kafka sources and sinks), `quiver-cli` (the `quiver`
//! binary) and the Python package.
//!
//! The `test-hooks` feature (off by default; only the never-shipped
//! `quiver-harness` crate turns it on) adds `test_hooks` and the `debug_*`
//! methods: ways to stop or break a process inside the core, for tests.

pub mod arrow;
pub mod error;
pub mod shard;
pub mod shm;
pub mod store;
pub mod stream;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use arrow::{BatchMeta, BatchReader, BatchSlot, BatchWriter, ColumnMut};
pub use error::{BatchError, CheckpointError, ImportError, ShmError, StoreError, StreamError};
pub use shard::{Checkpoint, Next, Outcome, ShardConfig, ShardError, ShardManager, ShardSize, ShardStats, Share, Task};
pub use shm::wait::WaitStrategy;
pub use store::{
    Cells, CreateOptions, IdKind, ObjectBuilder, ObjectId, ObjectInfo, ObjectState, ObjectView, OpenConfig, Store,
    StoreConfig, StoreStats,
};
pub use stream::{
    Appended, BackPressure, Consumer, ConsumerConfig, Polled, Producer, Reservation, Reserved, StartAt, Stream,
    StreamBatch, StreamConfig, StreamStats, Window, WindowKind, WindowOutcome, Windows,
};
