//! Two futex words and a timestamp in a small shared file: the raw
//! cross-process futex hand-off that the wake benchmark compares the store
//! against. Not part
//! of the store; kept here because only `shm` talks to the OS about shared
//! memory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

/// A 64-byte shared file holding two futex words (offsets 0 and 4) and a
/// 64-bit timestamp (offset 8).
#[doc(hidden)]
pub struct FutexPair {
    map: MmapRaw,
    _file: File,
}

impl FutexPair {
    /// Creates the file (which must not exist) and maps it.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
        file.set_len(64)?;
        Self::map(file)
    }

    /// Maps an existing file made by [`FutexPair::create`].
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::map(OpenOptions::new().read(true).write(true).open(path)?)
    }

    fn map(file: File) -> io::Result<Self> {
        if file.metadata()?.len() < 64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "futex file shorter than 64 bytes"));
        }
        let map = MmapOptions::new().len(64).map_raw(&file)?;
        Ok(FutexPair { map, _file: file })
    }

    /// Word 0 (ping) or 1 (pong); any other index is taken modulo 2.
    pub fn word(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the mapping is 64 bytes long and page aligned, so both
        // words at offsets 0 and 4 lie inside it and are aligned; it lives as
        // long as `self`; an AtomicU32 is valid for any bit pattern and is
        // only changed atomically by every process that maps the file.
        unsafe { &*self.map.as_ptr().add((i % 2) * 4).cast::<AtomicU32>() }
    }

    /// The timestamp word.
    pub fn stamp(&self) -> &AtomicU64 {
        // SAFETY: offset 8 of a 64-byte, page-aligned mapping is in bounds and
        // 8-byte aligned; the mapping lives as long as `self`; an AtomicU64 is
        // valid for any bit pattern and only changed atomically.
        unsafe { &*self.map.as_ptr().add(8).cast::<AtomicU64>() }
    }
}
