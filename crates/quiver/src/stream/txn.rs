//! A stream inside a store transaction: the typed interface the layer above
//! (the shard manager) works through, so that the registry's structs stay
//! private to the stream layer.
//!
//! [`StreamTxn`] answers what a partition holds (its retained range, the
//! state of the slot at an offset, the rows in a range), reads and moves a
//! group's committed offsets, applies retention, and takes batches ahead
//! for reading: [`StreamTxn::fetch`] is the one partition reader behind
//! both `Consumer::poll` and `ShardManager::read_task`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};

use super::registry::{self, GroupSlot, StreamRecord, CLOSED, LIVE};
use super::StreamError;
use super::{Result, StartAt, Stream};
use crate::store::StoreError;
use crate::store::{Locked, ObjectState, ObjectView};

/// One consumer group of a stream: its slot, and the creation time that
/// tells it from a later group in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupKey {
    pub slot: usize,
    pub created_ns: u64,
}

/// What the slot at an offset of a partition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// A sealed batch of this many rows.
    Batch { rows: u64 },
    /// A batch still being written.
    Writing,
    /// Nothing, below the head: its producer died before sealing it.
    Hole,
    /// Below the tail: dropped (consumed, a limit, or `DropOldest`).
    Dropped,
    /// At or past the head: not appended yet.
    NotYet,
}

/// A sealed batch taken under the lock, to be decoded after it.
pub(crate) struct Taken {
    pub partition: u32,
    pub offset: u64,
    pub view: ObjectView,
}

/// Where [`StreamTxn::fetch`] stopped, and what it passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Offsets passed because they held no object.
    pub holes: u64,
    /// Offsets passed because they were dropped before being read.
    pub missed: u64,
    /// The next offset holds a batch still being written.
    pub writing: bool,
    /// The partition's head when it looked: fetching reached it if `*at`
    /// equals it.
    pub head: u64,
}

/// Batches one look under the lock takes from a partition. Views cost
/// nothing but a reference, and a look costs a lock round trip.
pub(crate) const READ_AHEAD: usize = 8;

/// A stream inside a store transaction; see the module docs.
pub(crate) struct StreamTxn<'a> {
    l: &'a Locked<'a>,
    record: &'a StreamRecord,
    stream: &'a Stream,
}

impl<'a> StreamTxn<'a> {
    pub(super) fn new(l: &'a Locked<'a>, record: &'a StreamRecord, stream: &'a Stream) -> Self {
        StreamTxn { l, record, stream }
    }

