//! Streams: named, partitioned logs of Arrow record batches over the store.
//!
//! A stream has a name, a schema and N partitions, recorded in the store's
//! registry so any process can open it by name. Each record batch is one
//! object whose ID is `ObjectId::sequential(namespace, partition, offset)`:
//! any process computes the ID of any batch without asking.
//!
//! - `registry`: the shared structs (stream slot, partitions, groups) and
//!   the retention steps that run under the store's lock;
//! - `producer`: [`Producer`], which appends: the offset is assigned in the
//!   same critical section that creates the object, so an offset below a
//!   partition's head always has its object, or had one whose producer died
//!   before sealing it (a hole that consumers skip and count);
//! - `consumer`: [`Consumer`], which polls with a timeout, seeks, and
//!   commits its group's offsets;
//! - `window`: count and time windows over a consumer, after omega|ml.
//!
//! Retention: a batch is freed once every group of the stream has committed
//! past it. A stream with no group keeps its data until a limit or
//! back-pressure applies. The limits (`max_age`, `max_bytes`) and the
//! `DropOldest` policy drop the oldest batches and count them. Under the
//! default `Block` policy nothing is dropped: an append waits for space up to
//! its timeout and then fails.

mod config;
mod consumer;
mod error;
mod producer;
mod registry;
mod stats;
mod txn;
mod window;

use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::Arc;

use arrow_schema::SchemaRef;

pub use config::{BackPressure, ConsumerConfig, StartAt, StreamConfig};
pub use consumer::{Consumer, Polled, StreamBatch};
pub use error::StreamError;
pub use producer::{Appended, Producer, Reservation, Reserved};
pub(crate) use registry::{HOLE_BUDGET, MAX_STEP};
pub use registry::{MAX_GROUPS, MAX_NAME, MAX_PARTITIONS, MAX_SKIPPED_LISTED, MAX_STREAMS};
pub use stats::{GroupOffsets, GroupStats, PartitionStats, SkippedBatch, StreamStats};
pub(crate) use txn::{group_exists, stream_name, GroupKey, SlotState, StreamTxn, Taken, READ_AHEAD};
pub use window::{StopHandle, Window, WindowKind, WindowOutcome, WindowStats, Windows};

use crate::arrow::{load_schema, BatchWriter};
use crate::shm::clock::wall_ns;
use crate::store::StoreError;
use crate::store::{Locked, ObjectId, Store};
use registry::{GroupSlot, StreamRecord, CLOSED, FREE, LIVE};

/// Result type of stream operations.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// A handle on one stream of a store. Cheap to clone.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    store: Store,
    name: String,
    /// The stream's slot in the registry and the namespace of its objects;
    /// together they identify this stream even if the slot is reused.
    pub(crate) slot: usize,
    pub(crate) namespace: u64,
    partitions: u32,
    schema: SchemaRef,
    fingerprint: u64,
    back_pressure: BackPressure,
    max_age_ns: u64,
    max_bytes: u64,
    created_ns: u64,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.inner.name)
            .field("partitions", &self.inner.partitions)
            .field("namespace", &format_args!("{:#x}", self.inner.namespace))
            .finish()
    }
}

