//! A transaction: the store with its lock held, as the layers above it see
//! it. One critical section, one typed handle (after redb's and LMDB's
//! transactions): the caller looks objects up, creates an object under an
//! ID it computes from the registry, seals, deletes, and reads and writes
//! the registry area, all under the same lock, and returns its own errors.
//! No callback crosses the layers.
//!
//! The stream layer keeps its partitions' head offsets in the registry and
//! assigns an offset in the same transaction that creates the offset's
//! object, so no other process ever sees an offset without its object or
//! the reverse.
//!
//! The wake-ups a transaction causes (space freed, objects sealed, registry
//! cells) are collected and sent once the lock is released. Views and
//! builders dropped inside a transaction are released or aborted in the
//! same critical section (see `client`).

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::Arc;

use super::client::{bucket_of, ClientState, ANY_SEAL_CELL, SPACE_CELL};
use super::layout::{state, BLOCK_HEADER, FLAG_CELLS, FLAG_PINNED, FLAG_USED, NIL, REGISTRY_BYTES, REGISTRY_OFFSET};
use super::table::Tables;
use super::{ObjectBuilder, ObjectId, ObjectState, ObjectView, ALIGN};
use super::{Result, StoreError};
use crate::shm::liveness;
use crate::shm::wait::WaitCell;

/// The store with its lock held: a transaction. Lives only inside
/// [`Store::locked`](super::Store::locked).
pub(crate) struct Locked<'a> {
    t: &'a Tables<'a>,
    shared: &'a Arc<ClientState>,
    /// The wake-ups to send once the lock is released.
    wake: Wake,
    /// The first `Corrupted` error a store operation of this transaction
    /// returned: the change may have stopped half-way, so the store is
    /// repaired by the next holder of the lock.
    damaged: RefCell<Option<Box<StoreError>>>,
    /// The index was checked against the table in this transaction.
    index_checked: Cell<bool>,
}

/// Wake-ups collected during a transaction: a few words, since a
/// transaction is moved out of the critical section on every call.
#[derive(Default)]
pub(super) struct Wake {
    /// Memory was freed or became evictable: wake creators waiting for space.
    space: Cell<bool>,
    /// Store wait cells of sealed objects, one bit each (there are 64).
    cells: Cell<u64>,
    /// Registry wait cells, by offset in the registry: the first two inline,
    /// the rest spilled.
    registry: Cell<[u32; 2]>,
    registry_len: Cell<u8>,
    registry_more: RefCell<Vec<u32>>,
}

impl Wake {
    fn registry(&self, offset: u64) {
        // The registry is a few MiB: its offsets fit in 32 bits (a larger one
        // is not a cell, and `send` would refuse it anyway).
        let Ok(offset) = u32::try_from(offset) else {
            return;
        };
        let len = self.registry_len.get();
        let mut inline = self.registry.get();
        match inline.get_mut(len as usize) {
            Some(slot) => {
                *slot = offset;
                self.registry.set(inline);
                self.registry_len.set(len + 1);
            }
            None => self.registry_more.borrow_mut().push(offset),
        }
    }

    /// Sends the wake-ups (after the lock is released).
    pub(super) fn send(self, shared: &ClientState) {
        let mut cells = self.cells.get();
        let (space, registry) = (self.space.get(), self.registry_len.get());
        if !space && cells == 0 && registry == 0 {
            return;
        }
        // One fence for every cell below (see `WaitCell::notify_fenced`):
        // the changes were made under the lock, released just before.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if space {
            shared.notify_fenced(SPACE_CELL);
        }
        if cells != 0 {
            while cells != 0 {
                shared.notify_fenced(cells.trailing_zeros() as u64);
                cells &= cells - 1;
            }
            shared.notify_fenced(ANY_SEAL_CELL);
        }
        let inline = self.registry.get();
        let more = self.registry_more.into_inner();
        let offsets = inline[..registry as usize].iter().chain(more.iter());
        for &offset in offsets {
            if let Ok(cell) = shared.region.get::<WaitCell>(REGISTRY_OFFSET + offset as u64) {
                cell.notify_fenced();
            }
        }
    }
}

