//! [`StreamError`]: what can go wrong with streams, their producers,
//! consumers, groups and windows.

use crate::arrow::BatchError;
use crate::store::StoreError;

/// Errors of streams: producers, consumers, groups and windows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The store refused the operation (including `Corrupted` registry bytes).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Encoding or decoding a batch failed, or its schema is not the stream's.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The batch at `offset` of `partition` cannot be decoded (its bytes are
    /// damaged, or it is not of the stream's schema): a poison batch. The
    /// consumer stays on it; [`Consumer::skip`](super::Consumer::skip)
    /// passes it and records why, and
    /// [`ConsumerConfig::skip_corrupt`](super::ConsumerConfig::skip_corrupt)
    /// does that for every such batch.
    #[error("the batch at offset {offset} of partition {partition} cannot be read: {source}")]
    CorruptBatch {
        /// The partition.
        partition: u32,
        /// The batch's offset.
        offset: u64,
        /// Why it cannot be decoded.
        #[source]
        source: BatchError,
    },
    /// No stream of that name exists in the store.
    #[error("no stream named {0:?} in the store")]
    NotFound(String),
    /// A stream of that name exists already (with a different configuration,
    /// for `open_or_create`).
    #[error("a stream named {0:?} exists already")]
    Exists(String),
    /// `open_or_create` found the stream with another configuration.
    #[error("stream {stream:?} exists with {differs}")]
    ConfigMismatch {
        /// The stream.
        stream: String,
        /// What differs, both ways ("2 partitions, not 4").
        differs: String,
    },
    /// A stream or group configuration that cannot work.
    #[error("invalid stream configuration: {0}")]
    InvalidConfig(String),
    /// An argument of a call that cannot be used: a name, a key column, a
    /// partition or offset in a list (a configuration is
    /// [`StreamError::InvalidConfig`]).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store's registry has no free slot of this kind.
    #[error("the store holds at most {limit} {what}")]
    RegistryFull {
        /// What ran out: streams, or groups of one stream.
        what: &'static str,
        /// How many there may be.
        limit: usize,
    },
    /// The stream was closed: nothing more can be appended.
    #[error("stream {0:?} is closed")]
    Closed(String),
    /// The stream's back-pressure policy refused the append: the store is
    /// full and the policy is `Error`, or it is `Block` and no space was
    /// freed within the producer's timeout.
    #[error("stream {stream:?} is full: no room for {bytes} bytes after waiting {waited:?}")]
    Full {
        /// The stream.
        stream: String,
        /// The size of the batch that did not fit.
        bytes: u64,
        /// How long the append waited for space.
        waited: std::time::Duration,
    },
    /// An offset outside what the partition retains.
    #[error("offset {offset} of partition {partition} is outside the retained range [{tail}, {head}]")]
    OffsetOutOfRange {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The oldest retained offset.
        tail: u64,
        /// The next offset to be appended.
        head: u64,
    },
    /// A partition number the stream does not have.
    #[error("the stream has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u32,
        /// How many the stream has.
        partitions: u32,
    },
    /// No consumer group of that name (it was never made, or was removed).
    #[error("stream {stream:?} has no group {group:?}")]
    NoSuchGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// The stream was removed while this handle was open.
    #[error("stream {0:?} was removed")]
    Removed(String),
}
