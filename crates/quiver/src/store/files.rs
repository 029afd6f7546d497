//! The store files of a directory (`/dev/shm` by default), seen from
//! outside: what `quiver ls` lists and what `quiver rm` removes.
//!
//! Nothing here maps a file or joins a store as a client: each file is
//! opened read-only without following a symlink, checked with `fstat`, and
//! its header read with `pread`; live clients are counted by probing their
//! liveness locks (`F_OFD_GETLK`). So listing is safe on other users' files,
//! on huge sparse ones, and on whatever else sits in the directory.

use std::path::{Path, PathBuf};

use super::config::{store_path, FILE_PREFIX, STORE_DIR};
use super::layout::{FORMAT_VERSION, MAGIC, MAX_CLIENTS};
use super::{Result, StoreError};
use crate::shm::ShmError;

/// Bytes of the header [`inspect`] reads: magic to `max_clients`.
const HEAD: usize = 88;

/// What a store file is, as far as its outside shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum FileState {
    /// A store of this build's format.
    Store,
    /// A store of another format version (this build cannot open it).
    OtherVersion(u32),
    /// The temporary of a store being created: its creator is alive.
    BeingCreated,
    /// The temporary of a creator that died before finishing: the next
    /// create of the name removes it, and so does `quiver rm`.
    Abandoned,
    /// Not a quiver store (a symlink, a directory, a device, other bytes):
    /// why.
    NotAStore(String),
    /// A file this user cannot read (another user's store, most likely): why.
    Unreadable(String),
}

/// A file in the store directory, as [`list`] and [`inspect`] see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreFile {
    /// The store's name (`quiver-NAME` → `NAME`).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// What it is.
    pub state: FileState,
    /// The owner's uid (`None` if it could not be opened).
    pub owner: Option<u32>,
    /// Its length in bytes.
    pub size: u64,
    /// The bytes of memory it occupies (a sparse or half-made file, less).
    pub allocated: u64,
    /// Clients that have it open now (for a store).
    pub live_clients: Option<u32>,
    /// When it was made (for a store), in nanoseconds since the Unix epoch.
    pub created_ns: Option<u64>,
    /// The process that made it (for a store; it may have exited).
    pub creator_pid: Option<u32>,
}

/// Every store file in [`STORE_DIR`] (names starting with `quiver-`), and
/// the temporaries of stores being created there, sorted by name.
pub fn list() -> Result<Vec<StoreFile>> {
    list_in(Path::new(STORE_DIR))
}

/// [`list`] for another directory.
pub fn list_in(dir: &Path) -> Result<Vec<StoreFile>> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(name) = file_name.strip_prefix(FILE_PREFIX) {
            files.push(inspect_as(&path, name.to_string(), false));
        } else if let Some(name) = crate::shm::creating_name(&file_name).and_then(|n| n.strip_prefix(FILE_PREFIX)) {
            files.push(inspect_as(&path, name.to_string(), true));
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
    Ok(files)
}

/// What the file at `path` is, without mapping it or joining the store.
pub fn inspect(path: &Path) -> StoreFile {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .map(|n| n.strip_prefix(FILE_PREFIX).map(str::to_string).unwrap_or(n))
        .unwrap_or_default();
    inspect_as(path, name, false)
}

/// What the file at `path` is; `creating`: the temporary of a store being
/// made, whose creator lock tells a live creator from a dead one.
fn inspect_as(path: &Path, name: String, creating: bool) -> StoreFile {
    let mut file = StoreFile {
        name,
        path: path.to_path_buf(),
        state: FileState::NotAStore(String::new()),
        owner: None,
        size: 0,
        allocated: 0,
        live_clients: None,
        created_ns: None,
        creator_pid: None,
    };
    let seen = match crate::shm::inspect(path, HEAD) {
        Ok(seen) => seen,
        Err(ShmError::NotRegular(_)) => {
            let what = match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => "a symlink",
                Ok(m) if m.is_dir() => "a directory",
                _ => "not a regular file",
            };
            file.state = FileState::NotAStore(what.into());
            return file;
        }
        Err(e) => {
            // Another user's store (mode 0600) cannot be opened: say whose
            // it is, from the directory entry.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::MetadataExt;
                (file.owner, file.size, file.allocated) = (Some(meta.uid()), meta.len(), meta.blocks() * 512);
            }
            file.state = FileState::Unreadable(with_sources(&e));
            return file;
        }
    };
    (file.owner, file.size, file.allocated) = (Some(seen.uid), seen.len, seen.allocated);
    if creating {
        // Probed on this descriptor, opened anew: its own locks are not the creator's.
        file.state = match crate::shm::liveness::creator_alive(&seen.file).unwrap_or(true) {
            true => FileState::BeingCreated,
            false => FileState::Abandoned,
        };
        return file;
    }
    let word = |at: usize| seen.head.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let half = |at: usize| seen.head.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    if word(0) != Some(MAGIC) {
        let why = if seen.len == 0 { "empty" } else { "no quiver magic number" };
        file.state = FileState::NotAStore(why.into());
        return file;
    }
    file.state = match half(8) {
        Some(FORMAT_VERSION) => FileState::Store,
        Some(v) => FileState::OtherVersion(v),
        None => FileState::NotAStore("truncated header".into()),
    };
    file.created_ns = word(72);
    file.creator_pid = half(80);
    file.live_clients = crate::shm::liveness::live_slots(&seen.file, MAX_CLIENTS as u32).ok();
    file
}

