//! Every layer's error type, in one place to find them.
//!
//! Each layer defines its own error beside its code and, where it has one,
//! its own `Result` alias (`store::Result`, `stream::Result`, ...): this
//! module only re-exports the error types, so `quiver::error::StoreError`
//! and `quiver::StoreError` name the same type as `quiver::store::StoreError`.
//!
//! | layer | error |
//! |---|---|
//! | [`shm`](crate::shm) | [`ShmError`]: the mapped file, its lock, the OS |
//! | [`store`](crate::store) | [`StoreError`]: objects, capacity, clients, corrupt bytes |
//! | [`arrow`](crate::arrow) | [`BatchError`]: encoding and decoding record batches; [`ImportError`]: files of batches |
//! | [`stream`](crate::stream) | [`StreamError`]: streams, groups, producers, consumers |
//! | [`shard`](crate::shard) | [`ShardError`]: tasks, members, groups; [`CheckpointError`]: checkpoint files |

pub use crate::arrow::{BatchError, ImportError};
pub use crate::shard::{CheckpointError, ShardError};
pub use crate::shm::ShmError;
pub use crate::store::StoreError;
pub use crate::stream::StreamError;
