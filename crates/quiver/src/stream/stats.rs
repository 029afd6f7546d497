//! What [`Stream::stats`] and [`Stream::list`] report: a stream's
//! counters, its partitions, and every group's committed offsets and lag.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::registry::{self, CLOSED, LIVE};
use super::{BackPressure, Result, Stream, StreamTxn};

/// Where a stream's partitions and groups stand, read under the lock in one
/// short look (no walk over batches, unlike [`Stream::stats`]): what a
/// producer that follows its groups needs (a Kafka source commits upstream
/// only what every group has committed), cheap enough to ask often.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupOffsets {
    /// Per partition, the offset the next append gets.
    pub heads: Vec<u64>,
    /// Every live group: its name and its committed offset per partition.
    pub groups: Vec<(String, Vec<u64>)>,
}

impl Stream {
    /// The partitions' heads and the live groups' committed offsets.
    pub fn group_offsets(&self) -> Result<GroupOffsets> {
        let n = self.inner.partitions as usize;
        self.with_record(|_, record| {
            let heads =
                record.partitions[..n].iter().map(|part| Ok(registry::range(part)?.1)).collect::<Result<_>>()?;
            let mut groups = Vec::new();
            for group in record.groups.iter().filter(|g| g.state.load(Relaxed) == LIVE) {
                let name = registry::read_name(&group.name, &group.name_len)?;
                groups.push((name, group.committed[..n].iter().map(|c| c.load(Relaxed)).collect()));
            }
            Ok(GroupOffsets { heads, groups })
        })
    }

    /// The stream's numbers: partitions, groups and their lag, counters.
    pub fn stats(&self) -> Result<StreamStats> {
        let inner = &*self.inner;
        self.with_record(|l, record| {
            let slot = &record.slot;
            let mut partitions = Vec::new();
            for (p, part) in record.partitions[..inner.partitions as usize].iter().enumerate() {
                let (tail, head) = registry::range(part)?;
                partitions.push(PartitionStats {
                    partition: p as u32,
                    head,
                    tail,
                    bytes: part.bytes.load(Relaxed),
                    rows: part.rows.load(Relaxed),
                    appended_rows: part.appended_rows.load(Relaxed),
                });
            }
            let mut groups = Vec::new();
            // Lag in rows is counted batch by batch under the lock, up to a
            // budget for the whole call; past it, it is estimated from the
            // partition's average rows per retained batch.
            let mut budget = registry::MAX_STEP;
            let tx = StreamTxn::new(l, record, self);
            for group in record.groups.iter().filter(|g| g.state.load(Relaxed) == LIVE) {
                let mut stats = GroupStats {
                    name: registry::read_name(&group.name, &group.name_len)?,
                    committed: Vec::new(),
                    lag_batches: 0,
                    lag_rows: 0,
                    skipped: group.skipped.load(Relaxed),
                };
                for (p, part) in partitions.iter().enumerate() {
                    let committed = group.committed[p].load(Relaxed);
                    stats.committed.push(committed);
                    let from = committed.clamp(part.tail, part.head);
                    stats.lag_batches += part.head - from;
                    // Walk the shorter side of the committed offset.
                    let (side, walk_lag) = if from - part.tail < part.head - from {
                        ((part.tail, from), false)
                    } else {
                        ((from, part.head), true)
                    };
                    let rows = if side.1 - side.0 <= budget {
                        budget -= side.1 - side.0;
                        tx.rows_in(p as u32, side.0, side.1)?
                    } else {
                        let retained = (part.head - part.tail).max(1) as u128;
                        ((side.1 - side.0) as u128 * part.rows as u128 / retained) as u64
                    };
                    stats.lag_rows =
                        stats.lag_rows.saturating_add(if walk_lag { rows } else { part.rows.saturating_sub(rows) });
                }
                groups.push(stats);
            }
            let (skipped, skipped_total) = tx.skipped()?;
            Ok(StreamStats {
                name: inner.name.clone(),
                schema_fingerprint: inner.fingerprint,
                created_ns: inner.created_ns,
                closed: slot.flags.load(Relaxed) & CLOSED != 0,
                back_pressure: inner.back_pressure,
                max_age: (inner.max_age_ns > 0).then(|| Duration::from_nanos(inner.max_age_ns)),
                max_bytes: (inner.max_bytes > 0).then_some(inner.max_bytes),
                bytes: slot.bytes.load(Relaxed),
                appended: slot.appended.load(Relaxed),
                dropped: slot.dropped.load(Relaxed),
                dropped_bytes: slot.dropped_bytes.load(Relaxed),
                expired: slot.expired.load(Relaxed),
                trimmed: slot.trimmed.load(Relaxed),
                partitions,
                groups,
                skipped_total,
                skipped,
            })
        })
    }
}

/// A stream's numbers, as [`Stream::stats`] reports them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    /// The stream's name.
    pub name: String,
    /// Fingerprint of its schema.
    pub schema_fingerprint: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Whether the stream was closed.
    pub closed: bool,
    /// The back-pressure policy.
    pub back_pressure: BackPressure,
    /// The age limit, if any.
    pub max_age: Option<Duration>,
    /// The size limit, if any.
    pub max_bytes: Option<u64>,
    /// Payload bytes retained.
    pub bytes: u64,
    /// Batches appended since creation.
    pub appended: u64,
    /// Batches dropped by `DropOldest`.
    pub dropped: u64,
    /// Their payload bytes.
    pub dropped_bytes: u64,
    /// Batches dropped for their age.
    pub expired: u64,
    /// Batches dropped to stay under `max_bytes`.
    pub trimmed: u64,
    /// Each partition.
    pub partitions: Vec<PartitionStats>,
    /// Each consumer group.
    pub groups: Vec<GroupStats>,
    /// Batches skipped by any group because they could not be decoded.
    pub skipped_total: u64,
    /// The newest of them (up to
    /// [`MAX_SKIPPED_LISTED`](super::MAX_SKIPPED_LISTED)), oldest first.
    pub skipped: Vec<SkippedBatch>,
}

/// A batch a group skipped because it could not be decoded
/// ([`Consumer::skip`](super::Consumer::skip)).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedBatch {
    /// The group that skipped it (`None`: a group removed since).
    pub group: Option<String>,
    /// Where the batch is.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was skipped, nanoseconds since the Unix epoch.
    pub at_ns: u64,
    /// Why it could not be read (cut to 88 bytes).
    pub reason: String,
}

/// One partition's numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// The offset the next append gets.
    pub head: u64,
    /// The oldest retained offset.
    pub tail: u64,
    /// Payload bytes retained.
    pub bytes: u64,
    /// Rows retained.
    pub rows: u64,
    /// Rows appended since creation.
    pub appended_rows: u64,
}

/// One consumer group's numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GroupStats {
    /// The group.
    pub name: String,
    /// The next offset the group reads, per partition.
    pub committed: Vec<u64>,
    /// Retained batches the group has not committed, over all partitions.
    pub lag_batches: u64,
    /// Their rows.
    pub lag_rows: u64,
    /// Batches the group skipped because they could not be decoded.
    pub skipped: u64,
}
