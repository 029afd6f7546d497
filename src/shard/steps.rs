//! The shard manager's steps under the store's lock: finding and making
//! shard groups and members, the sweep (dead members, expired leases), the
//! splitter, the end, the committed run, and the copy to and from a
//! checkpoint.

use std::sync::atomic::Ordering::{Relaxed, Release};

use super::registry::{self, task, ShardGroup, FREE, LIVE, NIL};
use super::{Checkpoint, ShardConfig, ShardSize, ShardUnit, TaskRecord, MAX_MEMBERS, MAX_SHARD_GROUPS, MAX_TASKS};
use crate::shm::clock::{monotonic_ns, wall_ns};
use crate::store::{Locked, ObjectState};
use crate::stream::registry::{self as streams, GroupSlot, StreamRecord, CLOSED};
use crate::stream::StreamError;
use crate::stream::{Result, Stream};

pub(super) fn check_config(config: &ShardConfig) -> Result<()> {
    let size = match config.shard_size {
        ShardSize::Batches(n) | ShardSize::Rows(n) => n,
    };
    if size == 0 || config.lease.is_zero() {
        return Err(StreamError::InvalidConfig("a shard size and a lease must be above zero".into()));
    }
    Ok(())
}

/// The live shard group managing stream group `(g, created)`.
pub(super) fn find(l: &Locked<'_>, stream: &Stream, g: usize, created: u64) -> Result<Option<usize>> {
    let area = registry::area(l)?;
    Ok(area.groups.iter().position(|sg| {
        let h = &sg.header;
        h.state.load(Relaxed) == LIVE
            && h.stream_namespace.load(Relaxed) == stream.inner().namespace
            && h.group_slot.load(Relaxed) as usize == g
            && h.group_created_ns.load(Relaxed) == created
    }))
}

/// A shard group record no live group uses (a stale one whose stream or
/// group is gone is taken over).
pub(super) fn allocate<'a>(l: &Locked<'a>) -> Result<(usize, &'a ShardGroup)> {
    let area = registry::area(l)?;
    let reg = streams::registry(l)?;
    for (i, sg) in area.groups.iter().enumerate() {
        let h = &sg.header;
        let stale = h.state.load(Relaxed) == LIVE && {
            let s = h.stream_slot.load(Relaxed) as usize;
            match reg.streams.get(s) {
                Some(r) => {
                    let g = r.groups.get(h.group_slot.load(Relaxed) as usize);
                    r.slot.state.load(Relaxed) != streams::LIVE
                        || r.slot.namespace.load(Relaxed) != h.stream_namespace.load(Relaxed)
                        || group_gone(g, h.group_created_ns.load(Relaxed))
                }
                None => true,
            }
        };
        if h.state.load(Relaxed) == FREE || stale {
            sg.reset();
            return Ok((i, sg));
        }
    }
    Err(StreamError::RegistryFull { what: "shard-managed groups", limit: MAX_SHARD_GROUPS })
}

/// Whether the stream group a shard group managed is gone.
pub(super) fn group_gone(group: Option<&GroupSlot>, created: u64) -> bool {
    match group {
        Some(g) => g.state.load(Relaxed) != streams::LIVE || g.created_ns.load(Relaxed) != created,
        None => true,
    }
}