impl Stream {
    /// Creates a stream in `store`. Fails with [`StreamError::Exists`] if
    /// one of that name exists.
    pub fn create(store: &Store, config: StreamConfig) -> Result<Stream> {
        config.check()?;
        // Publishes the schema object (pinned, shared by fingerprint).
        let fingerprint = BatchWriter::new(store, config.schema.clone())?.fingerprint();
        let created_ns = wall_ns();
        let (slot, namespace) = store.locked(|l| -> Result<_> {
            let reg = registry::registry(l)?;
            if registry::find_stream(reg, &config.name)?.is_some() {
                return Err(StreamError::Exists(config.name.clone()));
            }
            let s = reg
                .streams
                .iter()
                .position(|r| r.slot.state.load(Relaxed) == FREE)
                .ok_or(StreamError::RegistryFull { what: "streams", limit: MAX_STREAMS })?;
            let serial = reg
                .serial
                .load(Relaxed)
                .checked_add(1)
                .filter(|&s| s < registry::STREAM_NAMESPACE)
                .ok_or_else(|| StoreError::corrupted("the stream serial counter is exhausted"))?;
            reg.serial.store(serial, Relaxed);
            let namespace = registry::STREAM_NAMESPACE | serial;
            let record = &reg.streams[s];
            let slot = &record.slot;
            // The namespace is the record's version for readers without the
            // lock (see `Stream::open`): 0 while the fields are written,
            // the new one once they all are.
            slot.namespace.store(0, SeqCst);
            // Pairs with the reader's fence before it checks the version again.
            std::sync::atomic::fence(Release);
            registry::write_name(&slot.name, &slot.name_len, &config.name);
            slot.partitions.store(config.partitions, Relaxed);
            slot.flags.store(0, Relaxed);
            slot.back_pressure.store(config.back_pressure.to_word(), Relaxed);
            slot.schema_fingerprint.store(fingerprint, Relaxed);
            slot.created_ns.store(created_ns, Relaxed);
            slot.max_age_ns.store(config.max_age.map_or(0, |a| a.as_nanos().min(u64::MAX as u128) as u64), Relaxed);
            slot.max_bytes.store(config.max_bytes.unwrap_or(0), Relaxed);
            for counter in
                [&slot.bytes, &slot.appended, &slot.dropped, &slot.dropped_bytes, &slot.expired, &slot.trimmed]
            {
                counter.store(0, Relaxed);
            }
            for part in &record.partitions {
                for word in [&part.head, &part.tail, &part.bytes, &part.rows, &part.appended_rows, &part.last_append_ns]
                {
                    word.store(0, Relaxed);
                }
            }
            for group in &record.groups {
                group.state.store(FREE, Relaxed);
            }
            let log = &reg.skipped[s];
            log.count.store(0, Relaxed);
            log.namespace.store(namespace, Relaxed);
            // After the fields, before the groups' offsets (`init_group`),
            // as their creation times.
            slot.namespace.store(namespace, SeqCst);
            for (g, name) in config.groups.iter().enumerate() {
                init_group(&record.groups[g], name, created_ns, |_| 0);
            }
            // Last: the stream exists from here on.
            slot.state.store(LIVE, Release);
            Ok((s, namespace))
        })?;
        Ok(Stream {
            inner: Arc::new(Inner {
                store: store.clone(),
                name: config.name,
                slot,
                namespace,
                partitions: config.partitions,
                schema: config.schema,
                fingerprint,
                back_pressure: config.back_pressure,
                max_age_ns: config.max_age.map_or(0, |a| a.as_nanos().min(u64::MAX as u128) as u64),
                max_bytes: config.max_bytes.unwrap_or(0),
                created_ns,
            }),
        })
    }

    /// Opens the stream called `name`. Without the store's lock when it
    /// can (a stopped holder must not stall readers): the stream's slot is
    /// read between two reads of its namespace, which creation sets to 0
    /// before it writes the fields and to the stream's own once they are
    /// all written, and taken if both reads agree. Otherwise (a stream
    /// being made or removed, or none of that name) it asks the lock.
    pub fn open(store: &Store, name: &str) -> Result<Stream> {
        let unlocked = || -> Result<Option<Found>> {
            let reg: &registry::StreamRegistry = store.registry(registry::REGISTRY_AT)?;
            for (s, record) in reg.streams.iter().enumerate() {
                let slot = &record.slot;
                let version = slot.namespace.load(SeqCst);
                if version == 0 || slot.state.load(SeqCst) != LIVE {
                    continue;
                }
                if registry::read_name(&slot.name, &slot.name_len).ok().as_deref() != Some(name) {
                    continue;
                }
                let found = Found::read(reg, s, name);
                // Pairs with the fence after creation stores namespace 0:
                // if the version below is the one above, no write of a
                // later creation was seen by the reads before it.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                let same = slot.state.load(SeqCst) == LIVE
                    && slot.namespace.load(SeqCst) == version
                    && registry::read_name(&slot.name, &slot.name_len).ok().as_deref() == Some(name);
                return match same {
                    true => found.map(Some),
                    false => Ok(None),
                };
            }
            Ok(None)
        };
        let found = match unlocked()? {
            Some(found) => found,
            None => store.locked(|l| -> Result<_> {
                let reg = registry::registry(l)?;
                let s = registry::find_stream(reg, name)?.ok_or_else(|| StreamError::NotFound(name.to_string()))?;
                Found::read(reg, s, name)
            })?,
        };
        let Found { slot, namespace, partitions, fingerprint, back_pressure, max_age_ns, max_bytes, created_ns } =
            found;
        let schema = load_schema(store, ObjectId::schema(fingerprint), fingerprint)?;
        Ok(Stream {
            inner: Arc::new(Inner {
                store: store.clone(),
                name: name.to_string(),
                slot,
                namespace,
                partitions,
                schema,
                fingerprint,
                back_pressure,
                max_age_ns,
                max_bytes,
                created_ns,
            }),
        })
    }

