//! One client's side of a store: what a process keeps in its own memory
//! (the validated layout, its client slot, its per-object view counts), and
//! the locked operations that views and builders call back into: abort and
//! release. Also the sweep that recovers dead clients.
//!
//! A view or builder may be dropped by a thread that holds the store's lock
//! (inside a transaction, on an error path): the lock is not re-entrant, so
//! such a drop is deferred. The lock is the file's, not the handle's: a
//! thread that holds it through one handle and drops a view of another
//! handle on the same file defers too. A client's deferred drops are
//! applied the next time it holds the lock, in that critical section: the
//! same one when the drop was its own (the common case), otherwise the
//! client's next call or its close.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::layout::{self, state, Layout, FLAG_CELLS, FLAG_PINNED, FLAG_USED, MUTEX_OFFSET, SEAL_BUCKETS, WAIT_OFFSET};
use super::object::ObjectView;
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
    /// This client's number of live views per entry; the shared holder bit
    /// is set while it is non-zero. It crosses zero (and the bit changes)
    /// only under `gate`.
    pub(super) local_refs: Box<[AtomicU32]>,
    /// Serialises this process's threads where a count crosses zero, with
    /// the store's lock or without it (taken after the store's lock, never
    /// before). Process memory, not shared.
    pub(super) gate: Gate,
    pub(super) wait: WaitStrategy,
    pub(super) lock_timeout: Duration,
    /// The store file's identity (device, inode): what the lock belongs to.
    pub(super) file: FileKey,
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
    /// A view released without the lock left an entry to bring in line
    /// (see [`Tables::settle`]), and the lock could not be taken then.
    Settle(u32),
    /// A look without the lock left a holder bit to take back, and the
    /// lock could not be taken then.
    TakeBack(u32),
}

/// A spin lock in process memory around a few loads and stores (never a
/// wait or a system call inside): cheaper than a mutex on the hot path,
/// where it is taken twice per batch and almost never contended.
#[derive(Default)]
pub(crate) struct Gate(std::sync::atomic::AtomicBool);

/// A held [`Gate`]; opens it on drop.
pub(crate) struct GateGuard<'g>(&'g std::sync::atomic::AtomicBool);

