//! The layout of the store file: every shared struct, where each region
//! starts, and the checks an opener runs before it trusts any of it.
//! docs/format.md describes the same bytes in prose; keep the two in step.
//!
//! ```text
//! 0        Header (magic, version, ready word, layout, counters)
//! 1024     robust mutex (64 bytes)
//! 2048     space wait cell, "any seal" wait cell, 62 seal wait buckets
//! 8192     allocator state (TLSF bitmaps and free-list heads)
//! 20480    client slots (128 × 64 bytes)
//! 28672    registry (6 MiB): streams, then the shard manager's groups
//! 6320128  object table (max_objects × 104 bytes), page aligned
//! …        index (index_slots × 8 bytes), page aligned
//! …        data arena (capacity bytes), page aligned
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64};

use super::{Result, StoreError};
use crate::shm::wait::WaitCell;

/// "QVRSTORE" as a little-endian u64: the first eight bytes of every store.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"QVRSTORE");
/// The store format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 8;
/// The ready word's value once the creator has published the file.
pub(crate) const READY: u32 = 0x5244_5952; // "RYDR"

/// Client slots in a store (a fixed part of format version 1).
pub const MAX_CLIENTS: usize = 128;
/// Seal wait buckets: a waiter for object X sleeps on bucket `hash(X) % N`.
pub(crate) const SEAL_BUCKETS: u64 = 62;

/// Blocks in the arena start and end on this boundary, so payloads do too.
pub const ALIGN: u64 = 64;
/// Each block begins with a header of this size; the payload follows.
pub(crate) const BLOCK_HEADER: u64 = 64;

/// "No entry" in 32-bit links.
pub(crate) const NIL: u32 = u32::MAX;
/// "No block" in 64-bit arena links.
pub(crate) const NIL_OFF: u64 = u64::MAX;

pub(crate) const MUTEX_OFFSET: u64 = 1024;
pub(crate) const WAIT_OFFSET: u64 = 2048;
pub(crate) const ALLOC_OFFSET: u64 = 8192;
pub(crate) const CLIENTS_OFFSET: u64 = 20480;
/// The registry: plain shared structs that the layers above the store keep
/// in the file (streams, partitions, groups). The store only reserves it
/// (zero-filled at create) and guards it with its lock; what lies inside is
/// defined by those layers.
pub(crate) const REGISTRY_OFFSET: u64 = CLIENTS_OFFSET + (MAX_CLIENTS as u64) * 64;
/// Bytes of the registry: 1 MiB for streams, then the shard manager's area.
pub(crate) const REGISTRY_BYTES: u64 = 6 << 20;
const TABLES_OFFSET: u64 = REGISTRY_OFFSET + REGISTRY_BYTES;
const PAGE: u64 = 4096;
const _: () = assert!(REGISTRY_OFFSET % PAGE == 0);

/// TLSF: second-level classes per power of two (log2) and first levels.
pub(crate) const SL_LOG: u32 = 4;
pub(crate) const SL_COUNT: usize = 1 << SL_LOG;
pub(crate) const FL_COUNT: usize = 64;

/// Entry states. The state word of an entry is written last when an entry
/// changes, so a crash leaves it in its old or its new state.
pub(crate) mod state {
    /// Unused; on the entry free list.
    pub const FREE: u32 = 0;
    /// Allocated, being written by its owner; invisible to `get`.
    pub const CREATING: u32 = 1;
    /// Immutable and visible.
    pub const SEALED: u32 = 2;
    /// Deleted while referenced: out of the index, freed by the last release.
    pub const DELETED: u32 = 3;
}

/// Entry flag: never evict.
pub(crate) const FLAG_PINNED: u32 = 1;
/// Entry flag: the entry is on the LRU list (set and cleared with its links,
/// under the lock).
pub(crate) const FLAG_ON_LRU: u32 = 2;
/// Entry flag: the object is an array of shared atomic cells
/// ([`crate::store::Store::create_cells`]), which its users change after
/// the seal; it is never handed out as bytes. Set at creation, with
/// [`FLAG_PINNED`], and never cleared.
pub(crate) const FLAG_CELLS: u32 = 4;
/// Entry flag: viewed (without the lock) since it was last listed for
/// eviction: the evictor gives it a second chance (moves it to the newest
/// end, clearing the flag), so views that leave it listed still count as
/// uses (the CLOCK approximation of LRU).
pub(crate) const FLAG_USED: u32 = 8;

