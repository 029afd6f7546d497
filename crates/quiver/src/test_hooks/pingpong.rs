//! Two futex words and a timestamp in a small shared file: the raw
//! cross-process futex hand-off that the wake benchmark (`store/wake`)
//! compares the store against. Not part of the store: it maps its file
//! through `shm`'s bounds-checked `Region`, so it needs no `unsafe` of its
//! own, and waits with [`crate::shm::wait`].

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::shm::Region;

/// The file's length: word 0 at offset 0, word 1 at 4, the stamp at 8.
const LEN: u64 = 64;

/// A 64-byte shared file holding two futex words (offsets 0 and 4) and a
/// 64-bit timestamp (offset 8).
pub struct FutexPair {
    region: Region,
}

impl FutexPair {
    /// Creates the file (which must not exist, mode 0600) and maps it.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut region = Region::create(path, LEN, false).map_err(io::Error::other)?;
        region.publish(path).map_err(io::Error::other)?;
        Self::checked(region)
    }

    /// Maps an existing file made by [`FutexPair::create`].
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::checked(Region::open(path, false, None).map_err(io::Error::other)?)
    }

    fn checked(region: Region) -> io::Result<Self> {
        if region.len() < LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "futex file shorter than 64 bytes"));
        }
        Ok(FutexPair { region })
    }

    /// Word 0 (ping) or 1 (pong); any other index is taken modulo 2.
    pub fn word(&self, i: usize) -> &AtomicU32 {
        self.region.get((i % 2) as u64 * 4).expect("words 0 and 1 lie in the 64 bytes checked at open")
    }

    /// The timestamp word.
    pub fn stamp(&self) -> &AtomicU64 {
        self.region.get(8).expect("the stamp lies in the 64 bytes checked at open")
    }
}
