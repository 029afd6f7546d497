//! The object store: Plasma's object lifecycle over one shared file, with no
//! daemon.
//!
//! Every process maps the file and works on it directly. Metadata changes
//! under one robust lock (`shm::lock`); waiting is a futex on a
//! word in the file; reading is a slice of the mapping.
//!
//! - `id`: object IDs, including the deterministic sequential ones, and
//!   the fixed hashes every process computes alike;
//! - `config`: what a user sets to create or open a store, and names → paths;
//! - `layout`: every shared struct and where it lies in the file;
//! - `alloc`: the TLSF allocator over the data arena;
//! - `table`: the object table, its index and its LRU list;
//! - `recovery`: repair after a dead lock holder, release of dead clients;
//! - `client`: one client's own state, and the drops of views and builders;
//! - `locked`: `Locked`, one transaction: the store with its lock held,
//!   as the layers above work in it;
//! - `object`: the builder of a new object and the view of a sealed one;
//! - this file: [`Store`], which ties them together.

mod alloc;
#[cfg(feature = "test-hooks")]
mod audit;
mod client;
mod config;
mod error;
pub mod files;
mod id;
mod layout;
mod locked;
mod object;
mod recovery;
mod stats;
mod table;

use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{store_path, CreateOptions, OpenConfig, StoreConfig, FILE_PREFIX, STORE_DIR};
pub use error::{Result, StoreError};
pub(crate) use id::fnv1a;
pub use id::{IdKind, ObjectId, ParseObjectIdError};
pub(crate) use layout::FLAG_PINNED as PINNED;
pub use layout::{ALIGN, FORMAT_VERSION, MAX_CLIENTS};
pub use object::{Cells, ObjectBuilder, ObjectView};
pub use stats::{ObjectInfo, ObjectState, StoreStats};

pub use client::CallDeadline;
pub(crate) use client::NoWait;
pub(crate) use layout::REGISTRY_BYTES;
use locked::Placement;
pub(crate) use locked::{Locked, METADATA_HEAD};

use crate::shm::wait::Attempt;
use crate::shm::{liveness, lock, Region};
use client::{bucket_of, sweep_dead_clients, ClientState, Unlocked, ANY_SEAL_CELL, DEAD_CLIENT_SWEEP, SPACE_CELL};
use layout::{state, Header, Layout, FLAG_CELLS, FLAG_PINNED, MAGIC, MUTEX_OFFSET, NIL, READY};
use table::Tables;

/// A handle on a store: one client of it. Cheap to clone (clones share the
/// client); every view and builder keeps the handle's state alive.
#[derive(Clone)]
pub struct Store {
    shared: Arc<ClientState>,
}

/// Wall-clock nanoseconds, from the coarse clock: object ages are shown to
/// users and need milliseconds, and the coarse clock costs a few
/// nanoseconds instead of a TSC read (which is slow on some virtual machines).
use crate::shm::clock::wall_coarse_ns as now_ns;

/// Takes a free client slot without the store's lock: a slot is free when
/// it is not active, and it is ours once we hold its liveness lock, which
/// the OS gives to one open of the file at a time. `active` is set last, so
/// a sweeper that sees it set also sees the liveness lock held; a slot
/// whose last holder died stays active (and is not taken here) until a
/// sweep, under the lock, has released what it held. `None`: none is free.
fn claim_slot(region: &Region, layout: &Layout) -> Result<Option<u32>> {
    let t = Tables::new(region, layout)?;
    for (slot, c) in t.clients.iter().enumerate() {
        if c.active.load(Acquire) != 0 {
            continue;
        }
        if !liveness::try_claim(region, slot as u32).map_err(|e| StoreError::io("take a client liveness lock", e))? {
            continue;
        }
        // A sweep may have found the slot dead and freed it between the
        // load above and the claim: only `active == 0` with our lock held
        // makes it ours.
        if c.active.load(Acquire) != 0 {
            liveness::release(region, slot as u32).map_err(|e| StoreError::io("give up a client liveness lock", e))?;
            continue;
        }
        c.pid.store(std::process::id(), Relaxed);
        c.started_ns.store(now_ns(), Relaxed);
        let incarnation = t.header.incarnations.fetch_add(1, Relaxed).wrapping_add(1);
        c.incarnation.store(incarnation, Relaxed);
        c.active.store(1, Release);
        return Ok(Some(slot as u32));
    }
    Ok(None)
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    // An overflowing deadline means "no limit".
    Instant::now().checked_add(timeout)
}

