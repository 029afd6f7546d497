//! Checkpoint files: a shard-managed group's state on disk, written the way
//! a database writes (temporary file, fsync, rename, fsync of the
//! directory), read back with every byte checked.
//!
//! A file is a 32-byte header and a payload (docs/format.md):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `"QVRCKPT\0"` |
//! | 8..12 | format version (u32, little-endian), 1 |
//! | 12..16 | zero |
//! | 16..24 | payload length (u64) |
//! | 24..32 | FNV-1a 64 of the payload |
//! | 32.. | the payload: a [`Checkpoint`], bincode 2 (standard configuration) |

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of checkpoint files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint file: {context}")]
    Io {
        /// What quiver was doing, and to which file.
        context: String,
        /// The error the OS reported.
        #[source]
        source: std::io::Error,
    },
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
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The checkpoint belongs to another stream or group, or another shape.
    #[error("the checkpoint is of {found}, not of {expected}")]
    Mismatch {
        /// What the checkpoint is of.
        found: String,
        /// What it was restored into.
        expected: String,
    },
}

/// The first eight bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"QVRCKPT\0";
/// The checkpoint format version this build writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 32;
/// The largest payload this build reads (a guard against absurd lengths).
const MAX_PAYLOAD: u64 = 1 << 30;

/// A shard's task as a checkpoint records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: u64,
    /// The shard's partition.
    pub partition: u32,
    /// The shard's first offset.
    pub start: u64,
    /// One past its last offset.
    pub end: u64,
    /// How often it failed.
    pub retries: u32,
}

/// How shards are sized, as a checkpoint records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardUnit {
    /// Shards of a number of batches.
    Batches,
    /// Shards of (at least) a number of rows, in whole batches.
    Rows,
}

/// Everything a checkpoint keeps of a shard-managed group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream's name.
    pub stream: String,
    /// The consumer group's name.
    pub group: String,
    /// The stream's partitions.
    pub partitions: u32,
    /// Shard size and its unit.
    pub shard_size: u64,
    /// See [`ShardUnit`].
    pub unit: ShardUnit,
    /// How long a partition may be idle before a partial shard is cut (ns).
    pub linger_ns: u64,
    /// How long a lease lasts (ns).
    pub lease_ns: u64,
    /// Failures allowed before a task becomes a dead letter.
    pub max_retries: u32,
    /// The id the next task gets.
    pub next_task_id: u64,
    /// The partition the splitter looks at first.
    pub next_partition: u32,
    /// Per partition: the first offset not yet cut into a shard.
    pub next_cut: Vec<u64>,
    /// Per partition: the group's committed offset (all shards below are done).
    pub committed: Vec<u64>,
    /// Tasks waiting, front first.
    pub todo: Vec<TaskRecord>,
    /// Tasks leased to consumers when the checkpoint was taken.
    pub doing: Vec<TaskRecord>,
    /// Tasks done whose earlier shards were not all done yet.
    pub done: Vec<TaskRecord>,
    /// Tasks that failed more often than allowed.
    pub dead_letters: Vec<TaskRecord>,
    /// When the checkpoint was taken (ns since the epoch).
    pub taken_ns: u64,
}

use crate::store::fnv1a;

/// The largest checkpoint file: every task of a full group as a record
/// (at most 16,384 tasks of a few dozen bytes each) and the per-partition
/// offsets fit in a few MiB; this leaves room and still refuses a huge or
/// endless file before reading it.
const MAX_FILE_BYTES: u64 = 64 << 20;

