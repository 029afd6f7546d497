//! One client's side of a store: what a process keeps in its own memory
//! (the validated layout, its client slot, its per-object view counts), and
//! the locked operations that views and builders call back into: seal,
//! abort, release. Also the sweep that recovers dead clients.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{self, Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

use super::layout::{self, state, Layout, MUTEX_OFFSET, NIL, SEAL_BUCKETS, WAIT_OFFSET};
use super::locked::Locked;
use super::recovery;
use super::table::Tables;
use super::ObjectId;
use super::{Result, StoreError};
use crate::shm::wait::{WaitCell, WaitStrategy};
use crate::shm::{liveness, lock, Region};

/// Work a caller runs in the critical section of a seal.
pub(crate) type OnSeal<'f> = &'f mut dyn FnMut(&Locked<'_>) -> Result<()>;

/// What one client keeps in its own memory.
pub(crate) struct Shared {
    pub(super) region: Region,
    /// Validated once at open; never re-read from the file.
    pub(super) layout: Layout,
    pub(super) client: u32,
    /// This client's number of live views per entry. Changed only under the
    /// store's lock; the shared holder bit is set while it is non-zero.
    pub(super) local_refs: Box<[AtomicU32]>,
    pub(super) wait: WaitStrategy,
    pub(super) lock_timeout: Duration,
}

/// Recovers every client slot that is marked active but whose liveness lock
/// nobody holds. `me` is skipped: a lock never conflicts with its holder.
pub(super) fn sweep_dead_clients(t: &Tables<'_>, me: Option<u32>) -> Result<usize> {
    let mut recovered = 0;
    for (slot, c) in t.clients.iter().enumerate() {
        let slot = slot as u32;
        if c.active.load(Relaxed) == 0 || Some(slot) == me {
            continue;
        }
        let alive = liveness::is_held_by_other(t.region, slot)
            .map_err(|e| StoreError::io("probe a client liveness lock", e))?;
        if !alive {
            recovery::release_client(t, slot)?;
            t.header.dead_clients.fetch_add(1, Relaxed);
            recovered += 1;
        }
    }
    Ok(recovered)
}

/// How often a `create` waiting for space looks for dead clients.
pub(super) const DEAD_CLIENT_SWEEP: Duration = Duration::from_millis(100);

pub(super) const SPACE_CELL: u64 = 0;
pub(super) const ANY_SEAL_CELL: u64 = 1;

pub(super) fn bucket_of(hash: u64) -> u64 {
    2 + hash % SEAL_BUCKETS
}

impl Shared {
    pub(super) fn cell(&self, i: u64) -> Result<&WaitCell> {
        Ok(self.region.get(WAIT_OFFSET + i * size_of::<WaitCell>() as u64)?)
    }

    pub(super) fn notify(&self, i: u64) {
        if let Ok(cell) = self.cell(i) {
            cell.notify();
        }
    }

    pub(super) fn with_tables<R>(&self, f: impl FnOnce(&Tables<'_>) -> Result<R>) -> Result<R> {
        let guard = lock::lock(&self.region, MUTEX_OFFSET, self.lock_timeout)?;
        let t = Tables::new(&self.region, &self.layout)?;
        recovery::repair_if_needed(&t, guard.owner_died())?;
        let result = f(&t);
        if let Err(StoreError::Corrupted(_)) = &result {
            // The change may have stopped half-way: have the next holder of
            // the lock rebuild the derived state from the table.
            t.header.repair_pending.store(1, Relaxed);
        }
        drop(guard);
        result
    }

    /// Seals an object this client created: called by the builder.
    /// `on_seal` runs in the same critical section, just after the seal (a
    /// stream counts the batch there); its error is returned, but the
    /// object stays sealed.
    pub(crate) fn seal(self: &Arc<Self>, e: u32, id: ObjectId, on_seal: Option<OnSeal<'_>>) -> Result<()> {
        let mut hook = Ok(());
        let mut freed = false;
        self.with_tables(|t| {
            let entry = self.owned_entry(t, e, id)?;
            // Release: a reader that sees SEALED (under the lock, or through
            // the index) also sees the payload this process wrote. The state
            // before the owner, so a crash between them leaves a sealed object.
            entry.state.store(state::SEALED, Release);
            entry.owner.store(NIL, Relaxed);
            let evictable = Tables::is_evictable(entry);
            if evictable {
                t.lru_push(e)?;
            }
            if let Some(on_seal) = on_seal {
                let locked = Locked::new(t, self);
                hook = on_seal(&locked);
                freed = locked.freed();
            }
            Ok(evictable || freed)
        })
        .inspect(|&evictable| {
            // A creator waiting for space may now evict this object.
            if evictable {
                self.notify(SPACE_CELL);
            }
        })?;
        self.notify(bucket_of(id.table_hash()));
        self.notify(ANY_SEAL_CELL);
        hook
    }

    /// Aborts an object this client created: called by the builder.
    pub(crate) fn abort(&self, e: u32, id: ObjectId) -> Result<()> {
        self.with_tables(|t| {
            self.owned_entry(t, e, id)?;
            t.free_object(e)
        })?;
        self.notify(SPACE_CELL);
        Ok(())
    }

    fn owned_entry<'t>(&self, t: &Tables<'t>, e: u32, id: ObjectId) -> Result<&'t layout::Entry> {
        let entry = t.entry(e)?;
        if entry.state.load(Relaxed) != state::CREATING
            || entry.owner.load(Relaxed) != self.client
            || Tables::id_of(entry) != id
        {
            return Err(StoreError::corrupted(format_args!("object {id} is no longer being created by this client")));
        }
        Ok(entry)
    }

    /// Drops one of this client's views of entry `e`: called by the view.
    ///
    /// A view that is not this client's last one only decrements the local
    /// count, without the lock. The last one takes the lock, so that the
    /// count reaching zero and the shared holder bit being cleared are one
    /// step for any `get` of the same object (which increments under the lock).
    pub(crate) fn release(&self, e: u32) -> Result<()> {
        let count = &self.local_refs[e as usize];
        let mut n = count.load(Relaxed);
        while n > 1 {
            match count.compare_exchange_weak(n, n - 1, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => n = now,
            }
        }
        self.with_tables(|t| match count.load(Relaxed) {
            0 => Ok(()),
            // Only this view is left in this process, so nothing can race us.
            1 => {
                count.store(0, Relaxed);
                t.drop_holder(e, self.client).map(|_| ())
            }
            _ => {
                count.fetch_sub(1, Relaxed);
                Ok(())
            }
        })?;
        self.notify(SPACE_CELL);
        Ok(())
    }

    /// Adds one view of entry `e`, which this client already holds (the view
    /// being cloned keeps the count at one or more, so no lock is needed).
    pub(crate) fn add_local_ref(&self, e: u32) {
        self.local_refs[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every view and builder holds this `Shared`, so none is left: release
        // the slot (and, defensively, anything still recorded against it).
        let _ = self.with_tables(|t| recovery::release_client(t, self.client));
        let _ = liveness::release(&self.region, self.client);
        self.notify(SPACE_CELL);
    }
}
