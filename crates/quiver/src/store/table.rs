//! The object table and what is derived from it: the hash index from IDs
//! to entries, the free-entry list, and the LRU list of evictable objects.
//!
//! [`Tables`] is a view of one store's shared structures, valid while the
//! caller holds the store's lock. Every entry number and link read from the
//! file is checked before use; a bad one gives `Corrupted`.
//!
//! The index is open addressing with linear probing over `2 × max_objects`
//! slots (load at most 1/2), deleting by backward shift so that no
//! tombstones pile up: lookups cost the same with a million objects as with
//! ten. A slot holds the top 32 bits of the ID's hash (which also choose its
//! home slot) and the entry number plus one; 0 is empty.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};

use super::alloc::Arena;
use super::id::ObjectId;
use super::layout::{
    state, AllocState, ClientSlot, Entry, Header, Layout, ALLOC_OFFSET, BLOCK_HEADER, CLIENTS_OFFSET, FLAG_ON_LRU,
    FLAG_PINNED, FLAG_USED, MAX_CLIENTS, NIL,
};
use super::{Result, StoreError};
use crate::shm::Region;

/// The shared structures of one store.
pub(crate) struct Tables<'a> {
    pub region: &'a Region,
    pub layout: &'a Layout,
    pub header: &'a Header,
    pub entries: &'a [Entry],
    pub index: &'a [AtomicU64],
    pub clients: &'a [ClientSlot],
    pub alloc: &'a AllocState,
}

/// Where an object's payload lies in the file (see [`Tables::payload`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Payload {
    /// The data's offset in the file; the metadata follows it.
    pub data_offset: u64,
    pub data_size: u64,
    pub meta_size: u64,
}

impl<'a> Tables<'a> {
    pub(crate) fn new(region: &'a Region, layout: &'a Layout) -> Result<Self> {
        Ok(Tables {
            region,
            layout,
            header: region.get(0)?,
            entries: region.slice(layout.entries_offset, layout.max_objects)?,
            index: region.slice(layout.index_offset, layout.index_slots)?,
            clients: region.slice(CLIENTS_OFFSET, MAX_CLIENTS as u64)?,
            alloc: region.get(ALLOC_OFFSET)?,
        })
    }

