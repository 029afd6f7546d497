//! Appending to a stream.
//!
//! An append is two transactions. The first assigns the partition's next
//! offset and creates the batch's object under that ID (the head moves only
//! for an object that exists); the data is then written outside the lock;
//! the second seals the object and counts the batch in its partition. The append time is taken
//! there too, and never goes back within a partition, so time windows can
//! rely on offsets and times growing together.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, RecordBatch, UInt32Array};
use arrow_schema::DataType;

use super::registry::{self, CLOSED};
use super::StreamError;
use super::{BackPressure, Result, Stream};
use crate::arrow::{stamp_append_time, BatchSlot, BatchWriter, Encoded, BATCH_META_LEN};
use crate::shm::clock::wall_ns;
use crate::store::StoreError;
use crate::store::{ObjectBuilder, ObjectId};

/// Where an append put its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The partition.
    pub partition: u32,
    /// The batch's offset in it.
    pub offset: u64,
    /// Its append time, nanoseconds since the Unix epoch.
    pub append_ns: u64,
}

/// Appends record batches to a stream. Each append is one object.
pub struct Producer {
    stream: Stream,
    writer: BatchWriter,
    next: u32,
    timeout: Duration,
    last_age_check: Option<Instant>,
    /// The stream's limits could not be applied after the last append.
    limits_failed: bool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("stream", &self.stream.name()).field("timeout", &self.timeout).finish()
    }
}

/// How long an append under `Block` waits for space unless told otherwise.
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a producer checks the stream's `max_age`.
const AGE_CHECK: Duration = Duration::from_millis(10);

impl Producer {
    pub(super) fn new(stream: Stream) -> Result<Self> {
        let writer = BatchWriter::new(stream.store(), stream.schema().clone())?;
        Ok(Producer {
            stream,
            writer,
            next: 0,
            timeout: DEFAULT_APPEND_TIMEOUT,
            last_age_check: None,
            limits_failed: false,
        })
    }

