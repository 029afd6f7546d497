//! [`BatchError`]: what can go wrong when writing or reading Arrow record
//! batches in objects.

use crate::store::{ObjectId, StoreError};

/// What can go wrong when writing or reading Arrow record batches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The store refused the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Arrow could not encode or decode the batch (including misaligned
    /// buffers, which are refused rather than silently copied).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The object does not hold a record batch written by quiver.
    #[error("object {id} is not an Arrow record batch: {why}")]
    NotABatch {
        /// The object.
        id: ObjectId,
        /// What is wrong with it.
        why: String,
    },
    /// A batch's schema differs from the one expected.
    #[error("schema mismatch: expected {expected}, found {found}")]
    SchemaMismatch {
        /// The schema the writer or reader expects.
        expected: String,
        /// The schema of the batch.
        found: String,
    },
    /// The batch names a schema that is not in the store.
    #[error("object {id} names schema {fingerprint:016x}, which is not in the store")]
    UnknownSchema {
        /// The batch object.
        id: ObjectId,
        /// The schema fingerprint it names.
        fingerprint: u64,
    },
    /// A schema quiver cannot carry (dictionary-encoded columns).
    #[error("unsupported schema: {0}")]
    Unsupported(String),
}
