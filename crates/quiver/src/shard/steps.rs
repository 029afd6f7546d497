//! The shard manager's steps under the store's lock: finding and making
//! shard groups and members, the sweep (dead members, expired leases), the
//! splitter, the end, the committed run, and the copy to and from a
//! checkpoint.

use std::sync::atomic::Ordering::{Relaxed, Release};

use super::registry::{self, task, ShardGroup, FREE, LIVE, NIL};
use super::{
    Checkpoint, ShardConfig, ShardSize, ShardUnit, Share, TaskRecord, MAX_MEMBERS, MAX_SHARD_GROUPS, MAX_TASKS,
};
use crate::shm::clock::{monotonic_ns, wall_ns};

use super::error::{Result, ShardError};
use crate::store::Locked;
use crate::stream::{group_exists, GroupKey, SlotState, Stream, StreamTxn, MAX_STEP};

pub(super) fn check_config(config: &ShardConfig) -> Result<()> {
    let size = match config.shard_size {
        ShardSize::Batches(n) | ShardSize::Rows(n) => n,
    };
    if size == 0 || config.lease.is_zero() {
        return Err(ShardError::InvalidConfig("a shard size and a lease must be above zero".into()));
    }
    Ok(())
}

/// Whether shard group `sg` is live and manages stream group `g` of the
/// stream with `namespace`.
pub(super) fn manages(sg: &ShardGroup, namespace: u64, g: GroupKey) -> bool {
    let h = &sg.header;
    h.state.load(Relaxed) == LIVE
        && h.stream_namespace.load(Relaxed) == namespace
        && h.group_slot.load(Relaxed) as usize == g.slot
        && h.group_created_ns.load(Relaxed) == g.created_ns
}

/// The stream group a shard group manages.
pub(super) fn managed_group(sg: &ShardGroup) -> GroupKey {
    let h = &sg.header;
    GroupKey { slot: h.group_slot.load(Relaxed) as usize, created_ns: h.group_created_ns.load(Relaxed) }
}

/// The live shard group managing stream group `g`.
pub(super) fn find(l: &Locked<'_>, stream: &Stream, g: GroupKey) -> Result<Option<usize>> {
    let area = registry::area(l)?;
    let namespace = stream.identity().1;
    Ok(area.groups.iter().position(|sg| manages(sg, namespace, g)))
}

/// A shard group record no live group uses (a stale one whose stream or
/// group is gone is taken over).
pub(super) fn allocate<'a>(l: &Locked<'a>) -> Result<(usize, &'a ShardGroup)> {
    let area = registry::area(l)?;
    for (i, sg) in area.groups.iter().enumerate() {
        let h = &sg.header;
        let state = h.state.load(Relaxed);
        let stale = state == LIVE && {
            let (slot, namespace) = (h.stream_slot.load(Relaxed) as usize, h.stream_namespace.load(Relaxed));
            !group_exists(l, slot, namespace, managed_group(sg))?
        };
        if state == FREE || stale {
            sg.reset();
            return Ok((i, sg));
        }
    }
    Err(ShardError::RegistryFull { what: "shard-managed groups", limit: MAX_SHARD_GROUPS })
}