    /// How long an append waits for space under [`BackPressure::Block`]
    /// before it fails with [`StreamError::Full`] (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Appends `batch` to the next partition in round-robin order.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<Appended> {
        let partition = self.next;
        self.next = (self.next + 1) % self.stream.partitions();
        self.append_to(partition, batch)
    }

    /// Appends `batch` to `partition`.
    pub fn append_to(&mut self, partition: u32, batch: &RecordBatch) -> Result<Appended> {
        // Under `Block` an append waits for space up to its timeout, and for
        // the lock no longer than that either.
        let _call = crate::store::CallDeadline::enter(self.timeout);
        self.check_partition(partition)?;
        let encoded = self.writer.encode(batch)?;
        let metadata = self.writer.metadata(encoded.rows, 0);
        if encoded.size <= WHOLE_APPEND_BYTES {
            if let Some(appended) = self.try_append_whole(partition, &encoded, &metadata)? {
                self.after_append();
                return Ok(appended);
            }
        }
        let (mut builder, appended) = self.create(partition, encoded.size, &metadata)?;
        encoded.write_into(&mut builder)?;
        stamp_append_time(&mut builder, appended.append_ns);
        self.seal(builder, partition, encoded.size, encoded.rows, false)?;
        self.after_append();
        Ok(appended)
    }

    /// Takes the next offset of the next partition in round-robin order for
    /// a batch of `rows` rows built in place: fill its columns through the
    /// [`Reservation`] (a [`BatchSlot`]), then
    /// [`commit`](Reservation::commit) it. Nothing is copied. Every column
    /// of the stream's schema must have fixed-width values.
    ///
    /// The offset is taken now: a reservation dropped without its commit
    /// leaves a hole there, which consumers pass over, as they do the batch
    /// of a producer that died mid-append.
    pub fn reserve(&mut self, rows: usize) -> Result<Reservation<'_>> {
        let partition = self.next;
        self.next = (self.next + 1) % self.stream.partitions();
        self.reserve_to(partition, rows)
    }

    /// [`reserve`](Self::reserve) in `partition`.
    pub fn reserve_to(&mut self, partition: u32, rows: usize) -> Result<Reservation<'_>> {
        let _call = crate::store::CallDeadline::enter(self.timeout);
        self.check_partition(partition)?;
        let layout = self.writer.reserve_layout(rows)?;
        let metadata = self.writer.metadata(rows as u64, 0);
        let (builder, appended) = self.create(partition, layout.size as u64, &metadata)?;
        let slot = BatchSlot::new(builder, layout, self.stream.schema().clone())?;
        Ok(Reservation { producer: self, slot, appended })
    }

    /// Commits a [`Reserved`] batch of this producer's stream, as
    /// [`Reservation::commit`] does. With `keep_view` the batch is also
    /// referenced from the moment it is sealed (never evicted or dropped
    /// while the view lives), for a caller whose pointers into it may
    /// outlive the commit.
    pub fn commit_reserved(
        &mut self,
        reserved: Reserved,
        keep_view: bool,
    ) -> Result<(Appended, Option<crate::store::ObjectView>)> {
        let Reserved { slot, appended, namespace } = reserved;
        if namespace != self.stream.inner().namespace {
            // Dropping the slot aborts it.
            return Err(StreamError::InvalidConfig(format!(
                "a batch reserved in another stream cannot be committed to {:?}",
                self.stream.name()
            )));
        }
        self.commit_slot(slot, appended, keep_view)
    }

    fn commit_slot(
        &mut self,
        slot: BatchSlot,
        appended: Appended,
        keep_view: bool,
    ) -> Result<(Appended, Option<crate::store::ObjectView>)> {
        let _call = crate::store::CallDeadline::enter(self.timeout);
        let (size, rows) = (slot.size(), slot.rows());
        let mut object = slot.finish()?;
        stamp_append_time(&mut object, appended.append_ns);
        let view = self.seal(object, appended.partition, size, rows, keep_view)?;
        self.after_append();
        Ok((appended, view))
    }

    /// Refuses a partition the stream does not have, and an append after
    /// one whose limits could not be applied, until they can.
    fn check_partition(&mut self, partition: u32) -> Result<()> {
        let partitions = self.stream.partitions();
        if partition >= partitions {
            return Err(StreamError::NoSuchPartition { partition, partitions });
        }
        if self.limits_failed {
            // The limits could not be applied after the last append: the
            // append that cannot apply them is refused, not the one before.
            self.apply_limits()?;
            self.limits_failed = false;
        }
        Ok(())
    }

    /// Applies the limits once a batch is in: a failure now is not this
    /// append's failure (see `check_partition`).
    fn after_append(&mut self) {
        self.limits_failed = self.apply_limits().is_err();
    }

    /// Seals a batch and, in the same transaction, counts it in its
    /// partition: a batch whose producer dies before this point is never
    /// counted, so holes leave the counters right. If the stream was removed
    /// meanwhile, the batch is aborted rather than left pinned.
    fn seal(
        &self,
        builder: ObjectBuilder,
        partition: u32,
        size: u64,
        rows: u64,
        keep_view: bool,
    ) -> Result<Option<crate::store::ObjectView>> {
        let payload = size + BATCH_META_LEN as u64;
        let slot = self.stream.inner().slot;
        self.stream.store().locked(|l| {
            let record = match self.stream.record(l) {
                Ok(record) => record,
                Err(removed @ StreamError::Removed(_)) => {
                    l.abort(builder)?;
                    return Err(removed);
                }
                // The builder is dropped: the object is aborted in this
                // same critical section.
                Err(e) => return Err(e),
            };
            let id = builder.id();
            l.seal(builder)?;
            // Counted before the view is taken: a batch sealed is counted
            // (and its waiters woken), whatever happens to the view.
            count_sealed(l, record, slot, partition, payload, rows);
            match keep_view {
                true => Ok(Some(l.view(id)?.ok_or(StoreError::NotFound(id))?)),
                false => Ok(None),
            }
        })
    }

    /// An append of a small batch in one transaction: create, write, seal
    /// (the copy is short enough to make under the lock, and a second
    /// transaction would cost more). `None` if the store has no room now:
    /// the caller takes the general path, which waits or drops as the
    /// stream says.
    fn try_append_whole(&self, partition: u32, encoded: &Encoded<'_>, metadata: &[u8]) -> Result<Option<Appended>> {
        let slot = self.stream.inner().slot;
        self.stream.with_record(|l, record| {
            // The head moves first, as on the general path: a crash from
            // here on leaves an unsealed object below the head, a hole once
            // its owner is found dead.
            let Some((mut builder, appended)) = self.assign(l, record, partition, encoded.size, metadata)? else {
                return Ok(None);
            };
            encoded.write_into(&mut builder)?;
            stamp_append_time(&mut builder, appended.append_ns);
            l.seal(builder)?;
            count_sealed(l, record, slot, partition, encoded.size + BATCH_META_LEN as u64, encoded.rows);
            Ok(Some(appended))
        })
    }

    /// Splits `batch` by the hash of its column `key` and appends each part
    /// to the partition its keys hash to, so rows with equal keys always
    /// land in the same partition, in their order. Returns one [`Appended`]
    /// per partition that received rows, in partition order.
    ///
    /// The hash is FNV-1a 64 of the key's bytes (little-endian for integers,
    /// UTF-8 for strings, raw for binary; nulls hash as no bytes with a
    /// marker), modulo the number of partitions: every process computes it
    /// the same way. Integer, string and binary key columns are supported.
    pub fn append_keyed(&mut self, batch: &RecordBatch, key: &str) -> Result<Vec<Appended>> {
        let column = batch
            .column_by_name(key)
            .ok_or_else(|| StreamError::InvalidConfig(format!("the batch has no key column {key:?}")))?;
        let partitions = self.stream.partitions();
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
        for (row, hash) in key_hashes(column.as_ref())?.into_iter().enumerate() {
            rows[(hash % partitions as u64) as usize].push(row as u32);
        }
        let mut out = Vec::new();
        for (partition, indices) in rows.into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let part = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                arrow_select::take::take_record_batch(batch, &UInt32Array::from(indices))
                    .map_err(crate::arrow::BatchError::from)?
            };
            out.push(self.append_to(partition as u32, &part)?);
        }
        Ok(out)
    }

    /// Test hook: assigns the next offset of `partition` and creates its
    /// object, but leaves it unsealed, as a producer that dies mid-append
    /// does. Dropping the builder aborts the object and leaves a hole.
    #[cfg(feature = "test-hooks")]
    pub fn debug_begin_append(&mut self, partition: u32, batch: &RecordBatch) -> Result<(ObjectBuilder, Appended)> {
        let encoded = self.writer.encode(batch)?;
        let metadata = self.writer.metadata(encoded.rows, 0);
        let (mut builder, appended) = self.create(partition, encoded.size, &metadata)?;
        encoded.write_into(&mut builder)?;
        Ok((builder, appended))
    }

    /// Moves an empty partition's head (and tail) forward to `offset`, so
    /// its next batch gets that offset; returns whether it moved. A
    /// partition that holds batches, or whose head is at or past `offset`,
    /// is left as it is. Offsets passed over count as dropped.
    ///
    /// This is for a producer that replays an external log from that log's
    /// own committed position, on a new store whose groups were restored
    /// from checkpoints (a Kafka source after a disaster): the replay does
    /// not recreate the old offsets, so it must start past every offset the
    /// restored state knows, or a restored group would take the first new
    /// batches for ones it already finished.
    pub fn skip_to(&mut self, partition: u32, offset: u64) -> Result<bool> {
        self.check_partition(partition)?;
        self.stream.with_record(|_, record| {
            let part = &record.partitions[partition as usize];
            let (tail, head) = registry::range(part)?;
            if tail != head || offset <= head {
                return Ok(false);
            }
            part.head.store(offset, Relaxed);
            part.tail.store(offset, Relaxed);
            Ok(true)
        })
    }

    /// Closes the stream (see [`Stream::close`]).
    pub fn close(&self) -> Result<()> {
        self.stream.close()
    }

    /// Creates the object for the next offset of `partition`, applying the
    /// back-pressure policy when the store is full: the one retry loop of
    /// an append.
    fn create(&mut self, partition: u32, size: u64, metadata: &[u8]) -> Result<(ObjectBuilder, Appended)> {
        let store = self.stream.store();
        let policy = self.stream.inner().back_pressure;
        // The clock is read and a space ticket taken only once the store
        // was found full: the common append costs neither.
        let mut started = None;
        let mut ticket = None;
        let mut holes = 0;
        loop {
            if let Some(created) = self.try_create(partition, size, metadata)? {
                return Ok(created);
            }
            if policy == BackPressure::DropOldest {
                let dropped = self.stream.with_record(|l, record| {
                    Ok(registry::drop_stream_oldest(l, record, registry::DropReason::BackPressure)?)
                })?;
                match dropped {
                    registry::Dropped::Batch => continue,
                    registry::Dropped::Hole if holes < registry::HOLE_BUDGET => {
                        holes += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            let start = *started.get_or_insert_with(Instant::now);
            if let Some(ticket) = ticket.take() {
                let deadline = match policy {
                    BackPressure::Block => start.checked_add(self.timeout),
                    // Still look for dead clients' memory once.
                    BackPressure::DropOldest | BackPressure::Error => Some(start),
                };
                if !store.wait_for_space(ticket, deadline)? {
                    let waited = if policy == BackPressure::Block { start.elapsed() } else { Duration::ZERO };
                    return Err(self.full(size, waited));
                }
            }
            // Taken before the next attempt, waited on only after it failed.
            ticket = Some(store.space_ticket()?);
        }
    }

    /// One transaction: assigns the partition's next offset and creates its
    /// object, or finds no room (`None`). A closed or removed stream is
    /// refused with its own error; nothing in the store changes.
    fn try_create(&self, partition: u32, size: u64, metadata: &[u8]) -> Result<Option<(ObjectBuilder, Appended)>> {
        self.stream.with_record(|l, record| {
            if let Some(created) = self.assign(l, record, partition, size, metadata)? {
                return Ok(Some(created));
            }
            // A commit made while a stopped process held the lock left its
            // freeing to later (see `Consumer::commit_offsets`): free what
            // the groups of every stream committed past before calling the
            // store full.
            registry::release_consumed_everywhere(l)?;
            self.assign(l, record, partition, size, metadata)
        })
    }

    /// Under the lock: creates the object of the partition's next offset
    /// and moves the head past it (the head moves only for an object that
    /// exists). `None` if the store has no room.
    fn assign(
        &self,
        l: &crate::store::Locked<'_>,
        record: &registry::StreamRecord,
        partition: u32,
        size: u64,
        metadata: &[u8],
    ) -> Result<Option<(ObjectBuilder, Appended)>> {
        if record.slot.flags.load(Relaxed) & CLOSED != 0 {
            return Err(StreamError::Closed(self.stream.name().to_string()));
        }
        let part = &record.partitions[partition as usize];
        let offset = part.head.load(Relaxed);
        let next = offset.checked_add(1).ok_or_else(|| StoreError::corrupted("a partition head at u64::MAX"))?;
        let id = ObjectId::sequential(self.stream.inner().namespace, partition, offset);
        let Some(builder) = l.create(id, size, metadata, crate::store::PINNED)? else {
            return Ok(None);
        };
        let append_ns = wall_ns().max(part.last_append_ns.load(Relaxed));
        crate::shm::crash::point();
        part.head.store(next, std::sync::atomic::Ordering::Release);
        part.last_append_ns.store(append_ns, Relaxed);
        Ok(Some((builder, Appended { partition, offset, append_ns })))
    }

    fn full(&self, size: u64, waited: Duration) -> StreamError {
        StreamError::Full { stream: self.stream.name().to_string(), bytes: size, waited }
    }

    /// Drops what the stream's `max_bytes` and `max_age` say must go. The
    /// size check costs one atomic load; the age check runs every 10 ms.
    fn apply_limits(&mut self) -> Result<()> {
        let inner = self.stream.inner();
        // A hint read without the lock; the check that counts runs under it.
        let over_size = inner.max_bytes > 0 && self.stream.shared_record()?.slot.bytes.load(Relaxed) > inner.max_bytes;
        let age_due = inner.max_age_ns > 0 && self.last_age_check.map_or(true, |at| at.elapsed() >= AGE_CHECK);
        if over_size || age_due {
            if age_due {
                self.last_age_check = Some(Instant::now());
            }
            self.stream.enforce_retention()?;
        }
        Ok(())
    }
}

/// Batches up to this size (encoded) are appended in one transaction.
const WHOLE_APPEND_BYTES: u64 = 8 << 10;

/// Counts a sealed batch of `payload` bytes (data and metadata) and `rows`
/// rows in its partition and stream, and wakes their waiters.
fn count_sealed(
    l: &crate::store::Locked<'_>,
    record: &registry::StreamRecord,
    slot: usize,
    partition: u32,
    payload: u64,
    rows: u64,
) {
    let part = &record.partitions[partition as usize];
    part.bytes.fetch_add(payload, Relaxed);
    part.rows.fetch_add(rows, Relaxed);
    part.appended_rows.fetch_add(rows, Relaxed);
    record.slot.bytes.fetch_add(payload, Relaxed);
    record.slot.appended.fetch_add(1, Relaxed);
    l.wake_registry(registry::partition_cell_offset(slot, partition as usize));
    l.wake_registry(registry::stream_cell_offset(slot));
}

/// A batch being built in place at an offset a [`Producer`] reserved
/// ([`Producer::reserve`]): fill its columns through the [`BatchSlot`] it
/// dereferences to, then [`commit`](Self::commit). Dropped without a
/// commit, its object is aborted and its offset becomes a hole.
#[derive(Debug)]
pub struct Reservation<'p> {
    producer: &'p mut Producer,
    slot: BatchSlot,
    appended: Appended,
}

impl Reservation<'_> {
    /// Where the batch will be.
    pub fn appended(&self) -> Appended {
        self.appended
    }

    /// Seals the batch and counts it in its partition, as an append does:
    /// consumers see it from now on.
    pub fn commit(self) -> Result<Appended> {
        let Reservation { producer, slot, appended } = self;
        producer.commit_slot(slot, appended, false).map(|(appended, _)| appended)
    }

    /// The reservation apart from its producer's borrow, for a caller that
    /// cannot hold the borrow while the batch is filled (a binding to a
    /// language with its own object lifetimes): commit it with
    /// [`Producer::commit_reserved`]. Dropped, it is aborted as a
    /// reservation is.
    pub fn into_reserved(self) -> Reserved {
        let namespace = self.producer.stream.inner().namespace;
        Reserved { slot: self.slot, appended: self.appended, namespace }
    }
}