/// Runs `f` as one transaction of the client `shared` (see
/// [`Store::locked`](super::Store::locked), which is this on its handle).
pub(super) fn transaction<R, E: From<StoreError>>(
    shared: &Arc<ClientState>,
    f: impl FnOnce(&Locked<'_>) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    let (result, wake) = shared.with_tables(|t| {
        let locked = Locked::new(t, shared);
        let result = f(&locked);
        let (damaged, wake) = locked.finish();
        // What the transaction did before the damage stays done: its
        // wake-ups are sent either way (a spurious one is harmless).
        Ok(match damaged {
            Some(corrupted) => {
                // The change may have stopped half-way: the next holder of
                // the lock repairs.
                t.header.repair_pending.store(1, std::sync::atomic::Ordering::Relaxed);
                (Err((*corrupted).into()), wake)
            }
            None => (result, wake),
        })
    })?;
    wake.send(shared);
    result
}

/// What a new object needs from the allocator.
pub(super) struct Placement {
    pub block_size: u64,
    pub data_size: u64,
    pub meta_size: u32,
}

impl Placement {
    /// The block an object of `data_size` bytes and `meta_len` bytes of
    /// metadata needs, or [`StoreError::TooLarge`] if no arena of `capacity`
    /// bytes can hold it.
    pub(super) fn new(data_size: u64, meta_len: usize, capacity: u64) -> Result<Placement> {
        let meta_size =
            u32::try_from(meta_len).map_err(|_| StoreError::TooLarge { requested: meta_len as u64, capacity })?;
        let payload = data_size.checked_add(meta_size as u64);
        let block_size = payload
            .and_then(|p| p.checked_add(BLOCK_HEADER + ALIGN - 1))
            .map(|b| b / ALIGN * ALIGN)
            .filter(|&b| b <= capacity)
            .ok_or(StoreError::TooLarge { requested: payload.unwrap_or(u64::MAX), capacity })?;
        Ok(Placement { block_size, data_size, meta_size })
    }
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
    pub(super) fn new(t: &'a Tables<'a>, shared: &'a Arc<ClientState>) -> Self {
        Locked { t, shared, wake: Wake::default(), damaged: RefCell::new(None), index_checked: Cell::new(false) }
    }

    /// Ends the transaction: the corruption a store operation found, if
    /// any, and the wake-ups to send once the lock is released.
    pub(super) fn finish(self) -> (Option<Box<StoreError>>, Wake) {
        (self.damaged.into_inner(), self.wake)
    }

