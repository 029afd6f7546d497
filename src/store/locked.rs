//! The store under its lock, as the layers above it see it: the registry
//! area of the file, and the few object operations they need to run in the
//! same critical section as a change to the registry (look an object up,
//! take a view of it, delete it).
//!
//! The stream layer keeps its partitions' head offsets in the registry and
//! assigns an offset in the same critical section that creates the offset's
//! object ([`Store::create_assigned`](super::Store::create_assigned)), so
//! no other process ever sees an offset without its object or the reverse.

use std::cell::Cell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::client::Shared;
use super::layout::{state, BLOCK_HEADER, REGISTRY_BYTES, REGISTRY_OFFSET};
use super::table::Tables;
use super::{ObjectId, ObjectState, ObjectView};
use super::{Result, StoreError};
use crate::shm::liveness;

/// The store with its lock held. Lives only inside [`Store::locked`] and
/// the callbacks of [`Store::create_assigned`].
///
/// [`Store::locked`]: super::Store::locked
/// [`Store::create_assigned`]: super::Store::create_assigned
pub(crate) struct Locked<'a> {
    t: &'a Tables<'a>,
    shared: &'a Arc<Shared>,
    /// Set when an operation freed memory, so the caller wakes creators
    /// waiting for space once the lock is released.
    freed: Cell<bool>,
}

/// What [`Locked::object`] finds.
pub(crate) struct ObjectRecord {
    pub state: ObjectState,
    /// Bytes of data plus metadata.
    pub payload: u64,
    /// The first [`METADATA_HEAD`] bytes of the metadata (sealed objects
    /// only; zeros otherwise), copied so the lock can be released.
    pub metadata: [u8; METADATA_HEAD],
    /// The whole metadata's length.
    pub metadata_len: usize,
}

impl ObjectRecord {
    /// The copied metadata (all of it if it is at most [`METADATA_HEAD`] bytes).
    pub(crate) fn metadata(&self) -> &[u8] {
        &self.metadata[..self.metadata_len.min(METADATA_HEAD)]
    }
}

/// Bytes of metadata an [`ObjectRecord`] copies: a batch header.
pub(crate) const METADATA_HEAD: usize = 32;

impl<'a> Locked<'a> {
    pub(super) fn new(t: &'a Tables<'a>, shared: &'a Arc<Shared>) -> Self {
        Locked { t, shared, freed: Cell::new(false) }
    }

    pub(super) fn freed(&self) -> bool {
        self.freed.get()
    }

