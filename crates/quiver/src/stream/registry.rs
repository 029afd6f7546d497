//! The streams' part of the store's registry: one fixed record per stream
//! (its slot, its partitions, its groups), all plain shared structs, all
//! changed under the store's lock. docs/format.md describes the same bytes.
//!
//! Offsets follow Kafka's conventions: a partition's `head` is the offset
//! the next append gets, its `tail` the oldest offset still retained, and a
//! group's committed offset is the next offset the group will read. So a
//! partition retains `[tail, head)`, and a group has consumed everything
//! below its committed offset.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::shm::wait::WaitCell;
use crate::store::StoreError;
use crate::store::{Locked, ObjectId, ObjectState};

/// Streams a store can hold.
pub const MAX_STREAMS: usize = 16;
/// Partitions a stream can have.
pub const MAX_PARTITIONS: usize = 64;
/// Consumer groups a stream can have.
pub const MAX_GROUPS: usize = 16;
/// The longest stream or group name, in bytes of UTF-8.
pub const MAX_NAME: usize = 64;

/// Namespaces of stream objects have this bit set; the rest is the
/// stream's serial number, so a stream created again under an old name
/// never meets the old stream's objects.
pub(crate) const STREAM_NAMESPACE: u64 = 1 << 63;

/// `StreamSlot::state` values.
pub(crate) const FREE: u32 = 0;
pub(crate) const LIVE: u32 = 1;

/// `StreamSlot::flags` bits.
pub(crate) const CLOSED: u32 = 1;

crate::shm::shared_struct! {
    /// A stream's identity, configuration and counters.
    pub(crate) struct StreamSlot {
        /// [`FREE`] or [`LIVE`]; written last when a stream is created.
        pub state: AtomicU32,
        pub partitions: AtomicU32,
        /// [`CLOSED`].
        pub flags: AtomicU32,
        /// `BackPressure` as a number (0 block, 1 drop oldest, 2 error).
        pub back_pressure: AtomicU32,
        pub name_len: AtomicU32,
        pub _pad0: AtomicU32,
        pub name: [AtomicU64; MAX_NAME / 8],
        pub namespace: AtomicU64,
        pub schema_fingerprint: AtomicU64,
        /// Wall-clock nanoseconds; fixed time windows count from here.
        pub created_ns: AtomicU64,
        /// 0: no limit.
        pub max_age_ns: AtomicU64,
        /// 0: no limit.
        pub max_bytes: AtomicU64,
        /// Payload bytes retained, over all partitions.
        pub bytes: AtomicU64,
        /// Batches appended since creation.
        pub appended: AtomicU64,
        /// Batches dropped by `DropOldest` to make room, and their bytes.
        pub dropped: AtomicU64,
        pub dropped_bytes: AtomicU64,
        /// Batches dropped for being older than `max_age`.
        pub expired: AtomicU64,
        /// Batches dropped to keep the stream under `max_bytes`.
        pub trimmed: AtomicU64,
        pub _pad1: [AtomicU64; 2],
        /// Notified after every append and when the stream closes.
        pub cell: WaitCell,
    }
}
const _: () = assert!(size_of::<StreamSlot>() == 256);

crate::shm::shared_struct! {
    /// One partition of a stream.
    pub(crate) struct PartitionSlot {
        /// The offset the next append gets.
        pub head: AtomicU64,
        /// The oldest retained offset.
        pub tail: AtomicU64,
        /// Payload bytes retained.
        pub bytes: AtomicU64,
        /// Rows retained.
        pub rows: AtomicU64,
        /// Rows appended since creation.
        pub appended_rows: AtomicU64,
        /// The append time of the newest batch: append times never go back
        /// within a partition.
        pub last_append_ns: AtomicU64,
        pub _pad: [AtomicU64; 2],
        /// Notified after every append to this partition and when the stream closes.
        pub cell: WaitCell,
    }
}
const _: () = assert!(size_of::<PartitionSlot>() == 128);

crate::shm::shared_struct! {
    /// A consumer group of a stream and its committed offsets.
    pub(crate) struct GroupSlot {
        /// [`FREE`] or [`LIVE`]; written last when a group is created.
        pub state: AtomicU32,
        pub name_len: AtomicU32,
        pub created_ns: AtomicU64,
        pub name: [AtomicU64; MAX_NAME / 8],
        /// Batches the group skipped because they could not be decoded.
        pub skipped: AtomicU64,
        /// Odd while the offsets are rewritten together under the lock (a
        /// checkpoint's restore); a reader without the lock takes offsets
        /// read between two equal, even values of it.
        pub rewrites: AtomicU64,
        pub _pad: [AtomicU64; 4],
        /// The next offset the group reads, per partition.
        pub committed: [AtomicU64; MAX_PARTITIONS],
    }
}
const _: () = assert!(size_of::<GroupSlot>() == 640);