/// Sets a fresh shard group's identity, configuration and splitter (which
/// starts at the group's committed offsets).
pub(super) fn init(
    sg: &ShardGroup,
    tx: &StreamTxn<'_>,
    stream: &Stream,
    g: GroupKey,
    config: &ShardConfig,
) -> Result<()> {
    let h = &sg.header;
    let (slot, namespace) = stream.identity();
    h.stream_slot.store(slot as u32, Relaxed);
    h.stream_namespace.store(namespace, Relaxed);
    h.group_slot.store(g.slot as u32, Relaxed);
    h.group_created_ns.store(g.created_ns, Relaxed);
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
    for p in 0..stream.partitions() {
        let (tail, head) = tx.range(p)?;
        sg.next_cut[p as usize].store(tx.committed(g, p)?.clamp(tail, head), Relaxed);
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
        .ok_or(ShardError::RegistryFull { what: "members per shard-managed group", limit: MAX_MEMBERS })?;
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
        return Err(ShardError::NotAMember);
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
        crate::shm::crash::point();
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
pub(super) fn cut(tx: &StreamTxn<'_>, stream: &Stream, sg: &ShardGroup) -> Result<bool> {
    let h = &sg.header;
    let partitions = stream.partitions();
    let closed = tx.is_closed();
    let (size, by_rows) = (h.shard_size.load(Relaxed).max(1), h.unit.load(Relaxed) == 1);
    let linger = h.linger_ns.load(Relaxed);
    let rr = h.rr.load(Relaxed) % partitions;
    let mut last = None;
    // Walks for rows share one budget per round (see `MAX_STEP`).
    let mut walk_budget = MAX_STEP;
    for i in 0..partitions {
        let p = (rr + i) % partitions;
        let (tail, head) = tx.range(p)?;
        let next_cut = &sg.next_cut[p as usize];
        // Offsets below the tail were dropped before they were cut.
        let start = next_cut.load(Relaxed).max(tail);
        next_cut.store(start, Relaxed);
        if start >= head {
            continue;
        }
        // Idle is asked only of a partition short of a whole shard: the
        // wall clock (append times are wall-clock) is read only then.
        let idle = || -> Result<bool> {
            Ok(closed || crate::shm::clock::wall_ns().saturating_sub(tx.last_append_ns(p)?) >= linger)
        };
        let end = if by_rows {
            // Whole batches until the rows reach the size; a batch still
            // being written ends the walk (its rows are not known yet).
            let (mut rows, mut at, mut complete) = (0u64, start, false);
            while at < head && walk_budget > 0 {
                walk_budget -= 1;
                match tx.slot_at(p, at)? {
                    SlotState::Batch { rows: n } => rows = rows.saturating_add(n),
                    SlotState::Writing => break,
                    SlotState::Hole | SlotState::Dropped | SlotState::NotYet => {}
                }
                at += 1;
                if rows >= size {
                    complete = true;
                    break;
                }
            }
            if complete || (at == head && at > start && idle()?) {
                at
            } else {
                continue;
            }
        } else if head - start >= size {
            start + size
        } else if idle()? {
            head
        } else {
            continue;
        };
        if sg.make_task(p, start, end)?.is_none() {
            break; // the task table is full: cut again when tasks finish
        }
        next_cut.store(end, Relaxed);
        last = Some(p);
    }
    if let Some(p) = last {
        h.rr.store((p + 1) % partitions, Relaxed);
    }
    Ok(last.is_some())
}

/// Whether everything is finished: drained, and nothing is doing.
pub(super) fn finished(tx: &StreamTxn<'_>, stream: &Stream, sg: &ShardGroup) -> Result<bool> {
    Ok(sg.header.doing.load(Relaxed) == 0 && drained(tx, stream, sg)?)
}

/// Whether no shard is left to hand out: the stream is closed, every
/// partition cut to its head, and nothing is todo (shards may be doing).
pub(super) fn drained(tx: &StreamTxn<'_>, stream: &Stream, sg: &ShardGroup) -> Result<bool> {
    Ok(sg.todo_is_empty()? && all_cut(tx, stream, sg)?)
}

/// Whether the stream is closed and every partition cut to its head.
pub(super) fn all_cut(tx: &StreamTxn<'_>, stream: &Stream, sg: &ShardGroup) -> Result<bool> {
    if !tx.is_closed() {
        return Ok(false);
    }
    for p in 0..stream.partitions() {
        let (tail, head) = tx.range(p)?;
        if sg.next_cut[p as usize].load(Relaxed).max(tail) < head {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the lowest-numbered todo shard of `share` out of the queue (see
/// [`Share`] for the numbers), once every shard numbered below it is cut:
/// a partition that lags behind holds the others' shares back, so the
/// order never depends on which producer was faster.
pub(super) fn take_share(tx: &StreamTxn<'_>, stream: &Stream, sg: &ShardGroup, share: Share) -> Result<Option<u32>> {
    let partitions = stream.partitions() as u64;
    let size = sg.header.shard_size.load(Relaxed).max(1);
    let mut best: Option<((u64, u64), usize)> = None;
    for (at, slot) in sg.todo_slots()?.into_iter().enumerate() {
        let t = sg.task(slot)?;
        let (p, start) = (t.partition.load(Relaxed) as u64, t.start.load(Relaxed));
        let number = (start / size).saturating_mul(partitions).saturating_add(p);
        if number % share.of as u64 == share.index as u64 && !best.is_some_and(|(key, _)| key <= (number, start)) {
            best = Some(((number, start), at));
        }
    }
    let Some(((number, _), at)) = best else {
        return Ok(None);
    };
    let closed = tx.is_closed();
    for q in 0..partitions {
        // Partition q's shards numbered below `number`: k × partitions + q < number.
        let below = number.saturating_sub(q).div_ceil(partitions);
        let (tail, head) = tx.range(q as u32)?;
        let cut_to = sg.next_cut[q as usize].load(Relaxed).max(tail);
        if cut_to < below.saturating_mul(size) && !(closed && cut_to >= head) {
            return Ok(None);
        }
    }
    Ok(Some(sg.take_todo_at(at)?))
}

/// Moves the group's committed offset over the contiguous run of finished
/// shards that `slot` (just done, or just dead) may complete, frees the done
/// ones, and lets retention free what every group is past.
pub(super) fn settle(tx: &StreamTxn<'_>, g: GroupKey, sg: &ShardGroup, slot: u32) -> Result<()> {
    let mut slot = slot;
    loop {
        let t = sg.task(slot)?;
        let p = t.partition.load(Relaxed);
        // What lies below the tail was dropped (a limit, `DropOldest`): no
        // shard there can finish, so the run starts at the tail.
        let (tail, _) = tx.range(p)?;
        let committed = tx.committed(g, p)?.max(tail);
        if t.start.load(Relaxed) > committed {
            break; // an earlier shard of the partition is not finished
        }
        tx.set_committed(g, p, committed.max(t.end.load(Relaxed)))?;
        crate::shm::crash::point();
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
    Ok(tx.release_consumed()?)
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
    tx: &StreamTxn<'_>,
    stream: &Stream,
    group_name: &str,
    g: GroupKey,
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
        committed: (0..partitions as u32).map(|p| tx.committed(g, p)).collect::<Result<_, _>>()?,
        todo,
        doing,
        done,
        dead_letters,
        taken_ns: wall_ns(),
    })
}

/// Loads a checkpoint's state into a fresh shard group.
pub(super) fn load(sg: &ShardGroup, tx: &StreamTxn<'_>, g: GroupKey, c: &Checkpoint) -> Result<()> {
    let h = &sg.header;
    h.next_task_id.store(c.next_task_id, Relaxed);
    h.rr.store(c.next_partition % c.partitions, Relaxed);
    tx.rewriting(g, || -> Result<()> {
        for p in 0..c.partitions {
            sg.next_cut[p as usize].store(c.next_cut[p as usize], Relaxed);
            tx.set_committed(g, p, c.committed[p as usize])?;
        }
        Ok(())
    })?;
    // Every task gets a slot; doing then todo go into todo, in that order.
    let mut placed: Vec<(u32, u32, u64, u64, u64)> = Vec::new(); // (slot, partition, start, end, id)
    let mut place = |t: &TaskRecord, state: u32| -> Result<u32> {
        let slot = sg.free_slot().ok_or(ShardError::RegistryFull { what: "tasks per group", limit: MAX_TASKS })?;
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