crate::shm::shared_struct! {
    /// The file header: identity, layout and store-wide counters.
    pub(crate) struct Header {
        pub magic: AtomicU64,
        pub version: AtomicU32,
        /// Written last by the creator (Release), read first by openers (Acquire).
        pub ready: AtomicU32,
        pub file_size: AtomicU64,
        pub max_objects: AtomicU64,
        pub index_slots: AtomicU64,
        pub entries_offset: AtomicU64,
        pub index_offset: AtomicU64,
        pub arena_offset: AtomicU64,
        pub arena_size: AtomicU64,
        pub created_ns: AtomicU64,
        pub creator_pid: AtomicU32,
        pub max_clients: AtomicU32,
        // Everything below changes under the lock.
        /// Bytes of the arena in allocated blocks (headers included).
        pub used: AtomicU64,
        /// Bytes of payload (data + metadata) in live objects.
        pub payload: AtomicU64,
        /// Entries not FREE.
        pub objects: AtomicU64,
        /// Objects evicted since creation (not derivable; survives repair).
        pub evictions: AtomicU64,
        /// Times the derived state was rebuilt after a holder of the lock died.
        pub repairs: AtomicU64,
        /// Clients found dead and recovered.
        pub dead_clients: AtomicU64,
        /// Entries dropped by a repair because their bytes were invalid.
        pub dropped_corrupt: AtomicU64,
        /// The LRU clock: stamps entries as they become evictable.
        pub lru_clock: AtomicU64,
        pub lru_head: AtomicU32,
        pub lru_tail: AtomicU32,
        pub free_entry_head: AtomicU32,
        /// Non-zero while a repair is due: set before one starts, cleared when
        /// one succeeds, so a repair that failed is tried again by the next locker.
        pub repair_pending: AtomicU32,
        /// The last client incarnation handed out.
        pub incarnations: AtomicU64,
    }
}
const _: () = assert!(size_of::<Header>() as u64 <= MUTEX_OFFSET);

crate::shm::shared_struct! {
    /// One row of the object table: the truth about one object.
    pub(crate) struct Entry {
        pub id: [AtomicU64; 3],
        /// One of [`state`]; written last.
        pub state: AtomicU32,
        /// [`FLAG_PINNED`].
        pub flags: AtomicU32,
        /// Offset of the block (its header) from the start of the arena.
        pub block: AtomicU64,
        /// Size of the block, header included; a multiple of [`ALIGN`].
        pub block_size: AtomicU64,
        pub data_size: AtomicU64,
        pub meta_size: AtomicU32,
        /// The client slot creating the object while CREATING, else NIL.
        pub owner: AtomicU32,
        /// Bitmap of client slots holding views of the object.
        pub holders: [AtomicU64; 2],
        pub created_ns: AtomicU64,
        /// LRU stamp: when the object last became evictable.
        pub last_use: AtomicU64,
        /// LRU links while evictable; `lru_next` is the free-list link while FREE.
        pub lru_prev: AtomicU32,
        pub lru_next: AtomicU32,
    }
}
/// The table's bytes per object (the issue's ceiling is 128 with the index).
pub(crate) const ENTRY_BYTES: u64 = size_of::<Entry>() as u64;
const _: () = assert!(ENTRY_BYTES == 104);
const _: () = assert!(MAX_CLIENTS <= 128); // two words of holder bits

crate::shm::shared_struct! {
    /// One client slot.
    pub(crate) struct ClientSlot {
        /// 0 free, 1 active.
        pub active: AtomicU32,
        pub pid: AtomicU32,
        pub started_ns: AtomicU64,
        /// This client's incarnation: unique among all clients the store
        /// has had, so a reused slot is never mistaken for its old client.
        pub incarnation: AtomicU64,
        pub _pad: [AtomicU64; 5],
    }
}
const _: () = assert!(size_of::<ClientSlot>() == 64);

crate::shm::shared_struct! {
    /// The header at the start of every arena block.
    pub(crate) struct BlockHeader {
        /// [`BLOCK_FREE`] or [`BLOCK_USED`].
        pub tag: AtomicU64,
        /// Size of this block, header included.
        pub size: AtomicU64,
        /// Size of the block physically before this one (0 for the first).
        pub prev_size: AtomicU64,
        /// Free-list links while free.
        pub next_free: AtomicU64,
        pub prev_free: AtomicU64,
        pub _pad: [AtomicU64; 3],
    }
}
const _: () = assert!(size_of::<BlockHeader>() as u64 == BLOCK_HEADER);
pub(crate) const BLOCK_FREE: u64 = u64::from_le_bytes(*b"QVRfree!");
pub(crate) const BLOCK_USED: u64 = u64::from_le_bytes(*b"QVRused!");