/// A [`Reservation`] that does not borrow its producer
/// ([`Reservation::into_reserved`]).
#[derive(Debug)]
pub struct Reserved {
    slot: BatchSlot,
    appended: Appended,
    /// The stream it was reserved in: committed only by a producer of it.
    namespace: u64,
}

impl Reserved {
    /// Where the batch will be.
    pub fn appended(&self) -> Appended {
        self.appended
    }
}

impl std::ops::Deref for Reserved {
    type Target = BatchSlot;
    fn deref(&self) -> &BatchSlot {
        &self.slot
    }
}

impl std::ops::DerefMut for Reserved {
    fn deref_mut(&mut self) -> &mut BatchSlot {
        &mut self.slot
    }
}

impl std::ops::Deref for Reservation<'_> {
    type Target = BatchSlot;
    fn deref(&self) -> &BatchSlot {
        &self.slot
    }
}

impl std::ops::DerefMut for Reservation<'_> {
    fn deref_mut(&mut self) -> &mut BatchSlot {
        &mut self.slot
    }
}

/// FNV-1a 64 of each row's key bytes.
fn key_hashes(column: &dyn Array) -> Result<Vec<u64>> {
    use crate::store::fnv1a as fnv;
    const NULL: u64 = 0x6e75_6c6c; // the hash of a null key: "null"
    macro_rules! primitive {
        ($t:ty) => {
            column.as_primitive::<$t>().iter().map(|v| v.map_or(NULL, |v| fnv(&v.to_le_bytes()))).collect()
        };
    }
    Ok(match column.data_type() {
        DataType::Int8 => primitive!(Int8Type),
        DataType::Int16 => primitive!(Int16Type),
        DataType::Int32 => primitive!(Int32Type),
        DataType::Int64 => primitive!(Int64Type),
        DataType::UInt8 => primitive!(UInt8Type),
        DataType::UInt16 => primitive!(UInt16Type),
        DataType::UInt32 => primitive!(UInt32Type),
        DataType::UInt64 => primitive!(UInt64Type),
        DataType::Utf8 => column.as_string::<i32>().iter().map(|v| v.map_or(NULL, |v| fnv(v.as_bytes()))).collect(),
        DataType::LargeUtf8 => {
            column.as_string::<i64>().iter().map(|v| v.map_or(NULL, |v| fnv(v.as_bytes()))).collect()
        }
        DataType::Binary => column.as_binary::<i32>().iter().map(|v| v.map_or(NULL, fnv)).collect(),
        DataType::LargeBinary => column.as_binary::<i64>().iter().map(|v| v.map_or(NULL, fnv)).collect(),
        other => {
            return Err(StreamError::InvalidConfig(format!(
                "key columns of type {other} are not supported (integers, strings and binary are)"
            )))
        }
    })
}
