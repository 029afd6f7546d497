//! The allocator over the data arena: a two-level segregated fit (TLSF)
//! allocator, O(1) for allocate and free whatever the number of blocks.
//!
//! Every block starts with a 64-byte [`BlockHeader`] (free or used, its size
//! and its physical predecessor's size, for coalescing); the payload follows,
//! so payloads are 64-byte aligned. Free blocks sit in one list per size
//! class: 16 classes per power of two, so a block found by the rounded-up
//! class is never more than 1/16 larger than the request. Neighbouring free
//! blocks are always merged.
//!
//! All of this is derived state: [`Arena::rebuild`] recreates every header
//! and list from the object table's `(block, block_size)` pairs.

use std::sync::atomic::Ordering::Relaxed;

use super::layout::{AllocState, BlockHeader, ALIGN, BLOCK_FREE, BLOCK_USED, FL_COUNT, NIL_OFF, SL_COUNT, SL_LOG};
use super::{Result, StoreError};
use crate::shm::Region;

/// The valid bits of a second-level bitmap: one per list of a row. Garbage
/// in the other bits must not name a list that does not exist.
const SL_MASK: u32 = (1 << SL_COUNT) - 1;

/// The arena of one store, seen through the region.
pub(crate) struct Arena<'a> {
    region: &'a Region,
    state: &'a AllocState,
    /// File offset of the arena's first byte.
    base: u64,
    /// Size of the arena in bytes.
    size: u64,
}

/// The size class `(first level, second level)` of a block of `units`
/// 64-byte units: linear below 16 units, then 16 classes per power of two.
fn class_of(units: u64) -> (usize, usize) {
    if units < SL_COUNT as u64 {
        (0, units as usize)
    } else {
        let log = 63 - units.leading_zeros();
        let sl = ((units >> (log - SL_LOG)) as usize) & (SL_COUNT - 1);
        ((log - SL_LOG + 1) as usize, sl)
    }
}

/// The smallest class whose every block holds `units` units.
fn class_at_least(units: u64) -> (usize, usize) {
    if units < SL_COUNT as u64 {
        return (0, units as usize);
    }
    let log = 63 - units.leading_zeros();
    class_of(units.saturating_add((1 << (log - SL_LOG)) - 1))
}

impl<'a> Arena<'a> {
    pub(crate) fn new(region: &'a Region, state: &'a AllocState, base: u64, size: u64) -> Self {
        Arena { region, state, base, size }
    }

