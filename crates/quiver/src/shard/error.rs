//! The shard manager's errors.

use super::CheckpointError;
use crate::store::StoreError;
use crate::stream::StreamError;

/// Result type of the shard manager.
pub type Result<T, E = ShardError> = std::result::Result<T, E>;

/// What can go wrong in a shard-managed group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The stream (or the store under it) refused the operation; this
    /// includes `Corrupted` bytes in the registry or the shard area.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A checkpoint could not be written, read, or restored into this group.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A task reported by a member that no longer holds it (its lease
    /// expired or it was requeued): someone else may process it again.
    #[error("task {0} is not held by this member (its lease expired, or it was requeued)")]
    TaskNotHeld(u64),
    /// This member left the group, or the group was restored since it joined.
    #[error("this consumer is no longer a member of the group (it left, or the group was restored)")]
    NotAMember,
    /// A shard configuration that cannot work.
    #[error("invalid shard configuration: {0}")]
    InvalidConfig(String),
    /// An argument that cannot be used (a task from another group, say).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The shard area has no free slot of this kind.
    #[error("the store holds at most {limit} {what}")]
    RegistryFull {
        /// What ran out: shard-managed groups, members, tasks.
        what: &'static str,
        /// How many there may be.
        limit: usize,
    },
}

impl From<StoreError> for ShardError {
    fn from(e: StoreError) -> Self {
        ShardError::Stream(StreamError::Store(e))
    }
}

impl From<crate::arrow::BatchError> for ShardError {
    fn from(e: crate::arrow::BatchError) -> Self {
        ShardError::Stream(StreamError::Batch(e))
    }
}