    /// The stream's record, for the stream layer's own reads.
    pub(super) fn record(&self) -> &'a StreamRecord {
        self.record
    }

    /// The store transaction this runs in.
    pub(crate) fn locked(&self) -> &'a Locked<'a> {
        self.l
    }

    /// Whether the stream is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.record.slot.flags.load(Relaxed) & CLOSED != 0
    }

    fn partition(&self, p: u32) -> Result<&'a registry::PartitionSlot> {
        let partitions = self.stream.partitions();
        if p >= partitions {
            return Err(StreamError::NoSuchPartition { partition: p, partitions });
        }
        Ok(&self.record.partitions[p as usize])
    }

    /// Partition `p`'s retained offsets `(tail, head)`: `[tail, head)`.
    pub(crate) fn range(&self, p: u32) -> Result<(u64, u64)> {
        Ok(registry::range(self.partition(p)?)?)
    }

    /// The append time of partition `p`'s newest batch.
    pub(crate) fn last_append_ns(&self, p: u32) -> Result<u64> {
        Ok(self.partition(p)?.last_append_ns.load(Relaxed))
    }

    /// What the slot at `offset` of partition `p` holds.
    pub(crate) fn slot_at(&self, p: u32, offset: u64) -> Result<SlotState> {
        let (tail, head) = self.range(p)?;
        if offset < tail {
            return Ok(SlotState::Dropped);
        }
        if offset >= head {
            return Ok(SlotState::NotYet);
        }
        let id = self.stream.object_id(p, offset);
        Ok(match self.l.object(id)? {
            // A batch whose metadata cannot be read counts no rows (as in
            // `rows_in`): it is one to pass, not a reason to stop cutting
            // shards; the member that reads it meets the damage, and skips
            // it the way consumers do (counted and listed).
            Some(o) if o.state == ObjectState::Sealed => {
                SlotState::Batch { rows: registry::batch_facts(id, o.metadata()).map_or(0, |(rows, _)| rows) }
            }
            Some(_) => SlotState::Writing,
            // A damaged index must not turn a batch into a hole.
            None if self.l.repair_lost_index()? => return self.slot_at(p, offset),
            None => SlotState::Hole,
        })
    }

    /// Rows in the retained sealed batches of `[start, end)` in partition
    /// `p`: the one row count (reports, lag). At most
    /// [`registry::MAX_STEP`] offsets are walked (bounded work under the
    /// lock). A batch whose metadata cannot be read counts no rows: the
    /// count is a statistic, and the damage shows where the batch is read,
    /// so a member that processed a shard can always report it.
    pub(crate) fn rows_in(&self, p: u32, start: u64, end: u64) -> Result<u64> {
        let (tail, head) = self.range(p)?;
        let (start, end) = (start.max(tail), end.min(head));
        let mut rows = 0u64;
        for offset in start..end.min(start.saturating_add(registry::MAX_STEP)) {
            let id = self.stream.object_id(p, offset);
            if let Some(o) = self.l.object(id)? {
                if o.state == ObjectState::Sealed {
                    rows = rows.saturating_add(registry::batch_facts(id, o.metadata()).map_or(0, |(n, _)| n));
                }
            }
        }
        Ok(rows)
    }

    /// Takes up to `max` consecutive sealed batches of partition `p` from
    /// `*at` (below `until` and the head) into `out`, moving `*at` past what
    /// it takes and passes: offsets below the tail (dropped) and holes, at
    /// most `*hole_budget` of them (bounded work under the lock, whatever
    /// the registry claims). Stops early at a batch still being written.
    pub(crate) fn fetch(
        &self,
        p: u32,
        at: &mut u64,
        until: u64,
        max: usize,
        hole_budget: &mut u32,
        out: &mut VecDeque<Taken>,
    ) -> Result<Fetched> {
        let (tail, head) = self.range(p)?;
        let mut fetched = Fetched { head, ..Fetched::default() };
        if *at <= tail && tail > 0 {
            self.check_tail(p, tail)?;
        }
        let past_dropped = tail.min(until).max(*at);
        fetched.missed = past_dropped - *at;
        *at = past_dropped;
        let end = until.min(head);
        let mut taken = 0;
        let mut index_checked = false;
        while *at < end && taken < max && *hole_budget > 0 {
            let id = self.stream.object_id(p, *at);
            if let Some(view) = self.l.view(id)? {
                out.push_back(Taken { partition: p, offset: *at, view });
                taken += 1;
            } else if self.l.object(id)?.is_some() {
                fetched.writing = true;
                break;
            } else if !index_checked {
                // A hole is final only if the table (the truth) agrees: a
                // damaged index must not turn a batch into one.
                index_checked = true;
                self.l.repair_lost_index()?;
                continue;
            } else {
                fetched.holes += 1;
                *hole_budget -= 1;
            }
            *at += 1;
        }
        if *at == head && end == head {
            self.check_head(p, head)?;
        }
        Ok(fetched)
    }

    /// Fails if an object exists just below partition `p`'s tail: retention
    /// deletes a batch before it moves the tail past it, under the same
    /// lock, so one there means the registry lost retained batches
    /// (damage), which a reader starting at the tail would never see.
    fn check_tail(&self, p: u32, tail: u64) -> Result<()> {
        if self.l.object(self.stream.object_id(p, tail - 1))?.is_some() {
            return Err(StoreError::corrupted(format_args!(
                "partition {p} of stream {} holds a batch below its tail ({tail}): the registry lost retained batches",
                self.stream.name()
            ))
            .into());
        }
        Ok(())
    }

    /// [`check_tail`](Self::check_tail) for each of `parts` whose position
    /// in `pos` (by partition) is its tail: where a reader starts.
    pub(crate) fn check_tails(&self, parts: &[u32], pos: &[u64]) -> Result<()> {
        for &p in parts {
            let tail = self.range(p)?.0;
            if pos.get(p as usize) == Some(&tail) && tail > 0 {
                self.check_tail(p, tail)?;
            }
        }
        Ok(())
    }

    /// Fails if an object exists at partition `p`'s head: the head moves
    /// when a batch's object is created, under the same lock, so one there
    /// means the registry lost appended batches (damage), which readers
    /// must not take for the end of the partition.
    pub(crate) fn check_head(&self, p: u32, head: u64) -> Result<()> {
        if self.l.object(self.stream.object_id(p, head))?.is_some() {
            return Err(StoreError::corrupted(format_args!(
                "partition {p} of stream {} holds a batch at its head ({head}): the registry lost appended batches",
                self.stream.name()
            ))
            .into());
        }
        Ok(())
    }

    /// Finds the group `name`, making it (starting at `start`) if it does
    /// not exist.
    pub(crate) fn join_group(&self, name: &str, start: StartAt) -> Result<GroupKey> {
        super::registry::check_name("group", name).map_err(StreamError::InvalidArgument)?;
        let (slot, created_ns) = super::join_group(self.record, name, start)?;
        Ok(GroupKey { slot, created_ns })
    }

    fn group(&self, g: GroupKey) -> Result<&'a GroupSlot> {
        self.record
            .groups
            .get(g.slot)
            .filter(|slot| slot.state.load(Relaxed) == LIVE && slot.created_ns.load(Relaxed) == g.created_ns)
            .ok_or_else(|| StreamError::NoSuchGroup {
                stream: self.stream.name().to_string(),
                group: format!("in slot {} (removed)", g.slot),
            })
    }

    /// Whether group `g` still exists.
    pub(crate) fn group_live(&self, g: GroupKey) -> bool {
        self.group(g).is_ok()
    }

    /// Group `g`'s name.
    pub(crate) fn group_name(&self, g: GroupKey) -> Result<String> {
        let group = self.group(g)?;
        Ok(registry::read_name(&group.name, &group.name_len)?)
    }

    /// Group `g`'s committed offset in partition `p`: the next offset it reads.
    pub(crate) fn committed(&self, g: GroupKey, p: u32) -> Result<u64> {
        self.partition(p)?;
        Ok(self.group(g)?.committed[p as usize].load(Relaxed))
    }

    /// Runs `f`, which rewrites several of group `g`'s committed offsets,
    /// as one change for readers without the lock (the group's `rewrites`
    /// count is odd meanwhile; see `Consumer::join_unlocked`).
    pub(crate) fn rewriting<R, E: From<StreamError>>(
        &self,
        g: GroupKey,
        f: impl FnOnce() -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let rewrites = &self.group(g)?.rewrites;
        rewrites.fetch_add(1, SeqCst);
        std::sync::atomic::fence(Release);
        let result = f();
        rewrites.fetch_add(1, SeqCst);
        result
    }

    /// Sets group `g`'s committed offset in partition `p` (back as well as
    /// forward: a restore does that). Retention runs when the caller asks
    /// for it ([`release_consumed`](Self::release_consumed)).
    pub(crate) fn set_committed(&self, g: GroupKey, p: u32, offset: u64) -> Result<()> {
        self.partition(p)?;
        self.group(g)?.committed[p as usize].store(offset, Relaxed);
        Ok(())
    }

    /// This stream's log of skipped batches (empty if it is an earlier
    /// stream's: a log is claimed when its stream is created).
    fn skip_log(&self) -> Result<Option<&'a registry::SkipLog>> {
        let reg = registry::registry(self.l)?;
        let log = reg
            .skipped
            .get(self.stream.inner().slot)
            .ok_or_else(|| StoreError::corrupted("stream slot out of range"))?;
        Ok((log.namespace.load(Relaxed) == self.stream.inner().namespace).then_some(log))
    }

    /// Records that group `g` skipped the batch at `offset` of partition
    /// `p` for `reason` (cut to [`registry::MAX_SKIP_REASON`] bytes): the
    /// group's count goes up and the stream's log lists it. A batch the
    /// group skipped already (a consumer that skipped it died before
    /// committing, and the next one met it again) is not counted twice
    /// while the log still lists it. Returns whether it was new.
    pub(crate) fn record_skip(&self, g: GroupKey, p: u32, offset: u64, reason: &str) -> Result<bool> {
        self.partition(p)?;
        let group = self.group(g)?;
        let Some(log) = self.skip_log()? else {
            // A store from before skip logs, with the stream made by an
            // older build: count it in the group only.
            group.skipped.fetch_add(1, Relaxed);
            return Ok(true);
        };
        let count = log.count.load(Relaxed);
        let listed = (count as usize).min(registry::MAX_SKIPPED_LISTED);
        let seen = log.records[..listed].iter().any(|r| {
            r.group.load(Relaxed) as usize == g.slot
                && r.group_created_ns.load(Relaxed) == g.created_ns
                && r.partition.load(Relaxed) == p
                && r.offset.load(Relaxed) == offset
        });
        if seen {
            return Ok(false);
        }
        let r = &log.records[(count % registry::MAX_SKIPPED_LISTED as u64) as usize];
        r.partition.store(p, Relaxed);
        r.group.store(g.slot as u32, Relaxed);
        r.offset.store(offset, Relaxed);
        r.at_ns.store(crate::shm::clock::wall_ns(), Relaxed);
        r.group_created_ns.store(g.created_ns, Relaxed);
        registry::write_name(&r.reason, &r.reason_len, reason);
        log.count.store(count.saturating_add(1), Relaxed);
        group.skipped.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// The skipped batches the stream's log lists, oldest first, and how
    /// many were skipped in all.
    pub(crate) fn skipped(&self) -> Result<(Vec<super::SkippedBatch>, u64)> {
        let Some(log) = self.skip_log()? else { return Ok((Vec::new(), 0)) };
        let count = log.count.load(Relaxed);
        let listed = count.min(registry::MAX_SKIPPED_LISTED as u64);
        let mut out = Vec::with_capacity(listed as usize);
        for i in count - listed..count {
            let r = &log.records[(i % registry::MAX_SKIPPED_LISTED as u64) as usize];
            let g = GroupKey { slot: r.group.load(Relaxed) as usize, created_ns: r.group_created_ns.load(Relaxed) };
            out.push(super::SkippedBatch {
                // A group removed since is named as such, not by a later group's name.
                group: self.group_name(g).ok(),
                partition: r.partition.load(Relaxed),
                offset: r.offset.load(Relaxed),
                at_ns: r.at_ns.load(Relaxed),
                // A writer that died mid-record leaves a torn reason: the
                // entry is listed all the same.
                reason: registry::read_name(&r.reason, &r.reason_len).unwrap_or_else(|_| "(unreadable)".into()),
            });
        }
        Ok((out, count))
    }

    /// Frees what every group of the stream has committed past.
    pub(crate) fn release_consumed(&self) -> Result<()> {
        Ok(registry::release_consumed(self.l, self.record)?)
    }

    /// Wakes whoever waits on the stream's cell (consumers of several
    /// partitions, members waiting for a task), once the lock is released.
    pub(crate) fn wake_stream(&self) {
        self.l.wake_registry(registry::stream_cell_offset(self.stream.inner().slot));
    }
}