crate::shm::shared_struct! {
    /// The TLSF allocator's derived state: bitmaps and free-list heads.
    pub(crate) struct AllocState {
        pub fl_bitmap: AtomicU64,
        pub sl_bitmap: [AtomicU32; FL_COUNT],
        pub heads: [[AtomicU64; SL_COUNT]; FL_COUNT],
    }
}
const _: () = assert!(ALLOC_OFFSET + size_of::<AllocState>() as u64 <= CLIENTS_OFFSET);
const _: () = assert!(WAIT_OFFSET + (2 + SEAL_BUCKETS) * size_of::<WaitCell>() as u64 <= ALLOC_OFFSET);

/// Where each region of a store file lies. Computed from the two user
/// parameters; an opener recomputes it and checks the header against it,
/// and from then on trusts only its own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub max_objects: u64,
    pub index_slots: u64,
    pub entries_offset: u64,
    pub index_offset: u64,
    pub arena_offset: u64,
    pub arena_size: u64,
    pub file_size: u64,
}

fn round_up(n: u64, to: u64) -> Option<u64> {
    n.checked_add(to - 1).map(|n| n / to * to)
}

impl Layout {
    /// The layout for a store holding up to `max_objects` objects in an
    /// arena of `capacity` bytes (rounded up to whole pages).
    pub(crate) fn new(max_objects: u64, capacity: u64) -> Result<Layout> {
        let bad = |why: &str| StoreError::InvalidConfig(why.to_string());
        if max_objects == 0 || max_objects >= 1 << 31 {
            return Err(bad("max_objects must be between 1 and 2^31 - 1"));
        }
        if capacity < PAGE {
            return Err(bad("capacity must be at least 4096 bytes"));
        }
        let too_big = || bad("the store is too large");
        // Load factor at most 1/2 keeps linear probing short; two 8-byte slots
        // per object keep table + index at 120 bytes per object.
        let index_slots = max_objects * 2;
        let entries_offset = round_up(TABLES_OFFSET, PAGE).ok_or_else(too_big)?;
        let index_offset = round_up(entries_offset + max_objects * ENTRY_BYTES, PAGE).ok_or_else(too_big)?;
        let arena_offset = index_slots
            .checked_mul(8)
            .and_then(|b| index_offset.checked_add(b))
            .and_then(|e| round_up(e, PAGE))
            .ok_or_else(too_big)?;
        let arena_size = round_up(capacity, PAGE).ok_or_else(too_big)?;
        let file_size = arena_offset.checked_add(arena_size).ok_or_else(too_big)?;
        Ok(Layout { max_objects, index_slots, entries_offset, index_offset, arena_offset, arena_size, file_size })
    }

    /// Reads the layout a header claims and checks it is the one its
    /// parameters give; a mismatch means the file is corrupt.
    pub(crate) fn from_header(header: &Header) -> Result<Layout> {
        use std::sync::atomic::Ordering::Relaxed;
        let max_objects = header.max_objects.load(Relaxed);
        let arena_size = header.arena_size.load(Relaxed);
        let expected = Layout::new(max_objects, arena_size)
            .map_err(|e| StoreError::corrupted(format_args!("header layout: {e}")))?;
        let found = Layout {
            max_objects,
            index_slots: header.index_slots.load(Relaxed),
            entries_offset: header.entries_offset.load(Relaxed),
            index_offset: header.index_offset.load(Relaxed),
            arena_offset: header.arena_offset.load(Relaxed),
            arena_size,
            file_size: header.file_size.load(Relaxed),
        };
        if found != expected || header.max_clients.load(Relaxed) != MAX_CLIENTS as u32 {
            return Err(StoreError::corrupted(format_args!(
                "header layout {found:?} differs from the layout its parameters give {expected:?}"
            )));
        }
        Ok(expected)
    }

