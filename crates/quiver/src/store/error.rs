//! [`StoreError`]: every way a store call can fail, and the store's
//! [`Result`].
//!
//! Errors are typed and honest: bytes read from shared memory that do not
//! make sense give [`StoreError::Corrupted`], never a panic; a full store
//! gives [`StoreError::StoreFull`] with the numbers that explain it; waiting
//! that ran out of time is reported as an absent result (`Ok(None)`), not as
//! an error, wherever the caller asked for a bounded wait. The mapped file's
//! own errors ([`ShmError`]) become the variant callers match on, keeping
//! the OS error as the source.

use std::io;
use std::path::PathBuf;

use super::ObjectId;
use crate::shm::ShmError;

/// The result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What can go wrong when creating, opening or using a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The operating system refused an operation on the store file.
    #[error("{context}")]
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
    /// An argument of a call that cannot be used (a configuration is
    /// [`StoreError::InvalidConfig`]).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// [`store::files::remove`](super::files::remove) found something it
    /// must not remove without being told to (or at all).
    #[error("not removing {path}: {why}")]
    RemoveRefused {
        /// The file.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// `Store::create` found a file already at the path.
    #[error("a file already exists at {0}")]
    StoreExists(PathBuf),
    /// The file system cannot hold the store's whole size.
    #[error("cannot reserve {size} bytes for {path} (is the tmpfs large enough?)")]
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
    /// The store's file was removed (or replaced) while this handle had it
    /// open: nothing more will arrive through it.
    #[error("{0} was removed while in use")]
    Removed(PathBuf),
    /// The store's file was truncated while this handle had it mapped.
    #[error("{path} was truncated to {len} bytes while in use")]
    Shrunk {
        /// The store file.
        path: PathBuf,
        /// Its length now.
        len: u64,
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
    /// The object holds shared cells ([`crate::store::Store::create_cells`]):
    /// it is opened with `get_cells`, never read as bytes.
    #[error("object {0} holds shared cells: open it with get_cells, not get")]
    CellsObject(ObjectId),
    /// `get_cells` of an object that does not hold shared cells.
    #[error("object {0} does not hold shared cells")]
    NotCells(ObjectId),
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
    /// The metadata lock was held by another process for longer than the
    /// call could wait (its own timeout, or the store's lock timeout).
    #[error("the store's lock was not granted within {waited:?}{}", crate::shm::holder_text(holder))]
    LockTimeout {
        /// How long the call waited for the lock.
        waited: std::time::Duration,
        /// Who held it, as far as /proc tells: "process 1234 (stopped)".
        holder: Option<String>,
    },
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

impl From<ShmError> for StoreError {
    /// Each of the mapped file's errors as the store error its callers match
    /// on: bytes that make no sense (an access out of bounds, a foreign or
    /// unrecoverable lock) are [`StoreError::Corrupted`], so the store
    /// repairs as for any other corrupt bytes.
    fn from(e: ShmError) -> Self {
        match e {
            ShmError::Io { context, source } => StoreError::Io { context, source },
            ShmError::Exists(path) => StoreError::StoreExists(path),
            ShmError::NoSpace { path, size, source } => StoreError::NoSpace { path, size, source },
            // A store is published whole, by a rename: an empty file at a
            // store's name was never one, and no creator will finish it.
            ShmError::Empty(path) => StoreError::NotAStore(path),
            ShmError::NotRegular(path) => StoreError::NotAStore(path),
            ShmError::OtherOwner { path, owner, me } => StoreError::OtherOwner { path, owner, me },
            ShmError::LockTimeout { waited, holder } => StoreError::LockTimeout { waited, holder },
            e @ (ShmError::TooLarge { .. }
            | ShmError::OutOfBounds { .. }
            | ShmError::ForeignLock { .. }
            | ShmError::LockNotRecoverable) => StoreError::Corrupted(e.to_string()),
        }
    }
}