    /// Passes `result` on, remembering a `Corrupted` error (see `damaged`).
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(StoreError::Corrupted(why)) = &result {
            self.damaged.borrow_mut().get_or_insert_with(|| Box::new(StoreError::Corrupted(why.clone())));
        }
        result
    }

    /// Wakes the processes waiting on the wait cell at `offset` in the
    /// registry, once the lock is released.
    pub(crate) fn wake_registry(&self, offset: u64) {
        self.wake.registry(offset);
    }

    /// Creates an object `id` of `data_size` bytes with `metadata`, evicting
    /// least recently used objects if needed. `Ok(None)` means nothing more
    /// can be evicted (the caller decides whether to wait for space, see
    /// [`Store::wait_for_space`](super::Store::wait_for_space)); fails with
    /// [`StoreError::AlreadyExists`] if the ID is taken and
    /// [`StoreError::TooLarge`] if it can never fit.
    ///
    /// The metadata is written here; the builder writes the data outside
    /// the lock. A builder dropped before the transaction ends aborts the
    /// object in the same critical section.
    pub(crate) fn create(
        &self,
        id: ObjectId,
        data_size: u64,
        metadata: &[u8],
        flags: u32,
    ) -> Result<Option<ObjectBuilder>> {
        self.noted(self.create_object(id, data_size, metadata, flags))
    }

    fn create_object(
        &self,
        id: ObjectId,
        data_size: u64,
        metadata: &[u8],
        flags: u32,
    ) -> Result<Option<ObjectBuilder>> {
        let (t, s) = (self.t, self.shared);
        let object = Placement::new(data_size, metadata.len(), s.layout.arena_size)?;
        let hash = id.table_hash();
        if t.lookup(&id, hash)?.is_some() {
            return Err(StoreError::AlreadyExists(id));
        }
        let Some((e, block)) = allocate(t, object.block_size)? else {
            return Ok(None);
        };
        crate::shm::crash::point();
        let entry = t.entry(e)?;
        for (word, value) in entry.id.iter().zip(id.to_words()) {
            word.store(value, Relaxed);
        }
        entry.block.store(block, Relaxed);
        entry.block_size.store(object.block_size, Relaxed);
        entry.data_size.store(object.data_size, Relaxed);
        entry.meta_size.store(object.meta_size, Relaxed);
        entry.flags.store(flags & (FLAG_PINNED | FLAG_CELLS), Relaxed);
        entry.owner.store(s.client, Relaxed);
        // The holder bits are not cleared: a reader that pinned the entry's
        // last object without the lock clears its own (see `free_object`).
        entry.created_ns.store(super::now_ns(), Relaxed);
        // The state word last: until it is written, repair treats the
        // entry and its block as free.
        entry.state.store(state::CREATING, Release);
        crate::shm::crash::point();
        t.index_insert(hash, e)?;
        crate::shm::crash::point();
        t.header.used.fetch_add(object.block_size, Relaxed);
        t.header.payload.fetch_add(object.data_size + object.meta_size as u64, Relaxed);
        t.header.objects.fetch_add(1, Relaxed);
        let data_offset = s.layout.arena_offset + block + BLOCK_HEADER;
        let mut builder = ObjectBuilder::new(s.clone(), e, id, data_offset, data_size, object.meta_size as u64)?;
        builder.metadata_mut().copy_from_slice(metadata);
        Ok(Some(builder))
    }

    /// Seals `builder`'s object: immutable and visible from now on; the
    /// processes waiting for it are woken once the lock is released.
    pub(crate) fn seal(&self, builder: ObjectBuilder) -> Result<()> {
        self.noted(self.seal_object(builder))
    }

    fn seal_object(&self, builder: ObjectBuilder) -> Result<()> {
        let (e, id) = builder.disarm(self.shared)?;
        let t = self.t;
        let entry = self.shared.owned_entry(t, e, id)?;
        // Release: a reader that sees SEALED (under the lock, or through
        // the index) also sees the payload this process wrote. The state
        // before the owner, so a crash between them leaves a sealed object.
        entry.state.store(state::SEALED, Release);
        crate::shm::crash::point();
        entry.owner.store(NIL, Relaxed);
        if Tables::is_evictable(entry) {
            t.lru_push(e)?;
            // A creator waiting for space may now evict this object.
            self.wake.space.set(true);
        }
        let cell = bucket_of(id.table_hash());
        self.wake.cells.set(self.wake.cells.get() | 1 << cell);
        Ok(())
    }

    /// Evicts least recently used objects (sealed, unpinned, unreferenced)
    /// until their data and metadata add up to at least `bytes`, or none is
    /// left; returns the bytes of data and metadata evicted.
    pub(crate) fn evict(&self, bytes: u64) -> Result<u64> {
        let mut freed = 0u64;
        while freed < bytes {
            let Some(payload) = self.noted(evict_oldest(self.t))? else { break };
            freed = freed.saturating_add(payload);
            self.wake.space.set(true);
        }
        Ok(freed)
    }

    /// Gives `builder`'s object up and frees its memory now (dropping the
    /// builder does the same, at the end of the transaction).
    pub(crate) fn abort(&self, builder: ObjectBuilder) -> Result<()> {
        let (e, id) = builder.disarm(self.shared)?;
        self.noted(self.shared.owned_entry(self.t, e, id).and_then(|_| self.t.free_object(e)))?;
        self.wake.space.set(true);
        Ok(())
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
        // Acquire: slots are claimed without the lock, `active` last.
        if c.active.load(std::sync::atomic::Ordering::Acquire) == 0 || c.incarnation.load(Relaxed) != incarnation {
            return Ok(false);
        }
        if slot == self.shared.client {
            return Ok(true);
        }
        liveness::is_held_by_other(self.t.region, slot).map_err(|e| StoreError::io("probe a client liveness lock", e))
    }

    /// The state, size and (if sealed) metadata of object `id`.
    pub(crate) fn object(&self, id: ObjectId) -> Result<Option<ObjectRecord>> {
        self.noted(self.t.lookup(&id, id.table_hash()).and_then(|found| match found {
            Some(e) => self.record(e, id),
            None => Ok(None),
        }))
    }

    /// Checks the index against the object table (the truth) and rebuilds
    /// it if it lost a live object: call before taking a miss as final (a
    /// hole). `true` if it was damaged and is whole again, so the caller
    /// looks again. Reads the whole table; a caller does it once per look.
    pub(crate) fn repair_lost_index(&self) -> Result<bool> {
        // The index is kept whole by every change of this transaction: once
        // checked, it need not be again before the lock is released.
        if self.index_checked.replace(true) {
            return Ok(false);
        }
        self.noted(super::recovery::repair_lost_index(self.t))
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
            let at = self.t.payload(e, &id)?.data_offset + data_size;
            let len = meta_size.min(METADATA_HEAD as u64);
            let span = self.t.region.span(at, len)?;
            // SAFETY: a span of this region. A sealed object is never written, and it cannot be freed while
            // we hold the lock: the copy is of settled bytes.
            metadata[..len as usize].copy_from_slice(unsafe { self.t.region.read_bytes(span) });
        }
        Ok(Some(ObjectRecord { state, payload: data_size + meta_size, metadata, metadata_len: meta_size as usize }))
    }

    /// A view of the sealed object `id`, or `None` if it is not sealed.
    pub(crate) fn view(&self, id: ObjectId) -> Result<Option<ObjectView>> {
        self.noted(super::take_view(self.t, self.shared, id, id.table_hash(), None, super::Want::Bytes))
    }

    /// A view of the sealed object of shared cells `id` (see
    /// [`super::Store::create_cells`]), or `None` if it is not sealed.
    pub(crate) fn cells_view(&self, id: ObjectId) -> Result<Option<ObjectView>> {
        self.noted(super::take_view(self.t, self.shared, id, id.table_hash(), None, super::Want::Cells))
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
        self.noted(self.delete_object(id))
    }

    fn delete_object(&self, id: ObjectId) -> Result<Option<ObjectRecord>> {
        let hash = id.table_hash();
        let Some(e) = self.t.lookup(&id, hash)? else {
            return Ok(None);
        };
        let record = match self.record(e, id)? {
            Some(record) if record.state == ObjectState::Sealed => record,
            _ => return Ok(None),
        };
        if self.t.delete_sealed(e, hash)? {
            self.wake.space.set(true);
        }
        Ok(Some(record))
    }
}

