//! Reading a stream: polling with a timeout, seeking, committing.
//!
//! A consumer keeps its position (the next offset to read) per partition in
//! its own memory, and its group's committed offsets live in the file. A
//! poll looks at the assigned partitions in turn, starting after the one it
//! served last, so no partition starves. One look under the store's lock
//! takes up to 8 consecutive sealed batches of the first partition that has
//! any (a view each, which costs nothing but a reference); the next polls
//! deliver them without the lock. When there is none it sleeps on a futex word in the file (the
//! partition's if it reads one partition, the stream's otherwise) that every
//! append and the close notify.
//!
//! What a poll meets at its position, and what it does:
//!
//! - a sealed batch: returns it and moves on;
//! - a batch still being written: waits for its seal (other partitions are
//!   still served meanwhile);
//! - no object, though the offset is below the head: its producer died
//!   before sealing it (or someone deleted it by hand). The poll skips it and
//!   counts it in [`Consumer::holes`];
//! - a position below the tail: the batches were dropped by a limit or by
//!   `DropOldest`. The poll jumps to the tail and counts them in
//!   [`Consumer::missed`].
//!
//! A batch that cannot be decoded (damaged bytes, another schema) is an
//! error, [`StreamError::CorruptBatch`], and the consumer stays on it, so
//! nothing is passed silently. [`Consumer::skip`] passes it on purpose:
//! the group counts it, and the stream lists it (partition, offset, reason)
//! in [`StreamStats::skipped`](super::StreamStats::skipped), as the shard
//! manager lists its dead letters. [`ConsumerConfig::skip_corrupt`] makes
//! polls do that for every such batch.
//!
//! End of stream is explicit: once the stream is closed and every assigned
//! partition has been read to its head, poll returns
//! [`Polled::EndOfStream`]. A timeout is only ever [`Polled::TimedOut`].

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

use super::registry::{self, CLOSED, LIVE};
use super::txn::{Taken, READ_AHEAD};
use super::StreamError;
use super::{join_group, ConsumerConfig, Result, StartAt, Stream};
use crate::arrow::BatchReader;
use crate::shm::wait::Attempt;
use crate::store::StoreError;

mod commit;

/// A batch read from a stream.
#[derive(Clone, Debug)]
pub struct StreamBatch {
    /// The partition it was appended to.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was appended (nanoseconds since the Unix epoch).
    pub append_ns: u64,
    /// The batch, whose buffers point into shared memory.
    pub batch: RecordBatch,
}

/// What a poll returns.
#[derive(Clone, Debug)]
pub enum Polled {
    /// The next batch.
    Batch(StreamBatch),
    /// Nothing arrived before the timeout.
    TimedOut,
    /// The stream is closed and every assigned partition has been read.
    EndOfStream,
}

/// The group a consumer belongs to: its slot, and the creation time that
/// tells it from a later group in the same slot.
#[derive(Clone, Debug)]
struct GroupRef {
    slot: usize,
    created_ns: u64,
    name: String,
}

/// Reads a stream: polls with timeouts, seeks, commits its group's offsets.
pub struct Consumer {
    stream: Stream,
    reader: BatchReader,
    group: Option<GroupRef>,
    /// The partitions read, in the order polls visit them.
    parts: Vec<u32>,
    /// The next offset to deliver, indexed by partition.
    pos: Vec<u64>,
    /// The next offset to look at, indexed by partition: past `pos` by the
    /// batches waiting in `ready`.
    fetched: Vec<u64>,
    /// Views of sealed batches taken ahead, in delivery order: one look
    /// under the lock takes up to [`READ_AHEAD`] of them.
    ready: std::collections::VecDeque<Taken>,
    /// Where in `parts` the next look starts.
    next: usize,
    holes: u64,
    missed: u64,
    skipped: u64,
    skip_corrupt: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.stream.name())
            .field("group", &self.group.as_ref().map(|g| &g.name))
            .field("partitions", &self.parts)
            .finish()
    }
}

