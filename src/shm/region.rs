//! The store file, mapped: creation with the size reserved up front, opening,
//! and bounds-checked access to the bytes and structs inside.
//!
//! A [`Region`] hands out `&T` for [`Shared`] types only after checking that
//! the offset is aligned and the whole value lies inside the mapping, so a
//! corrupt offset read from the file becomes an error, never an
//! out-of-bounds access. Plain bytes go through a [`Span`], checked once when
//! it is made; turning a span into a slice is `unsafe`, because whether
//! another process may write those bytes meanwhile is the store's protocol,
//! which this module cannot see.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::error::{Result, ShmError};
use super::Shared;

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
                io::ErrorKind::AlreadyExists => ShmError::Exists(path.to_path_buf()),
                _ => ShmError::io(format!("create {}", path.display()), e),
            }
        })?;
        let reserve = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len);
        if let Err(errno) = reserve {
            // The file is ours and empty: remove it so a failed create leaves nothing behind.
            let _ = std::fs::remove_file(path);
            let source = io::Error::from(errno);
            return Err(match errno {
                rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG => {
                    ShmError::NoSpace { path: path.to_path_buf(), size: len, source }
                }
                _ => ShmError::io(format!("reserve {len} bytes for {}", path.display()), source),
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

    /// Opens and maps an existing file. The last component of `path` is
    /// not followed if it is a symlink (`O_NOFOLLOW`), and the open file is
    /// checked with `fstat` before anything is mapped: it must be a regular
    /// file and, when `owner` is given, belong to that uid. So a symlink, a
    /// device or FIFO, or another user's file (a huge sparse one, say) is
    /// refused without being mapped, pre-faulted or written.
    pub(crate) fn open(path: &Path, prefault: bool, owner: Option<u32>) -> Result<Region> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            // Not blocking on a FIFO planted at the path.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP | libc::EISDIR) => ShmError::NotRegular(path.to_path_buf()),
                _ => ShmError::io(format!("open {}", path.display()), e),
            })?;
        let meta = file.metadata().map_err(|e| ShmError::io(format!("stat {}", path.display()), e))?;
        if !meta.file_type().is_file() {
            return Err(ShmError::NotRegular(path.to_path_buf()));
        }
        if let Some(me) = owner {
            if meta.uid() != me {
                return Err(ShmError::OtherOwner { path: path.to_path_buf(), owner: meta.uid(), me });
            }
        }
        Self::map(file, path, prefault)
    }

    fn map(file: File, path: &Path, prefault: bool) -> Result<Region> {
        let len = file.metadata().map_err(|e| ShmError::io(format!("stat {}", path.display()), e))?.len();
        let len = usize::try_from(len).map_err(|_| ShmError::TooLarge { path: path.to_path_buf(), len })?;
        if len == 0 {
            // An empty file cannot be mapped; the store reports it as not ready.
            return Err(ShmError::Empty(path.to_path_buf()));
        }
        let mut options = MmapOptions::new();
        options.len(len);
        if prefault {
            // MAP_POPULATE: page tables are filled now, so the hot path does
            // not pay a fault (about 5 µs here) on the first touch of each page.
            options.populate();
        }
        let map = options.map_raw(&file).map_err(|e| ShmError::io(format!("map {}", path.display()), e))?;
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
            _ => Err(ShmError::OutOfBounds { offset, len, align, mapped: self.len() }),
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
        let len = count.checked_mul(size_of::<T>() as u64).ok_or(ShmError::OutOfBounds {
            offset,
            len: u64::MAX,
            align: align_of::<T>() as u64,
            mapped: self.len(),
        })?;
        let at = self.check(offset, len, align_of::<T>() as u64)?;
        // SAFETY: as in `get`: in bounds, aligned, and `T: Shared`.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at).cast::<T>(), count as usize) })
    }

    /// The bytes `[offset, offset + len)`, checked to lie in the mapping,
    /// as a [`Span`] to read or write later without another check.
    pub(crate) fn span(&self, offset: u64, len: u64) -> Result<Span> {
        let at = self.check(offset, len, 1)?;
        Ok(Span {
            at,
            len: len as usize,
            #[cfg(debug_assertions)]
            base: self.map.as_ptr() as usize,
        })
    }

    /// The bytes of `span`, to read.
    ///
    /// # Safety
    ///
    /// `span` was made by this region's [`span`](Region::span), and no
    /// process writes those bytes while the returned slice lives. (The
    /// store's protocol gives this for the payload of a sealed object it
    /// holds a reference to, and for bytes it reads under its lock that
    /// only a holder of the lock writes.)
    pub(crate) unsafe fn read_bytes(&self, span: Span) -> &[u8] {
        #[cfg(debug_assertions)]
        assert_eq!(span.base, self.map.as_ptr() as usize, "a span of another mapping");
        // SAFETY: the span lies inside this mapping (checked when it was
        // made, by the caller's contract on this same region), which lives as
        // long as `self`; the caller promises no writes while it is borrowed.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(span.at), span.len) }
    }

    /// The bytes of `span`, to write.
    ///
    /// # Safety
    ///
    /// `span` was made by this region's [`span`](Region::span), and while
    /// the returned slice lives no other reference to those bytes exists,
    /// in this process or any other. (The store's protocol gives this for
    /// the payload of an unsealed object this client created, borrowed
    /// mutably from the builder that owns it.)
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn write_bytes(&self, span: Span) -> &mut [u8] {
        #[cfg(debug_assertions)]
        assert_eq!(span.base, self.map.as_ptr() as usize, "a span of another mapping");
        // SAFETY: in bounds of this writable mapping, which outlives `self`
        // (checked when the span was made); the caller promises that this is
        // the only reference to the bytes while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(span.at), span.len) }
    }

    /// The raw address of `offset`, for the robust mutex (which the C library
    /// needs as a pointer). Bounds-checked for `len` bytes.
    pub(crate) fn raw_ptr(&self, offset: u64, len: u64, align: u64) -> Result<*mut u8> {
        let at = self.check(offset, len, align)?;
        // SAFETY: `at + len` lies inside the mapping (checked).
        Ok(unsafe { self.map.as_mut_ptr().add(at) })
    }
}

/// A byte range checked to lie inside one [`Region`]'s mapping, made by
/// [`Region::span`]. It holds offsets, not a borrow, so a view that owns the
/// region (through an `Arc`) can keep one; reading it goes back through the
/// region, so the slice borrows the region and cannot outlive the mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    at: usize,
    len: usize,
    /// The mapping's address, to catch a span used on another region in
    /// debug builds (release builds keep spans two words).
    #[cfg(debug_assertions)]
    base: usize,
}

impl Span {
    /// The length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }
}
