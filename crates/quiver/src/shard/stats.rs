//! What `quiver stat` and [`ShardManager::stats`](super::ShardManager::stats)
//! report of a shard-managed group.

use std::sync::atomic::Ordering::Relaxed;

use super::error::Result;
use super::registry::{self, task, ShardGroup, LIVE};
use super::steps::{managed_group, manages, record_of};
use super::TaskRecord;
use crate::store::Store;
use crate::stream::StreamError;
use crate::stream::{stream_name, GroupKey, Stream, StreamTxn};

/// A shard-managed group's numbers, as [`ShardManager::stats`](super::ShardManager::stats) and
/// [`list`] report them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    /// The stream.
    pub stream: String,
    /// The group.
    pub group: String,
    /// Shard size and unit.
    pub shard_size: u64,
    /// `"batches"` or `"rows"`.
    pub unit: &'static str,
    /// Tasks waiting.
    pub todo: u64,
    /// Tasks leased.
    pub doing: u64,
    /// Tasks done, since the group's shard state was made.
    pub done: u64,
    /// Failures reported.
    pub failed: u64,
    /// Tasks put back because their member died or their lease expired.
    pub requeued: u64,
    /// Per partition: the first offset not yet cut.
    pub next_cut: Vec<u64>,
    /// Per partition: the committed offset.
    pub committed: Vec<u64>,
    /// The dead letters.
    pub dead_letters: Vec<TaskRecord>,
    /// The members.
    pub members: Vec<MemberStats>,
}

/// One member's numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberStats {
    /// Its member slot.
    pub member: u32,
    /// Its store client slot.
    pub client: u32,
    /// Tasks it holds.
    pub tasks_held: u64,
    /// Tasks it finished.
    pub tasks_done: u64,
    /// Per partition: batches it finished.
    pub done_batches: Vec<u64>,
    /// Per partition: rows it finished.
    pub done_rows: Vec<u64>,
    /// When it was last seen: `CLOCK_MONOTONIC` nanoseconds, comparable with
    /// [`monotonic_ns`](crate::shm::clock::monotonic_ns) in any process on the host.
    pub last_seen_ns: u64,
}

pub(super) fn group_stats(tx: &StreamTxn<'_>, stream: &Stream, g: GroupKey, sg: &ShardGroup) -> Result<ShardStats> {
    let h = &sg.header;
    let partitions = stream.partitions() as usize;
    let mut dead_letters: Vec<TaskRecord> =
        sg.tasks.iter().filter(|t| t.state.load(Relaxed) == task::DEAD).map(record_of).collect();
    dead_letters.sort_by_key(|t| t.id);
    let members = sg
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.state.load(Relaxed) == LIVE)
        .map(|(i, m)| MemberStats {
            member: i as u32,
            client: m.client.load(Relaxed),
            tasks_held: m.tasks_held.load(Relaxed),
            tasks_done: m.tasks_done.load(Relaxed),
            done_batches: (0..partitions).map(|p| m.done_batches[p].load(Relaxed)).collect(),
            done_rows: (0..partitions).map(|p| m.done_rows[p].load(Relaxed)).collect(),
            last_seen_ns: m.last_seen_ns.load(Relaxed),
        })
        .collect();
    Ok(ShardStats {
        stream: stream.name().to_string(),
        group: tx.group_name(g)?,
        shard_size: h.shard_size.load(Relaxed),
        unit: if h.unit.load(Relaxed) == 1 { "rows" } else { "batches" },
        todo: h.todo_len.load(Relaxed) as u64,
        doing: h.doing.load(Relaxed) as u64,
        done: h.done_tasks.load(Relaxed),
        failed: h.failed_tasks.load(Relaxed),
        requeued: h.requeued_tasks.load(Relaxed),
        next_cut: (0..partitions).map(|p| sg.next_cut[p].load(Relaxed)).collect(),
        committed: (0..partitions as u32).map(|p| tx.committed(g, p)).collect::<Result<_, _>>()?,
        dead_letters,
        members,
    })
}

/// Every live shard-managed group in `store`.
pub fn list(store: &Store) -> Result<Vec<ShardStats>> {
    let found = store.locked(|l| -> Result<_> {
        let area = registry::area(l)?;
        let mut found = Vec::new();
        for sg in &area.groups {
            let h = &sg.header;
            if h.state.load(Relaxed) != LIVE {
                continue;
            }
            let (slot, namespace) = (h.stream_slot.load(Relaxed) as usize, h.stream_namespace.load(Relaxed));
            if let Some(name) = stream_name(l, slot, namespace)? {
                found.push(name);
            }
        }
        Ok(found)
    })?;
    let mut names = found;
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let stream = match Stream::open(store, &name) {
            Ok(stream) => stream,
            Err(StreamError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let stats = stream.transaction(|tx| -> Result<_> {
            let area = registry::area(tx.locked())?;
            let namespace = stream.identity().1;
            let mut stats = Vec::new();
            for sg in &area.groups {
                let g = managed_group(sg);
                if manages(sg, namespace, g) && tx.group_live(g) {
                    stats.push(group_stats(tx, &stream, g, sg)?);
                }
            }
            Ok(stats)
        })?;
        out.extend(stats);
    }
    Ok(out)
}

/// Per partition of `stream`, the first offset past everything its groups
/// know of: their committed offsets and, for shard-managed groups, what
/// they have cut into shards. A producer that refills a stream from an
/// outside log after the store was lost (its groups restored from
/// checkpoints) appends from there ([`Producer::skip_to`](crate::Producer::skip_to)),
/// so that no offset a restored group already knows stands for a new batch.
pub fn known_ends(stream: &Stream) -> Result<Vec<u64>> {
    let mut ends = vec![0u64; stream.partitions() as usize];
    for (_, committed) in stream.group_offsets()?.groups {
        for (end, &c) in ends.iter_mut().zip(&committed) {
            *end = (*end).max(c);
        }
    }
    let namespace = stream.identity().1;
    stream.transaction(|tx| -> Result<_> {
        let area = registry::area(tx.locked())?;
        for sg in &area.groups {
            let g = managed_group(sg);
            if manages(sg, namespace, g) && tx.group_live(g) {
                for (end, cut) in ends.iter_mut().zip(&sg.next_cut) {
                    *end = (*end).max(cut.load(Relaxed));
                }
            }
        }
        Ok(())
    })?;
    Ok(ends)
}