    pub(crate) fn arena(&self) -> Arena<'a> {
        Arena::new(self.region, self.alloc, self.layout.arena_offset, self.layout.arena_size)
    }

    pub(crate) fn entry(&self, e: u32) -> Result<&'a Entry> {
        self.entries.get(e as usize).ok_or_else(|| StoreError::corrupted(format_args!("entry number {e} out of range")))
    }

    pub(crate) fn id_of(entry: &Entry) -> ObjectId {
        ObjectId::from_words([entry.id[0].load(Relaxed), entry.id[1].load(Relaxed), entry.id[2].load(Relaxed)])
    }

    /// Whether the entry belongs on the LRU list: sealed, held by nobody, not pinned.
    pub(crate) fn is_evictable(entry: &Entry) -> bool {
        entry.state.load(SeqCst) == state::SEALED
            && entry.flags.load(SeqCst) & FLAG_PINNED == 0
            && entry.holders.iter().all(|h| h.load(SeqCst) == 0)
    }

    /// Whether the entry is on the LRU list.
    pub(crate) fn on_lru(entry: &Entry) -> bool {
        entry.flags.load(Relaxed) & FLAG_ON_LRU != 0
    }

    /// Where entry `e`'s payload lies: checked that data and metadata fit
    /// in its block and the block in the arena (the one place that checks).
    pub(crate) fn payload(&self, e: u32, id: &ObjectId) -> Result<Payload> {
        let entry = self.entry(e)?;
        let (block, block_size) = (entry.block.load(Relaxed), entry.block_size.load(Relaxed));
        let (data_size, meta_size) = (entry.data_size.load(Relaxed), entry.meta_size.load(Relaxed) as u64);
        let fits = data_size.checked_add(meta_size + BLOCK_HEADER).is_some_and(|need| need <= block_size)
            && block.checked_add(block_size).is_some_and(|end| end <= self.layout.arena_size);
        if !fits {
            return Err(StoreError::corrupted(format_args!("entry {e} of object {id} overruns its block")));
        }
        Ok(Payload { data_offset: self.layout.arena_offset + block + BLOCK_HEADER, data_size, meta_size })
    }

    /// How many clients hold the entry. `SeqCst`: a reader that pins an
    /// object without the lock sets its bit, then checks the state; whoever
    /// frees one stores the state, then counts here (see `Store::get`).
    pub(crate) fn holder_count(entry: &Entry) -> u32 {
        entry.holders.iter().map(|h| h.load(SeqCst).count_ones()).sum()
    }

    // ---- index ----

    fn home(&self, tag: u32) -> usize {
        ((tag as u64 * self.layout.index_slots) >> 32) as usize
    }

    fn next_slot(&self, i: usize) -> usize {
        if i + 1 == self.index.len() {
            0
        } else {
            i + 1
        }
    }

    /// The live (creating or sealed) entry with this ID.
    pub(crate) fn lookup(&self, id: &ObjectId, hash: u64) -> Result<Option<u32>> {
        let tag = (hash >> 32) as u32;
        let mut i = self.home(tag);
        for _ in 0..self.index.len() {
            let slot = self.index[i].load(Relaxed);
            if slot == 0 {
                return Ok(None);
            }
            if (slot >> 32) as u32 == tag {
                let e = (slot as u32).wrapping_sub(1);
                let entry = self.entry(e)?;
                let st = entry.state.load(Acquire);
                if (st == state::CREATING || st == state::SEALED) && Self::id_of(entry) == *id {
                    return Ok(Some(e));
                }
            }
            i = self.next_slot(i);
        }
        Err(StoreError::corrupted("the index has no empty slot"))
    }

    pub(crate) fn index_insert(&self, hash: u64, e: u32) -> Result<()> {
        let tag = (hash >> 32) as u32;
        let mut i = self.home(tag);
        for _ in 0..self.index.len() {
            if self.index[i].load(Relaxed) == 0 {
                self.index[i].store(((tag as u64) << 32) | (e as u64 + 1), Relaxed);
                return Ok(());
            }
            i = self.next_slot(i);
        }
        Err(StoreError::corrupted("the index is full"))
    }

    pub(crate) fn index_remove(&self, hash: u64, e: u32) -> Result<()> {
        let tag = (hash >> 32) as u32;
        let wanted = ((tag as u64) << 32) | (e as u64 + 1);
        let mut hole = self.home(tag);
        let mut found = false;
        for _ in 0..self.index.len() {
            let slot = self.index[hole].load(Relaxed);
            if slot == 0 {
                break;
            }
            if slot == wanted {
                found = true;
                break;
            }
            hole = self.next_slot(hole);
        }
        if !found {
            return Err(StoreError::corrupted(format_args!("entry {e} is missing from the index")));
        }
        // Backward shift: pull later slots of the same probe run into the hole.
        // Bounded: garbage with no empty slot must not spin under the lock.
        let n = self.index.len();
        let mut j = hole;
        let mut ended = false;
        for _ in 0..n {
            j = self.next_slot(j);
            let slot = self.index[j].load(Relaxed);
            if slot == 0 {
                ended = true;
                break;
            }
            let home = self.home((slot >> 32) as u32);
            if (j + n - home) % n >= (j + n - hole) % n {
                self.index[hole].store(slot, Relaxed);
                hole = j;
            }
        }
        if !ended {
            return Err(StoreError::corrupted("the index has no empty slot"));
        }
        self.index[hole].store(0, Relaxed);
        Ok(())
    }

    // ---- free entries ----

    pub(crate) fn pop_free_entry(&self) -> Result<Option<u32>> {
        let e = self.header.free_entry_head.load(Relaxed);
        if e == NIL {
            return Ok(None);
        }
        let entry = self.entry(e)?;
        if entry.state.load(Relaxed) != state::FREE {
            return Err(StoreError::corrupted(format_args!("entry {e} on the free list is in use")));
        }
        self.header.free_entry_head.store(entry.lru_next.load(Relaxed), Relaxed);
        Ok(Some(e))
    }

    pub(crate) fn push_free_entry(&self, e: u32) -> Result<()> {
        self.entry(e)?.lru_next.store(self.header.free_entry_head.load(Relaxed), Relaxed);
        self.header.free_entry_head.store(e, Relaxed);
        Ok(())
    }

    // ---- LRU ----

    /// Appends `e` as the most recently used evictable object (if it is
    /// not on the list already).
    pub(crate) fn lru_push(&self, e: u32) -> Result<()> {
        let entry = self.entry(e)?;
        if Self::on_lru(entry) {
            return Ok(());
        }
        // Atomic read-modify-writes: a reader without the lock may set
        // `FLAG_USED` meanwhile.
        entry.flags.fetch_and(!FLAG_USED, Relaxed);
        entry.flags.fetch_or(FLAG_ON_LRU, Relaxed);
        let tail = self.header.lru_tail.load(Relaxed);
        entry.last_use.store(self.header.lru_clock.fetch_add(1, Relaxed), Relaxed);
        entry.lru_prev.store(tail, Relaxed);
        entry.lru_next.store(NIL, Relaxed);
        if tail == NIL {
            self.header.lru_head.store(e, Relaxed);
        } else {
            self.entry(tail)?.lru_next.store(e, Relaxed);
        }
        self.header.lru_tail.store(e, Relaxed);
        Ok(())
    }

    /// Takes `e` off the LRU list (if it is on it).
    pub(crate) fn lru_remove(&self, e: u32) -> Result<()> {
        let entry = self.entry(e)?;
        if !Self::on_lru(entry) {
            return Ok(());
        }
        let (prev, next) = (entry.lru_prev.load(Relaxed), entry.lru_next.load(Relaxed));
        if prev == NIL {
            if self.header.lru_head.load(Relaxed) != e {
                return Err(StoreError::corrupted(format_args!("entry {e} is not on the LRU list")));
            }
            self.header.lru_head.store(next, Relaxed);
        } else {
            self.entry(prev)?.lru_next.store(next, Relaxed);
        }
        if next == NIL {
            self.header.lru_tail.store(prev, Relaxed);
        } else {
            self.entry(next)?.lru_prev.store(prev, Relaxed);
        }
        entry.lru_prev.store(NIL, Relaxed);
        entry.lru_next.store(NIL, Relaxed);
        entry.flags.fetch_and(!FLAG_ON_LRU, Relaxed);
        Ok(())
    }

    /// The least recently used evictable object.
    pub(crate) fn lru_oldest(&self) -> Option<u32> {
        Some(self.header.lru_head.load(Relaxed)).filter(|&e| e != NIL)
    }

    // ---- object changes shared by the store and recovery ----

    /// Frees a non-free entry and its block. The state word flips first: a
    /// crash after it leaves an entry that repair treats as free, a crash
    /// before it an object that repair keeps whole.
    ///
    /// Holder bits are left alone: each is cleared by its own client (or by
    /// the sweep of a dead one). A bit set here is a reader's that pinned
    /// the entry without the lock and is about to find it not what it
    /// wanted, and take its bit back.
    pub(crate) fn free_object(&self, e: u32) -> Result<()> {
        let entry = self.entry(e)?;
        let st = entry.state.load(Relaxed);
        if st == state::FREE {
            return Err(StoreError::corrupted(format_args!("entry {e} is already free")));
        }
        entry.state.store(state::FREE, SeqCst);
        crate::shm::crash::point();
        self.lru_remove(e)?;
        if st == state::CREATING || st == state::SEALED {
            self.index_remove(Self::id_of(entry).table_hash(), e)?;
        }
        crate::shm::crash::point();
        self.arena().free(entry.block.load(Relaxed))?;
        let payload = entry.data_size.load(Relaxed).wrapping_add(entry.meta_size.load(Relaxed) as u64);
        self.header.used.fetch_sub(entry.block_size.load(Relaxed), Relaxed);
        self.header.payload.fetch_sub(payload, Relaxed);
        self.header.objects.fetch_sub(1, Relaxed);
        crate::shm::crash::point();
        entry.owner.store(NIL, Relaxed);
        self.push_free_entry(e)
    }

    /// Deletes sealed entry `e` (whose ID hashes to `hash`): it leaves the
    /// index and the LRU list and is marked deleted, then freed at once if
    /// nobody holds it, else by the release of its last holder. Returns
    /// whether it was freed. The state is stored before the holders are
    /// counted (see [`holder_count`](Self::holder_count)).
    pub(crate) fn delete_sealed(&self, e: u32, hash: u64) -> Result<bool> {
        let entry = self.entry(e)?;
        self.lru_remove(e)?;
        crate::shm::crash::point();
        self.index_remove(hash, e)?;
        crate::shm::crash::point();
        entry.state.store(state::DELETED, SeqCst);
        if Self::holder_count(entry) == 0 {
            self.free_object(e)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Brings entry `e` in line with its holders after a release without
    /// the lock: freed if it is deleted and held by nobody, on the LRU list
    /// if it is evictable. Returns whether memory was freed (or may now be
    /// evicted).
    pub(crate) fn settle(&self, e: u32) -> Result<bool> {
        let entry = self.entry(e)?;
        if Self::holder_count(entry) != 0 {
            return Ok(false);
        }
        if entry.state.load(SeqCst) == state::DELETED {
            self.free_object(e)?;
            return Ok(true);
        }
        if Self::is_evictable(entry) {
            self.lru_push(e)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Removes `client`'s reference to `e`. Frees the object if it was
    /// deleted and this was the last reference, or puts it on the LRU list if
    /// it became evictable. Returns whether memory was freed or became
    /// evictable.
    pub(crate) fn drop_holder(&self, e: u32, client: u32) -> Result<bool> {
        let entry = self.entry(e)?;
        let (word, bit) = ((client / 64) as usize, 1u64 << (client % 64));
        if entry.holders[word].fetch_and(!bit, SeqCst) & bit == 0 {
            return Ok(false);
        }
        if entry.state.load(SeqCst) == state::FREE {
            return Ok(false);
        }
        self.settle(e)
    }

    /// Adds `client`'s reference to `e`, taking it off the LRU list.
    pub(crate) fn add_holder(&self, e: u32, client: u32) -> Result<()> {
        let entry = self.entry(e)?;
        // Off the list first: if that fails, no bit is left behind.
        self.lru_remove(e)?;
        entry.holders[(client / 64) as usize].fetch_or(1u64 << (client % 64), SeqCst);
        Ok(())
    }
}
