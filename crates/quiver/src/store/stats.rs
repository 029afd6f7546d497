//! What [`Store::list`] and [`Store::stats`] report: every object, and the
//! store-wide numbers.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::layout::{state, FLAG_PINNED};
use super::table::Tables;
use super::{now_ns, ObjectId, Result, Store};

/// The lifecycle state of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// Created, being written; not visible to `get`.
    Creating,
    /// Immutable and visible.
    Sealed,
    /// Deleted while still referenced; freed when the last view is dropped.
    Deleted,
}

/// One object, as [`Store::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// The object's ID.
    #[serde(serialize_with = "serialize_display")]
    pub id: ObjectId,
    /// Bytes of data.
    pub data_size: u64,
    /// Bytes of metadata.
    pub metadata_size: u64,
    /// Lifecycle state.
    pub state: ObjectState,
    /// Clients holding views of it.
    pub references: u32,
    /// Whether eviction skips it.
    pub pinned: bool,
    /// Time since it was created.
    pub age: Duration,
}

fn serialize_display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Store-wide numbers, as [`Store::stats`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Bytes in the data arena.
    pub capacity: u64,
    /// Bytes of the arena in allocated blocks (payload, padding and block headers).
    pub used: u64,
    /// Bytes of payload (data + metadata) in live objects.
    pub payload: u64,
    /// The largest free block (the largest object that fits without eviction).
    pub largest_free: u64,
    /// Objects in the store (creating, sealed, or deleted but still referenced).
    pub objects: u64,
    /// The most objects the table holds.
    pub max_objects: u64,
    /// Objects evicted since the store was created.
    pub evictions: u64,
    /// Live clients.
    pub clients: u32,
    /// Times the derived state was rebuilt after a lock holder died.
    pub repairs: u64,
    /// Dead clients found and recovered.
    pub dead_clients: u64,
    /// Entries dropped by a repair because their bytes were invalid.
    pub dropped_corrupt: u64,
    /// Size of the whole file.
    pub file_size: u64,
    /// `Some` when these numbers were read without the lock
    /// ([`Store::stats_unlocked`]): who held it then.
    pub lock_held_by: Option<String>,
}

impl Store {
    /// Every object in the store (a scan of the table).
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let now = now_ns();
        self.with_tables(|t| {
            let mut out = Vec::new();
            for entry in t.entries {
                let state = match entry.state.load(Relaxed) {
                    state::CREATING => ObjectState::Creating,
                    state::SEALED => ObjectState::Sealed,
                    state::DELETED => ObjectState::Deleted,
                    _ => continue,
                };
                out.push(ObjectInfo {
                    id: Tables::id_of(entry),
                    data_size: entry.data_size.load(Relaxed),
                    metadata_size: entry.meta_size.load(Relaxed) as u64,
                    state,
                    references: Tables::holder_count(entry),
                    pinned: entry.flags.load(Relaxed) & FLAG_PINNED != 0,
                    age: Duration::from_nanos(now.saturating_sub(entry.created_ns.load(Relaxed))),
                });
            }
            Ok(out)
        })
    }

    /// Store-wide numbers.
    pub fn stats(&self) -> Result<StoreStats> {
        self.with_tables(|t| Ok(self.read_stats(t, None)))
    }

    /// The numbers [`stats`](Self::stats) gives, read without the lock:
    /// what a tool shows when the lock is held by a stopped or hung process
    /// ([`lock_holder`](Self::lock_holder) says which). Each number is
    /// read whole, but they may be of different instants, and the largest
    /// free block is 0 if the allocator's lists were changing under the
    /// read. `lock_held_by` says who held the lock when they were read.
    pub fn stats_unlocked(&self) -> Result<StoreStats> {
        let t = Tables::new(&self.shared.region, &self.shared.layout)?;
        Ok(self.read_stats(&t, Some(self.lock_holder().unwrap_or_else(|| "nobody (any more)".into()))))
    }

    /// Who holds the store's lock now, as /proc tells it ("process 1234
    /// (thread 1234, stopped)"), or `None` if nobody does. Read without the
    /// lock; by the time it returns, the holder may have let go.
    pub fn lock_holder(&self) -> Option<String> {
        crate::shm::lock::holder(&self.shared.region, super::layout::MUTEX_OFFSET)
    }

    fn read_stats(&self, t: &Tables<'_>, lock_held_by: Option<String>) -> StoreStats {
        let layout = self.shared.layout;
        let h = t.header;
        StoreStats {
            capacity: layout.arena_size,
            used: h.used.load(Relaxed),
            payload: h.payload.load(Relaxed),
            largest_free: t.arena().largest_free(),
            objects: h.objects.load(Relaxed),
            max_objects: layout.max_objects,
            evictions: h.evictions.load(Relaxed),
            clients: t.clients.iter().filter(|c| c.active.load(Relaxed) != 0).count() as u32,
            repairs: h.repairs.load(Relaxed),
            dead_clients: h.dead_clients.load(Relaxed),
            dropped_corrupt: h.dropped_corrupt.load(Relaxed),
            file_size: layout.file_size,
            lock_held_by,
        }
    }
}
