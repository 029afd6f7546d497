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
    /// Declared before `map`, so dropped (unwatched) before it is unmapped.
    watch: Option<super::sigbus::Watch>,
    map: MmapRaw,
    file: File,
    path: PathBuf,
    /// The temporary name of a region not published yet (removed on drop).
    unpublished: Option<tempfile::TempPath>,
}

/// The suffix of the temporary name a store is created under.
const CREATING: &str = ".creating";

/// A store path's directory and file name.
fn split(path: &Path) -> Result<(&Path, String)> {
    let name = path.file_name().ok_or_else(|| ShmError::NotRegular(path.to_path_buf()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name.to_string_lossy().into_owned()))
}

/// Removes what creators of `path` that died before publishing left: the
/// temporaries beside it that belong to this user, that no live creator
/// holds the creator lock on, and that were last changed more than a few
/// seconds ago (a creator takes its lock just after it makes the file).
/// Best effort: returns how many it removed.
pub(crate) fn remove_stale_creations(path: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok((dir, name)) = split(path) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let (prefix, me) = (format!(".{name}."), rustix::process::geteuid().as_raw());
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        // `.NAME.XXXXXX.creating`, the random part without a dot: not the
        // temporaries of a store `NAME.other`.
        let ours = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(CREATING))
            .is_some_and(|random| !random.is_empty() && !random.contains('.'));
        if !ours {
            continue;
        }
        let stale = entry.path();
        let Ok((file, meta)) = open_regular(&stale, true) else {
            continue;
        };
        let old = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age.as_secs() >= 5);
        let abandoned = meta.uid() == me && old && super::liveness::creator_alive(&file).is_ok_and(|alive| !alive);
        if abandoned && std::fs::remove_file(&stale).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// What [`inspect`] finds at a path, without mapping or changing anything.
#[derive(Debug)]
pub(crate) struct Inspected {
    /// The open file (read-only, not following a symlink), for lock probes.
    pub file: File,
    pub uid: u32,
    /// Its length, and the bytes it occupies (a sparse file occupies less).
    pub len: u64,
    pub allocated: u64,
    /// Its first bytes (fewer if it is shorter).
    pub head: Vec<u8>,
}

/// Opens `path` read-only without following a symlink or blocking on a
/// FIFO, checks it is a regular file, and reads its first `head` bytes.
pub(crate) fn inspect(path: &Path, head: usize) -> Result<Inspected> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let (file, meta) = open_regular(path, false)?;
    let mut bytes = vec![0u8; head];
    let mut read = 0;
    while read < head {
        match file.read_at(&mut bytes[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ShmError::io(format!("read {}", path.display()), e)),
        }
    }
    bytes.truncate(read);
    Ok(Inspected { uid: meta.uid(), len: meta.len(), allocated: meta.blocks().saturating_mul(512), head: bytes, file })
}

/// Opens `path` (read-only, or read-write with `write`) without following a
/// symlink at its last component or blocking on a FIFO, and checks on the
/// open descriptor that it is a regular file: a symlink, directory, device
/// or FIFO is `NotRegular`, before anything reads or maps it.
fn open_regular(path: &Path, write: bool) -> Result<(File, std::fs::Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
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
    Ok((file, meta))
}

/// Whether `name` is the temporary name a store is created under
/// (`.NAME.XXXXXX.creating`); if so, the store's name.
pub(crate) fn creating_name(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(CREATING)?;
    // The random part tempfile adds has no dot.
    inner.rsplit_once('.').map(|(name, _)| name)
}

impl Region {
    /// Creates the file of `len` bytes that is to appear at `path`, under a
    /// temporary name beside it (exclusive, random, mode 0600), reserves its
    /// blocks so a full tmpfs fails here rather than with SIGBUS later, and
    /// maps it, pre-faulted when `prefault` is set. Nothing appears at `path`
    /// until [`publish`](Region::publish): a creator killed before then
    /// leaves only a temporary, which it holds a creator lock on, so
    /// [`remove_stale_creations`] can tell it is abandoned. Dropping an
    /// unpublished region removes its file.
    pub(crate) fn create(path: &Path, len: u64, prefault: bool) -> Result<Region> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(ShmError::Exists(path.to_path_buf()));
        }
        let (dir, name) = split(path)?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(CREATING)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| ShmError::io(format!("create a file beside {}", path.display()), e))?;
        let (file, temp) = temp.into_parts();
        super::liveness::claim_creator(&file).map_err(|e| ShmError::io(format!("lock {}", temp.display()), e))?;
        let reserve = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len);
        if let Err(errno) = reserve {
            // `temp` is removed when it drops.
            let source = io::Error::from(errno);
            return Err(match errno {
                rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG => {
                    ShmError::NoSpace { path: path.to_path_buf(), size: len, source }
                }
                _ => ShmError::io(format!("reserve {len} bytes for {}", path.display()), source),
            });
        }
        let mut region = Self::map(file, &temp, prefault)?;
        region.unpublished = Some(temp);
        Ok(region)
    }

    /// Moves a region made by [`create`](Region::create) to `path`, once its
    /// contents are ready: atomically, and never over a file that appeared
    /// at `path` meanwhile (`renameat2` with `RENAME_NOREPLACE`).
    pub(crate) fn publish(&mut self, path: &Path) -> Result<()> {
        let Some(temp) = self.unpublished.take() else {
            return Ok(());
        };
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(cwd, &*temp, cwd, path, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(errno) => {
                let error = match errno {
                    rustix::io::Errno::EXIST => ShmError::Exists(path.to_path_buf()),
                    _ => ShmError::io(format!("publish {}", path.display()), io::Error::from(errno)),
                };
                self.unpublished = Some(temp); // removed when the region drops
                return Err(error);
            }
        }
        // Published: the name is no longer ours to remove.
        let _ = temp.keep();
        self.path = path.to_path_buf();
        let _ = super::liveness::release_creator(&self.file);
        Ok(())
    }

    /// Opens and maps an existing file. The last component of `path` is
    /// not followed if it is a symlink (`O_NOFOLLOW`), and the open file is
    /// checked with `fstat` before anything is mapped: it must be a regular
    /// file and, when `owner` is given, belong to that uid. So a symlink, a
    /// device or FIFO, or another user's file (a huge sparse one, say) is
    /// refused without being mapped, pre-faulted or written.
    pub(crate) fn open(path: &Path, prefault: bool, owner: Option<u32>) -> Result<Region> {
        use std::os::unix::fs::MetadataExt;
        let (file, meta) = open_regular(path, true)?;
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
        let start = map.as_ptr() as usize;
        let watch = super::sigbus::watch(start..start + map.len());
        Ok(Region { watch, map, file, path: path.to_path_buf(), unpublished: None })
    }

    /// Whether a page of the mapping turned out to lie past the file's end
    /// (the file was truncated while mapped; see [`super::sigbus`]): the
    /// page now reads zeros, and the store's calls fail.
    pub(crate) fn truncated(&self) -> bool {
        self.watch.as_ref().is_some_and(super::sigbus::Watch::truncated)
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

    /// Where it starts in its region.
    pub(crate) fn offset(&self) -> u64 {
        self.at as u64
    }
}
