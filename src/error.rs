//! The error types of quiver.
//!
//! Every fallible call of the store returns [`StoreError`]. Errors are typed
//! and honest: bytes read from shared memory that do not make sense give
//! [`StoreError::Corrupted`], never a panic; a full store gives
//! [`StoreError::StoreFull`] with the numbers that explain it; waiting that
//! ran out of time is reported as an absent result (`Ok(None)`), not as an
//! error, wherever the caller asked for a bounded wait.

use std::io;
use std::path::PathBuf;

use crate::store::ObjectId;

/// The result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What can go wrong when creating, opening or using a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused an operation on the store file.
    #[error("{context}: {source}")]
    Io {
        /// What quiver was doing.
        context: String,
        /// The error the OS reported.
        #[source]
        source: io::Error,
    },
    /// A store name that is empty, too long, or could escape the store directory.
    #[error("invalid store name {0:?}: use 1 to 200 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidName(String),
    /// A configuration value that cannot work.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// `Store::create` found a file already at the path.
    #[error("a file already exists at {0}")]
    StoreExists(PathBuf),
    /// The file system cannot hold the store's whole size.
    #[error("cannot reserve {size} bytes for {path}: {source} (is the tmpfs large enough?)")]
    NoSpace {
        /// The store file.
        path: PathBuf,
        /// The size that could not be reserved.
        size: u64,
        /// The error the OS reported.
        #[source]
        source: io::Error,
    },
    /// The store file belongs to another user (see `OpenConfig::allow_other_owner`).
    #[error("{path} is owned by uid {owner}, not by this user (uid {me}); open it with allow_other_owner to trust it")]
    OtherOwner {
        /// The store file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The file is not a quiver store (its magic number is wrong).
    #[error("{0} is not a quiver store")]
    NotAStore(PathBuf),
    /// The file is shorter than its header says it must be.
    #[error("{path} is truncated: {actual} bytes, the layout needs {expected}")]
    Truncated {
        /// The store file.
        path: PathBuf,
        /// The length the layout requires.
        expected: u64,
        /// The length of the file.
        actual: u64,
    },
    /// The file was written by another version of the format.
    #[error("{path} has store format version {found}; this build reads version {expected}")]
    VersionMismatch {
        /// The store file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The creator has not finished initialising the file within the wait.
    #[error("{0} is not initialised yet (its creator has not published it)")]
    NotReady(PathBuf),
    /// Bytes in the shared file that violate the format.
    #[error("store corrupted: {0}")]
    Corrupted(String),
    /// `create` was called with an ID that already names an object.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectId),
    /// The object does not exist (or was deleted).
    #[error("object {0} not found")]
    NotFound(ObjectId),
    /// The operation needs a sealed object.
    #[error("object {0} is not sealed")]
    NotSealed(ObjectId),
    /// No space could be found or freed before the timeout passed.
    #[error("store full: {requested} bytes requested, {free} bytes free (largest usable), {objects} objects of which none could be evicted")]
    StoreFull {
        /// Bytes the allocation needed (payload plus its block header).
        requested: u64,
        /// Free bytes in the arena when the call gave up.
        free: u64,
        /// Objects in the store when the call gave up.
        objects: u64,
    },
    /// The object can never fit, whatever is evicted.
    #[error("object of {requested} bytes cannot fit in a store of {capacity} bytes")]
    TooLarge {
        /// Bytes requested (payload plus metadata).
        requested: u64,
        /// The arena's capacity.
        capacity: u64,
    },
    /// Every client slot is held by a live process.
    #[error("too many clients: all {0} client slots are held by live processes")]
    TooManyClients(usize),
    /// The metadata lock was held by a live process for longer than the lock timeout.
    #[error("the store's lock was not granted within {0:?} (is a process stopped while holding it?)")]
    LockTimeout(std::time::Duration),
}

impl StoreError {
    /// An [`StoreError::Io`] with a sentence of context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io { context: context.into(), source }
    }

    /// A [`StoreError::Corrupted`] from anything printable.
    pub(crate) fn corrupted(what: impl std::fmt::Display) -> Self {
        StoreError::Corrupted(what.to_string())
    }
}

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
    /// No stream of that name exists in the store.
    #[error("no stream named {0:?} in the store")]
    NotFound(String),
    /// A stream of that name exists already (with a different configuration,
    /// for `open_or_create`).
    #[error("a stream named {0:?} exists already")]
    Exists(String),
    /// A stream configuration or argument that cannot be used.
    #[error("invalid stream configuration: {0}")]
    InvalidConfig(String),
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

/// Errors of checkpoint files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint file: {0}")]
    Io(String),
    /// The file does not start with the checkpoint magic.
    #[error("not a quiver checkpoint (bad magic)")]
    NotACheckpoint,
    /// The file is shorter than its header says.
    #[error("truncated checkpoint: {actual} bytes, expected {expected}")]
    Truncated {
        /// Bytes the header promises.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// A checkpoint of another format version.
    #[error("checkpoint format version {found}; this build reads version {expected}")]
    VersionMismatch {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The bytes are damaged: a checksum mismatch, or contents that do not fit together.
    #[error("corrupt checkpoint: {0}")]
    Corrupted(String),
    /// Encoding the state failed.
    #[error("cannot encode the checkpoint: {0}")]
    Encode(String),
    /// The checkpoint belongs to another stream or group, or another shape.
    #[error("the checkpoint is of {found}, not of {expected}")]
    Mismatch {
        /// What the checkpoint is of.
        found: String,
        /// What it was restored into.
        expected: String,
    },
}
