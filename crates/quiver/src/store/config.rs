//! What a user sets when creating or opening a store, and where store files live.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Result, StoreError};
use crate::shm::wait::WaitStrategy;

/// The directory that named stores live in.
pub const STORE_DIR: &str = "/dev/shm";
/// The prefix of a named store's file name: store `x` is `/dev/shm/quiver-x`.
pub const FILE_PREFIX: &str = "quiver-";

/// The path of the store called `name`, refusing names that could escape
/// [`STORE_DIR`] (separators, `..`, a leading dot) or are unreasonable.
pub fn store_path(name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(StoreError::InvalidName(name.to_string()));
    }
    Ok(Path::new(STORE_DIR).join(format!("{FILE_PREFIX}{name}")))
}

#[derive(Clone, Debug)]
pub(crate) enum Location {
    Name(String),
    Path(PathBuf),
}

impl Location {
    pub(crate) fn path(&self) -> Result<PathBuf> {
        match self {
            Location::Name(name) => store_path(name),
            Location::Path(path) => Ok(path.clone()),
        }
    }
}

/// Parameters of a new store, for [`Store::create`](super::Store::create).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub(crate) location: Location,
    pub(crate) capacity: u64,
    pub(crate) max_objects: Option<u64>,
    pub(crate) open: OpenConfig,
}

impl StoreConfig {
    /// A store called `name`, in [`STORE_DIR`], with a 256 MiB arena.
    pub fn new(name: &str) -> Self {
        Self::with_location(Location::Name(name.to_string()))
    }

    /// A store at any path: on a disk, a store outlives its processes.
    pub fn at_path(path: impl Into<PathBuf>) -> Self {
        Self::with_location(Location::Path(path.into()))
    }

    fn with_location(location: Location) -> Self {
        StoreConfig {
            open: OpenConfig { location: location.clone(), ..OpenConfig::new("") },
            location,
            capacity: 256 << 20,
            max_objects: None,
        }
    }

    /// Bytes of the data arena (rounded up to whole pages). Every object
    /// takes its data and metadata plus a 64-byte block header, rounded up
    /// to 64 bytes, so the largest object a store of capacity `C` holds has
    /// `C - 64` bytes of data and metadata (with `C` a multiple of 64). The
    /// file is larger by the header, the registry and the object table.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// The most objects the store holds at once. The default is one per
    /// 4 KiB of capacity (at least 1024); raise it for many small objects.
    /// Each costs 120 bytes of table.
    pub fn max_objects(mut self, n: u64) -> Self {
        self.max_objects = Some(n);
        self
    }

    /// Whether to fault in every page now (default true).
    pub fn prefault(mut self, yes: bool) -> Self {
        self.open.prefault = yes;
        self
    }

    /// How this handle waits (default [`WaitStrategy::Park`]).
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.open.wait = strategy;
        self
    }

    /// How long to wait for the metadata lock before giving up (default 10 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.open.lock_timeout = timeout;
        self
    }

    pub(crate) fn objects(&self) -> u64 {
        self.max_objects.unwrap_or((self.capacity / 4096).clamp(1024, (1 << 31) - 1))
    }
}

/// How to open an existing store, for [`Store::open_with`](super::Store::open_with).
#[derive(Clone, Debug)]
pub struct OpenConfig {
    pub(crate) location: Location,
    pub(crate) prefault: bool,
    pub(crate) wait: WaitStrategy,
    pub(crate) lock_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) allow_other_owner: bool,
}

impl OpenConfig {
    /// The store called `name`, in [`STORE_DIR`].
    pub fn new(name: &str) -> Self {
        Self::with_location(Location::Name(name.to_string()))
    }

    /// The store at `path`.
    pub fn at_path(path: impl Into<PathBuf>) -> Self {
        Self::with_location(Location::Path(path.into()))
    }

    fn with_location(location: Location) -> Self {
        OpenConfig {
            location,
            prefault: true,
            wait: WaitStrategy::Park,
            lock_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(1),
            allow_other_owner: false,
        }
    }

    /// Whether to fault in every page now (default true).
    pub fn prefault(mut self, yes: bool) -> Self {
        self.prefault = yes;
        self
    }

    /// How this handle waits (default [`WaitStrategy::Park`]).
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.wait = strategy;
        self
    }

    /// How long to wait for the metadata lock before giving up (default 10 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long to wait for a store that is still being created (default 1 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Open a store file owned by another user (refused by default with
    /// [`StoreError::OtherOwner`]: another user's store is another user's data,
    /// and its contents steer this process's reads).
    pub fn allow_other_owner(mut self, yes: bool) -> Self {
        self.allow_other_owner = yes;
        self
    }
}

/// Options of one `create` call: `CreateOptions::new().timeout(d).pinned(true)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub(crate) timeout: Duration,
    pub(crate) pinned: bool,
    /// An object of shared cells (`Store::create_cells`); pinned too.
    pub(crate) cells: bool,
}

impl CreateOptions {
    /// No waiting for space, not pinned.
    pub fn new() -> Self {
        CreateOptions::default()
    }

    /// How long to wait for space when the store is full and nothing can be
    /// evicted (default zero: fail at once with `StoreFull`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Never evict the object once sealed (it can still be deleted).
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_store_directory() {
        assert_eq!(store_path("ok-name_1.x").unwrap(), Path::new("/dev/shm/quiver-ok-name_1.x"));
        for bad in ["", "..", "../etc", "a/b", "/abs", ".hidden", "sp ace", &"x".repeat(201)] {
            assert!(matches!(store_path(bad), Err(StoreError::InvalidName(_))), "{bad:?} accepted");
        }
    }
}