/// Sets a fresh shard group's identity, configuration and splitter (which
/// starts at the group's committed offsets).
pub(super) fn init(
    sg: &ShardGroup,
    stream: &Stream,
    record: &StreamRecord,
    g: usize,
    created: u64,
    config: &ShardConfig,
) -> Result<()> {
    let h = &sg.header;
    h.stream_slot.store(stream.inner().slot as u32, Relaxed);
    h.stream_namespace.store(stream.inner().namespace, Relaxed);
    h.group_slot.store(g as u32, Relaxed);
    h.group_created_ns.store(created, Relaxed);
    let (unit, size) = match config.shard_size {
        ShardSize::Batches(n) => (0, n),
        ShardSize::Rows(n) => (1, n),
    };
    h.unit.store(unit, Relaxed);
    h.shard_size.store(size, Relaxed);
    h.linger_ns.store(config.linger.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    h.lease_ns.store(config.lease.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    h.max_retries.store(config.max_retries, Relaxed);
    h.next_task_id.store(1, Relaxed);
    for p in 0..stream.partitions() as usize {
        let (tail, head) = streams::range(&record.partitions[p])?;
        sg.next_cut[p].store(record.groups[g].committed[p].load(Relaxed).clamp(tail, head), Relaxed);
    }
    Ok(())
}

/// Takes a free member slot for this client.
pub(super) fn add_member(l: &Locked<'_>, sg: &ShardGroup) -> Result<(u32, u64)> {
    let (client, incarnation) = l.me()?;
    let m = sg
        .members
        .iter()
        .position(|m| m.state.load(Relaxed) == FREE)
        .ok_or(StreamError::RegistryFull { what: "members per shard-managed group", limit: MAX_MEMBERS })?;
    let member = &sg.members[m];
    registry::reset_member(member);
    member.client.store(client, Relaxed);
    member.incarnation.store(incarnation, Relaxed);
    let joined_ns = monotonic_ns();
    member.joined_ns.store(joined_ns, Relaxed);
    member.state.store(LIVE, Release);
    Ok((m as u32, joined_ns))
}

/// This member's record, checked to be still this client's.
pub(super) fn check_member<'a>(
    l: &Locked<'_>,
    sg: &'a ShardGroup,
    (member, joined_ns): (u32, u64),
) -> Result<&'a registry::MemberSlot> {
    let (client, incarnation) = l.me()?;
    let me = sg.member(member)?;
    if me.state.load(Relaxed) != LIVE
        || me.client.load(Relaxed) != client
        || me.incarnation.load(Relaxed) != incarnation
        || me.joined_ns.load(Relaxed) != joined_ns
    {
        return Err(StreamError::InvalidConfig(
            "this consumer is no longer a member of the group (it left, or the group was restored)".into(),
        ));
    }
    Ok(me)
}

/// Puts DOING tasks back at the front of todo, lowest id first.
pub(super) fn requeue(sg: &ShardGroup, slots: &[u32]) -> Result<()> {
    let mut slots = slots.to_vec();
    slots.sort_by_key(|&s| std::cmp::Reverse(sg.tasks[s as usize].id.load(Relaxed)));
    for slot in slots {
        let t = sg.task(slot)?;
        t.state.store(task::TODO, Relaxed);
        t.member.store(NIL, Relaxed);
        sg.header.doing.fetch_sub(1, Relaxed);
        sg.header.requeued_tasks.fetch_add(1, Relaxed);
        sg.push_front(slot)?;
    }
    Ok(())
}

/// Frees dead members and requeues their tasks and every expired lease.
pub(super) fn sweep(l: &Locked<'_>, sg: &ShardGroup, now: u64) -> Result<()> {
    let mut dead = [false; MAX_MEMBERS];
    for (m, member) in sg.members.iter().enumerate() {
        if member.state.load(Relaxed) == LIVE
            && !l.client_alive(member.client.load(Relaxed), member.incarnation.load(Relaxed))?
        {
            dead[m] = true;
            member.state.store(FREE, Release);
        }
    }
    let mut back = Vec::new();
    for (slot, t) in sg.tasks.iter().enumerate() {
        if t.state.load(Relaxed) != task::DOING {
            continue;
        }
        let m = t.member.load(Relaxed) as usize;
        let holder_gone = m >= MAX_MEMBERS || dead[m] || sg.members[m].state.load(Relaxed) != LIVE;
        if holder_gone || t.lease_ns.load(Relaxed) < now {
            if !holder_gone {
                sg.members[m].tasks_held.fetch_sub(1, Relaxed);
            }
            back.push(slot as u32);
        }
    }
    requeue(sg, &back)
}

/// Cuts one round of shards: one from each partition that has enough data
/// (or, when the stream is closed or the partition idle past the linger,
/// whatever it has), starting at the round-robin partition.
pub(super) fn cut(l: &Locked<'_>, record: &StreamRecord, sg: &ShardGroup, now: u64) -> Result<()> {
    let h = &sg.header;
    let partitions = (record.slot.partitions.load(Relaxed) as usize).min(crate::stream::MAX_PARTITIONS);
    let closed = record.slot.flags.load(Relaxed) & CLOSED != 0;
    let (size, by_rows) = (h.shard_size.load(Relaxed).max(1), h.unit.load(Relaxed) == 1);
    let linger = h.linger_ns.load(Relaxed);
    let namespace = record.slot.namespace.load(Relaxed);
    let rr = h.rr.load(Relaxed) as usize % partitions.max(1);
    let mut last = None;
    // Walks for rows share one budget per round (see `MAX_STEP`).
    let mut walk_budget = streams::MAX_STEP;
    for i in 0..partitions {
        let p = (rr + i) % partitions;
        let part = &record.partitions[p];
        let (tail, head) = streams::range(part)?;
        // Offsets below the tail were dropped before they were cut.
        let start = sg.next_cut[p].load(Relaxed).max(tail);
        sg.next_cut[p].store(start, Relaxed);
        if start >= head {
            continue;
        }
        let idle = closed || now.saturating_sub(part.last_append_ns.load(Relaxed)) >= linger;
        let end = if by_rows {
            // Whole batches until the rows reach the size; a batch still
            // being written ends the walk (its rows are not known yet).
            let (mut rows, mut at, mut complete) = (0u64, start, false);
            while at < head && walk_budget > 0 {
                walk_budget -= 1;
                let id = crate::store::ObjectId::sequential(namespace, p as u32, at);
                match l.object(id)? {
                    Some(o) if o.state == ObjectState::Sealed => {
                        rows = rows.saturating_add(streams::batch_facts(id, o.metadata())?.0)
                    }
                    Some(_) => break,
                    None => {}
                }
                at += 1;
                if rows >= size {
                    complete = true;
                    break;
                }
            }
            match (complete, idle && at == head && at > start) {
                (true, _) | (false, true) => at,
                _ => continue,
            }
        } else if head - start >= size {
            start + size
        } else if idle {
            head
        } else {
            continue;
        };
        if sg.make_task(p as u32, start, end)?.is_none() {
            break; // the task table is full: cut again when tasks finish
        }
        sg.next_cut[p].store(end, Relaxed);
        last = Some(p);
    }
    if let Some(p) = last {
        h.rr.store(((p + 1) % partitions) as u32, Relaxed);
    }
    Ok(())
}