/// What [`remove`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The store file removed.
    pub path: PathBuf,
    /// Clients that still had it open (they keep their mapping until they
    /// close it; nobody new can open it).
    pub live_clients: u32,
    /// Temporaries of dead creators of the same name removed with it.
    pub abandoned: usize,
}

/// Removes the store called `name`, checking first what is there: a file
/// that is not a quiver store (a symlink, another program's file) is never
/// removed, nor, unless `force`, a store that live clients have open or
/// that belongs to another user. Temporaries its dead creators left are
/// removed too. ([`Store::remove`](super::Store::remove) removes without
/// looking.)
pub fn remove(name: &str, force: bool) -> Result<Removed> {
    let path = store_path(name)?;
    let abandoned = crate::shm::remove_stale_creations(&path);
    if let Err(e) = std::fs::symlink_metadata(&path) {
        return Err(StoreError::io(format!("no store named {name:?} ({})", path.display()), e));
    }
    let file = inspect(&path);
    let refuse = |why: String| Err(StoreError::RemoveRefused { path: path.clone(), why });
    match &file.state {
        FileState::Store | FileState::OtherVersion(_) => {}
        FileState::NotAStore(why) => return refuse(format!("it is not a quiver store ({why}); remove it by hand")),
        FileState::Unreadable(why) if !force => {
            return refuse(format!("it cannot be read ({why}), so it cannot be checked (--force removes it)"))
        }
        FileState::Unreadable(_) => {}
        FileState::BeingCreated | FileState::Abandoned => return refuse("it is a store being created".into()),
    }
    let me = rustix::process::geteuid().as_raw();
    if file.owner != Some(me) && !force {
        return refuse(format!("it belongs to uid {} (--force removes it)", file.owner.unwrap_or(u32::MAX)));
    }
    let live_clients = file.live_clients.unwrap_or(0);
    if live_clients > 0 && !force {
        return refuse(format!(
            "{live_clients} processes have it open (they would keep it in memory while nobody new could open it; \
             --force removes it anyway)"
        ));
    }
    std::fs::remove_file(&path).map_err(|e| StoreError::io(format!("remove {}", path.display()), e))?;
    Ok(Removed { path, live_clients, abandoned })
}

/// An error and its sources, as one line ("open …: Permission denied").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // A transparent wrapper repeats its source: say it once.
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Checks that an output written beside `path` and renamed over it (a
/// checkpoint, a model, an Arrow file) replaces nothing but a regular file:
/// a device (`/dev/null`), a FIFO, a socket, a directory, a symlink (which
/// the rename would replace, not follow) or a quiver store is refused with
/// an error that says what is there, as `install` and `sed -i` refuse. No
/// file at `path` is fine.
pub fn check_replaceable(path: &Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        "a symlink (a rename would replace the link, not write where it points: give its target)"
    } else if !kind.is_file() {
        describe_kind(kind)
    } else if matches!(
        inspect(path).state,
        FileState::Store | FileState::OtherVersion(_) | FileState::BeingCreated | FileState::Abandoned
    ) {
        "a quiver store"
    } else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} is {what}, not a regular file: the output is written beside it and renamed over it, \
             which would replace it (give a regular file's path)",
            path.display()
        ),
    ))
}

/// Opens a file that is to be read whole (an input: a data file, a model,
/// a checkpoint) without ever blocking in `open`: a FIFO with no writer
/// would block there beyond the reach of Ctrl-C (the command's handler
/// only sets a flag, and `open` is retried after it). Read-only,
/// `O_NONBLOCK` (which changes nothing for a regular file); the caller
/// checks on the descriptor that it is a regular file, as every input is.
pub fn open_input(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

/// What is at a path that is not a regular file, in words (`a FIFO`).
pub fn describe_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "a symlink"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a regular file"
    }
}

/// The mode a plain `open(2)` with mode 0666 gives under this process's
/// umask (read from `/proc/self/status`, so nothing is changed; 0600 where
/// it cannot be read): for outputs meant to be shared like any file.
pub fn output_mode() -> u32 {
    let umask = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
    });
    umask.map_or(0o600, |umask| 0o666 & !umask)
}