/// The stream as one look under the lock saw it (see [`Consumer::snapshot`]).
pub(crate) struct Snapshot {
    pub now_ns: u64,
    /// `(partition, head)` for each assigned partition.
    pub heads: Vec<(u32, u64)>,
    pub closed: bool,
}

/// How often a poll that waits for a batch still being written looks for a
/// dead producer (whose half-written batch recovery then removes).
const DEAD_PRODUCER_SWEEP: Duration = Duration::from_millis(100);

/// What one look at the stream found.
enum Step {
    Batch(Taken),
    End,
}

/// What a look without the lock found.
enum Unlocked {
    Found(Step),
    /// Nothing sealed past this consumer's positions yet.
    Nothing,
    /// Something only the lock can tell (a hole, dropped batches, the end).
    AskTheLock,
}

impl Consumer {
    pub(super) fn new(stream: Stream, config: ConsumerConfig) -> Result<Self> {
        let partitions = stream.partitions();
        let parts = match config.partitions.clone() {
            None => (0..partitions).collect(),
            Some(parts) => {
                if parts.is_empty() {
                    return Err(StreamError::InvalidConfig("a consumer must read at least one partition".into()));
                }
                for (i, &p) in parts.iter().enumerate() {
                    if p >= partitions {
                        return Err(StreamError::NoSuchPartition { partition: p, partitions });
                    }
                    if parts[..i].contains(&p) {
                        return Err(StreamError::InvalidConfig(format!("partition {p} is assigned twice")));
                    }
                }
                parts
            }
        };
        if let Some(name) = &config.group {
            registry::check_name("group", name).map_err(StreamError::InvalidConfig)?;
        }
        let (group, pos) = match Self::join_unlocked(&stream, &config)? {
            Some(joined) => {
                // The check the locked join makes, if the lock is free now.
                let _upkeep = crate::store::NoWait::enter();
                match Self::check_tails(&stream, &parts, &joined.1) {
                    Err(StreamError::Store(StoreError::LockTimeout { .. })) => {}
                    other => other?,
                }
                joined
            }
            None => stream.transaction(|tx| -> Result<_> {
                let record = tx.record();
                let mut pos = Vec::with_capacity(partitions as usize);
                let group = match &config.group {
                    Some(name) => {
                        let (slot, created_ns) = join_group(record, name, config.start)?;
                        for (p, part) in record.partitions[..partitions as usize].iter().enumerate() {
                            let (tail, head) = registry::range(part)?;
                            pos.push(record.groups[slot].committed[p].load(Relaxed).clamp(tail, head));
                        }
                        Some(GroupRef { slot, created_ns, name: name.clone() })
                    }
                    None => {
                        for part in &record.partitions[..partitions as usize] {
                            let (tail, head) = registry::range(part)?;
                            pos.push(if config.start == StartAt::Newest { head } else { tail });
                        }
                        None
                    }
                };
                tx.check_tails(&parts, &pos)?;
                Ok((group, pos))
            })?,
        };
        let reader = BatchReader::new(stream.store()).expect_schema(stream.schema().clone());
        let fetched = pos.clone();
        let ready = std::collections::VecDeque::new();
        Ok(Consumer {
            stream,
            reader,
            group,
            parts,
            pos,
            fetched,
            ready,
            next: 0,
            holes: 0,
            missed: 0,
            skipped: 0,
            skip_corrupt: config.skip_corrupt,
        })
    }