/// Whether the stream in registry slot `slot` with `namespace` is live, and
/// its group `g` too. For records that name a stream without a handle on it
/// (shard groups whose stream may have been removed).
pub(crate) fn group_exists(l: &Locked<'_>, slot: usize, namespace: u64, g: GroupKey) -> Result<bool, StoreError> {
    let reg = registry::registry(l)?;
    let Some(record) = reg.streams.get(slot) else {
        return Ok(false);
    };
    if record.slot.state.load(Relaxed) != LIVE || record.slot.namespace.load(Relaxed) != namespace {
        return Ok(false);
    }
    Ok(record
        .groups
        .get(g.slot)
        .is_some_and(|group| group.state.load(Relaxed) == LIVE && group.created_ns.load(Relaxed) == g.created_ns))
}

/// The name of the live stream in registry slot `slot` with `namespace`.
pub(crate) fn stream_name(l: &Locked<'_>, slot: usize, namespace: u64) -> Result<Option<String>, StoreError> {
    let reg = registry::registry(l)?;
    match reg.streams.get(slot) {
        Some(r) if r.slot.state.load(Relaxed) == LIVE && r.slot.namespace.load(Relaxed) == namespace => {
            Ok(Some(registry::read_name(&r.slot.name, &r.slot.name_len)?))
        }
        _ => Ok(None),
    }
}