    /// Writes this layout into a fresh header (before it is published).
    pub(crate) fn write_to(&self, header: &Header) {
        use std::sync::atomic::Ordering::Relaxed;
        header.file_size.store(self.file_size, Relaxed);
        header.max_objects.store(self.max_objects, Relaxed);
        header.index_slots.store(self.index_slots, Relaxed);
        header.entries_offset.store(self.entries_offset, Relaxed);
        header.index_offset.store(self.index_offset, Relaxed);
        header.arena_offset.store(self.arena_offset, Relaxed);
        header.arena_size.store(self.arena_size, Relaxed);
        header.max_clients.store(MAX_CLIENTS as u32, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_index_cost_at_most_128_bytes_per_object() {
        for max_objects in [1, 10, 1025, 1_000_000, 3_000_001] {
            let l = Layout::new(max_objects, 1 << 20).unwrap();
            let table = l.arena_offset - l.entries_offset;
            // Page rounding adds at most two pages whatever the count.
            assert!(table <= 120 * max_objects + 2 * PAGE, "{table} bytes for {max_objects} objects");
            assert_eq!(l.arena_offset % PAGE, 0);
            assert_eq!(l.index_slots, 2 * max_objects);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Layout::new(0, 1 << 20).is_err());
        assert!(Layout::new(10, 100).is_err());
        assert!(Layout::new(1 << 31, 1 << 20).is_err());
        assert!(Layout::new(10, u64::MAX - 10).is_err());
    }
}

#[cfg(test)]
mod offsets {
    //! docs/format.md gives these offsets; this test keeps the two in step.
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn header_fields_lie_where_the_format_document_says() {
        let fields = [
            (offset_of!(Header, magic), 0),
            (offset_of!(Header, version), 8),
            (offset_of!(Header, ready), 12),
            (offset_of!(Header, file_size), 16),
            (offset_of!(Header, max_objects), 24),
            (offset_of!(Header, index_slots), 32),
            (offset_of!(Header, entries_offset), 40),
            (offset_of!(Header, index_offset), 48),
            (offset_of!(Header, arena_offset), 56),
            (offset_of!(Header, arena_size), 64),
            (offset_of!(Header, created_ns), 72),
            (offset_of!(Header, creator_pid), 80),
            (offset_of!(Header, max_clients), 84),
            (offset_of!(Header, used), 88),
            (offset_of!(Header, payload), 96),
            (offset_of!(Header, objects), 104),
            (offset_of!(Header, evictions), 112),
            (offset_of!(Header, repairs), 120),
            (offset_of!(Header, dead_clients), 128),
            (offset_of!(Header, dropped_corrupt), 136),
            (offset_of!(Header, lru_clock), 144),
            (offset_of!(Header, lru_head), 152),
            (offset_of!(Header, lru_tail), 156),
            (offset_of!(Header, free_entry_head), 160),
            (offset_of!(Header, repair_pending), 164),
            (offset_of!(Header, incarnations), 168),
        ];
        for (i, (actual, documented)) in fields.iter().enumerate() {
            assert_eq!(actual, documented, "header field {i}");
        }
        assert_eq!(size_of::<Header>(), 176);
    }

    #[test]
    fn table_fields_lie_where_the_format_document_says() {
        let entry = [
            (offset_of!(Entry, id), 0),
            (offset_of!(Entry, state), 24),
            (offset_of!(Entry, flags), 28),
            (offset_of!(Entry, block), 32),
            (offset_of!(Entry, block_size), 40),
            (offset_of!(Entry, data_size), 48),
            (offset_of!(Entry, meta_size), 56),
            (offset_of!(Entry, owner), 60),
            (offset_of!(Entry, holders), 64),
            (offset_of!(Entry, created_ns), 80),
            (offset_of!(Entry, last_use), 88),
            (offset_of!(Entry, lru_prev), 96),
            (offset_of!(Entry, lru_next), 100),
        ];
        for (i, (actual, documented)) in entry.iter().enumerate() {
            assert_eq!(actual, documented, "entry field {i}");
        }
        assert_eq!((offset_of!(ClientSlot, pid), offset_of!(ClientSlot, started_ns)), (4, 8));
        assert_eq!(offset_of!(ClientSlot, incarnation), 16);
        let block =
            [offset_of!(BlockHeader, size), offset_of!(BlockHeader, prev_size), offset_of!(BlockHeader, next_free)];
        assert_eq!(block, [8, 16, 24]);
        assert_eq!(offset_of!(BlockHeader, prev_free), 32);
        assert_eq!((offset_of!(AllocState, sl_bitmap), offset_of!(AllocState, heads)), (8, 264));
        assert_eq!(size_of::<AllocState>(), 8456);
        assert_eq!(REGISTRY_OFFSET, 28672);
        assert_eq!(Layout::new(1, 4096).unwrap().entries_offset, 6320128);
    }
}
