//! Recovery: rebuilding derived state after a holder of the lock died, and
//! releasing what a dead client held.
//!
//! The object table is the truth. [`repair`] keeps every entry whose bytes
//! make sense, drops (and counts) the ones that do not, and recreates the
//! index, the free-entry list, the LRU list, the allocator's block headers
//! and free lists, and the usage counters from what is kept.
//! [`release_client`] undoes everything a dead client had: its references
//! are released and the objects it was creating are aborted.

use std::sync::atomic::Ordering::{Relaxed, Release};

use super::layout::{state, Entry, ALIGN, BLOCK_HEADER, FLAG_ON_LRU, MAX_CLIENTS, NIL};
use super::table::Tables;
use super::Result;

/// Whether an entry's fields describe a block the arena can hold.
fn entry_is_sane(t: &Tables<'_>, entry: &Entry) -> bool {
    let block = entry.block.load(Relaxed);
    let size = entry.block_size.load(Relaxed);
    let payload = entry.data_size.load(Relaxed).checked_add(entry.meta_size.load(Relaxed) as u64);
    let needed = payload.and_then(|p| p.checked_add(BLOCK_HEADER));
    let st = entry.state.load(Relaxed);
    block % ALIGN == 0
        && size % ALIGN == 0
        && needed.is_some_and(|n| n <= size)
        && block.checked_add(size).is_some_and(|end| end <= t.layout.arena_size)
        && (st != state::CREATING || (entry.owner.load(Relaxed) as usize) < MAX_CLIENTS)
}

/// Repairs the store if the lock's previous holder died (`owner_died`) or
/// an earlier repair did not finish. Call with the lock held.
pub(crate) fn repair_if_needed(t: &Tables<'_>, owner_died: bool) -> Result<()> {
    if owner_died {
        t.header.repair_pending.store(1, Relaxed);
    }
    if t.header.repair_pending.load(Relaxed) != 0 {
        repair(t)?;
        t.header.repair_pending.store(0, Relaxed);
    }
    Ok(())
}

/// Checks that the index finds every live (creating or sealed) entry of
/// the table, and rebuilds everything derived if it does not: a damaged
/// index must never make a written object look absent. Returns whether a
/// repair ran. Reads the whole table: for the few places that would
/// otherwise take a miss as final (a hole in a partition). Call with the
/// lock held.
pub(crate) fn repair_lost_index(t: &Tables<'_>) -> Result<bool> {
    for (e, entry) in t.entries.iter().enumerate() {
        let st = entry.state.load(Relaxed);
        if st != state::CREATING && st != state::SEALED {
            continue;
        }
        let id = Tables::id_of(entry);
        // A lookup error is damage as well (a slot naming an entry out of range).
        if !matches!(t.lookup(&id, id.table_hash()), Ok(Some(found)) if found == e as u32) {
            t.header.repair_pending.store(1, Relaxed);
            repair(t)?;
            t.header.repair_pending.store(0, Relaxed);
            return Ok(true);
        }
    }
    Ok(false)
}

/// Rebuilds every derived structure from the object table.
fn repair(t: &Tables<'_>) -> Result<()> {
    let drop_entry = |entry: &Entry| {
        entry.state.store(state::FREE, Release);
        t.header.dropped_corrupt.fetch_add(1, Relaxed);
    };
    // 1. Keep the entries that make sense; finish interrupted deletes.
    let mut live: Vec<(u64, u64, u32)> = Vec::new();
    for (e, entry) in t.entries.iter().enumerate() {
        match entry.state.load(Relaxed) {
            state::FREE => {}
            state::DELETED if Tables::holder_count(entry) == 0 => entry.state.store(state::FREE, Release),
            state::CREATING | state::SEALED | state::DELETED if entry_is_sane(t, entry) => {
                live.push((entry.block.load(Relaxed), entry.block_size.load(Relaxed), e as u32));
            }
            _ => drop_entry(entry),
        }
    }
    // 2. Blocks must not overlap: keep the first of any overlapping pair.
    live.sort_unstable();
    let mut end = 0;
    live.retain(|&(block, size, e)| {
        if block < end {
            drop_entry(&t.entries[e as usize]);
            return false;
        }
        end = block + size;
        true
    });
    // 3. The index, refusing a second live entry with the same ID.
    for slot in t.index {
        slot.store(0, Relaxed);
    }
    let mut kept = Vec::with_capacity(live.len());
    for &(block, size, e) in &live {
        let entry = &t.entries[e as usize];
        let st = entry.state.load(Relaxed);
        if st == state::CREATING || st == state::SEALED {
            let id = Tables::id_of(entry);
            let hash = id.table_hash();
            if t.lookup(&id, hash)?.is_some() {
                drop_entry(entry);
                continue;
            }
            t.index_insert(hash, e)?;
        }
        kept.push((block, size, e));
    }
    // 4. The arena's headers and free lists.
    let blocks: Vec<(u64, u64)> = kept.iter().map(|&(block, size, _)| (block, size)).collect();
    t.arena().rebuild(&blocks)?;
    // 5. The free-entry list (lowest numbers first out) and the LRU list in
    //    the order the objects became evictable.
    t.header.free_entry_head.store(NIL, Relaxed);
    t.header.lru_head.store(NIL, Relaxed);
    t.header.lru_tail.store(NIL, Relaxed);
    let mut evictable = Vec::new();
    for (e, entry) in t.entries.iter().enumerate().rev() {
        entry.flags.fetch_and(!FLAG_ON_LRU, Relaxed);
        if entry.state.load(Relaxed) == state::FREE {
            t.push_free_entry(e as u32)?;
        } else if Tables::is_evictable(entry) {
            evictable.push((entry.last_use.load(Relaxed), e as u32));
        }
    }
    evictable.sort_unstable();
    for &(_, e) in &evictable {
        t.lru_push(e)?;
    }
    // 6. The counters.
    let (mut used, mut payload) = (0u64, 0u64);
    for &(_, size, e) in &kept {
        let entry = &t.entries[e as usize];
        used += size;
        payload += entry.data_size.load(Relaxed) + entry.meta_size.load(Relaxed) as u64;
    }
    t.header.used.store(used, Relaxed);
    t.header.payload.store(payload, Relaxed);
    t.header.objects.store(kept.len() as u64, Relaxed);
    t.header.repairs.fetch_add(1, Relaxed);
    Ok(())
}

/// Releases every reference `client` held and aborts the objects it was
/// creating, then frees its slot. Returns whether memory was freed.
pub(crate) fn release_client(t: &Tables<'_>, client: u32) -> Result<bool> {
    let mut freed = false;
    let (word, bit) = ((client / 64) as usize, 1u64 << (client % 64));
    for (e, entry) in t.entries.iter().enumerate() {
        let st = entry.state.load(Relaxed);
        if st == state::FREE {
            // A bit it set pinning this entry without the lock, had it
            // died before taking the bit back.
            entry.holders[word].fetch_and(!bit, Relaxed);
            continue;
        }
        if st == state::CREATING && entry.owner.load(Relaxed) == client {
            entry.holders[word].fetch_and(!bit, Relaxed);
            t.free_object(e as u32)?;
            freed = true;
            continue;
        }
        t.drop_holder(e as u32, client)?;
        // Settled whether or not its bit was still set: it may have cleared
        // the bit of its last view without the lock, then died before it
        // could free or list the entry.
        freed |= t.settle(e as u32)?;
    }
    let slot = &t.clients[client as usize];
    slot.pid.store(0, Relaxed);
    slot.active.store(0, Release);
    Ok(freed)
}