    /// Where a new consumer starts, read without the lock: a reader's
    /// positions, or those of a group that exists (read between two reads
    /// of the group's creation time, its version; see `init_group`).
    /// `None` if only the lock can tell (the group is to be made, or is
    /// changing).
    fn join_unlocked(stream: &Stream, config: &ConsumerConfig) -> Result<Option<(Option<GroupRef>, Vec<u64>)>> {
        let record = stream.shared_record()?;
        if record.slot.state.load(SeqCst) != LIVE || record.slot.namespace.load(SeqCst) != stream.inner().namespace {
            return Ok(None);
        }
        let parts = &record.partitions[..stream.partitions() as usize];
        // Each partition's bounds, read after whatever they clamp (a head
        // only grows, and a commit never passes it); a pair read across a
        // change that makes no sense asks the lock.
        let bounds = || parts.iter().map(registry::range).collect::<Result<Vec<_>, _>>().ok();
        let Some(name) = &config.group else {
            let Some(bounds) = bounds() else { return Ok(None) };
            let pos = bounds.iter().map(|&(tail, head)| if config.start == StartAt::Newest { head } else { tail });
            return Ok(Some((None, pos.collect())));
        };
        for (g, slot) in record.groups.iter().enumerate() {
            let (version, rewrites) = (slot.created_ns.load(SeqCst), slot.rewrites.load(SeqCst));
            if version == 0 || slot.state.load(SeqCst) != LIVE {
                continue;
            }
            if rewrites % 2 == 1 {
                return Ok(None);
            }
            if registry::read_name(&slot.name, &slot.name_len).ok().as_deref() != Some(name.as_str()) {
                continue;
            }
            let committed: Vec<u64> = slot.committed[..parts.len()].iter().map(|c| c.load(SeqCst)).collect();
            // Pairs with the fence after `init_group` stores version 0: if
            // the version below is the one above, no write of a later
            // version was seen by the reads before it.
            std::sync::atomic::fence(Acquire);
            let same = slot.state.load(SeqCst) == LIVE
                && slot.created_ns.load(SeqCst) == version
                && slot.rewrites.load(SeqCst) == rewrites
                && registry::read_name(&slot.name, &slot.name_len).ok().as_deref() == Some(name.as_str());
            let Some(bounds) = bounds().filter(|_| same) else { return Ok(None) };
            let pos = committed.iter().zip(&bounds).map(|(&c, &(tail, head))| c.clamp(tail, head)).collect();
            return Ok(Some((Some(GroupRef { slot: g, created_ns: version, name: name.clone() }), pos)));
        }
        Ok(None)
    }

