//! The store's invariants checked whole (test machinery: the crash-point
//! enumeration runs it after every crash). The table is the truth; each
//! derived structure is checked against it.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use super::layout::{state, BLOCK_HEADER, FLAG_PINNED, NIL};
use super::table::Tables;
use super::{Result, StoreError};

/// Checks, under the lock: every creating or sealed entry is found by its
/// ID through the index, and the index names nothing else; the used blocks
/// are exactly the non-free entries' blocks, and each holds its entry's
/// data and metadata; the usage counters add up; the free-entry list holds
/// exactly the free entries; the LRU list holds exactly the evictable
/// entries, each flagged. The arena is checked by `Arena::audit`.
pub(crate) fn audit(t: &Tables<'_>) -> Result<()> {
    let bad = |why: String| Err(StoreError::corrupted(why));
    let mut live = 0usize;
    let (mut blocks, mut used, mut payload, mut objects) = (BTreeSet::new(), 0u64, 0u64, 0u64);
    let (mut free_entries, mut evictable) = (HashSet::new(), HashSet::new());
    for (e, entry) in t.entries.iter().enumerate() {
        let st = entry.state.load(Relaxed);
        if st == state::FREE {
            free_entries.insert(e as u32);
            continue;
        }
        let (block, size) = (entry.block.load(Relaxed), entry.block_size.load(Relaxed));
        let needs = entry.data_size.load(Relaxed) + u64::from(entry.meta_size.load(Relaxed)) + BLOCK_HEADER;
        if needs > size || !blocks.insert((block, size)) {
            return bad(format!("entry {e}: block [{block}, +{size}) does not hold it or is another's"));
        }
        (used, objects) = (used + size, objects + 1);
        payload += entry.data_size.load(Relaxed) + u64::from(entry.meta_size.load(Relaxed));
        if st == state::CREATING || st == state::SEALED {
            live += 1;
            let id = Tables::id_of(entry);
            if t.lookup(&id, id.table_hash())? != Some(e as u32) {
                return bad(format!("entry {e} ({id}) is not found through the index"));
            }
        }
        if Tables::is_evictable(entry) {
            evictable.insert(e as u32);
        }
    }
    let indexed = t.index.iter().filter(|slot| slot.load(Relaxed) != 0).count();
    if indexed != live {
        return bad(format!("the index holds {indexed} slots for {live} live entries"));
    }
    let arena: BTreeSet<(u64, u64)> = t.arena().audit()?.into_iter().collect();
    if arena != blocks {
        return bad(format!("{} used blocks in the arena, {} blocks of entries", arena.len(), blocks.len()));
    }
    let h = t.header;
    let counted = (h.used.load(Relaxed), h.payload.load(Relaxed), h.objects.load(Relaxed));
    if counted != (used, payload, objects) {
        return bad(format!("counters {counted:?}, the table says {:?}", (used, payload, objects)));
    }
    let mut listed = HashSet::new();
    let mut e = h.free_entry_head.load(Relaxed);
    while e != NIL {
        if !free_entries.contains(&e) || !listed.insert(e) {
            return bad(format!("the free-entry list names entry {e} wrongly"));
        }
        e = t.entry(e)?.lru_next.load(Relaxed);
    }
    if listed != free_entries {
        return bad(format!("{} free entries, {} on the list", free_entries.len(), listed.len()));
    }
    let mut on_lru = HashSet::new();
    let mut e = h.lru_head.load(Relaxed);
    while e != NIL {
        // Sealed and unpinned; it may be held by a view taken without the
        // lock, which leaves it listed (the evictor skips held entries).
        let entry = t.entry(e)?;
        let listable = entry.state.load(Relaxed) == state::SEALED && entry.flags.load(Relaxed) & FLAG_PINNED == 0;
        if !listable || !Tables::on_lru(entry) || !on_lru.insert(e) {
            return bad(format!("the LRU list names entry {e} wrongly"));
        }
        e = entry.lru_next.load(Relaxed);
    }
    if let Some(e) = evictable.iter().find(|e| !on_lru.contains(e)) {
        return bad(format!("entry {e} is evictable but not on the LRU list"));
    }
    Ok(())
}