impl Gate {
    fn enter(&self) -> GateGuard<'_> {
        let mut spins = 0u32;
        while self.0.swap(true, Acquire) {
            while self.0.load(Relaxed) {
                spins += 1;
                // A holder that was preempted: let it run.
                if spins % 64 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        GateGuard(&self.0)
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

/// What a look without the store's lock found (see [`ClientState::get_unlocked`]).
pub(crate) enum Unlocked {
    /// The object, pinned.
    View(ObjectView),
    /// The object exists and is not sealed yet.
    NotYet,
    /// Only the lock can tell; the entry the index named, if any (a hint
    /// the lock checks before it trusts it).
    Ask(Option<u32>),
}

/// A store file's identity: (device, inode).
pub(super) type FileKey = (u64, u64);

/// How many store locks one thread can hold at once (nested transactions
/// on different stores); more are only slower to look up, never wrong.
const HELD_INLINE: usize = 4;

thread_local! {
    /// The store files whose lock the calling thread holds, innermost last:
    /// a few inline (no allocation, no `RefCell` on the hot path), the rest
    /// in `HELD_MORE`.
    static HELD: [Cell<FileKey>; HELD_INLINE] = const { [const { Cell::new((0, 0)) }; HELD_INLINE] };
    static HELD_LEN: Cell<usize> = const { Cell::new(0) };
    static HELD_MORE: RefCell<Vec<FileKey>> = const { RefCell::new(Vec::new()) };
}

/// Marks `file`'s lock as held by this thread until dropped (on every way
/// out, a panic included). Locks are taken and released in nested order
/// (`with_tables` is a scope), so the mark is a stack.
struct Held;

impl Held {
    fn mark(file: FileKey) -> Held {
        let len = HELD_LEN.with(Cell::get);
        if len < HELD_INLINE {
            HELD.with(|held| held[len].set(file));
        } else {
            HELD_MORE.with(|more| more.borrow_mut().push(file));
        }
        HELD_LEN.with(|l| l.set(len + 1));
        Held
    }

    fn is_held(file: FileKey) -> bool {
        let len = HELD_LEN.with(Cell::get);
        if len == 0 {
            return false;
        }
        HELD.with(|held| held[..len.min(HELD_INLINE)].iter().any(|f| f.get() == file))
            || (len > HELD_INLINE && HELD_MORE.with(|more| more.borrow().contains(&file)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let len = HELD_LEN.with(Cell::get);
        if len > HELD_INLINE {
            HELD_MORE.with(|more| more.borrow_mut().pop());
        }
        HELD_LEN.with(|l| l.set(len.saturating_sub(1)));
    }
}

thread_local! {
    /// Set while this thread does work that the next holder of the lock can
    /// as well do: a stopped holder is then not waited for (see [`NoWait`]).
    static NO_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Until dropped, the calling thread's calls do not wait for a lock whose
/// holder is stopped (SIGSTOP, Ctrl-Z, a debugger): after a short spin,
/// such a lock is `LockTimeout` at once; a running holder is waited for as
/// usual. For upkeep that can be left to the next holder (retention after
/// a commit, a close's release, the sweep of dead clients in a poll).
pub(crate) struct NoWait(bool);

impl NoWait {
    pub(crate) fn enter() -> NoWait {
        NoWait(NO_WAIT.with(|w| w.replace(true)))
    }
}

impl Drop for NoWait {
    fn drop(&mut self) {
        NO_WAIT.with(|w| w.set(self.0));
    }
}

thread_local! {
    /// The deadline of the blocking call this thread is in
    /// (`monotonic_coarse_ns`), if any: the lock is not waited for past it.
    static CALL_DEADLINE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The deadline of a blocking call, for the calls it makes under the
/// store's lock: waiting for the lock counts against the call's own
/// timeout (see `shm::lock`). Nested calls keep the earliest
/// deadline; dropping the guard restores the outer one.
///
/// Public for tools that must answer in time whatever another process
/// does (`quiver stat`): until the guard drops, every call of the calling
/// thread that takes the store's lock waits for it until the deadline
/// (and at least 15 ms), then fails with [`StoreError::LockTimeout`],
/// which names the holder. Calls that read without the lock are not
/// affected. The guard belongs to its thread (it is not `Send`).
pub struct CallDeadline(Option<u64>, std::marker::PhantomData<*const ()>);

impl CallDeadline {
    /// Enters a call that must return within `timeout`.
    pub fn enter(timeout: Duration) -> CallDeadline {
        // A call that must not wait reads no clock: its deadline is past.
        let at = match timeout.is_zero() {
            true => 0,
            false => {
                crate::shm::clock::monotonic_coarse_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64)
            }
        };
        let outer = CALL_DEADLINE.with(Cell::get);
        CALL_DEADLINE.with(|d| d.set(Some(outer.map_or(at, |o| o.min(at)))));
        CallDeadline(outer, std::marker::PhantomData)
    }
}

impl Drop for CallDeadline {
    fn drop(&mut self) {
        CALL_DEADLINE.with(|d| d.set(self.0));
    }
}

/// Applies a client's deferred drops when dropped: after `f` on the normal
/// path, and during unwinding if `f` panicked, when the change it was making
/// may be half done (the next holder then repairs).
struct Settle<'a> {
    client: &'a ClientState,
    t: &'a Tables<'a>,
    /// Set once `f` returned: dropped while unset means it panicked.
    returned: bool,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        if !self.returned {
            self.t.header.repair_pending.store(1, Relaxed);
        }
        if self.client.apply_deferred(self.t).is_err() {
            self.t.header.repair_pending.store(1, Relaxed);
        }
    }
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
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.notify_fenced(i);
    }

    /// [`notify`](Self::notify) after the caller's own `fence(SeqCst)`
    /// (see [`WaitCell::notify_fenced`]).
    pub(super) fn notify_fenced(&self, i: u64) {
        if let Ok(cell) = self.cell(i) {
            // Waiters for space hold tickets (`Store::wait_for_space`).
            match i {
                SPACE_CELL => cell.notify_always(),
                _ => cell.notify_fenced(),
            }
        }
    }

    /// Runs `f` on the tables under the lock, repairing first if the
    /// previous holder died, and applying the drops deferred meanwhile
    /// before the lock is released. A `Corrupted` error from `f` or from a
    /// deferred drop has the next holder rebuild the derived state.
    pub(super) fn with_tables<R>(&self, f: impl FnOnce(&Tables<'_>) -> Result<R>) -> Result<R> {
        self.check_whole()?;
        let deadline = CALL_DEADLINE.with(Cell::get);
        let guard = match NO_WAIT.with(Cell::get) {
            true => lock::lock_unless_stopped(&self.region, MUTEX_OFFSET, self.lock_timeout, deadline)?,
            false => lock::lock_until(&self.region, MUTEX_OFFSET, self.lock_timeout, deadline)?,
        };
        // Declared after the lock guard, so dropped before it: the mark is
        // gone before the lock is released.
        let _held = Held::mark(self.file);
        // Cut while this thread waited, or found cut by the lock itself
        // (its page then reads zeros: nothing under it is the store's).
        self.check_whole()?;
        let t = Tables::new(&self.region, &self.layout)?;
        recovery::repair_if_needed(&t, guard.owner_died())?;
        // Drops deferred while another handle on this file held the lock
        // (the count makes this free when there are none).
        if self.apply_deferred(&t).is_err() {
            t.header.repair_pending.store(1, Relaxed);
        }
        let result = {
            let mut settle = Settle { client: self, t: &t, returned: false };
            let result = f(&t);
            settle.returned = true;
            result
        };
        if matches!(&result, Err(StoreError::Corrupted(_))) {
            // A change may have stopped half-way: have the next holder of
            // the lock rebuild the derived state from the table.
            t.header.repair_pending.store(1, Relaxed);
        }
        result
    }

    /// Fails with [`StoreError::Shrunk`] if the file was found truncated
    /// under the mapping (see `shm::sigbus`): one atomic load when it was not.
    pub(super) fn check_whole(&self) -> Result<()> {
        if !self.region.truncated() {
            return Ok(());
        }
        let len = self.region.file().metadata().map_or(0, |m| m.len());
        Err(StoreError::Shrunk { path: self.region.path().to_path_buf(), len })
    }

    /// Whether the calling thread holds this store file's lock (through
    /// this client or another handle on the same file).
    pub(super) fn lock_held_here(&self) -> bool {
        Held::is_held(self.file)
    }

    fn defer(&self, drop: Deferred) {
        self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(drop);
        self.deferred_count.fetch_add(1, Relaxed);
    }

    /// Applies the drops deferred while the lock was held (see the module
    /// docs). Every one is applied even if one fails; the first error is
    /// returned.
    #[inline]
    fn apply_deferred(&self, t: &Tables<'_>) -> Result<bool> {
        // A drop deferred by another thread meanwhile (one that could not
        // get the lock) is applied next time: the count is read zero only
        // before its push. The common case takes no mutex.
        if self.deferred_count.load(Relaxed) == 0 {
            return Ok(false);
        }
        self.apply_deferred_now(t)
    }

    #[cold]
    fn apply_deferred_now(&self, t: &Tables<'_>) -> Result<bool> {
        self.deferred_count.store(0, Relaxed);
        let drops = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut outcome = Ok(!drops.is_empty());
        for drop in drops {
            let applied = match drop {
                Deferred::Release(e) => self.release_locked(t, e),
                Deferred::Abort(e, id) => self.owned_entry(t, e, id).and_then(|_| t.free_object(e)),
                Deferred::Settle(e) => t.settle(e).map(|_| ()),
                Deferred::TakeBack(e) => self.take_back_locked(t, e).map(|_| ()),
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

    /// This process's gate (see the field).
    pub(super) fn gate(&self) -> GateGuard<'_> {
        self.gate.enter()
    }

    /// A view of sealed object `id` taken without the store's lock, pinned
    /// (every stream batch is: the hot read path) or not.
    ///
    /// The protocol (whoever frees does the mirror image): set this
    /// client's holder bit, then check that the entry is still `id` and
    /// sealed. Whoever deletes or evicts an object stores its state first,
    /// then counts holders, all `SeqCst`, so at least one of the two sees
    /// the other: either the deleter sees the bit and leaves the object to
    /// its last holder (an evictor puts it back, sealed: a held object is
    /// never evicted), or the reader sees the change and takes its bit back
    /// (under the lock). Once the check passes, the entry cannot be freed or
    /// reused while the bit is set. An unpinned object stays on the LRU list
    /// while viewed this way; the evictor skips (and unlists) held ones, and
    /// the last view lists it again.
    pub(super) fn get_unlocked(self: &Arc<Self>, id: ObjectId, hash: u64) -> Unlocked {
        // Drops deferred for want of the lock wait for the next call that
        // takes it: each re-checks this client's count of the entry, so a
        // view taken here meanwhile is kept (a deferred release leaves the
        // count one too high until then: the safe direction).
        if self.region.truncated() {
            // The lock's path says so.
            return Unlocked::Ask(None);
        }
        let Ok(t) = Tables::new(&self.region, &self.layout) else { return Unlocked::Ask(None) };
        // The index may change under this read: a miss, or an entry that is
        // no longer `id`, is settled by the check below or by the lock.
        let Ok(Some(e)) = t.lookup(&id, hash) else { return Unlocked::Ask(None) };
        let Ok(entry) = t.entry(e) else { return Unlocked::Ask(None) };
        match entry.state.load(SeqCst) {
            state::SEALED => {}
            state::CREATING if Tables::id_of(entry) == id => return Unlocked::NotYet,
            _ => return Unlocked::Ask(Some(e)),
        }
        let (word, bit) = ((self.client / 64) as usize, 1u64 << (self.client % 64));
        let count = &self.local_refs[e as usize];
        let gate = self.gate();
        let first = count.load(Relaxed) == 0;
        if first {
            entry.holders[word].fetch_or(bit, SeqCst);
        }
        // The state is read again after the flags and the ID: whichever
        // object the entry holds when that read sees it sealed can no longer
        // be freed (the bit is set), so the fields read after it are that
        // object's, and a flag or ID read from an earlier one is caught.
        let sealed = || entry.state.load(SeqCst) == state::SEALED;
        // Shared cells are never bytes, whoever holds them (`take_view`).
        let valid = sealed() && entry.flags.load(SeqCst) & FLAG_CELLS == 0 && Tables::id_of(entry) == id && sealed();
        match t.payload(e, &id) {
            Ok(p) if valid => {
                // A use, for the evictor (an unpinned object stays listed).
                let flags = entry.flags.load(Relaxed);
                if flags & (FLAG_PINNED | FLAG_USED) == 0 {
                    entry.flags.fetch_or(FLAG_USED, Relaxed);
                }
                count.fetch_add(1, Relaxed);
                drop(gate);
                // If its bytes were outside the mapping (only a bug gets
                // here), the reference stays counted until this client
                // closes: the safe direction.
                match ObjectView::new(self.clone(), e, id, p.data_offset, p.data_size, p.meta_size) {
                    Ok(view) => Unlocked::View(view),
                    Err(_) => Unlocked::Ask(None),
                }
            }
            _ => {
                drop(gate);
                if first {
                    self.take_back(e);
                }
                Unlocked::Ask(None)
            }
        }
    }

    /// Clears this client's holder bit on entry `e`, set by a look that
    /// found the entry not what it wanted. If the lock cannot be had now,
    /// the bit stays (the safe direction) until this client's next call
    /// that takes the lock.
    fn take_back(&self, e: u32) {
        let _upkeep = NoWait::enter();
        match self.with_tables(|t| self.take_back_locked(t, e)) {
            Ok(true) => self.notify(SPACE_CELL),
            Ok(false) => {}
            Err(_) => self.defer(Deferred::TakeBack(e)),
        }
    }

    /// [`take_back`](Self::take_back) under the lock, unless a view of this
    /// process took the entry since.
    fn take_back_locked(&self, t: &Tables<'_>, e: u32) -> Result<bool> {
        let _gate = self.gate();
        if self.local_refs[e as usize].load(Relaxed) != 0 {
            return Ok(false);
        }
        t.drop_holder(e, self.client)
    }

    /// Drops one of this client's views of entry `e`: called by the view.
    ///
    /// A view that is not this client's last one only decrements the local
    /// count. The last view of a sealed, pinned object clears the holder
    /// bit without the lock, then checks whether the object was deleted or
    /// unpinned meanwhile (the mirror of [`get_unlocked`](Self::get_unlocked)),
    /// and only then takes the lock to free it or list it for eviction.
    /// Other last views take the lock.
    pub(crate) fn release(&self, e: u32) -> Result<()> {
        let count = &self.local_refs[e as usize];
        let mut n = count.load(Relaxed);
        // Release, paired with the Acquire load of the last view's release:
        // this view's reads of the object happen before the bit is cleared
        // (as `Arc` orders its drops).
        while n > 1 {
            match count.compare_exchange_weak(n, n - 1, Release, Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => n = now,
            }
        }
        if self.lock_held_here() {
            self.defer(Deferred::Release(e));
            return Ok(());
        }
        if self.release_unlocked(e) {
            return Ok(());
        }
        let _upkeep = NoWait::enter();
        if let Err(err) = self.with_tables(|t| self.release_locked(t, e)) {
            // Applied by this client's next call that takes the lock.
            self.defer(Deferred::Release(e));
            return Err(err);
        }
        self.notify(SPACE_CELL);
        Ok(())
    }

    /// [`release`](Self::release) without the lock, if `e` is sealed and
    /// pinned; `false` if the lock must do it.
    fn release_unlocked(&self, e: u32) -> bool {
        let at = self.layout.entries_offset + u64::from(e) * layout::ENTRY_BYTES;
        let Ok(entry) = self.region.get::<layout::Entry>(at) else { return false };
        if u64::from(e) >= self.layout.max_objects {
            return false;
        }
        // Nothing for the lock to do when the last view goes: sealed, and
        // pinned or still on the LRU list (a view taken without the lock
        // leaves it there). One taken under the lock left the list: its
        // release lists it again, under the lock.
        let pinned_and_sealed = || {
            entry.state.load(SeqCst) == state::SEALED
                && (entry.flags.load(SeqCst) & FLAG_PINNED != 0 || Tables::on_lru(entry))
        };
        let count = &self.local_refs[e as usize];
        let gate = self.gate();
        match count.load(Acquire) {
            0 => return true,
            1 => {}
            _ => {
                // Another view was taken since: it may be cloned or dropped
                // on another thread meanwhile, without the gate.
                count.fetch_sub(1, Release);
                return true;
            }
        }
        if !pinned_and_sealed() {
            return false;
        }
        count.store(0, Relaxed);
        let (word, bit) = ((self.client / 64) as usize, 1u64 << (self.client % 64));
        entry.holders[word].fetch_and(!bit, SeqCst);
        let unchanged = pinned_and_sealed();
        drop(gate);
        if !unchanged {
            // Deleted, unpinned or unlisted (by an evictor that found it
            // held) meanwhile: this may have been the last holder, which
            // frees it or lists it for eviction.
            let _upkeep = NoWait::enter();
            match self.with_tables(|t| t.settle(e)) {
                Ok(true) => self.notify(SPACE_CELL),
                Ok(false) => {}
                Err(_) => self.defer(Deferred::Settle(e)),
            }
        }
        true
    }

    fn release_locked(&self, t: &Tables<'_>, e: u32) -> Result<()> {
        let count = &self.local_refs[e as usize];
        let _gate = self.gate();
        match count.load(Acquire) {
            0 => Ok(()),
            1 => {
                count.store(0, Relaxed);
                t.drop_holder(e, self.client).map(|_| ())
            }
            _ => {
                count.fetch_sub(1, Release);
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
        // Not at any price: if the lock's holder is stopped, the slot is
        // left as a dead client's, which the next sweep releases the same way.
        let _upkeep = NoWait::enter();
        let _ = self.with_tables(|t| recovery::release_client(t, self.client));
        let _ = liveness::release(&self.region, self.client);
        self.notify(SPACE_CELL);
    }
}
