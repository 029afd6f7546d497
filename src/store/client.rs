//! One client's side of a store: what a process keeps in its own memory
//! (the validated layout, its client slot, its per-object view counts), and
//! the locked operations that views and builders call back into: abort and
//! release. Also the sweep that recovers dead clients.
//!
//! A view or builder may be dropped by a thread that holds the store's lock
//! (inside a transaction, on an error path): the lock is not re-entrant, so
//! such a drop is deferred and applied by the same thread just before it
//! releases the lock, in the same critical section.

use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Mutex;
use std::time::Duration;

use super::layout::{self, state, Layout, MUTEX_OFFSET, SEAL_BUCKETS, WAIT_OFFSET};
use super::recovery;
use super::table::Tables;
use super::ObjectId;
use super::{Result, StoreError};
use crate::shm::wait::{WaitCell, WaitStrategy};
use crate::shm::{liveness, lock, Region};

/// What one client keeps in its own memory.
pub(crate) struct ClientState {
    pub(super) region: Region,
    /// Validated once at open; never re-read from the file.
    pub(super) layout: Layout,
    pub(super) client: u32,
    /// This client's number of live views per entry. Changed only under the
    /// store's lock; the shared holder bit is set while it is non-zero.
    pub(super) local_refs: Box<[AtomicU32]>,
    pub(super) wait: WaitStrategy,
    pub(super) lock_timeout: Duration,
    /// The thread of this process that holds the store's lock through this
    /// client (its [`thread_token`]), or 0.
    pub(super) lock_holder: AtomicUsize,
    /// Drops that happened while this process held the lock, applied before
    /// it is released. Process memory, not shared.
    pub(super) deferred: Mutex<Vec<Deferred>>,
    /// How many drops `deferred` holds (read without its mutex).
    pub(super) deferred_count: AtomicUsize,
}

/// A drop that had to wait for the lock's release.
pub(super) enum Deferred {
    /// The last local view of an entry was dropped.
    Release(u32),
    /// An unsealed builder was dropped.
    Abort(u32, ObjectId),
}

/// A number unique to the calling thread among the live threads of this
/// process (the address of a thread-local).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
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

impl ClientState {
    pub(super) fn cell(&self, i: u64) -> Result<&WaitCell> {
        Ok(self.region.get(WAIT_OFFSET + i * size_of::<WaitCell>() as u64)?)
    }

    pub(super) fn notify(&self, i: u64) {
        if let Ok(cell) = self.cell(i) {
            cell.notify();
        }
    }

    /// Runs `f` on the tables under the lock, repairing first if the
    /// previous holder died, and applying the drops deferred meanwhile
    /// before the lock is released. A `Corrupted` error from `f` or from a
    /// deferred drop has the next holder rebuild the derived state.
    pub(super) fn with_tables<R>(&self, f: impl FnOnce(&Tables<'_>) -> Result<R>) -> Result<R> {
        let guard = lock::lock(&self.region, MUTEX_OFFSET, self.lock_timeout)?;
        // Relaxed: a thread only ever finds its own token here if it wrote
        // it itself (tokens are unique among live threads), and its own
        // writes are ordered for it.
        self.lock_holder.store(thread_token(), Relaxed);
        // Cleared on every way out, a panic in `f` included (declared after
        // the lock guard, so dropped before it: cleared, then unlocked).
        struct Holder<'a>(&'a AtomicUsize);
        impl Drop for Holder<'_> {
            fn drop(&mut self) {
                self.0.store(0, Relaxed);
            }
        }
        let holder = Holder(&self.lock_holder);
        let t = Tables::new(&self.region, &self.layout);
        let result = t.and_then(|t| {
            recovery::repair_if_needed(&t, guard.owner_died())?;
            let result = f(&t);
            let deferred = self.apply_deferred(&t);
            if matches!(&result, Err(StoreError::Corrupted(_))) || deferred.is_err() {
                // A change may have stopped half-way: have the next holder
                // of the lock rebuild the derived state from the table.
                t.header.repair_pending.store(1, Relaxed);
            }
            result
        });
        drop(holder);
        drop(guard);
        result
    }

    /// Whether the calling thread holds the store's lock through this client.
    pub(super) fn lock_held_here(&self) -> bool {
        self.lock_holder.load(Relaxed) == thread_token()
    }

    fn defer(&self, drop: Deferred) {
        self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(drop);
        self.deferred_count.fetch_add(1, Relaxed);
    }

    /// Applies the drops deferred while the lock was held (see the module
    /// docs). Every one is applied even if one fails; the first error is
    /// returned.
    fn apply_deferred(&self, t: &Tables<'_>) -> Result<bool> {
        // Only this thread defers while it holds the lock, so a zero count
        // read here is exact: the common case takes no mutex.
        if self.deferred_count.load(Relaxed) == 0 {
            return Ok(false);
        }
        self.deferred_count.store(0, Relaxed);
        let drops = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut outcome = Ok(!drops.is_empty());
        for drop in drops {
            let applied = match drop {
                Deferred::Release(e) => self.release_locked(t, e),
                Deferred::Abort(e, id) => self.owned_entry(t, e, id).and_then(|_| t.free_object(e)),
            };
            if let Err(err) = applied {
                outcome = outcome.and(Err(err));
            }
        }
        if matches!(outcome, Ok(true)) {
            // Memory may have been freed: the caller cannot know, so wake
            // creators waiting for space (a spurious wake is harmless).
            self.notify(SPACE_CELL);
        }
        outcome
    }

    /// Aborts an object this client created: called by the builder.
    pub(crate) fn abort(&self, e: u32, id: ObjectId) -> Result<()> {
        if self.lock_held_here() {
            self.defer(Deferred::Abort(e, id));
            return Ok(());
        }
        self.with_tables(|t| {
            self.owned_entry(t, e, id)?;
            t.free_object(e)
        })?;
        self.notify(SPACE_CELL);
        Ok(())
    }

    /// The entry `e` if it is `id`, being created by this client.
    pub(super) fn owned_entry<'t>(&self, t: &Tables<'t>, e: u32, id: ObjectId) -> Result<&'t layout::Entry> {
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
        if self.lock_held_here() {
            self.defer(Deferred::Release(e));
            return Ok(());
        }
        self.with_tables(|t| self.release_locked(t, e))?;
        self.notify(SPACE_CELL);
        Ok(())
    }

    fn release_locked(&self, t: &Tables<'_>, e: u32) -> Result<()> {
        let count = &self.local_refs[e as usize];
        match count.load(Relaxed) {
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
        }
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

impl Drop for ClientState {
    fn drop(&mut self) {
        // Every view and builder holds this `ClientState`, so none is left: release
        // the slot (and, defensively, anything still recorded against it).
        let _ = self.with_tables(|t| recovery::release_client(t, self.client));
        let _ = liveness::release(&self.region, self.client);
        self.notify(SPACE_CELL);
    }
}