    /// The `T` at `offset` in the registry, bounds- and alignment-checked.
    pub(crate) fn registry<T: crate::shm::Shared>(&self, offset: u64) -> Result<&'a T> {
        let fits = offset.checked_add(size_of::<T>() as u64).is_some_and(|end| end <= REGISTRY_BYTES);
        if !fits {
            return Err(StoreError::corrupted(format_args!("registry offset {offset} lies outside the registry")));
        }
        Ok(self.t.region.get(REGISTRY_OFFSET + offset)?)
    }

    /// This handle's client: its slot and incarnation.
    pub(crate) fn me(&self) -> Result<(u32, u64)> {
        let slot = self.shared.client;
        let c = self.t.clients.get(slot as usize).ok_or_else(|| StoreError::corrupted("client slot out of range"))?;
        Ok((slot, c.incarnation.load(Relaxed)))
    }

    /// Whether the client incarnation `(slot, incarnation)` is still alive:
    /// its slot is active, holds that incarnation, and its process holds the
    /// slot's liveness lock (which the OS drops when the process dies).
    pub(crate) fn client_alive(&self, slot: u32, incarnation: u64) -> Result<bool> {
        let Some(c) = self.t.clients.get(slot as usize) else {
            return Ok(false);
        };
        if c.active.load(Relaxed) == 0 || c.incarnation.load(Relaxed) != incarnation {
            return Ok(false);
        }
        if slot == self.shared.client {
            return Ok(true);
        }
        liveness::is_held_by_other(self.t.region, slot).map_err(|e| StoreError::io("probe a client liveness lock", e))
    }

    /// The state, size and (if sealed) metadata of object `id`.
    pub(crate) fn object(&self, id: ObjectId) -> Result<Option<ObjectRecord>> {
        match self.t.lookup(&id, id.table_hash())? {
            Some(e) => self.record(e, id),
            None => Ok(None),
        }
    }

    fn record(&self, e: u32, id: ObjectId) -> Result<Option<ObjectRecord>> {
        let entry = self.t.entry(e)?;
        let (data_size, meta_size) = (entry.data_size.load(Relaxed), entry.meta_size.load(Relaxed) as u64);
        let state = match entry.state.load(Relaxed) {
            state::CREATING => ObjectState::Creating,
            state::SEALED => ObjectState::Sealed,
            // Deleted objects are out of the index; anything else is not an object.
            _ => return Ok(None),
        };
        let mut metadata = [0u8; METADATA_HEAD];
        if state == ObjectState::Sealed {
            let (block, block_size) = (entry.block.load(Relaxed), entry.block_size.load(Relaxed));
            let fits = data_size.checked_add(meta_size + BLOCK_HEADER).is_some_and(|n| n <= block_size)
                && block.checked_add(block_size).is_some_and(|end| end <= self.shared.layout.arena_size);
            if !fits {
                return Err(StoreError::corrupted(format_args!("entry {e} of object {id} overruns its block")));
            }
            let at = self.shared.layout.arena_offset + block + BLOCK_HEADER + data_size;
            let len = meta_size.min(METADATA_HEAD as u64);
            let span = self.t.region.span(at, len)?;
            // SAFETY: a span of this region. A sealed object is never written, and it cannot be freed while
            // we hold the lock: the copy is of settled bytes.
            metadata[..len as usize].copy_from_slice(unsafe { self.t.region.read_bytes(span) });
        }
        Ok(Some(ObjectRecord { state, payload: data_size + meta_size, metadata, metadata_len: meta_size as usize }))
    }

    /// A view of the sealed object `id`, or `None` if it is not sealed.
    /// Drop the view only after the lock is released (dropping the last
    /// view of an object takes the lock).
    pub(crate) fn view(&self, id: ObjectId) -> Result<Option<ObjectView>> {
        super::take_view(self.t, self.shared, id, id.table_hash())
    }

    /// Deletes every sealed object whose ID satisfies `matches`: a scan of
    /// the object table. Returns how many were deleted.
    pub(crate) fn delete_where(&self, matches: impl Fn(&ObjectId) -> bool) -> Result<usize> {
        let mut doomed = Vec::new();
        for entry in self.t.entries {
            if entry.state.load(Relaxed) == state::SEALED {
                let id = Tables::id_of(entry);
                if matches(&id) {
                    doomed.push(id);
                }
            }
        }
        for &id in &doomed {
            self.delete(id)?;
        }
        Ok(doomed.len())
    }

    /// Deletes the sealed object `id` (deferred while views of it exist).
    /// Returns what it was, or `None` if there is no such sealed object.
    pub(crate) fn delete(&self, id: ObjectId) -> Result<Option<ObjectRecord>> {
        let hash = id.table_hash();
        let Some(e) = self.t.lookup(&id, hash)? else {
            return Ok(None);
        };
        let record = match self.record(e, id)? {
            Some(record) if record.state == ObjectState::Sealed => record,
            _ => return Ok(None),
        };
        let entry = self.t.entry(e)?;
        if Tables::holder_count(entry) == 0 {
            self.t.free_object(e)?;
            self.freed.set(true);
        } else {
            self.t.index_remove(hash, e)?;
            entry.state.store(state::DELETED, std::sync::atomic::Ordering::Release);
        }
        Ok(Some(record))
    }
}