    /// [`StreamTxn::check_tails`] in a transaction of its own.
    fn check_tails(stream: &Stream, parts: &[u32], pos: &[u64]) -> Result<()> {
        stream.transaction(|tx| tx.check_tails(parts, pos))
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The partitions this consumer reads.
    pub fn partitions(&self) -> &[u32] {
        &self.parts
    }

    /// The consumer's group, if it has one.
    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.name.as_str())
    }

    /// The next offset this consumer reads in `partition`.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.parts.contains(&partition).then(|| self.pos[partition as usize])
    }

    /// Offsets passed because they had no object (their producer died
    /// before sealing them).
    pub fn holes(&self) -> u64 {
        self.holes
    }

    /// Batches this consumer never saw because a limit or `DropOldest`
    /// dropped them before it got there.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Batches this consumer skipped because they could not be decoded
    /// (by [`skip`](Self::skip) or [`ConsumerConfig::skip_corrupt`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Batches appended to this consumer's partitions that it has not read
    /// yet (read without the lock: a snapshot that may be a little stale).
    pub fn backlog(&self) -> Result<u64> {
        let shared = self.stream.shared_record()?;
        Ok(self
            .parts
            .iter()
            .map(|&p| shared.partitions[p as usize].head.load(Relaxed).saturating_sub(self.pos[p as usize]))
            .sum())
    }

    /// The next batch if it is there for the taking: taken ahead by an
    /// earlier look, or sealed past this consumer's position, found without
    /// the store's lock and decoded. `None` in every other case (nothing
    /// yet, holes, dropped batches, the end, a batch that cannot be
    /// decoded): [`poll`](Self::poll) then says which. Never waits and
    /// never takes the lock, so a caller may make it where a wait would
    /// hold up others (a binding that holds its interpreter's lock).
    pub fn poll_ready(&mut self) -> Result<Option<StreamBatch>> {
        let ahead = match self.ready.pop_front() {
            Some(ahead) => ahead,
            None => {
                let stream = self.stream.clone();
                let shared = stream.shared_record()?;
                let live = shared.slot.namespace.load(Relaxed) == stream.inner().namespace
                    && shared.slot.state.load(Relaxed) == LIVE;
                let pending = self
                    .parts
                    .iter()
                    .any(|&p| shared.partitions[p as usize].head.load(Relaxed) > self.fetched[p as usize]);
                if !live || !pending {
                    return Ok(None);
                }
                // Not closed, as far as this look goes: the end is `poll`'s to tell.
                match self.look_unlocked(&stream, shared, false, &mut false) {
                    Unlocked::Found(Step::Batch(ahead)) => ahead,
                    _ => return Ok(None),
                }
            }
        };
        let (partition, offset) = (ahead.partition, ahead.offset);
        match self.reader.decode(ahead.view) {
            Ok((batch, meta)) => {
                self.move_past(partition, offset);
                Ok(Some(StreamBatch { partition, offset, append_ns: meta.append_ns, batch }))
            }
            // Back on it: `poll` meets it again and reports or skips it.
            Err(_) => {
                self.reposition(partition, offset);
                Ok(None)
            }
        }
    }

    /// Returns the next batch, waiting up to `timeout` for one (zero: look
    /// once and never block).
    ///
    /// A batch that cannot be decoded gives [`StreamError::CorruptBatch`]
    /// and the position stays on it: [`skip`](Self::skip) it to go on (or
    /// make the consumer with [`ConsumerConfig::skip_corrupt`]).
    pub fn poll(&mut self, timeout: Duration) -> Result<Polled> {
        let _call = crate::store::CallDeadline::enter(timeout);
        // A hit costs no clock read and no wait-cell lookup.
        loop {
            let mut unsealed = false;
            match self.look(&mut unsealed)? {
                Some(Step::Batch(ahead)) => match self.deliver(ahead)? {
                    Some(batch) => return Ok(Polled::Batch(batch)),
                    None => continue, // skipped: look again
                },
                Some(Step::End) => return Ok(Polled::EndOfStream),
                None if timeout.is_zero() => return Ok(Polled::TimedOut),
                None => break,
            }
        }
        let deadline = Instant::now().checked_add(timeout);
        let stream = self.stream.clone();
        let store = stream.store();
        let slot = stream.inner().slot;
        let cell = match self.parts[..] {
            [p] => store.registry_cell(registry::partition_cell_offset(slot, p as usize))?,
            _ => store.registry_cell(registry::stream_cell_offset(slot))?,
        };
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => DEAD_PRODUCER_SWEEP,
            };
            let mut unsealed = false;
            // A batch being written is at most a copy away: spin for it a
            // moment before parking (see `WaitCell::wait_for`).
            let step = cell.wait_for(left.min(DEAD_PRODUCER_SWEEP), store.wait_strategy(), || {
                Ok::<_, StreamError>(match self.look(&mut unsealed)? {
                    Some(step) => Attempt::Ready(step),
                    None if unsealed => Attempt::InFlight,
                    None => Attempt::Pending,
                })
            })?;
            match step {
                Some(Step::Batch(ahead)) => {
                    if let Some(batch) = self.deliver(ahead)? {
                        return Ok(Polled::Batch(batch));
                    }
                }
                Some(Step::End) => return Ok(Polled::EndOfStream),
                None if left.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) => {
                    // Not "nothing arrived" if the store is gone, or if the
                    // registry lost batches past a head.
                    store.check_present()?;
                    self.check_heads()?;
                    return Ok(Polled::TimedOut);
                }
                None if unsealed => {
                    // Its writer may be dead; a stopped lock holder is not
                    // waited for (the poll goes on waiting for the batch).
                    let _upkeep = crate::store::NoWait::enter();
                    match store.recover_dead_clients() {
                        Err(StoreError::LockTimeout { .. }) => {}
                        other => {
                            other?;
                        }
                    }
                }
                // A store removed meanwhile is noticed within a slice.
                None => store.check_present()?,
            }
        }
    }

    /// Decodes a batch taken ahead and moves past it. `None`: it could not
    /// be decoded and was skipped ([`ConsumerConfig::skip_corrupt`]).
    fn deliver(&mut self, ahead: Taken) -> Result<Option<StreamBatch>> {
        let Taken { partition, offset, view } = ahead;
        let (batch, meta) = match self.reader.decode(view) {
            Ok(decoded) => decoded,
            // The store failed, not the batch's bytes: stay on the batch
            // (as below), so the next poll meets it again.
            Err(crate::arrow::BatchError::Store(e)) => {
                self.reposition(partition, offset);
                return Err(e.into());
            }
            Err(source) => {
                let recorded = match self.skip_corrupt {
                    true => self.record_skip(partition, offset, &source.to_string()),
                    false => Err(StreamError::CorruptBatch { partition, offset, source }),
                };
                if let Err(e) = recorded {
                    // Stay on the bad batch: drop what was taken after it
                    // (all of this partition), so that the next poll meets
                    // it again, and put the position on it, where `skip`
                    // expects it.
                    self.reposition(partition, offset);
                    return Err(e);
                }
                self.move_past(partition, offset);
                return Ok(None);
            }
        };
        self.move_past(partition, offset);
        Ok(Some(StreamBatch { partition, offset, append_ns: meta.append_ns, batch }))
    }

    /// Moves the position in `partition` past the batch at `offset` just
    /// delivered or skipped; and past any holes after it if nothing else of
    /// this partition waits (what lies between is then all holes).
    fn move_past(&mut self, partition: u32, offset: u64) {
        let p = partition as usize;
        self.pos[p] = offset + 1;
        if !self.ready.iter().any(|a| a.partition == partition) {
            self.pos[p] = self.fetched[p].max(offset + 1);
        }
    }

    /// Passes the batch at `offset` of `partition`, which must be where this
    /// consumer stands there (where a [`StreamError::CorruptBatch`] left
    /// it), recording `reason`: the group counts the skip and the stream's
    /// stats list it (see [`StreamStats::skipped`](super::StreamStats::skipped)).
    /// Like any position, the skip holds for the group once committed; a
    /// consumer that skips the same batch again (after a crash before its
    /// commit) is not counted twice. A reader without a group only moves on.
    pub fn skip(&mut self, partition: u32, offset: u64, reason: &str) -> Result<()> {
        let position = self
            .position(partition)
            .ok_or(StreamError::NoSuchPartition { partition, partitions: self.stream.partitions() })?;
        if position != offset {
            return Err(StreamError::InvalidArgument(format!(
                "skip: the consumer is at offset {position} of partition {partition}, not {offset}"
            )));
        }
        let (tail, head) =
            self.stream.with_record(|_, record| Ok(registry::range(&record.partitions[partition as usize])?))?;
        if offset < tail || offset >= head {
            return Err(StreamError::OffsetOutOfRange { partition, offset, tail, head });
        }
        self.record_skip(partition, offset, reason)?;
        // Reading goes on after it.
        self.reposition(partition, offset + 1);
        Ok(())
    }

    /// Puts the next read of `partition` at `offset`. Batches taken ahead
    /// are dropped (they are all of one partition): that partition's
    /// reading restarts at the first of them, unless it is `partition`.
    fn reposition(&mut self, partition: u32, offset: u64) {
        if let Some(first) = self.ready.front() {
            self.fetched[first.partition as usize] = first.offset;
        }
        self.ready.clear();
        self.pos[partition as usize] = offset;
        self.fetched[partition as usize] = offset;
    }

    /// Counts a skip here and, for a group, in the file.
    fn record_skip(&mut self, partition: u32, offset: u64, reason: &str) -> Result<()> {
        if let Some(group) = self.group.clone() {
            let key = super::GroupKey { slot: group.slot, created_ns: group.created_ns };
            self.stream.transaction(|tx| -> Result<()> {
                tx.record_skip(key, partition, offset, reason)?;
                Ok(())
            })?;
        }
        self.skipped += 1;
        Ok(())
    }

    /// The next batch: one taken ahead, or else a look at every assigned
    /// partition under the lock, which takes up to [`READ_AHEAD`]
    /// consecutive sealed batches from the first partition that has one.
    /// `unsealed` is set if a position holds a batch still being written.
    fn look(&mut self, unsealed: &mut bool) -> Result<Option<Step>> {
        if let Some(ahead) = self.ready.pop_front() {
            return Ok(Some(Step::Batch(ahead)));
        }
        // Without the lock first: if no partition has anything past this
        // consumer's position and the stream is open, there is nothing to do.
        let stream = self.stream.clone();
        let shared = stream.shared_record()?;
        let closed = shared.slot.flags.load(Acquire) & CLOSED != 0;
        let pending =
            self.parts.iter().any(|&p| shared.partitions[p as usize].head.load(Relaxed) > self.fetched[p as usize]);
        let ours = shared.slot.namespace.load(Relaxed) == self.stream.inner().namespace;
        let live = ours && shared.slot.state.load(Relaxed) == LIVE;
        if !pending && !closed && live {
            return Ok(None);
        }
        if live {
            match self.look_unlocked(&stream, shared, closed, unsealed) {
                Unlocked::Found(step) => return Ok(Some(step)),
                Unlocked::Nothing => return Ok(None),
                Unlocked::AskTheLock => {}
            }
        }
        let n = self.parts.len();
        let end = stream.transaction(|tx| -> Result<_> {
            let mut drained = true;
            // Holes passed in one look, over all partitions (bounded work
            // under the lock, whatever the registry claims).
            let mut hole_budget = registry::HOLE_BUDGET;
            for i in 0..n {
                let index = (self.next + i) % n;
                let p = self.parts[index];
                let fetched = &mut self.fetched[p as usize];
                let found = tx.fetch(p, fetched, u64::MAX, READ_AHEAD, &mut hole_budget, &mut self.ready)?;
                self.missed += found.missed;
                self.holes += found.holes;
                *unsealed |= found.writing;
                // Nothing waits for delivery when a look runs, so the
                // position is the first batch taken, or past everything
                // passed.
                self.pos[p as usize] = self.ready.front().map_or(*fetched, |first| first.offset);
                if !self.ready.is_empty() {
                    self.next = (index + 1) % n;
                    return Ok(false);
                }
                drained &= *fetched == found.head;
            }
            Ok(drained && tx.is_closed())
        })?;
        Ok(match self.ready.pop_front() {
            Some(ahead) => Some(Step::Batch(ahead)),
            None if end => Some(Step::End),
            None => None,
        })
    }

    /// Fails if the registry lost appended batches of an assigned partition
    /// (see `StreamTxn::check_head`): a wait that times out looks, so that
    /// such damage is an error, never the end of the data.
    /// Only if the lock is free now: a timed-out wait never waits for it.
    fn check_heads(&self) -> Result<()> {
        let _now = crate::store::CallDeadline::enter(Duration::ZERO);
        let checked = self.stream.transaction(|tx| {
            for &p in &self.parts {
                tx.check_head(p, tx.range(p)?.1)?;
            }
            Ok(())
        });
        match checked {
            Err(StreamError::Store(StoreError::LockTimeout { .. })) => Ok(()),
            other => other,
        }
    }

    /// The next batch without the store's lock, so that a stopped or hung
    /// holder stalls no reader: sealed batches are pinned, and a view of a
    /// pinned object is taken without the lock (see `Store::view_unlocked`).
    /// The registry's head and tail are read as hints: a head read early
    /// only shows fewer batches, and an offset that turns out to have no
    /// sealed object (a hole, a batch dropped meanwhile, damage) is left
    /// to the lock, which tells which. `closed` was read before the heads:
    /// a stream is closed after its last append, so heads read after it
    /// are final.
    fn look_unlocked(
        &mut self,
        stream: &Stream,
        shared: &registry::StreamRecord,
        closed: bool,
        unsealed: &mut bool,
    ) -> Unlocked {
        let store = stream.store();
        let n = self.parts.len();
        let mut drained = true;
        for i in 0..n {
            let index = (self.next + i) % n;
            let p = self.parts[index];
            let part = &shared.partitions[p as usize];
            let (head, tail) = (part.head.load(Acquire), part.tail.load(Acquire));
            let at = self.fetched[p as usize];
            if at >= head {
                continue;
            }
            drained = false;
            if at < tail {
                // Batches were dropped under this consumer: the lock counts them.
                return Unlocked::AskTheLock;
            }
            let (mut next, mut writing) = (at, false);
            while next < head && self.ready.len() < READ_AHEAD {
                match store.view_unlocked(stream.object_id(p, next)) {
                    Attempt::Ready(view) => self.ready.push_back(Taken { partition: p, offset: next, view }),
                    Attempt::InFlight => {
                        writing = true;
                        break;
                    }
                    Attempt::Pending => break,
                }
                next += 1;
            }
            *unsealed |= writing;
            self.fetched[p as usize] = next;
            if let Some(first) = self.ready.pop_front() {
                self.pos[p as usize] = first.offset;
                self.next = (index + 1) % n;
                return Unlocked::Found(Step::Batch(first));
            }
            if !writing {
                // Not sealed and not being written: only the lock can tell.
                return Unlocked::AskTheLock;
            }
        }
        match (drained, closed) {
            // The end, unless the registry lost batches (checked if the lock is free).
            (true, true) if self.check_heads().is_ok() => Unlocked::Found(Step::End),
            (true, true) => Unlocked::AskTheLock,
            _ => Unlocked::Nothing,
        }
    }

    /// Under the lock: the wall-clock time, each assigned partition's head,
    /// and whether the stream is closed. Every batch appended before `now`
    /// lies below these heads (append times are taken under the same lock).
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        self.stream.with_record(|_, record| {
            let now_ns = crate::shm::clock::wall_ns();
            let mut heads = Vec::with_capacity(self.parts.len());
            for &p in &self.parts {
                heads.push((p, registry::range(&record.partitions[p as usize])?.1));
            }
            Ok(Snapshot { now_ns, heads, closed: record.slot.flags.load(Relaxed) & CLOSED != 0 })
        })
    }

    /// Whether this consumer has read up to `heads` in every partition.
    pub(crate) fn reached(&self, heads: &[(u32, u64)]) -> bool {
        heads.iter().all(|&(p, head)| self.pos[p as usize] >= head)
    }

    /// Moves this consumer's position in `partition` to `offset`, which
    /// must be retained (between the tail and the head, inclusive). Reading
    /// goes on from there, like replaying a log.
    pub fn seek(&mut self, partition: u32, offset: u64) -> Result<()> {
        if !self.parts.contains(&partition) {
            return Err(StreamError::NoSuchPartition { partition, partitions: self.stream.partitions() });
        }
        let (tail, head) =
            self.stream.with_record(|_, record| Ok(registry::range(&record.partitions[partition as usize])?))?;
        if offset < tail || offset > head {
            return Err(StreamError::OffsetOutOfRange { partition, offset, tail, head });
        }
        self.reposition(partition, offset);
        Ok(())
    }
}