crate::shm::shared_struct! {
    /// Everything the registry keeps about one stream.
    pub(crate) struct StreamRecord {
        pub slot: StreamSlot,
        pub partitions: [PartitionSlot; MAX_PARTITIONS],
        pub groups: [GroupSlot; MAX_GROUPS],
    }
}

/// Skipped batches a stream lists (the newest; older ones are only counted).
pub const MAX_SKIPPED_LISTED: usize = 32;
/// The longest reason kept for a skipped batch, in bytes of UTF-8.
pub(crate) const MAX_SKIP_REASON: usize = 88;

crate::shm::shared_struct! {
    /// One batch a group skipped because it could not be decoded.
    pub(crate) struct SkipRecord {
        pub partition: AtomicU32,
        /// The group's slot.
        pub group: AtomicU32,
        pub offset: AtomicU64,
        /// When it was skipped (wall clock, ns since the epoch).
        pub at_ns: AtomicU64,
        /// The group's creation time: tells it from a later group in the slot.
        pub group_created_ns: AtomicU64,
        pub reason_len: AtomicU32,
        pub _pad: AtomicU32,
        pub reason: [AtomicU64; MAX_SKIP_REASON / 8],
    }
}
const _: () = assert!(size_of::<SkipRecord>() == 128);

crate::shm::shared_struct! {
    /// A stream's skipped batches: a ring of the newest
    /// [`MAX_SKIPPED_LISTED`]. Kept beside the stream records (not in them)
    /// so that the records lie where format version 4 put them; a store
    /// made before it existed has zeros here, an empty log.
    pub(crate) struct SkipLog {
        /// The namespace of the stream the log belongs to (a log of an
        /// earlier stream in the slot reads as empty).
        pub namespace: AtomicU64,
        /// Batches recorded since the stream was created; record `i` is at
        /// `records[i % MAX_SKIPPED_LISTED]`.
        pub count: AtomicU64,
        pub _pad: [AtomicU64; 6],
        pub records: [SkipRecord; MAX_SKIPPED_LISTED],
    }
}

crate::shm::shared_struct! {
    /// The streams' registry: at offset 0 of the store's registry area.
    pub(crate) struct StreamRegistry {
        /// Serial number of the last stream created (namespaces derive from it).
        pub serial: AtomicU64,
        pub _pad: [AtomicU64; 7],
        pub streams: [StreamRecord; MAX_STREAMS],
        pub skipped: [SkipLog; MAX_STREAMS],
    }
}
const _: () = assert!(size_of::<StreamRegistry>() <= 512 << 10);

/// Where the registry lies in the store's registry area.
pub(crate) const REGISTRY_AT: u64 = 0;

/// The offset, in the registry area, of stream slot `s`'s wait cell.
pub(crate) fn stream_cell_offset(s: usize) -> u64 {
    (REGISTRY_AT as usize
        + std::mem::offset_of!(StreamRegistry, streams)
        + s * size_of::<StreamRecord>()
        + std::mem::offset_of!(StreamSlot, cell)) as u64
}

/// The offset, in the registry area, of partition `p`'s wait cell in stream slot `s`.
pub(crate) fn partition_cell_offset(s: usize, p: usize) -> u64 {
    (REGISTRY_AT as usize
        + std::mem::offset_of!(StreamRegistry, streams)
        + s * size_of::<StreamRecord>()
        + std::mem::offset_of!(StreamRecord, partitions)
        + p * size_of::<PartitionSlot>()
        + std::mem::offset_of!(PartitionSlot, cell)) as u64
}

pub(crate) fn registry<'a>(locked: &Locked<'a>) -> Result<&'a StreamRegistry, StoreError> {
    locked.registry(REGISTRY_AT)
}

/// Stores a name into a slot's name words (`N` words; the name must fit).
pub(crate) fn write_name<const N: usize>(words: &[AtomicU64; N], len: &AtomicU32, name: &str) {
    let mut bytes = vec![0u8; N * 8];
    // Cut at a character boundary if it is longer (reasons are; names never).
    let mut end = name.len().min(N * 8);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = &name[..end];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    for (word, chunk) in words.iter().zip(bytes.chunks_exact(8)) {
        word.store(u64::from_le_bytes(chunk.try_into().unwrap_or_default()), Relaxed);
    }
    len.store(name.len() as u32, Relaxed);
}

