//! [`BatchError`]: what can go wrong when writing or reading Arrow record
//! batches in objects; [`ImportError`]: what can be wrong with a file of
//! batches.

use std::path::PathBuf;

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

/// Why a file's batches could not be read ([`import`](super::import)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file could not be opened or read.
    #[error("read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, device, FIFO or socket.
    #[error("{} is not a regular file", .0.display())]
    NotRegular(PathBuf),
    /// The file is larger than an import reads into memory.
    #[error("{} holds {bytes} bytes, more than the {} an import reads", path.display(), super::import::MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The Arrow IPC bytes are not valid.
    #[error("not a valid Arrow IPC file (at byte {at}): {why}")]
    Ipc {
        /// Where the bad message (or footer) starts.
        at: u64,
        /// What is wrong.
        why: String,
    },
    /// The CSV text is not valid.
    #[error("not valid CSV: {0}")]
    Csv(String),
    /// Valid, but quiver cannot carry it (dictionary-encoded columns,
    /// compressed bodies).
    #[error("unsupported: {0}")]
    Unsupported(String),
}
