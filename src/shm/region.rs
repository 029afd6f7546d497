//! The store file, mapped: creation with the size reserved up front, opening,
//! and bounds-checked access to the bytes and structs inside.
//!
//! A [`Region`] hands out `&T` for [`Shared`] types only after checking that
//! the offset is aligned and the whole value lies inside the mapping, so a
//! corrupt offset read from the file becomes an error, never an
//! out-of-bounds access.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::Shared;
use crate::error::{Result, StoreError};

/// The mapped store file. One per client handle: its open file description
/// also carries the client's liveness lock (see [`super::liveness`]).
pub(crate) struct Region {
    map: MmapRaw,
    file: File,
    path: PathBuf,
}

impl Region {
    /// Creates a new file of `len` bytes at `path` (mode 0600, failing if it
    /// exists), reserves its blocks so a full tmpfs fails here rather than
    /// with SIGBUS later, and maps it, pre-faulted when `prefault` is set.
    pub(crate) fn create(path: &Path, len: u64, prefault: bool) -> Result<Region> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            match e.kind() {
                io::ErrorKind::AlreadyExists => StoreError::StoreExists(path.to_path_buf()),
                _ => StoreError::io(format!("create {}", path.display()), e),
            }
        })?;
        let reserve = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len);
        if let Err(errno) = reserve {
            // The file is ours and empty: remove it so a failed create leaves nothing behind.
            let _ = std::fs::remove_file(path);
            let source = io::Error::from(errno);
            return Err(match errno {
                rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG => {
                    StoreError::NoSpace { path: path.to_path_buf(), size: len, source }
                }
                _ => StoreError::io(format!("reserve {len} bytes for {}", path.display()), source),
            });
        }
        match Self::map(file, path, prefault) {
            Ok(region) => Ok(region),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Opens and maps an existing file.
    pub(crate) fn open(path: &Path, prefault: bool) -> Result<Region> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        Self::map(file, path, prefault)
    }

    fn map(file: File, path: &Path, prefault: bool) -> Result<Region> {
        let len = file.metadata().map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?.len();
        let len = usize::try_from(len).map_err(|_| StoreError::corrupted("file larger than the address space"))?;
        if len == 0 {
            // An empty file cannot be mapped; the caller reports it as not ready.
            return Err(StoreError::NotReady(path.to_path_buf()));
        }
        let mut options = MmapOptions::new();
        options.len(len);
        if prefault {
            // MAP_POPULATE: page tables are filled now, so the hot path does
            // not pay a fault (about 5 µs here) on the first touch of each page.
            options.populate();
        }
        let map = options.map_raw(&file).map_err(|e| StoreError::io(format!("map {}", path.display()), e))?;
        Ok(Region { map, file, path: path.to_path_buf() })
    }

    /// The length of the mapping in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The addresses the mapping occupies in this process.
    pub(crate) fn address_range(&self) -> std::ops::Range<usize> {
        let start = self.map.as_ptr() as usize;
        start..start + self.map.len()
    }

    /// The uid that owns the file.
    pub(crate) fn owner(&self) -> Result<u32> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|e| StoreError::io(format!("stat {}", self.path.display()), e))?;
        Ok(meta.uid())
    }

    /// The path the file was opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for the liveness locks.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Checks that `[offset, offset + len)` lies in the mapping and that
    /// `offset` is a multiple of `align`; returns the offset as `usize`.
    fn check(&self, offset: u64, len: u64, align: u64) -> Result<usize> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.len() && offset % align == 0 => Ok(offset as usize),
            _ => Err(StoreError::corrupted(format_args!(
                "range [{offset}, +{len}) (alignment {align}) lies outside the {}-byte mapping",
                self.len()
            ))),
        }
    }

    /// A shared reference to the `T` at `offset`, after a bounds and
    /// alignment check.
    pub(crate) fn get<T: Shared>(&self, offset: u64) -> Result<&T> {
        let at = self.check(offset, size_of::<T>() as u64, align_of::<T>() as u64)?;
        // SAFETY: `check` proved that the value lies inside the mapping, which
        // lives as long as `self`, and is aligned for `T`. `T: Shared` means
        // every bit pattern is valid and all mutation goes through atomics, so
        // other processes changing it concurrently is not a data race.
        Ok(unsafe { &*self.map.as_ptr().add(at).cast::<T>() })
    }

    /// A shared slice of `count` values of `T` starting at `offset`.
    pub(crate) fn slice<T: Shared>(&self, offset: u64, count: u64) -> Result<&[T]> {
        let len =
            count.checked_mul(size_of::<T>() as u64).ok_or_else(|| StoreError::corrupted("slice length overflows"))?;
        let at = self.check(offset, len, align_of::<T>() as u64)?;
        // SAFETY: as in `get`: in bounds, aligned, and `T: Shared`.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at).cast::<T>(), count as usize) })
    }

    /// The bytes `[offset, offset + len)` of a sealed object.
    ///
    /// Crate-internal contract: the store calls this only for the payload of
    /// an object it has seen sealed and holds a reference to, which no
    /// process writes while the reference is held (the store protocol).
    pub(crate) fn read_bytes(&self, offset: u64, len: u64) -> Result<&[u8]> {
        let at = self.check(offset, len, 1)?;
        // SAFETY: in bounds (checked); the mapping outlives `self`; by the
        // store protocol nobody writes a sealed, referenced object.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), len as usize) })
    }

    /// The bytes `[offset, offset + len)` of an object being created, for its
    /// creator to fill.
    ///
    /// Crate-internal contract: the store calls this only for the payload of
    /// an unsealed object that this client created, so no other reference to
    /// these bytes exists in any process (the store protocol), and it keeps
    /// the returned slice borrowed from the builder that owns the object.
    #[allow(clippy::mut_from_ref)]
    pub(crate) fn write_bytes(&self, offset: u64, len: u64) -> Result<&mut [u8]> {
        let at = self.check(offset, len, 1)?;
        // SAFETY: in bounds (checked); the mapping is writable and outlives
        // `self`; the range belongs exclusively to the unsealed object whose
        // builder borrows this slice mutably.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(at), len as usize) })
    }

    /// The raw address of `offset`, for the robust mutex (which the C library
    /// needs as a pointer). Bounds-checked for `len` bytes.
    pub(crate) fn raw_ptr(&self, offset: u64, len: u64, align: u64) -> Result<*mut u8> {
        let at = self.check(offset, len, align)?;
        // SAFETY: `at + len` lies inside the mapping (checked).
        Ok(unsafe { self.map.as_mut_ptr().add(at) })
    }
}