/// Reads a name back; a length out of range or bytes that are not UTF-8
/// are corruption.
pub(crate) fn read_name<const N: usize>(words: &[AtomicU64; N], len: &AtomicU32) -> Result<String, StoreError> {
    let len = len.load(Relaxed) as usize;
    if len > N * 8 {
        return Err(StoreError::corrupted(format_args!("a registry name claims {len} bytes")));
    }
    let mut bytes = Vec::with_capacity(N * 8);
    for word in words {
        bytes.extend_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    bytes.truncate(len);
    String::from_utf8(bytes).map_err(|_| StoreError::corrupted("a registry name is not UTF-8"))
}

/// Checks a stream or group name; the error says why it cannot be one (the
/// caller knows whether the name came in a configuration or as an argument).
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(format!("{what} names are 1 to {MAX_NAME} bytes without NUL; {name:?} is not"));
    }
    Ok(())
}

/// Finds the live stream called `name`.
pub(crate) fn find_stream(reg: &StreamRegistry, name: &str) -> Result<Option<usize>, StoreError> {
    for (s, record) in reg.streams.iter().enumerate() {
        let slot = &record.slot;
        if slot.state.load(Relaxed) == LIVE && read_name(&slot.name, &slot.name_len)? == name {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Finds the live group called `name` of a stream.
pub(crate) fn find_group(record: &StreamRecord, name: &str) -> Result<Option<usize>, StoreError> {
    for (g, group) in record.groups.iter().enumerate() {
        if group.state.load(Relaxed) == LIVE && read_name(&group.name, &group.name_len)? == name {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

/// The most offsets a partition can retain: the object table holds fewer
/// than 2^31 objects, and an offset without an object (a hole) needs a
/// producer to die mid-append. A wider range is corruption, and refusing it
/// keeps every walk over `[tail, head)` bounded.
const MAX_RETAINED: u64 = 1 << 31;

/// The most offsets one walk over a partition takes under the lock (freeing,
/// counting rows, passing holes): corrupt or hostile registry bytes can
/// claim up to [`MAX_RETAINED`] offsets, and the lock must not be held for
/// minutes. Work beyond it is done by later calls.
pub(crate) const MAX_STEP: u64 = 1 << 16;

/// A partition's `(tail, head)`, checked: a tail past the head, or more
/// offsets than a store can retain, is corruption.
pub(crate) fn range(part: &PartitionSlot) -> Result<(u64, u64), StoreError> {
    let (tail, head) = (part.tail.load(Relaxed), part.head.load(Relaxed));
    if tail > head || head - tail > MAX_RETAINED {
        return Err(StoreError::corrupted(format_args!("a partition claims to retain offsets [{tail}, {head})")));
    }
    Ok((tail, head))
}

/// The smallest committed offset of partition `p` over the stream's live
/// groups (at least the tail), or `None` if the stream has no group.
pub(crate) fn min_committed(record: &StreamRecord, p: usize, tail: u64) -> Option<u64> {
    record.groups.iter().filter(|g| g.state.load(Relaxed) == LIVE).map(|g| g.committed[p].load(Relaxed).max(tail)).min()
}

/// Rows and append time of a batch object, from its metadata.
pub(crate) fn batch_facts(id: ObjectId, metadata: &[u8]) -> Result<(u64, u64), StoreError> {
    crate::arrow::BatchMeta::parse(id, metadata)
        .map(|m| (m.rows, m.append_ns))
        .map_err(|e| StoreError::corrupted(format_args!("stream object {id}: {e}")))
}

/// Why the tail of a partition moves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DropReason {
    /// Every group committed past it.
    Consumed,
    /// `DropOldest` made room.
    BackPressure,
    /// Older than `max_age`.
    Expired,
    /// Over `max_bytes`.
    Trimmed,
}

/// What [`drop_oldest`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dropped {
    /// Freed a batch and moved the tail.
    Batch,
    /// Passed an offset without an object (a hole) and moved the tail.
    Hole,
    /// Nothing: the partition is empty, or its oldest batch is being written.
    Nothing,
}

/// Holes one call may pass under the lock. Real batches are bounded by the
/// object table; holes only by the registry's word, which corrupt or
/// hostile bytes can overstate, so loops that pass them stop here and
/// leave the rest to the next call.
pub(crate) const HOLE_BUDGET: u32 = 4096;

/// Frees the oldest retained batch of partition `p` and advances the tail,
/// counting it as `why` says. An offset with no object at all (its producer
/// died before sealing it) is passed.
pub(crate) fn drop_oldest(
    locked: &Locked<'_>,
    record: &StreamRecord,
    p: usize,
    why: DropReason,
) -> Result<Dropped, StoreError> {
    let slot = &record.slot;
    let part = &record.partitions[p];
    let (tail, head) = range(part)?;
    if tail == head {
        return Ok(Dropped::Nothing);
    }
    let id = ObjectId::sequential(slot.namespace.load(Relaxed), p as u32, tail);
    match locked.delete(id)? {
        Some(o) => {
            // The batch is gone either way: unreadable metadata only means
            // its rows cannot be subtracted.
            let rows = batch_facts(id, o.metadata()).map_or(0, |(rows, _)| rows);
            part.bytes.fetch_sub(o.payload.min(part.bytes.load(Relaxed)), Relaxed);
            part.rows.fetch_sub(rows.min(part.rows.load(Relaxed)), Relaxed);
            slot.bytes.fetch_sub(o.payload.min(slot.bytes.load(Relaxed)), Relaxed);
            let counter = match why {
                DropReason::Consumed => None,
                DropReason::BackPressure => {
                    slot.dropped_bytes.fetch_add(o.payload, Relaxed);
                    Some(&slot.dropped)
                }
                DropReason::Expired => Some(&slot.expired),
                DropReason::Trimmed => Some(&slot.trimmed),
            };
            if let Some(counter) = counter {
                counter.fetch_add(1, Relaxed);
            }
            crate::shm::crash::point();
        }
        // Not sealed: still being written (wait for it), or a hole (pass it).
        None if locked.object(id)?.is_some() => return Ok(Dropped::Nothing),
        // A damaged index must not turn a batch into a hole to pass.
        None if locked.repair_lost_index()? => return drop_oldest(locked, record, p, why),
        None => {
            part.tail.store(tail + 1, Relaxed);
            return Ok(Dropped::Hole);
        }
    }
    part.tail.store(tail + 1, Relaxed);
    Ok(Dropped::Batch)
}

/// Frees what every group of the stream has committed past, in every
/// partition. A stream without groups keeps everything.
pub(crate) fn release_consumed(locked: &Locked<'_>, record: &StreamRecord) -> Result<(), StoreError> {
    let partitions = (record.slot.partitions.load(Relaxed) as usize).min(MAX_PARTITIONS);
    for p in 0..partitions {
        let (tail, _) = range(&record.partitions[p])?;
        let Some(upto) = min_committed(record, p, tail) else {
            return Ok(());
        };
        let mut holes = 0;
        for _ in tail..upto {
            match drop_oldest(locked, record, p, DropReason::Consumed)? {
                Dropped::Batch => {}
                // Bounded work under the lock: the next commit goes on.
                Dropped::Hole if holes < HOLE_BUDGET => holes += 1,
                Dropped::Hole | Dropped::Nothing => break,
            }
        }
    }
    Ok(())
}

/// [`release_consumed`] for every live stream of the store: what a
/// producer that finds the store full does before it says so, since a
/// commit made while a stopped process held the lock left its freeing to
/// later (`Consumer::commit_offsets`), whichever stream it was of.
pub(crate) fn release_consumed_everywhere(locked: &Locked<'_>) -> Result<(), StoreError> {
    for record in &registry(locked)?.streams {
        if record.slot.state.load(Relaxed) == LIVE {
            release_consumed(locked, record)?;
        }
    }
    Ok(())
}

/// Append time of the oldest retained sealed batch of partition `p`, if any.
pub(crate) fn oldest_append_ns(
    locked: &Locked<'_>,
    record: &StreamRecord,
    p: usize,
) -> Result<Option<u64>, StoreError> {
    let (tail, head) = range(&record.partitions[p])?;
    if tail == head {
        return Ok(None);
    }
    let id = ObjectId::sequential(record.slot.namespace.load(Relaxed), p as u32, tail);
    match locked.object(id)? {
        Some(o) if o.state == ObjectState::Sealed => Ok(Some(batch_facts(id, o.metadata())?.1)),
        // Being written: as new as anything; a hole: drop it first.
        Some(_) => Ok(None),
        None => Ok(Some(0)),
    }
}

/// Drops the stream's oldest retained batch (by append time, over all
/// partitions). Returns `false` if there is nothing to drop.
pub(crate) fn drop_stream_oldest(
    locked: &Locked<'_>,
    record: &StreamRecord,
    why: DropReason,
) -> Result<Dropped, StoreError> {
    let partitions = (record.slot.partitions.load(Relaxed) as usize).min(MAX_PARTITIONS);
    let mut oldest: Option<(u64, usize)> = None;
    for p in 0..partitions {
        if let Some(t) = oldest_append_ns(locked, record, p)? {
            if oldest.map_or(true, |(o, _)| o > t) {
                oldest = Some((t, p));
            }
        }
    }
    match oldest {
        Some((_, p)) => drop_oldest(locked, record, p, why),
        None => Ok(Dropped::Nothing),
    }
}

#[cfg(test)]
mod offsets {
    //! docs/format.md gives these offsets; this test keeps the two in step.
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn registry_fields_lie_where_the_format_document_says() {
        let slot = [
            (offset_of!(StreamSlot, state), 0),
            (offset_of!(StreamSlot, partitions), 4),
            (offset_of!(StreamSlot, flags), 8),
            (offset_of!(StreamSlot, back_pressure), 12),
            (offset_of!(StreamSlot, name_len), 16),
            (offset_of!(StreamSlot, name), 24),
            (offset_of!(StreamSlot, namespace), 88),
            (offset_of!(StreamSlot, schema_fingerprint), 96),
            (offset_of!(StreamSlot, created_ns), 104),
            (offset_of!(StreamSlot, max_age_ns), 112),
            (offset_of!(StreamSlot, max_bytes), 120),
            (offset_of!(StreamSlot, bytes), 128),
            (offset_of!(StreamSlot, appended), 136),
            (offset_of!(StreamSlot, dropped), 144),
            (offset_of!(StreamSlot, dropped_bytes), 152),
            (offset_of!(StreamSlot, expired), 160),
            (offset_of!(StreamSlot, trimmed), 168),
            (offset_of!(StreamSlot, cell), 192),
        ];
        for (i, (actual, documented)) in slot.iter().enumerate() {
            assert_eq!(actual, documented, "stream slot field {i}");
        }
        let part = [
            offset_of!(PartitionSlot, head),
            offset_of!(PartitionSlot, tail),
            offset_of!(PartitionSlot, bytes),
            offset_of!(PartitionSlot, rows),
            offset_of!(PartitionSlot, appended_rows),
            offset_of!(PartitionSlot, last_append_ns),
            offset_of!(PartitionSlot, cell),
        ];
        assert_eq!(part, [0, 8, 16, 24, 32, 40, 64]);
        let group = [
            offset_of!(GroupSlot, state),
            offset_of!(GroupSlot, name_len),
            offset_of!(GroupSlot, created_ns),
            offset_of!(GroupSlot, name),
            offset_of!(GroupSlot, skipped),
            offset_of!(GroupSlot, rewrites),
            offset_of!(GroupSlot, committed),
        ];
        assert_eq!(group, [0, 4, 8, 16, 80, 88, 128]);
        let skip = [
            offset_of!(SkipRecord, partition),
            offset_of!(SkipRecord, group),
            offset_of!(SkipRecord, offset),
            offset_of!(SkipRecord, at_ns),
            offset_of!(SkipRecord, group_created_ns),
            offset_of!(SkipRecord, reason_len),
            offset_of!(SkipRecord, reason),
        ];
        assert_eq!(skip, [0, 4, 8, 16, 24, 32, 40]);
        assert_eq!((offset_of!(SkipLog, count), offset_of!(SkipLog, records), size_of::<SkipLog>()), (8, 64, 4160));
        assert_eq!(offset_of!(StreamRegistry, skipped), 64 + 16 * 18_688);
        assert_eq!(size_of::<StreamRecord>(), 18_688);
        assert_eq!(offset_of!(StreamRegistry, streams), 64);
        assert_eq!(offset_of!(StreamRecord, partitions), 256);
        assert_eq!(offset_of!(StreamRecord, groups), 256 + 64 * 128);
    }

    #[test]
    fn names_round_trip_and_bad_lengths_are_corruption() {
        let words: [AtomicU64; MAX_NAME / 8] = Default::default();
        let len = AtomicU32::new(0);
        for name in ["a", "events-ü", &"x".repeat(MAX_NAME)] {
            write_name(&words, &len, name);
            assert_eq!(read_name(&words, &len).unwrap(), name);
        }
        len.store(MAX_NAME as u32 + 1, Relaxed);
        assert!(read_name(&words, &len).is_err());
        words[0].store(u64::from_le_bytes([0xff; 8]), Relaxed);
        len.store(8, Relaxed);
        assert!(read_name(&words, &len).is_err());
    }
}