impl Store {
    /// Creates a new store file and opens it as its first client. Fails with
    /// [`StoreError::StoreExists`] if the file exists and with
    /// [`StoreError::NoSpace`] if the file system cannot hold it.
    pub fn create(config: StoreConfig) -> Result<Store> {
        let path = config.location.path()?;
        let layout = Layout::new(config.objects(), config.capacity)?;
        // What creators of this name killed before publishing left behind.
        crate::shm::remove_stale_creations(&path);
        // Made under a temporary name and published once initialised, so
        // the name never shows a half-made store.
        let mut region = Region::create(&path, layout.file_size, config.open.prefault)?;
        let init = || -> Result<()> {
            let header: &Header = region.get(0)?;
            header.magic.store(MAGIC, Relaxed);
            header.version.store(FORMAT_VERSION, Relaxed);
            layout.write_to(header);
            header.created_ns.store(now_ns(), Relaxed);
            header.creator_pid.store(std::process::id(), Relaxed);
            lock::init(&region, MUTEX_OFFSET)?;
            let t = Tables::new(&region, &layout)?;
            // The file is zero-filled: every entry is FREE, the index empty,
            // every client slot inactive. What remains are the lists.
            header.lru_head.store(NIL, Relaxed);
            header.lru_tail.store(NIL, Relaxed);
            header.free_entry_head.store(NIL, Relaxed);
            for e in (0..layout.max_objects as u32).rev() {
                t.push_free_entry(e)?;
            }
            t.arena().init()?;
            // Publish: pairs with the Acquire load in `open_once`. Everything
            // above is visible to an opener that sees READY.
            header.ready.store(READY, Release);
            Ok(())
        };
        // An error drops the unpublished region, which removes its file.
        init()?;
        region.publish(&path)?;
        Self::attach(region, layout, &config.open)
    }

    /// Opens the store called `name` (in [`STORE_DIR`]).
    pub fn open(name: &str) -> Result<Store> {
        Self::open_with(OpenConfig::new(name))
    }