    fn header(&self, off: u64) -> Result<&'a BlockHeader> {
        if off >= self.size || off % ALIGN != 0 {
            return Err(StoreError::corrupted(format_args!("block offset {off} outside the arena")));
        }
        Ok(self.region.get(self.base + off)?)
    }

    /// The header at `off`, checked to carry `tag` and a size that fits.
    fn block(&self, off: u64, tag: u64) -> Result<(&'a BlockHeader, u64)> {
        let h = self.header(off)?;
        let size = h.size.load(Relaxed);
        if h.tag.load(Relaxed) != tag || size < ALIGN || size % ALIGN != 0 || size > self.size - off {
            return Err(StoreError::corrupted(format_args!("invalid block header at arena offset {off}")));
        }
        Ok((h, size))
    }

    fn head(&self, (fl, sl): (usize, usize)) -> &'a std::sync::atomic::AtomicU64 {
        &self.state.heads[fl][sl]
    }

    fn push_free(&self, off: u64, size: u64) -> Result<()> {
        let class = class_of(size / ALIGN);
        let h = self.header(off)?;
        let old = self.head(class).load(Relaxed);
        h.prev_free.store(NIL_OFF, Relaxed);
        h.next_free.store(old, Relaxed);
        if old != NIL_OFF {
            self.block(old, BLOCK_FREE)?.0.prev_free.store(off, Relaxed);
        }
        self.head(class).store(off, Relaxed);
        self.state.sl_bitmap[class.0].fetch_or(1 << class.1, Relaxed);
        self.state.fl_bitmap.fetch_or(1 << class.0, Relaxed);
        Ok(())
    }

    fn unlink_free(&self, off: u64, h: &BlockHeader, size: u64) -> Result<()> {
        let class = class_of(size / ALIGN);
        let (prev, next) = (h.prev_free.load(Relaxed), h.next_free.load(Relaxed));
        if next != NIL_OFF {
            self.block(next, BLOCK_FREE)?.0.prev_free.store(prev, Relaxed);
        }
        if prev != NIL_OFF {
            self.block(prev, BLOCK_FREE)?.0.next_free.store(next, Relaxed);
        } else if self.head(class).load(Relaxed) == off {
            self.head(class).store(next, Relaxed);
            if next == NIL_OFF {
                let left = self.state.sl_bitmap[class.0].fetch_and(!(1 << class.1), Relaxed) & !(1 << class.1);
                if left == 0 {
                    self.state.fl_bitmap.fetch_and(!(1 << class.0), Relaxed);
                }
            }
        } else {
            return Err(StoreError::corrupted(format_args!("free block {off} is not on its list")));
        }
        Ok(())
    }

    /// Sets the `prev_size` of the block after `[off, off + size)`, if any.
    fn set_prev_size_after(&self, off: u64, size: u64) -> Result<()> {
        let next = off + size;
        if next < self.size {
            self.header(next)?.prev_size.store(size, Relaxed);
        }
        Ok(())
    }

    /// Makes the whole arena one free block.
    pub(crate) fn init(&self) -> Result<()> {
        self.rebuild(&[])
    }

    /// Allocates a block of `size` bytes (a multiple of 64, header
    /// included) and returns its offset, or `None` if no free block is large
    /// enough.
    pub(crate) fn alloc(&self, size: u64) -> Result<Option<u64>> {
        debug_assert!(size >= ALIGN && size % ALIGN == 0);
        let Some(off) = self.find(size)? else {
            return Ok(None);
        };
        let (h, block_size) = self.block(off, BLOCK_FREE)?;
        if block_size < size {
            return Err(StoreError::corrupted(format_args!("free block {off} is in a class too large for it")));
        }
        self.unlink_free(off, h, block_size)?;
        crate::shm::crash::point();
        if block_size - size >= ALIGN {
            // Split: the tail becomes a free block of its own.
            let rest = off + size;
            let rest_size = block_size - size;
            let r = self.header(rest)?;
            r.size.store(rest_size, Relaxed);
            r.prev_size.store(size, Relaxed);
            r.tag.store(BLOCK_FREE, Relaxed);
            self.set_prev_size_after(rest, rest_size)?;
            self.push_free(rest, rest_size)?;
            crate::shm::crash::point();
            h.size.store(size, Relaxed);
        }
        h.tag.store(BLOCK_USED, Relaxed);
        Ok(Some(off))
    }

    /// A free block of at least `size` bytes: first from the classes that
    /// guarantee a fit, then a short search of the request's own class (so an
    /// exact-size hole is found even when no larger block exists).
    fn find(&self, size: u64) -> Result<Option<u64>> {
        let (fl, sl) = class_at_least(size / ALIGN);
        if fl < FL_COUNT {
            let mut sl_map = self.state.sl_bitmap[fl].load(Relaxed) & SL_MASK & (u32::MAX << sl);
            let mut fl = fl;
            if sl_map == 0 {
                let fl_map = self.state.fl_bitmap.load(Relaxed) & (u64::MAX.checked_shl(fl as u32 + 1).unwrap_or(0));
                if fl_map != 0 {
                    fl = fl_map.trailing_zeros() as usize;
                    sl_map = self.state.sl_bitmap[fl].load(Relaxed) & SL_MASK;
                }
            }
            if sl_map != 0 {
                let off = self.head((fl, sl_map.trailing_zeros() as usize)).load(Relaxed);
                if off == NIL_OFF {
                    return Err(StoreError::corrupted("allocator bitmap names an empty list"));
                }
                return Ok(Some(off));
            }
        }
        let mut off = self.head(class_of(size / ALIGN)).load(Relaxed);
        for _ in 0..16 {
            if off == NIL_OFF {
                break;
            }
            let (h, block_size) = self.block(off, BLOCK_FREE)?;
            if block_size >= size {
                return Ok(Some(off));
            }
            off = h.next_free.load(Relaxed);
        }
        Ok(None)
    }

    /// Frees the used block at `off`, merging it with free neighbours.
    pub(crate) fn free(&self, off: u64) -> Result<()> {
        let (h, mut size) = self.block(off, BLOCK_USED)?;
        let mut start = off;
        let mut prev_size = h.prev_size.load(Relaxed);
        let next = off + size;
        if next < self.size {
            let n = self.header(next)?;
            if n.tag.load(Relaxed) == BLOCK_FREE {
                let (n, next_size) = self.block(next, BLOCK_FREE)?;
                self.unlink_free(next, n, next_size)?;
                crate::shm::crash::point();
                n.tag.store(0, Relaxed);
                size += next_size;
            }
        }
        if prev_size != 0 {
            let prev = off
                .checked_sub(prev_size)
                .ok_or_else(|| StoreError::corrupted(format_args!("block {off} has a bad prev_size")))?;
            let p = self.header(prev)?;
            if p.tag.load(Relaxed) == BLOCK_FREE {
                let (p, p_size) = self.block(prev, BLOCK_FREE)?;
                if p_size != prev_size {
                    return Err(StoreError::corrupted(format_args!("block {off}: neighbour sizes disagree")));
                }
                self.unlink_free(prev, p, p_size)?;
                h.tag.store(0, Relaxed);
                start = prev;
                size += p_size;
                prev_size = p.prev_size.load(Relaxed);
            }
        }
        crate::shm::crash::point();
        let s = self.header(start)?;
        s.size.store(size, Relaxed);
        s.prev_size.store(prev_size, Relaxed);
        s.tag.store(BLOCK_FREE, Relaxed);
        self.set_prev_size_after(start, size)?;
        self.push_free(start, size)
    }

    /// Checks the arena's derived state against itself: the blocks tile it
    /// (each header's size, `prev_size` the block before's), no two free
    /// blocks touch (frees merge), and the free lists hold exactly the free
    /// blocks, each in its class, each list's head in the bitmaps. Returns
    /// the used blocks `(offset, size)`, in order.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn audit(&self) -> Result<Vec<(u64, u64)>> {
        let bad = |why: String| StoreError::corrupted(format!("arena: {why}"));
        let (mut off, mut prev_size, mut prev_free) = (0u64, 0u64, false);
        let (mut used, mut free) = (Vec::new(), std::collections::BTreeSet::new());
        while off < self.size {
            let h = self.header(off)?;
            let (tag, size) = (h.tag.load(Relaxed), h.size.load(Relaxed));
            if size < ALIGN || size % ALIGN != 0 || size > self.size - off {
                return Err(bad(format!("block {off} has size {size}")));
            }
            if h.prev_size.load(Relaxed) != prev_size {
                return Err(bad(format!(
                    "block {off} says the block before is {}, not {prev_size}",
                    h.prev_size.load(Relaxed)
                )));
            }
            match tag {
                BLOCK_USED => used.push((off, size)),
                BLOCK_FREE if prev_free => return Err(bad(format!("free blocks touch at {off}"))),
                BLOCK_FREE => {
                    free.insert((off, size));
                }
                _ => return Err(bad(format!("block {off} has no tag"))),
            }
            prev_free = tag == BLOCK_FREE;
            (prev_size, off) = (size, off + size);
        }
        let mut listed = 0;
        for (fl, row) in self.state.heads.iter().enumerate() {
            for (sl, head) in row.iter().enumerate() {
                let mut at = head.load(Relaxed);
                let in_bitmaps = self.state.fl_bitmap.load(Relaxed) & (1 << fl) != 0
                    && self.state.sl_bitmap[fl].load(Relaxed) & (1 << sl) != 0;
                if (at != NIL_OFF) != in_bitmaps {
                    return Err(bad(format!("list ({fl}, {sl}) and its bitmap bits disagree")));
                }
                let mut prev = NIL_OFF;
                while at != NIL_OFF {
                    let (h, size) = self.block(at, BLOCK_FREE)?;
                    if !free.contains(&(at, size))
                        || class_of(size / ALIGN) != (fl, sl)
                        || h.prev_free.load(Relaxed) != prev
                    {
                        return Err(bad(format!("free list ({fl}, {sl}) names block {at} wrongly")));
                    }
                    listed += 1;
                    if listed > free.len() {
                        return Err(bad("the free lists hold more blocks than are free".into()));
                    }
                    (prev, at) = (at, h.next_free.load(Relaxed));
                }
            }
        }
        if listed != free.len() {
            return Err(bad(format!("{} free blocks, {listed} on the lists", free.len())));
        }
        Ok(used)
    }

    /// Recreates every block header and free list from the used blocks
    /// `(offset, size)`, which must be sorted, aligned, inside the arena and
    /// non-overlapping (the caller checks; this re-checks and errs).
    pub(crate) fn rebuild(&self, used: &[(u64, u64)]) -> Result<()> {
        self.state.fl_bitmap.store(0, Relaxed);
        for (fl, row) in self.state.heads.iter().enumerate() {
            self.state.sl_bitmap[fl].store(0, Relaxed);
            for head in row {
                head.store(NIL_OFF, Relaxed);
            }
        }
        let mut cursor = 0u64;
        let mut prev_size = 0u64;
        let mut place = |off: u64, size: u64, tag: u64| -> Result<()> {
            let h = self.header(off)?;
            h.size.store(size, Relaxed);
            h.prev_size.store(prev_size, Relaxed);
            h.tag.store(tag, Relaxed);
            if tag == BLOCK_FREE {
                self.push_free(off, size)?;
            }
            prev_size = size;
            Ok(())
        };
        for &(off, size) in used {
            let fits = off.checked_add(size).is_some_and(|end| end <= self.size);
            if off < cursor || off % ALIGN != 0 || size % ALIGN != 0 || size == 0 || !fits {
                return Err(StoreError::corrupted(format_args!("block [{off}, +{size}) cannot be placed")));
            }
            if off > cursor {
                place(cursor, off - cursor, BLOCK_FREE)?;
            }
            place(off, size, BLOCK_USED)?;
            cursor = off + size;
        }
        if cursor < self.size {
            place(cursor, self.size - cursor, BLOCK_FREE)?;
        }
        Ok(())
    }

    /// The size of the largest free block (within a 1/16 size class), for
    /// error messages and stats.
    pub(crate) fn largest_free(&self) -> u64 {
        let fl_map = self.state.fl_bitmap.load(Relaxed);
        if fl_map == 0 {
            return 0;
        }
        let fl = 63 - fl_map.leading_zeros() as usize;
        let sl_map = self.state.sl_bitmap[fl & (FL_COUNT - 1)].load(Relaxed) & SL_MASK;
        if sl_map == 0 {
            return 0;
        }
        let sl = 31 - sl_map.leading_zeros() as usize;
        let off = self.head((fl & (FL_COUNT - 1), sl)).load(Relaxed);
        self.block(off, BLOCK_FREE).map_or(0, |(_, size)| size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_monotonic_and_search_rounds_up() {
        let mut last = (0, 0);
        for units in 1..100_000u64 {
            let c = class_of(units);
            assert!(c >= last, "class of {units} went down");
            last = c;
            // Every block in the searched class is at least as large as the request.
            let search = class_at_least(units);
            assert!(search >= c);
            let smallest_in_search = (units..=units * 2).find(|&u| class_of(u) == search);
            if let Some(u) = smallest_in_search {
                assert!(u >= units);
            }
        }
    }
}