    /// Opens the stream if it exists (its schema and partitions must be the
    /// ones `config` gives, else [`StreamError::ConfigMismatch`] says what
    /// differs, and the groups `config` declares are added if
    /// missing, starting at the oldest retained batch); creates it otherwise.
    /// Lets several producers and consumers start in any order.
    pub fn open_or_create(store: &Store, config: StreamConfig) -> Result<Stream> {
        loop {
            match Stream::open(store, &config.name) {
                Ok(stream) => {
                    let mut differs = Vec::new();
                    if stream.partitions() != config.partitions {
                        differs.push(format!("{} partitions, not {}", stream.partitions(), config.partitions));
                    }
                    if **stream.schema() != *config.schema {
                        differs.push(format!("schema {}, not {}", stream.schema(), config.schema));
                    }
                    if !differs.is_empty() {
                        let differs = differs.join(" and ");
                        return Err(StreamError::ConfigMismatch { stream: config.name.clone(), differs });
                    }
                    for group in &config.groups {
                        stream.add_group(group, StartAt::Oldest)?;
                    }
                    return Ok(stream);
                }
                Err(StreamError::NotFound(_)) => match Stream::create(store, config.clone()) {
                    // Another process created it between the two calls.
                    Err(StreamError::Exists(_)) => continue,
                    other => return other,
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the stream called `name`: frees every batch it retains and
    /// its registry slot. Open handles then fail with [`StreamError::Removed`];
    /// views and batches already taken stay valid.
    pub fn remove(store: &Store, name: &str) -> Result<()> {
        let cells = store.locked(|l| -> Result<_> {
            let reg = registry::registry(l)?;
            let s = registry::find_stream(reg, name)?.ok_or_else(|| StreamError::NotFound(name.to_string()))?;
            let record = &reg.streams[s];
            let partitions = (record.slot.partitions.load(Relaxed) as usize).min(MAX_PARTITIONS);
            let namespace = record.slot.namespace.load(Relaxed);
            // A scan of the object table (bounded by its size), rather than a
            // walk over the offsets (which the registry could overstate).
            l.delete_where(|id| id.sequential_namespace() == Some(namespace))?;
            record.slot.state.store(FREE, Release);
            Ok((s, partitions))
        })?;
        let (s, partitions) = cells;
        // Producers blocked for space find it removed (`Removed`, not `Full`
        // after their timeout); consumers likewise.
        store.notify_space();
        store.notify_registry_cell(registry::stream_cell_offset(s));
        for p in 0..partitions {
            store.notify_registry_cell(registry::partition_cell_offset(s, p));
        }
        Ok(())
    }

    /// Statistics of every stream in `store`.
    pub fn list(store: &Store) -> Result<Vec<StreamStats>> {
        let names = store.locked(|l| -> Result<_> {
            let reg = registry::registry(l)?;
            let mut names = Vec::new();
            for record in &reg.streams {
                if record.slot.state.load(Relaxed) == LIVE {
                    names.push(registry::read_name(&record.slot.name, &record.slot.name_len)?);
                }
            }
            Ok(names)
        })?;
        let mut out = Vec::new();
        for name in names {
            match Stream::open(store, &name) {
                Ok(stream) => out.push(stream.stats()?),
                // Removed since the scan.
                Err(StreamError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The schema of every batch.
    pub fn schema(&self) -> &SchemaRef {
        &self.inner.schema
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// The back-pressure policy.
    pub fn back_pressure(&self) -> BackPressure {
        self.inner.back_pressure
    }

    /// When the stream was created (nanoseconds since the Unix epoch): fixed
    /// time windows count from here.
    pub fn created_ns(&self) -> u64 {
        self.inner.created_ns
    }

    /// The ID of the batch at `offset` in `partition` (whether or not it exists).
    pub fn object_id(&self, partition: u32, offset: u64) -> ObjectId {
        ObjectId::sequential(self.inner.namespace, partition, offset)
    }

    /// The stream's namespace: the number in its batches' IDs, drawn when
    /// the stream was made. A stream made again under the same name has
    /// another, so an offset saved from one means nothing in the other.
    pub fn namespace(&self) -> u64 {
        self.inner.namespace
    }

    /// The store the stream lives in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A producer appending to this stream.
    pub fn producer(&self) -> Result<Producer> {
        Producer::new(self.clone())
    }

    /// A consumer of this stream.
    pub fn consumer(&self, config: ConsumerConfig) -> Result<Consumer> {
        Consumer::new(self.clone(), config)
    }

    /// Closes the stream: appends are refused from now on, and consumers get
    /// [`Polled::EndOfStream`] once they have read everything appended before.
    pub fn close(&self) -> Result<()> {
        self.with_record(|_, record| {
            // Release: a reader without the lock that sees the flag sees the final heads.
            record.slot.flags.fetch_or(CLOSED, std::sync::atomic::Ordering::Release);
            Ok(())
        })?;
        self.notify_all();
        Ok(())
    }

    /// Whether the stream was closed.
    pub fn is_closed(&self) -> Result<bool> {
        self.with_record(|_, record| Ok(record.slot.flags.load(Relaxed) & CLOSED != 0))
    }

    /// Adds a consumer group, starting at the oldest retained batch or at
    /// the head. Does nothing if the group exists.
    pub fn add_group(&self, name: &str, start: StartAt) -> Result<()> {
        registry::check_name("group", name).map_err(StreamError::InvalidArgument)?;
        self.with_record(|_, record| join_group(record, name, start).map(|_| ()))
    }

    /// Removes a consumer group: its committed offsets no longer hold data,
    /// which is freed at once if no other group needs it.
    pub fn remove_group(&self, name: &str) -> Result<()> {
        self.with_record(|l, record| {
            let g = registry::find_group(record, name)?
                .ok_or_else(|| StreamError::NoSuchGroup { stream: self.inner.name.clone(), group: name.to_string() })?;
            record.groups[g].state.store(FREE, Release);
            registry::release_consumed(l, record)?;
            Ok(())
        })
    }

    /// Applies the retention rules now: frees what every group committed
    /// past, and drops what is older than `max_age` or beyond `max_bytes`.
    /// Producers and committing consumers run this on their own.
    pub fn enforce_retention(&self) -> Result<()> {
        let (max_age, max_bytes) = (self.inner.max_age_ns, self.inner.max_bytes);
        self.with_record(|l, record| {
            registry::release_consumed(l, record)?;
            // Holes passed are budgeted (see `registry::HOLE_BUDGET`).
            let mut holes = 0;
            let mut go_on = |dropped: registry::Dropped| match dropped {
                registry::Dropped::Batch => true,
                registry::Dropped::Hole if holes < registry::HOLE_BUDGET => {
                    holes += 1;
                    true
                }
                _ => false,
            };
            if max_age > 0 {
                let cutoff = wall_ns().saturating_sub(max_age);
                for p in 0..self.inner.partitions as usize {
                    while registry::oldest_append_ns(l, record, p)?.is_some_and(|t| t < cutoff) {
                        if !go_on(registry::drop_oldest(l, record, p, registry::DropReason::Expired)?) {
                            break;
                        }
                    }
                }
            }
            if max_bytes > 0 {
                while record.slot.bytes.load(Relaxed) > max_bytes {
                    if !go_on(registry::drop_stream_oldest(l, record, registry::DropReason::Trimmed)?) {
                        break;
                    }
                }
            }
            Ok(())
        })
    }

    /// Runs `f` as one store transaction on this stream, through the typed
    /// interface the layers above use (see [`StreamTxn`]). Fails with
    /// [`StreamError::Removed`] if the stream was removed.
    pub(crate) fn transaction<R, E>(&self, f: impl FnOnce(&StreamTxn<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StreamError> + From<StoreError>,
    {
        self.inner.store.locked(|l| {
            let record = self.record(l)?;
            f(&StreamTxn::new(l, record, self))
        })
    }

    /// The wait cell every append, the close and the shard manager's
    /// requeues notify.
    pub(crate) fn stream_cell(&self) -> Result<&crate::shm::wait::WaitCell> {
        Ok(self.inner.store.registry_cell(registry::stream_cell_offset(self.inner.slot))?)
    }

    /// The wait cell every append to partition `p` and the close notify.
    pub(crate) fn partition_cell(&self, p: u32) -> Result<&crate::shm::wait::WaitCell> {
        let partitions = self.inner.partitions;
        if p >= partitions {
            return Err(StreamError::NoSuchPartition { partition: p, partitions });
        }
        Ok(self.inner.store.registry_cell(registry::partition_cell_offset(self.inner.slot, p as usize))?)
    }

    /// The stream's registry slot and namespace, which together identify it
    /// even if the slot is reused (for records that refer to the stream).
    pub(crate) fn identity(&self) -> (usize, u64) {
        (self.inner.slot, self.inner.namespace)
    }

    /// Test hook: how many waiters are parked on the stream's cell (consumers
    /// of several partitions, members waiting for a task) or, given a
    /// partition, on its cell.
    #[cfg(feature = "test-hooks")]
    pub fn debug_waiters(&self, partition: Option<u32>) -> Result<u32> {
        Ok(match partition {
            Some(p) => self.partition_cell(p)?.waiters(),
            None => self.stream_cell()?.waiters(),
        })
    }

    /// Wakes whoever waits on the stream's cell.
    pub(crate) fn notify_stream(&self) {
        self.inner.store.notify_registry_cell(registry::stream_cell_offset(self.inner.slot));
    }

    /// Runs `f` under the store's lock on this stream's registry record,
    /// after checking the record still belongs to this stream.
    pub(super) fn with_record<R>(&self, f: impl FnOnce(&Locked<'_>, &StreamRecord) -> Result<R>) -> Result<R> {
        self.inner.store.locked(|l| {
            let record = self.record(l)?;
            f(l, record)
        })
    }

    /// This stream's registry record, checked to be still this stream's.
    pub(super) fn record<'a>(&self, l: &Locked<'a>) -> Result<&'a StreamRecord> {
        let reg = registry::registry(l)?;
        let record =
            reg.streams.get(self.inner.slot).ok_or_else(|| StoreError::corrupted("stream slot out of range"))?;
        if record.slot.state.load(Relaxed) != LIVE || record.slot.namespace.load(Relaxed) != self.inner.namespace {
            return Err(StreamError::Removed(self.inner.name.clone()));
        }
        Ok(record)
    }

    /// This stream's registry record read without the lock: only for hints
    /// (atomic loads whose result is checked again under the lock) and for
    /// the wait cells.
    pub(super) fn shared_record(&self) -> Result<&StreamRecord> {
        let reg: &registry::StreamRegistry = self.inner.store.registry(registry::REGISTRY_AT)?;
        Ok(reg.streams.get(self.inner.slot).ok_or_else(|| StoreError::corrupted("stream slot out of range"))?)
    }

    /// Wakes every consumer waiting on the stream or any of its partitions.
    fn notify_all(&self) {
        let store = &self.inner.store;
        // Producers blocked for space look again and find the stream closed.
        store.notify_space();
        store.notify_registry_cell(registry::stream_cell_offset(self.inner.slot));
        for p in 0..self.inner.partitions as usize {
            store.notify_registry_cell(registry::partition_cell_offset(self.inner.slot, p));
        }
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }
}

/// Makes group slot `group` live with the committed offset `start(p)` for
/// every partition `p`.
/// What opening a stream reads of its slot.
struct Found {
    slot: usize,
    namespace: u64,
    partitions: u32,
    fingerprint: u64,
    back_pressure: BackPressure,
    max_age_ns: u64,
    max_bytes: u64,
    created_ns: u64,
}

impl Found {
    /// Reads stream slot `s` (called `name`), checking what would make its
    /// batches unreadable or invisible.
    fn read(reg: &registry::StreamRegistry, s: usize, name: &str) -> Result<Found> {
        let slot = &reg.streams.get(s).ok_or_else(|| StoreError::corrupted("stream slot out of range"))?.slot;
        let partitions = slot.partitions.load(Relaxed);
        if partitions == 0 || partitions as usize > MAX_PARTITIONS {
            return Err(StoreError::corrupted(format_args!("stream {name:?} claims {partitions} partitions")).into());
        }
        // The namespace names every batch: a wrong one would make them
        // all look like holes. Creating a stream writes it twice (its
        // slot and its skip log), and the two must agree.
        let namespace = slot.namespace.load(SeqCst);
        let serial = namespace & !registry::STREAM_NAMESPACE;
        let logged = reg.skipped.get(s).map(|log| log.namespace.load(Relaxed));
        if namespace & registry::STREAM_NAMESPACE == 0
            || serial == 0
            || serial > reg.serial.load(Relaxed)
            || logged != Some(namespace)
        {
            return Err(StoreError::corrupted(format_args!(
                "stream {name:?} has a damaged namespace ({namespace:#x}; its skip log says {:#x})",
                logged.unwrap_or(0)
            ))
            .into());
        }
        Ok(Found {
            slot: s,
            namespace,
            partitions,
            fingerprint: slot.schema_fingerprint.load(Relaxed),
            back_pressure: BackPressure::from_word(slot.back_pressure.load(Relaxed))?,
            max_age_ns: slot.max_age_ns.load(Relaxed),
            max_bytes: slot.max_bytes.load(Relaxed),
            created_ns: slot.created_ns.load(Relaxed),
        })
    }
}

fn init_group(group: &GroupSlot, name: &str, created_ns: u64, start: impl Fn(usize) -> u64) {
    // The creation time is the slot's version for readers without the
    // lock: 0 while the slot is written, then the time. Both `SeqCst` and
    // the 0 before the offsets: a commit made without the lock that lands
    // on an offset written here sees the time change when it checks again,
    // and puts the offset back (see `Consumer::commit_offsets`); a reader
    // that sees the same time before and after its reads read this group.
    group.created_ns.store(0, SeqCst);
    // Pairs with the reader's fence before it checks the version again.
    std::sync::atomic::fence(Release);
    registry::write_name(&group.name, &group.name_len, name);
    group.skipped.store(0, Relaxed);
    for (p, committed) in group.committed.iter().enumerate() {
        committed.store(start(p), SeqCst);
    }
    group.created_ns.store(created_ns, SeqCst);
    group.state.store(LIVE, Release);
}

/// Finds the group `name`, making it (starting at `start`) if it does not
/// exist. Returns its slot and creation time (which identify it).
pub(super) fn join_group(record: &StreamRecord, name: &str, start: StartAt) -> Result<(usize, u64)> {
    if let Some(g) = registry::find_group(record, name)? {
        return Ok((g, record.groups[g].created_ns.load(Relaxed)));
    }
    let g = record
        .groups
        .iter()
        .position(|g| g.state.load(Relaxed) == FREE)
        .ok_or(StreamError::RegistryFull { what: "groups per stream", limit: MAX_GROUPS })?;
    let created_ns = wall_ns();
    let mut bounds = Vec::with_capacity(MAX_PARTITIONS);
    for part in &record.partitions {
        bounds.push(registry::range(part)?);
    }
    init_group(&record.groups[g], name, created_ns, |p| match start {
        StartAt::Oldest => bounds[p].0,
        StartAt::Newest => bounds[p].1,
    });
    Ok((g, created_ns))
}