    /// Opens the store at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(OpenConfig::at_path(path.as_ref()))
    }

    /// Opens a store with explicit options. Waits up to the ready timeout
    /// for a store whose creator has not published it yet.
    pub fn open_with(config: OpenConfig) -> Result<Store> {
        let path = config.location.path()?;
        let deadline = deadline_after(config.ready_timeout);
        loop {
            match Self::open_once(&path, &config) {
                Err(StoreError::NotReady(_)) if deadline.is_some_and(|d| Instant::now() < d) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, config: &OpenConfig) -> Result<Store> {
        // The owner is checked on the open descriptor, before the file is
        // mapped (unless the caller trusts other users' stores).
        let me = rustix::process::geteuid().as_raw();
        // Another user's file is not prefaulted: a hostile sparse file
        // would be allocated in full before its header is even checked.
        let prefault = config.prefault && !config.allow_other_owner;
        let region = Region::open(path, prefault, (!config.allow_other_owner).then_some(me))?;
        let magic: &std::sync::atomic::AtomicU64 =
            region.get(0).map_err(|_| StoreError::NotAStore(path.to_path_buf()))?;
        match magic.load(Relaxed) {
            MAGIC => {}
            // Published by a rename once written: zeros at the name are
            // not a store being made (its temporary has another name).
            0 => return Err(StoreError::NotAStore(path.to_path_buf())),
            _ => return Err(StoreError::NotAStore(path.to_path_buf())),
        }
        let header: &Header = region.get(0).map_err(|_| StoreError::Truncated {
            path: path.to_path_buf(),
            expected: size_of::<Header>() as u64,
            actual: region.len(),
        })?;
        let version = header.version.load(Relaxed);
        if version != FORMAT_VERSION {
            return Err(StoreError::VersionMismatch {
                path: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        // Pairs with the Release store that publishes the file in `create`.
        if header.ready.load(Acquire) != READY {
            return Err(StoreError::NotAStore(path.to_path_buf()));
        }
        let layout = Layout::from_header(header)?;
        if region.len() < layout.file_size {
            return Err(StoreError::Truncated {
                path: path.to_path_buf(),
                expected: layout.file_size,
                actual: region.len(),
            });
        }
        // The lock's bytes are glibc's: refuse garbage before locking it.
        lock::check(&region, MUTEX_OFFSET)?;
        Self::attach(region, layout, config)
    }

    /// Registers this handle as a client: takes a free slot and its
    /// liveness lock, without waiting for the store's lock (a stopped or
    /// hung holder must not stall an opener; see docs/format.md, "Clients").
    /// The upkeep an opener does (a repair left due, sweeping dead clients)
    /// runs only if the lock is free now; the next holder does it otherwise.
    /// Only when every slot is taken does it wait for the lock, to sweep the
    /// dead ones and take one of theirs.
    fn attach(region: Region, layout: Layout, config: &OpenConfig) -> Result<Store> {
        let upkeep = |guard: lock::LockGuard<'_>| -> Result<()> {
            let t = Tables::new(&region, &layout)?;
            recovery::repair_if_needed(&t, guard.owner_died())?;
            sweep_dead_clients(&t, None)?;
            Ok(())
        };
        match lock::lock(&region, MUTEX_OFFSET, Duration::ZERO) {
            Ok(guard) => upkeep(guard)?,
            Err(crate::shm::ShmError::LockTimeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let client = match claim_slot(&region, &layout)? {
            Some(slot) => slot,
            None => {
                upkeep(lock::lock(&region, MUTEX_OFFSET, config.lock_timeout)?)?;
                claim_slot(&region, &layout)?.ok_or(StoreError::TooManyClients(layout::MAX_CLIENTS))?
            }
        };
        let local_refs = (0..layout.max_objects).map(|_| AtomicU32::new(0)).collect();
        let meta = region.file().metadata().map_err(|e| StoreError::io("stat the store file", e))?;
        let file = (std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta));
        let shared = ClientState {
            region,
            layout,
            client,
            local_refs,
            wait: config.wait,
            lock_timeout: config.lock_timeout,
            file,
            deferred: Default::default(),
            deferred_count: Default::default(),
            gate: Default::default(),
        };
        Ok(Store { shared: Arc::new(shared) })
    }

    /// Removes the store file called `name`. Processes that have it open
    /// keep their mapping until they close it.
    pub fn remove(name: &str) -> Result<()> {
        let path = store_path(name)?;
        std::fs::remove_file(&path).map_err(|e| StoreError::io(format!("remove {}", path.display()), e))
    }

    /// Checks that the store's file is still there and whole: a file
    /// removed (or replaced by another at its name) gives
    /// [`StoreError::Removed`], one truncated below the mapping
    /// [`StoreError::Shrunk`]. Waiting calls look at this when they run out
    /// of time, so "nothing arrived" is never reported for a store that is
    /// gone. (A truncated part of the mapping that is touched reads zeros
    /// instead of raising SIGBUS, and every call then fails with `Shrunk`:
    /// see `shm::sigbus`.)
    pub fn check_present(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let region = &self.shared.region;
        let meta = region.file().metadata().map_err(|e| StoreError::io("stat the store file", e))?;
        let path = region.path().to_path_buf();
        let replaced = std::fs::symlink_metadata(&path).map_or(true, |at| (at.dev(), at.ino()) != self.shared.file);
        if meta.nlink() == 0 || replaced {
            return Err(StoreError::Removed(path));
        }
        if meta.len() < region.len() {
            return Err(StoreError::Shrunk { path, len: meta.len() });
        }
        Ok(())
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        self.shared.region.path()
    }

    /// The addresses of this handle's mapping of the file: every view's
    /// bytes lie inside it (a test of zero-copy reads compares against it).
    pub fn mapped_range(&self) -> std::ops::Range<usize> {
        self.shared.region.address_range()
    }

    /// This handle's client slot.
    pub fn client_id(&self) -> u32 {
        self.shared.client
    }

    /// Creates an object of `data_size` bytes with `metadata`, returning a
    /// builder to fill it. Evicts least recently used objects if needed; fails
    /// at once with [`StoreError::StoreFull`] if nothing can be freed (see
    /// [`create_object_with`](Self::create_object_with) to wait), and with
    /// [`StoreError::AlreadyExists`] if the ID is taken.
    pub fn create_object(&self, id: ObjectId, data_size: u64, metadata: &[u8]) -> Result<ObjectBuilder> {
        self.create_object_with(id, data_size, metadata, CreateOptions::default())
    }

    /// [`create_object`](Self::create_object) with options: a timeout to wait for space
    /// and pinning.
    pub fn create_object_with(
        &self,
        id: ObjectId,
        data_size: u64,
        metadata: &[u8],
        options: CreateOptions,
    ) -> Result<ObjectBuilder> {
        let _call = CallDeadline::enter(options.timeout);
        // The deadline is known only once the store was found full: the
        // common case reads no clock.
        let mut deadline = None;
        // The ticket is taken only once an attempt has failed, and the wait
        // follows a second attempt made after it: nothing freed in between
        // is missed, and the common case costs no ticket.
        let mut ticket = None;
        loop {
            let flags = match (options.pinned || options.cells, options.cells) {
                (_, true) => FLAG_PINNED | FLAG_CELLS,
                (true, false) => FLAG_PINNED,
                (false, false) => 0,
            };
            if let Some(builder) = self.locked(|l| l.create(id, data_size, metadata, flags))? {
                return Ok(builder);
            }
            if let Some(ticket) = ticket.take() {
                let deadline = *deadline.get_or_insert_with(|| deadline_after(options.timeout));
                if !self.wait_for_space(ticket, deadline)? {
                    return Err(self.full_error(data_size, metadata.len()));
                }
            }
            ticket = Some(self.space_ticket()?);
        }
    }

    /// A ticket for [`wait_for_space`](Self::wait_for_space): take it before
    /// an attempt that may find the store full, and wait with it only after
    /// that attempt failed, so that space freed between the attempt and the
    /// wait is not missed.
    pub(crate) fn space_ticket(&self) -> Result<SpaceTicket> {
        Ok(SpaceTicket(self.shared.cell(SPACE_CELL)?.ticket()))
    }

    /// Waits until space may have been freed since `ticket` was taken:
    /// `Ok(true)` when something was freed (or a dead client's memory
    /// recovered) and the caller should try again, `Ok(false)` once
    /// `deadline` has passed (`None`: no limit). Dead clients are looked for
    /// first and then every 100 ms, since a client that dies holding space
    /// never notifies; so even a deadline already passed recovers them once.
    pub(crate) fn wait_for_space(&self, ticket: SpaceTicket, deadline: Option<Instant>) -> Result<bool> {
        let cell = self.shared.cell(SPACE_CELL)?;
        loop {
            if self.recover_dead_clients()? > 0 {
                return Ok(true);
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => DEAD_CLIENT_SWEEP,
            };
            if left.is_zero() {
                return Ok(false);
            }
            if cell.wait_changed(ticket.0, left.min(DEAD_CLIENT_SWEEP), self.shared.wait) {
                return Ok(true);
            }
        }
    }

    /// The [`StoreError::StoreFull`] (or `TooLarge`) of an object that found
    /// no room, with the store's numbers as they are now.
    pub(crate) fn full_error(&self, data_size: u64, meta_len: usize) -> StoreError {
        let placement = match Placement::new(data_size, meta_len, self.shared.layout.arena_size) {
            Ok(placement) => placement,
            Err(e) => return e,
        };
        match self.stats() {
            Ok(stats) => StoreError::StoreFull {
                requested: placement.block_size,
                free: stats.largest_free,
                objects: stats.objects,
            },
            Err(e) => e,
        }
    }

    /// Runs `f` as one transaction: with the store's lock held, through a
    /// [`Locked`] handle whose calls return [`StoreError`], for layers above
    /// the store that keep state in the registry. `f` returns its own
    /// error type. The wake-ups the transaction caused (space freed, objects
    /// sealed, registry cells) are sent after the lock is released. A
    /// refusal of `f`'s own never marks the store for repair; a `Corrupted`
    /// error from a store operation inside it does (the change may have
    /// stopped half-way).
    pub(crate) fn locked<R, E: From<StoreError>>(&self, f: impl FnOnce(&Locked<'_>) -> Result<R, E>) -> Result<R, E> {
        locked::transaction(&self.shared, f)
    }

    /// Wakes the creators waiting for space, to look again.
    pub(crate) fn notify_space(&self) {
        self.shared.notify(SPACE_CELL);
    }

    /// Wakes every process waiting on the wait cell at `offset` in the
    /// registry (outside a transaction; inside one, see
    /// [`Locked::wake_registry`]).
    pub(crate) fn notify_registry_cell(&self, offset: u64) {
        if let Ok(cell) = self.registry_cell(offset) {
            cell.notify();
        }
    }

    /// The `T` at `offset` in the registry, for lock-free atomic reads
    /// (hints that the caller checks again under the lock).
    pub(crate) fn registry<T: crate::shm::Shared>(&self, offset: u64) -> Result<&T> {
        if !offset.checked_add(size_of::<T>() as u64).is_some_and(|end| end <= layout::REGISTRY_BYTES) {
            return Err(StoreError::corrupted(format_args!("registry offset {offset} lies outside the registry")));
        }
        Ok(self.shared.region.get(layout::REGISTRY_OFFSET + offset)?)
    }

    /// The wait cell at `offset` in the registry.
    pub(crate) fn registry_cell(&self, offset: u64) -> Result<&crate::shm::wait::WaitCell> {
        if !offset.checked_add(64).is_some_and(|end| end <= layout::REGISTRY_BYTES) {
            return Err(StoreError::corrupted(format_args!("registry offset {offset} lies outside the registry")));
        }
        Ok(self.shared.region.get(layout::REGISTRY_OFFSET + offset)?)
    }

    /// How this handle waits (its [`OpenConfig`]'s strategy).
    pub(crate) fn wait_strategy(&self) -> crate::shm::wait::WaitStrategy {
        self.shared.wait
    }

    /// Returns a view of the sealed object `id`, waiting up to `timeout` for
    /// it to be sealed (zero: look once and return). `Ok(None)` means it was
    /// not sealed in time.
    pub fn get(&self, id: ObjectId, timeout: Duration) -> Result<Option<ObjectView>> {
        let _call = CallDeadline::enter(timeout);
        let hash = id.table_hash();
        let cell = self.shared.cell(bucket_of(hash))?;
        let found = cell.wait_for(timeout, self.shared.wait, || self.try_get(id, hash))?;
        if found.is_none() && !timeout.is_zero() {
            // Not "nothing yet" if the store is gone.
            self.check_present()?;
        }
        Ok(found)
    }

    /// Views of all of `ids`, waiting up to `timeout` in all for the ones not
    /// sealed yet. Each place holds `None` if that object was not sealed in time.
    pub fn get_many(&self, ids: &[ObjectId], timeout: Duration) -> Result<Vec<Option<ObjectView>>> {
        let _call = CallDeadline::enter(timeout);
        let mut views: Vec<Option<ObjectView>> = ids.iter().map(|_| None).collect();
        let cell = self.shared.cell(ANY_SEAL_CELL)?;
        cell.wait_until(timeout, self.shared.wait, || {
            for (id, view) in ids.iter().zip(views.iter_mut()) {
                if view.is_none() {
                    if let Attempt::Ready(found) = self.try_get(*id, id.table_hash())? {
                        *view = Some(found);
                    }
                }
            }
            Ok::<_, StoreError>(views.iter().all(Option::is_some).then_some(()))
        })?;
        Ok(views)
    }

    /// One look for sealed object `id`: without the lock if it can, else
    /// under it. An object found being created is [`Attempt::InFlight`]:
    /// its creator is writing it now.
    fn try_get(&self, id: ObjectId, hash: u64) -> Result<Attempt<ObjectView>> {
        let hint = match self.shared.get_unlocked(id, hash) {
            Unlocked::View(view) => return Ok(Attempt::Ready(view)),
            Unlocked::NotYet => return Ok(Attempt::InFlight),
            Unlocked::Ask(hint) => hint,
        };
        Ok(self
            .with_tables(|t| take_view(t, &self.shared, id, hash, hint, Want::Bytes))?
            .map_or(Attempt::Pending, Attempt::Ready))
    }

    /// One look for sealed object `id` without the lock: `Ready` for a
    /// sealed, pinned object (every stream batch), `InFlight` for one
    /// being written, `Pending` when only the lock can tell (absent,
    /// unpinned, deleted, or the index changing under the look).
    pub(crate) fn view_unlocked(&self, id: ObjectId) -> Attempt<ObjectView> {
        match self.shared.get_unlocked(id, id.table_hash()) {
            Unlocked::View(view) => Attempt::Ready(view),
            Unlocked::NotYet => Attempt::InFlight,
            Unlocked::Ask(_) => Attempt::Pending,
        }
    }

    /// Whether `id` names a sealed object.
    pub fn contains(&self, id: ObjectId) -> Result<bool> {
        let hash = id.table_hash();
        self.with_tables(|t| {
            Ok(match t.lookup(&id, hash)? {
                Some(e) => t.entry(e)?.state.load(Relaxed) == state::SEALED,
                None => false,
            })
        })
    }

    /// Deletes a sealed object: at once if no view of it exists, else when
    /// the last view is dropped (it disappears from `get` and `contains` now).
    pub fn delete(&self, id: ObjectId) -> Result<()> {
        self.with_tables(|t| delete_sealed(t, &id))?;
        self.shared.notify(SPACE_CELL);
        Ok(())
    }

    /// Deletes every sealed object among `ids` in one critical section (as
    /// [`delete`](Self::delete) does one): IDs that name no object, or an
    /// object still being created, are passed over. Returns how many were
    /// deleted. One lock round trip for many objects: what a producer
    /// freeing a window of consumed batches wants.
    pub fn delete_many(&self, ids: &[ObjectId]) -> Result<usize> {
        let deleted = self.with_tables(|t| {
            let mut deleted = 0;
            for id in ids {
                match delete_sealed(t, id) {
                    Ok(()) => deleted += 1,
                    Err(StoreError::NotFound(_) | StoreError::NotSealed(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(deleted)
        })?;
        if deleted > 0 {
            self.shared.notify(SPACE_CELL);
        }
        Ok(deleted)
    }

    /// Evicts least recently used objects (sealed, unpinned, with no view)
    /// until their data and metadata add up to at least `bytes` or none is
    /// left, as Plasma's `evict` does; returns the bytes evicted.
    pub fn evict(&self, bytes: u64) -> Result<u64> {
        self.locked(|l| l.evict(bytes))
    }

    /// Creates a pinned object of `count` shared atomic cells (64-bit,
    /// zeroed) and seals it at once: an object its users change in place
    /// after the seal, from any process, by atomic operations only (a model
    /// that several trainers update, say). It is never handed out as bytes:
    /// [`get`](Self::get) refuses it, [`get_cells`](Self::get_cells) opens
    /// it. Deleting it is deferred while handles to it exist, like any
    /// object's; it cannot be unpinned. The metadata is fixed at creation.
    pub fn create_cells(&self, id: ObjectId, count: usize, metadata: &[u8]) -> Result<Cells> {
        let size = (count as u64)
            .checked_mul(8)
            .ok_or_else(|| StoreError::InvalidArgument(format!("{count} cells do not fit in memory")))?;
        let options = CreateOptions { cells: true, ..CreateOptions::default() };
        let mut builder = self.create_object_with(id, size, metadata, options)?;
        builder.data_mut().fill(0);
        builder.seal_and_cells()
    }

    /// The shared cells object `id` (see [`create_cells`](Self::create_cells)),
    /// or `None` while it does not exist or is being created.
    pub fn get_cells(&self, id: ObjectId) -> Result<Option<Cells>> {
        let view = self.locked(|l| l.cells_view(id))?;
        view.map(Cells::new).transpose()
    }

    /// Protects a sealed object from eviction.
    pub fn pin(&self, id: ObjectId) -> Result<()> {
        self.set_pinned(id, true)
    }

    /// Makes a pinned object evictable again.
    pub fn unpin(&self, id: ObjectId) -> Result<()> {
        self.set_pinned(id, false)?;
        self.shared.notify(SPACE_CELL);
        Ok(())
    }

    fn set_pinned(&self, id: ObjectId, pinned: bool) -> Result<()> {
        let hash = id.table_hash();
        self.with_tables(|t| {
            let e = t.lookup(&id, hash)?.ok_or(StoreError::NotFound(id))?;
            let entry = t.entry(e)?;
            if entry.state.load(Relaxed) != state::SEALED {
                return Err(StoreError::NotSealed(id));
            }
            if !pinned && entry.flags.load(Relaxed) & FLAG_CELLS != 0 {
                return Err(StoreError::InvalidArgument(format!("object {id} holds shared cells, which stay pinned")));
            }
            // The flag is stored before the holders are counted, as a
            // release without the lock clears its bit before it reads the
            // flag: one of the two puts an unpinned, unheld object on the
            // LRU list.
            if pinned {
                entry.flags.fetch_or(FLAG_PINNED, SeqCst);
                t.lru_remove(e)
            } else {
                entry.flags.fetch_and(!FLAG_PINNED, SeqCst);
                t.settle(e).map(drop)
            }
        })
    }

    /// Finds clients whose process has died, releases their references and
    /// aborts their unsealed objects. Returns how many were recovered. Runs
    /// on its own when a store is opened and when `create` finds it full.
    pub fn recover_dead_clients(&self) -> Result<usize> {
        let recovered = self.with_tables(|t| sweep_dead_clients(t, Some(self.shared.client)))?;
        if recovered > 0 {
            self.shared.notify(SPACE_CELL);
        }
        Ok(recovered)
    }

    /// Test hook: how many waiters are parked on the wait cell that the seal
    /// of `id` notifies, or (`None`) on the cell of freed space.
    #[cfg(feature = "test-hooks")]
    pub fn debug_waiters(&self, id: Option<ObjectId>) -> Result<u32> {
        let cell = match id {
            Some(id) => bucket_of(id.table_hash()),
            None => SPACE_CELL,
        };
        Ok(self.shared.cell(cell)?.waiters())
    }

    /// Test hook: checks every invariant of the store's structures under
    /// the lock (after the repair a dead holder left due, as any locker
    /// does); `Corrupted` says which one failed.
    #[cfg(feature = "test-hooks")]
    pub fn debug_audit(&self) -> Result<()> {
        self.with_tables(audit::audit)
    }

    /// Test hook: takes the lock, calls `on_locked`, and keeps the lock until
    /// the process is killed (a holder that hangs or is stopped).
    #[cfg(feature = "test-hooks")]
    pub fn debug_hold_lock(&self, on_locked: impl FnOnce()) -> Result<std::convert::Infallible> {
        self.with_tables(|_| {
            on_locked();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        })
    }

    /// Test hook: takes the lock, leaves a change half-done, and aborts the
    /// process while still holding the lock, so tests can check that the next
    /// holder repairs the store. Stage 0 changes nothing; stage 1 allocates a
    /// block and an entry but dies before the entry's state is written; stage
    /// 2 marks the first sealed object FREE but dies before its index slot and
    /// block are released; stage 3 dies half-way through freeing a block.
    #[cfg(feature = "test-hooks")]
    pub fn debug_abort_while_locked(&self, stage: u32) -> Result<std::convert::Infallible> {
        use locked::allocate;
        self.with_tables(|t| {
            match stage {
                1 => {
                    allocate(t, 4096)?;
                }
                2 | 3 => {
                    for (e, entry) in t.entries.iter().enumerate() {
                        if entry.state.load(Relaxed) == state::SEALED && Tables::holder_count(entry) == 0 {
                            entry.state.store(state::FREE, Release);
                            if stage == 3 {
                                t.lru_remove(e as u32)?;
                                t.arena().free(entry.block.load(Relaxed))?;
                            }
                            break;
                        }
                    }
                }
                _ => {}
            }
            std::process::abort()
        })
    }

    /// Runs `f` on the tables under the lock, repairing first if the previous
    /// holder died.
    fn with_tables<R>(&self, f: impl FnOnce(&Tables<'_>) -> Result<R>) -> Result<R> {
        self.shared.with_tables(f)
    }
}

/// See [`Store::space_ticket`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpaceTicket(u32);

/// A view of the sealed object `id`, taken under the lock: the holder bit
/// is set (if this client had no view of it) and the local count raised.
/// What a view is for: bytes (every object but shared cells) or shared
/// cells (only those).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Bytes,
    Cells,
}

fn take_view(
    t: &Tables<'_>,
    shared: &Arc<ClientState>,
    id: ObjectId,
    hash: u64,
    hint: Option<u32>,
    want: Want,
) -> Result<Option<ObjectView>> {
    // The entry a look without the lock found, if it is still `id` (live
    // entries are in the index): saves a second probe of the index.
    let hinted = hint.filter(|&e| {
        t.entry(e).is_ok_and(|entry| {
            matches!(entry.state.load(Relaxed), state::CREATING | state::SEALED) && Tables::id_of(entry) == id
        })
    });
    let Some(e) = hinted.map_or_else(|| t.lookup(&id, hash), |e| Ok(Some(e)))? else {
        return Ok(None);
    };
    let entry = t.entry(e)?;
    if entry.state.load(Relaxed) != state::SEALED {
        return Ok(None);
    }
    // Cells change after the seal: they are never handed out as bytes.
    match (want, entry.flags.load(Relaxed) & FLAG_CELLS != 0) {
        (Want::Bytes, true) => return Err(StoreError::CellsObject(id)),
        (Want::Cells, false) => return Err(StoreError::NotCells(id)),
        _ => {}
    }
    let payload = t.payload(e, &id)?;
    // The holder bit first: if it fails, the count is left as it was.
    let count = &shared.local_refs[e as usize];
    let gate = shared.gate();
    if count.load(Relaxed) == 0 {
        t.add_holder(e, shared.client)?;
    }
    count.fetch_add(1, Relaxed);
    drop(gate);
    Ok(Some(ObjectView::new(shared.clone(), e, id, payload.data_offset, payload.data_size, payload.meta_size)?))
}

/// Deletes sealed object `id` under the lock: at once if no view holds it,
/// else when the last view goes (it leaves the index now).
fn delete_sealed(t: &Tables<'_>, id: &ObjectId) -> Result<()> {
    let hash = id.table_hash();
    let e = t.lookup(id, hash)?.ok_or(StoreError::NotFound(*id))?;
    let entry = t.entry(e)?;
    if entry.state.load(Relaxed) != state::SEALED {
        return Err(StoreError::NotSealed(*id));
    }
    t.delete_sealed(e, hash).map(drop)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path()).field("client", &self.shared.client).finish()
    }
}