/// Finds an entry and a block for an object of `block_size` bytes, evicting
/// least recently used objects until both are found or nothing is left.
pub(super) fn allocate(t: &Tables<'_>, block_size: u64) -> Result<Option<(u32, u64)>> {
    loop {
        if let Some(e) = t.pop_free_entry()? {
            if let Some(block) = t.arena().alloc(block_size)? {
                return Ok(Some((e, block)));
            }
            t.push_free_entry(e)?;
        }
        if evict_oldest(t)?.is_none() {
            return Ok(None);
        }
    }
}

/// Evicts the least recently used evictable object; returns its bytes of
/// data and metadata, or `None` if nothing can be evicted.
///
/// A held object is never evicted. Views are taken without the lock too
/// (see `ClientState::get_unlocked`), so the holders are counted after
/// the state says deleted, `SeqCst`, as the reader sets its bit before it
/// reads the state: a victim found held then is put back, sealed, and
/// taken off the list (its last view lists it again), and a reader that
/// read the passing deleted state asks the lock.
fn evict_oldest(t: &Tables<'_>) -> Result<Option<u64>> {
    // Second chances are bounded: readers may mark entries as fast as
    // they move (bounded work under the lock).
    let mut chances = t.layout.max_objects;
    while let Some(victim) = t.lru_oldest() {
        let entry = t.entry(victim)?;
        // The LRU list is derived: never free what it names without checking.
        let sealed = entry.state.load(Relaxed) == state::SEALED;
        if !sealed || entry.flags.load(Relaxed) & FLAG_PINNED != 0 || !Tables::on_lru(entry) {
            return Err(StoreError::corrupted(format_args!(
                "the LRU list names entry {victim}, which is not evictable"
            )));
        }
        if Tables::holder_count(entry) != 0 {
            t.lru_remove(victim)?;
            continue;
        }
        if entry.flags.load(Relaxed) & FLAG_USED != 0 && chances > 0 {
            chances -= 1;
            // Viewed since it was listed: a second chance, at the newest
            // end (the flag is cleared as it is listed again).
            t.lru_remove(victim)?;
            t.lru_push(victim)?;
            continue;
        }
        entry.state.store(state::DELETED, SeqCst);
        crate::shm::crash::point();
        if Tables::holder_count(entry) != 0 {
            entry.state.store(state::SEALED, SeqCst);
            t.lru_remove(victim)?;
            continue;
        }
        let payload = entry.data_size.load(Relaxed).saturating_add(u64::from(entry.meta_size.load(Relaxed)));
        t.header.evictions.fetch_add(1, Relaxed);
        t.lru_remove(victim)?;
        t.index_remove(Tables::id_of(entry).table_hash(), victim)?;
        t.free_object(victim)?;
        return Ok(Some(payload));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::{Store, StoreConfig};
    use crate::{ObjectId, StoreError};

    fn store(dir: &tempfile::TempDir) -> Store {
        let config =
            StoreConfig::at_path(dir.path().join("store")).capacity(1 << 20).lock_timeout(Duration::from_secs(5));
        Store::create(config).unwrap()
    }

    #[test]
    fn views_and_builders_dropped_inside_a_transaction_are_settled_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let id = ObjectId::sequential(1, 0, 0);
        store.create_object(id, 8, b"").unwrap().seal().unwrap();
        // The last view of an object, dropped under the lock: its reference
        // is released in the same critical section (no deadlock, no leak).
        store
            .locked(|l| {
                let view = l.view(id)?.expect("sealed");
                drop(view);
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(store.list().unwrap()[0].references, 0);
        // A builder dropped on an error path aborts its object.
        let other = ObjectId::sequential(1, 0, 1);
        let refused = store.locked(|l| {
            let _builder = l.create(other, 8, b"meta", 0)?.expect("room");
            Err::<(), _>(StoreError::InvalidConfig("refused".into()))
        });
        assert!(matches!(refused, Err(StoreError::InvalidConfig(_))));
        assert!(!store.contains(other).unwrap());
        assert_eq!(store.stats().unwrap().objects, 1);
        assert_eq!(store.stats().unwrap().repairs, 0, "a refusal of the caller's own is not damage");
    }

    #[test]
    fn a_panic_inside_a_transaction_leaves_no_stale_lock_mark() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(&dir);
        let id = ObjectId::sequential(1, 0, 0);
        a.create_object(id, 8, b"").unwrap().seal().unwrap();
        let view = a.get(id, Duration::ZERO).unwrap().unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.locked(|_| -> Result<(), StoreError> { panic!("inside a transaction") });
        }));
        assert!(panicked.is_err());
        drop(view); // outside any transaction: released at once
        let b = Store::open_path(dir.path().join("store")).unwrap();
        assert_eq!(b.list().unwrap()[0].references, 0);
    }

    #[test]
    fn a_view_of_another_handle_dropped_inside_a_transaction_neither_stalls_nor_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(&dir);
        // B's lock timeout is what a self-deadlock would cost.
        let config = crate::store::OpenConfig::at_path(dir.path().join("store")).lock_timeout(Duration::from_secs(30));
        let b = Store::open_with(config).unwrap();
        let id = ObjectId::sequential(1, 0, 0);
        a.create_object(id, 8, b"").unwrap().seal().unwrap();
        let view_b = b.get(id, Duration::ZERO).unwrap().unwrap();
        let started = std::time::Instant::now();
        a.locked(|_| {
            drop(view_b);
            Ok::<_, StoreError>(())
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "the drop waited for the lock its own thread held");
        // B's deferred release is applied when B next holds the lock.
        assert_eq!(b.list().unwrap()[0].references, 0);
    }

    #[test]
    fn a_damaged_transaction_still_wakes_for_what_it_did() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(&dir);
        let sealed = ObjectId::sequential(1, 0, 0);
        a.create_object(sealed, 4096, b"").unwrap().seal().unwrap();
        let other = ObjectId::sequential(1, 0, 1);
        let builder = a.create_object(other, 8, b"").unwrap();
        // Bad bytes: the builder's entry now names another owner.
        a.shared
            .with_tables(|t| {
                let e = t.lookup(&other, other.table_hash())?.expect("being created");
                t.entry(e)?.owner.store(12345, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        let before = a.space_ticket().unwrap();
        let sealing = a.locked(|l| {
            l.delete(sealed)?; // frees 4 KiB
            l.seal(builder) // corrupted
        });
        assert!(matches!(sealing, Err(StoreError::Corrupted(_))), "{sealing:?}");
        assert_ne!(before.0, a.space_ticket().unwrap().0, "creators waiting for space were not woken");
        assert_eq!(a.stats().unwrap().repairs, 1, "the damage was repaired by the next holder");
    }
}