/// Whether everything is finished: the stream is closed, every partition
/// cut to its head, and nothing is todo or doing.
pub(super) fn finished(record: &StreamRecord, _group: &GroupSlot, sg: &ShardGroup) -> Result<bool> {
    if record.slot.flags.load(Relaxed) & CLOSED == 0 || !sg.todo_is_empty()? || sg.header.doing.load(Relaxed) != 0 {
        return Ok(false);
    }
    let partitions = (record.slot.partitions.load(Relaxed) as usize).min(crate::stream::MAX_PARTITIONS);
    for p in 0..partitions {
        let (tail, head) = streams::range(&record.partitions[p])?;
        if sg.next_cut[p].load(Relaxed).max(tail) < head {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Moves the group's committed offset over the contiguous run of finished
/// shards that `slot` (just done, or just dead) may complete, frees the done
/// ones, and lets retention free what every group is past.
pub(super) fn settle(
    l: &Locked<'_>,
    record: &StreamRecord,
    group: &GroupSlot,
    sg: &ShardGroup,
    slot: u32,
) -> Result<()> {
    let mut slot = slot;
    loop {
        let t = sg.task(slot)?;
        let p = t.partition.load(Relaxed) as usize % crate::stream::MAX_PARTITIONS;
        // What lies below the tail was dropped (a limit, `DropOldest`): no
        // shard there can finish, so the run starts at the tail.
        let (tail, _) = streams::range(&record.partitions[p])?;
        let committed = group.committed[p].load(Relaxed).max(tail);
        if t.start.load(Relaxed) > committed {
            break; // an earlier shard of the partition is not finished
        }
        group.committed[p].store(committed.max(t.end.load(Relaxed)), Relaxed);
        let (next_slot, next_id) = (t.next_slot.load(Relaxed), t.next_id.load(Relaxed));
        if t.state.load(Relaxed) == task::DONE {
            t.state.store(task::FREE, Relaxed);
        }
        if next_id == 0 || next_slot == NIL {
            break;
        }
        let next = sg.task(next_slot)?;
        let finished = matches!(next.state.load(Relaxed), task::DONE | task::DEAD);
        if next.id.load(Relaxed) != next_id || !finished {
            break;
        }
        slot = next_slot;
    }
    streams::release_consumed(l, record)?;
    Ok(())
}

/// Rows in the sealed batches `[start, end)` of partition `p`.
pub(super) fn rows_in(l: &Locked<'_>, stream: &Stream, p: u32, start: u64, end: u64) -> Result<u64> {
    let mut rows = 0u64;
    for offset in start..end.min(start.saturating_add(streams::MAX_STEP)) {
        let id = stream.object_id(p, offset);
        if let Some(o) = l.object(id)? {
            if o.state == ObjectState::Sealed {
                rows = rows.saturating_add(streams::batch_facts(id, o.metadata()).map_or(0, |(r, _)| r));
            }
        }
    }
    Ok(rows)
}

pub(super) fn record_of(t: &registry::TaskSlot) -> TaskRecord {
    TaskRecord {
        id: t.id.load(Relaxed),
        partition: t.partition.load(Relaxed),
        start: t.start.load(Relaxed),
        end: t.end.load(Relaxed),
        retries: t.retries.load(Relaxed),
    }
}

/// A copy of the group's state, taken under the lock.
pub(super) fn snapshot(
    stream: &Stream,
    group_name: &str,
    record: &StreamRecord,
    group: &GroupSlot,
    sg: &ShardGroup,
) -> Result<Checkpoint> {
    let h = &sg.header;
    let partitions = stream.partitions() as usize;
    let todo: Vec<TaskRecord> =
        sg.todo_slots()?.into_iter().map(|s| sg.task(s).map(record_of)).collect::<Result<_, _>>()?;
    let mut doing = Vec::new();
    let mut done = Vec::new();
    let mut dead_letters = Vec::new();
    for t in &sg.tasks {
        match t.state.load(Relaxed) {
            task::DOING => doing.push(record_of(t)),
            task::DONE => done.push(record_of(t)),
            task::DEAD => dead_letters.push(record_of(t)),
            _ => {}
        }
    }
    doing.sort_by_key(|t| t.id);
    done.sort_by_key(|t| t.id);
    dead_letters.sort_by_key(|t| t.id);
    let _ = record;
    Ok(Checkpoint {
        stream: stream.name().to_string(),
        group: group_name.to_string(),
        partitions: partitions as u32,
        shard_size: h.shard_size.load(Relaxed),
        unit: if h.unit.load(Relaxed) == 1 { ShardUnit::Rows } else { ShardUnit::Batches },
        linger_ns: h.linger_ns.load(Relaxed),
        lease_ns: h.lease_ns.load(Relaxed),
        max_retries: h.max_retries.load(Relaxed),
        next_task_id: h.next_task_id.load(Relaxed).max(1),
        next_partition: h.rr.load(Relaxed),
        next_cut: (0..partitions).map(|p| sg.next_cut[p].load(Relaxed)).collect(),
        committed: (0..partitions).map(|p| group.committed[p].load(Relaxed)).collect(),
        todo,
        doing,
        done,
        dead_letters,
        taken_ns: wall_ns(),
    })
}

/// Loads a checkpoint's state into a fresh shard group.
pub(super) fn load(sg: &ShardGroup, group: &GroupSlot, c: &Checkpoint) -> Result<()> {
    let h = &sg.header;
    h.next_task_id.store(c.next_task_id, Relaxed);
    h.rr.store(c.next_partition % c.partitions, Relaxed);
    for p in 0..c.partitions as usize {
        sg.next_cut[p].store(c.next_cut[p], Relaxed);
        group.committed[p].store(c.committed[p], Relaxed);
    }
    // Every task gets a slot; doing then todo go into todo, in that order.
    let mut placed: Vec<(u32, u32, u64, u64, u64)> = Vec::new(); // (slot, partition, start, end, id)
    let mut place = |t: &TaskRecord, state: u32| -> Result<u32> {
        let slot = sg.free_slot().ok_or(StreamError::RegistryFull { what: "tasks per group", limit: MAX_TASKS })?;
        let s = &sg.tasks[slot as usize];
        s.id.store(t.id, Relaxed);
        s.start.store(t.start, Relaxed);
        s.end.store(t.end, Relaxed);
        s.partition.store(t.partition, Relaxed);
        s.retries.store(t.retries, Relaxed);
        s.member.store(NIL, Relaxed);
        s.lease_ns.store(0, Relaxed);
        s.next_id.store(0, Relaxed);
        s.next_slot.store(NIL, Relaxed);
        s.state.store(state, Relaxed);
        placed.push((slot, t.partition, t.start, t.end, t.id));
        Ok(slot)
    };
    for t in c.doing.iter().chain(&c.todo) {
        let slot = place(t, task::TODO)?;
        sg.push_back(slot)?;
    }
    for t in &c.done {
        place(t, task::DONE)?;
    }
    for t in &c.dead_letters {
        place(t, task::DEAD)?;
        h.dead.fetch_add(1, Relaxed);
    }
    // Each shard links to the one that follows it in its partition.
    placed.sort_by_key(|&(_, p, start, _, _)| (p, start));
    for pair in placed.windows(2) {
        let ((a, pa, _, end, _), (b, pb, start, _, id)) = (pair[0], pair[1]);
        if pa == pb && end <= start {
            sg.tasks[a as usize].next_id.store(id, Relaxed);
            sg.tasks[a as usize].next_slot.store(b, Relaxed);
        }
    }
    for p in 0..c.partitions {
        if let Some(&(slot, _, _, _, id)) = placed.iter().rev().find(|t| t.1 == p) {
            sg.last_cut_slot[p as usize].store(slot, Relaxed);
            sg.last_cut_id[p as usize].store(id, Relaxed);
        }
    }
    Ok(())
}
