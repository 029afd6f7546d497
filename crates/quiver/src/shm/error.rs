//! [`ShmError`]: what can go wrong with the mapped file itself, below any
//! notion of objects or streams.
//!
//! The layers above turn it into their own errors (the store maps each
//! variant onto the `StoreError` variant its callers match on, keeping the
//! I/O error as the source); `shm` imports nothing from above it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The result type of `shm`.
pub type Result<T, E = ShmError> = std::result::Result<T, E>;

/// What can go wrong when creating, opening, mapping, reading or locking the
/// shared file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The operating system refused an operation on the file.
    #[error("{context}")]
    Io {
        /// What quiver was doing.
        context: String,
        /// The error the OS reported.
        #[source]
        source: io::Error,
    },
    /// The path is a symlink, a directory, a device or a FIFO: not a file
    /// quiver maps.
    #[error("{0} is not a regular file (symlinks are not followed)")]
    NotRegular(PathBuf),
    /// The file belongs to another user, and the caller asked for its own.
    #[error("{path} is owned by uid {owner}, not by uid {me}")]
    OtherOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The uid the caller expected.
        me: u32,
    },
    /// Creating the file found one already at the path.
    #[error("a file already exists at {0}")]
    Exists(PathBuf),
    /// The file system cannot hold the file's whole size.
    #[error("cannot reserve {size} bytes for {path} (is the tmpfs large enough?)")]
    NoSpace {
        /// The file.
        path: PathBuf,
        /// The size that could not be reserved.
        size: u64,
        /// The error the OS reported.
        #[source]
        source: io::Error,
    },
    /// The file is empty: its creator has not sized it yet.
    #[error("{0} is empty (its creator has not sized it yet)")]
    Empty(PathBuf),
    /// The file is larger than this process's address space.
    #[error("{path} has {len} bytes, more than the address space can map")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// An access outside the mapping, or misaligned for its type: an offset
    /// or length read from the file that does not make sense.
    #[error("range [{offset}, +{len}) (alignment {align}) lies outside the {mapped}-byte mapping")]
    OutOfBounds {
        /// Where the access starts.
        offset: u64,
        /// Its length in bytes (`u64::MAX` if computing it overflowed).
        len: u64,
        /// The alignment it needs.
        align: u64,
        /// The length of the mapping.
        mapped: u64,
    },
    /// The bytes where the lock should be are not a mutex quiver made.
    #[error("the lock's kind is {found:#x}, not {expected:#x}")]
    ForeignLock {
        /// The kind word found.
        found: u32,
        /// The kind word of a mutex quiver makes.
        expected: u32,
    },
    /// The lock was held by a live process for longer than the caller
    /// could wait.
    #[error("the lock was not granted within {waited:?}{}", holder_text(holder))]
    LockTimeout {
        /// How long the call waited for the lock.
        waited: Duration,
        /// Who held it, as far as /proc tells: "process 1234 (stopped)".
        holder: Option<String>,
    },
    /// A holder of the lock died and the lock was unlocked without being
    /// marked consistent: no one can take it again.
    #[error("the lock is not recoverable")]
    LockNotRecoverable,
}

impl ShmError {
    /// An [`ShmError::Io`] with a sentence of context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ShmError::Io { context: context.into(), source }
    }
}

/// The end of a lock-timeout message: who holds the lock and what to do.
pub(crate) fn holder_text(holder: &Option<String>) -> String {
    match holder {
        Some(holder) if holder.contains("stopped") => {
            format!(": held by {holder}; resume it (kill -CONT) or end it, and the store goes on")
        }
        Some(holder) => format!(": held by {holder}"),
        None => " (is a process stopped while holding it?)".to_string(),
    }
}