impl Checkpoint {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let payload = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| CheckpointError::Encode(Box::new(e)))?;
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&fnv1a(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        Ok(bytes)
    }

    /// Parses a file's bytes, checking magic, version, length and checksum
    /// before decoding, and that the decoded state is consistent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(CheckpointError::NotACheckpoint);
        }
        if bytes.len() < HEADER {
            return Err(CheckpointError::Truncated { expected: HEADER as u64, actual: bytes.len() as u64 });
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(CheckpointError::VersionMismatch { found: version, expected: VERSION });
        }
        if bytes[12..16] != [0; 4] {
            return Err(CheckpointError::Corrupted("the reserved header bytes are not zero".into()));
        }
        let len = word(16);
        if len > MAX_PAYLOAD {
            return Err(CheckpointError::Corrupted(format!("a payload of {len} bytes")));
        }
        let expected = HEADER as u64 + len;
        if (bytes.len() as u64) < expected {
            return Err(CheckpointError::Truncated { expected, actual: bytes.len() as u64 });
        }
        if (bytes.len() as u64) > expected {
            return Err(CheckpointError::Corrupted(format!(
                "{} bytes after the payload",
                bytes.len() as u64 - expected
            )));
        }
        let payload = &bytes[HEADER..];
        if fnv1a(payload) != word(24) {
            return Err(CheckpointError::Corrupted("the checksum does not match".into()));
        }
        let config = bincode::config::standard().with_limit::<{ MAX_PAYLOAD as usize }>();
        let (checkpoint, used): (Checkpoint, usize) = bincode::serde::decode_from_slice(payload, config)
            .map_err(|e| CheckpointError::Corrupted(format!("cannot decode: {e}")))?;
        if used != payload.len() {
            return Err(CheckpointError::Corrupted("the payload has trailing bytes".into()));
        }
        checkpoint.check()?;
        Ok(checkpoint)
    }

    /// Checks what the checksum cannot: that the numbers fit together.
    fn check(&self) -> Result<(), CheckpointError> {
        let bad = |why: String| Err(CheckpointError::Corrupted(why));
        let p = self.partitions as usize;
        if p == 0 || p > crate::stream::MAX_PARTITIONS || self.next_cut.len() != p || self.committed.len() != p {
            return bad(format!(
                "{} partitions with {} cut and {} committed offsets",
                p,
                self.next_cut.len(),
                self.committed.len()
            ));
        }
        if self.shard_size == 0 {
            return bad("a shard size of 0".into());
        }
        let tasks = self.todo.len() + self.doing.len() + self.done.len() + self.dead_letters.len();
        if tasks > super::MAX_TASKS {
            return bad(format!("{tasks} tasks (a group holds at most {})", super::MAX_TASKS));
        }
        if self.next_task_id >= u64::MAX / 2 {
            return bad(format!("a task id counter of {}", self.next_task_id));
        }
        for (p, (&committed, &cut)) in self.committed.iter().zip(&self.next_cut).enumerate() {
            if committed > cut {
                return bad(format!("partition {p} committed to {committed}, past its cut {cut}"));
            }
        }
        let live = self.todo.iter().chain(&self.doing).chain(&self.done).map(|t| (t, true));
        for (t, unfinished) in live.chain(self.dead_letters.iter().map(|t| (t, false))) {
            let p = t.partition as usize;
            // Unfinished shards lie between the committed offset and the
            // cut; dead letters may lie below the committed offset.
            let inside =
                p < self.committed.len() && (!unfinished || t.start >= self.committed[p]) && t.end <= self.next_cut[p];
            if t.start >= t.end || t.id == 0 || t.id >= self.next_task_id || !inside {
                return bad(format!("task {t:?}"));
            }
        }
        let mut all: Vec<&TaskRecord> =
            self.todo.iter().chain(&self.doing).chain(&self.done).chain(&self.dead_letters).collect();
        // No two tasks share an id or overlap in a partition.
        all.sort_by_key(|t| t.id);
        if all.windows(2).any(|w| w[0].id == w[1].id) {
            return bad("two tasks share an id".into());
        }
        all.sort_by_key(|t| (t.partition, t.start));
        if all.windows(2).any(|w| w[0].partition == w[1].partition && w[0].end > w[1].start) {
            return bad("two tasks overlap".into());
        }
        Ok(())
    }

    /// Writes the checkpoint to `path` atomically: a temporary file beside
    /// it, fsync, rename over `path`, fsync of the directory. A crash at
    /// any point leaves the old file or the new one, never a mix.
    pub fn write(&self, path: &Path) -> Result<u64, CheckpointError> {
        let bytes = self.to_bytes()?;
        let io = |what: &str, source| CheckpointError::Io { context: format!("{what} {}", path.display()), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().ok_or_else(|| {
            io("write", std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"))
        })?;
        crate::store::files::check_replaceable(path).map_err(|e| io("check what is at", e))?;
        // Exclusive, with a random name and mode 0600, like the store: a
        // checkpoint is its owner's business.
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| io("create a temporary file for", e))?;
        temp.write_all(&bytes).map_err(|e| io("write", e))?;
        crate::shm::crash::point();
        temp.as_file().sync_all().map_err(|e| io("fsync", e))?;
        crate::shm::crash::point();
        // On an error the temporary is removed when it drops.
        temp.persist(path).map_err(|e| io("rename onto", e.error))?;
        crate::shm::crash::point();
        let result = std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync the directory of", e));
        result.map(|()| bytes.len() as u64)
    }

    /// Reads and checks the checkpoint at `path`.
    /// A file that is not a regular file, or is larger than any checkpoint
    /// can be, is refused before it is read (`/dev/zero` is not read until
    /// memory runs out).
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        use std::io::Read;
        let io = |what: &str, source| CheckpointError::Io { context: format!("{what} {}", path.display()), source };
        let file = crate::store::files::open_input(path).map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        if !meta.is_file() {
            return Err(CheckpointError::Corrupted(format!("{} is not a regular file", path.display())));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(CheckpointError::Corrupted(format!(
                "{} holds {} bytes; a checkpoint holds at most {MAX_FILE_BYTES}",
                path.display(),
                meta.len()
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // Bounded even if the file grows while it is read.
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| io("read", e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(CheckpointError::Corrupted(format!("{} grew past {MAX_FILE_BYTES} bytes", path.display())));
        }
        Checkpoint::from_bytes(&bytes)
    }
}
