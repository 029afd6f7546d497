//! The shard manager's part of the store's registry: one fixed record per
//! shard-managed consumer group (its splitter, its members, its tasks and
//! the todo queue), all plain shared structs changed under the store's lock.
//! docs/format.md describes the same bytes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::store::Locked;
use crate::store::StoreError;
use crate::stream::MAX_PARTITIONS;

/// Shard-managed groups a store can hold.
pub const MAX_SHARD_GROUPS: usize = 4;
/// Tasks (todo, doing, done-but-not-yet-committed, dead letters) per group.
pub const MAX_TASKS: usize = 16384;
/// Consumers (members) of one shard-managed group at a time.
pub const MAX_MEMBERS: usize = 16;

/// Where the shard area lies in the store's registry area (after the streams).
pub(crate) const AREA_AT: u64 = 1 << 20;

/// `ShardHeader::state` and `MemberSlot::state`.
pub(crate) const FREE: u32 = 0;
pub(crate) const LIVE: u32 = 1;

/// `TaskSlot::state`.
pub(crate) mod task {
    pub const FREE: u32 = 0;
    /// In the todo queue.
    pub const TODO: u32 = 1;
    /// Leased to a member.
    pub const DOING: u32 = 2;
    /// Reported done; kept until every earlier shard of its partition is done.
    pub const DONE: u32 = 3;
    /// Failed more often than allowed: a dead letter.
    pub const DEAD: u32 = 4;
}

/// "No slot" in 32-bit links.
pub(crate) const NIL: u32 = u32::MAX;

crate::shm::shared_struct! {
    /// One task: a shard `(partition, [start, end))` and where it stands.
    pub(crate) struct TaskSlot {
        /// Monotonic within the group, from 1.
        pub id: AtomicU64,
        pub start: AtomicU64,
        pub end: AtomicU64,
        /// While DOING: the lease's deadline (`CLOCK_MONOTONIC` ns).
        pub lease_ns: AtomicU64,
        /// The id of the shard cut right after this one in its partition (0: none yet).
        pub next_id: AtomicU64,
        /// One of [`task`]; written last when a task is made.
        pub state: AtomicU32,
        pub partition: AtomicU32,
        pub retries: AtomicU32,
        /// While DOING: the member holding it.
        pub member: AtomicU32,
        /// The slot of `next_id`.
        pub next_slot: AtomicU32,
        pub _pad: AtomicU32,
    }
}
const _: () = assert!(size_of::<TaskSlot>() == 64);

crate::shm::shared_struct! {
    /// A consumer of the group: a store client incarnation, and what it did.
    pub(crate) struct MemberSlot {
        pub state: AtomicU32,
        /// The member's store client slot.
        pub client: AtomicU32,
        pub incarnation: AtomicU64,
        /// When the member joined and when it was last seen (`CLOCK_MONOTONIC` ns).
        pub joined_ns: AtomicU64,
        pub last_seen_ns: AtomicU64,
        pub tasks_held: AtomicU64,
        pub tasks_done: AtomicU64,
        pub _pad: [AtomicU64; 2],
        pub done_batches: [AtomicU64; MAX_PARTITIONS],
        pub done_rows: [AtomicU64; MAX_PARTITIONS],
    }
}
const _: () = assert!(size_of::<MemberSlot>() == 64 + 2 * 8 * MAX_PARTITIONS);

crate::shm::shared_struct! {
    /// A shard-managed group: which stream group it manages, its
    /// configuration, its splitter and its counters.
    pub(crate) struct ShardHeader {
        /// [`FREE`] or [`LIVE`]; written last.
        pub state: AtomicU32,
        /// The stream's registry slot and the group's slot in it.
        pub stream_slot: AtomicU32,
        pub stream_namespace: AtomicU64,
        pub group_slot: AtomicU32,
        /// 0: shards count batches; 1: rows.
        pub unit: AtomicU32,
        /// The group's creation time (tells it from a later group in the slot).
        pub group_created_ns: AtomicU64,
        pub shard_size: AtomicU64,
        pub linger_ns: AtomicU64,
        pub lease_ns: AtomicU64,
        pub max_retries: AtomicU32,
        /// The partition the splitter looks at first in its next round.
        pub rr: AtomicU32,
        /// The id the next task gets.
        pub next_task_id: AtomicU64,
        /// The todo queue: a ring of task slots.
        pub todo_head: AtomicU32,
        pub todo_len: AtomicU32,
        pub doing: AtomicU32,
        pub dead: AtomicU32,
        /// When the next sweep for dead members and expired leases is due
        /// (`CLOCK_MONOTONIC` ns).
        pub next_sweep_ns: AtomicU64,
        pub done_tasks: AtomicU64,
        pub failed_tasks: AtomicU64,
        /// Tasks put back because their member died or their lease expired.
        pub requeued_tasks: AtomicU64,
        /// Where the search for a free task slot starts.
        pub free_hint: AtomicU32,
        pub _pad0: AtomicU32,
        pub _pad: [AtomicU64; 8],
    }
}
const _: () = assert!(size_of::<ShardHeader>() == 192);

crate::shm::shared_struct! {
    /// Everything the registry keeps about one shard-managed group.
    pub(crate) struct ShardGroup {
        pub header: ShardHeader,
        /// Per partition: the first offset not yet cut into a shard.
        pub next_cut: [AtomicU64; MAX_PARTITIONS],
        /// Per partition: the slot and id of the shard cut last.
        pub last_cut_slot: [AtomicU32; MAX_PARTITIONS],
        pub last_cut_id: [AtomicU64; MAX_PARTITIONS],
        pub members: [MemberSlot; MAX_MEMBERS],
        /// The todo ring's slots.
        pub todo: [AtomicU32; MAX_TASKS],
        pub tasks: [TaskSlot; MAX_TASKS],
    }
}

crate::shm::shared_struct! {
    /// The shard area: at [`AREA_AT`] in the store's registry.
    pub(crate) struct ShardArea {
        pub groups: [ShardGroup; MAX_SHARD_GROUPS],
    }
}

const _: () = assert!(AREA_AT + size_of::<ShardArea>() as u64 <= crate::store::REGISTRY_BYTES);

pub(crate) fn area<'a>(locked: &Locked<'a>) -> Result<&'a ShardArea, StoreError> {
    locked.registry(AREA_AT)
}

impl ShardGroup {
    /// The task in `slot`, bounds-checked (slots come from the file).
    pub(crate) fn task(&self, slot: u32) -> Result<&TaskSlot, StoreError> {
        self.tasks
            .get(slot as usize)
            .ok_or_else(|| StoreError::corrupted(format_args!("task slot {slot} out of range")))
    }

    /// The member in `slot`, bounds-checked.
    pub(crate) fn member(&self, slot: u32) -> Result<&MemberSlot, StoreError> {
        self.members
            .get(slot as usize)
            .ok_or_else(|| StoreError::corrupted(format_args!("member slot {slot} out of range")))
    }

    /// The todo queue's length, checked.
    fn todo_len(&self) -> Result<u32, StoreError> {
        let len = self.header.todo_len.load(Relaxed);
        if len as usize > MAX_TASKS || self.header.todo_head.load(Relaxed) as usize >= MAX_TASKS {
            return Err(StoreError::corrupted("the todo queue's bounds are out of range"));
        }
        Ok(len)
    }

    pub(crate) fn todo_is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.todo_len()? == 0)
    }

    /// Appends task slot `slot` to the todo queue.
    pub(crate) fn push_back(&self, slot: u32) -> Result<(), StoreError> {
        let len = self.todo_len()?;
        if len as usize == MAX_TASKS {
            return Err(StoreError::corrupted("the todo queue is fuller than the task table"));
        }
        let at = (self.header.todo_head.load(Relaxed) as usize + len as usize) % MAX_TASKS;
        self.todo[at].store(slot, Relaxed);
        self.header.todo_len.store(len + 1, Relaxed);
        Ok(())
    }

    /// Puts task slot `slot` at the front of the todo queue.
    pub(crate) fn push_front(&self, slot: u32) -> Result<(), StoreError> {
        let len = self.todo_len()?;
        if len as usize == MAX_TASKS {
            return Err(StoreError::corrupted("the todo queue is fuller than the task table"));
        }
        let head = (self.header.todo_head.load(Relaxed) as usize + MAX_TASKS - 1) % MAX_TASKS;
        self.todo[head].store(slot, Relaxed);
        self.header.todo_head.store(head as u32, Relaxed);
        self.header.todo_len.store(len + 1, Relaxed);
        Ok(())
    }

    /// Takes the task slot at the front of the todo queue.
    pub(crate) fn pop_front(&self) -> Result<Option<u32>, StoreError> {
        let len = self.todo_len()?;
        if len == 0 {
            return Ok(None);
        }
        let head = self.header.todo_head.load(Relaxed) as usize;
        let slot = self.todo[head].load(Relaxed);
        self.header.todo_head.store(((head + 1) % MAX_TASKS) as u32, Relaxed);
        self.header.todo_len.store(len - 1, Relaxed);
        Ok(Some(slot))
    }

    /// Takes the todo entry at position `at` (0: the front) out of the
    /// queue, keeping the order of the others; returns its slot.
    pub(crate) fn take_todo_at(&self, at: usize) -> Result<u32, StoreError> {
        let (head, len) = (self.header.todo_head.load(Relaxed) as usize, self.todo_len()? as usize);
        if at >= len {
            return Err(StoreError::corrupted("a todo position past the queue's end"));
        }
        let slot = self.todo[(head + at) % MAX_TASKS].load(Relaxed);
        for i in at..len - 1 {
            let next = self.todo[(head + i + 1) % MAX_TASKS].load(Relaxed);
            self.todo[(head + i) % MAX_TASKS].store(next, Relaxed);
        }
        self.header.todo_len.store(len as u32 - 1, Relaxed);
        Ok(slot)
    }

    /// The todo queue's slots, front first.
    pub(crate) fn todo_slots(&self) -> Result<Vec<u32>, StoreError> {
        let (head, len) = (self.header.todo_head.load(Relaxed) as usize, self.todo_len()? as usize);
        Ok((0..len).map(|i| self.todo[(head + i) % MAX_TASKS].load(Relaxed)).collect())
    }

    /// A free task slot, or `None` if the table is full.
    pub(crate) fn free_slot(&self) -> Option<u32> {
        let hint = self.header.free_hint.load(Relaxed) as usize % MAX_TASKS;
        let found = (0..MAX_TASKS)
            .map(|i| (hint + i) % MAX_TASKS)
            .find(|&s| self.tasks[s].state.load(Relaxed) == task::FREE)?;
        self.header.free_hint.store(((found + 1) % MAX_TASKS) as u32, Relaxed);
        Some(found as u32)
    }

    /// The id the next task gets, taken.
    fn next_id(&self) -> Result<u64, StoreError> {
        let h = &self.header;
        let id = h.next_task_id.load(Relaxed).max(1);
        let next = id.checked_add(1).ok_or_else(|| StoreError::corrupted("the task id counter overflowed"))?;
        h.next_task_id.store(next, Relaxed);
        Ok(id)
    }

    /// Makes a new task for shard `(partition, [start, end))` in a free
    /// slot, linked after the partition's previous shard, and queues it.
    /// `None` if the task table is full.
    pub(crate) fn make_task(&self, partition: u32, start: u64, end: u64) -> Result<Option<u32>, StoreError> {
        let Some(slot) = self.free_slot() else {
            return Ok(None);
        };
        let id = self.next_id()?;
        let t = &self.tasks[slot as usize];
        t.id.store(id, Relaxed);
        t.start.store(start, Relaxed);
        t.end.store(end, Relaxed);
        t.lease_ns.store(0, Relaxed);
        t.next_id.store(0, Relaxed);
        t.next_slot.store(NIL, Relaxed);
        t.partition.store(partition, Relaxed);
        t.retries.store(0, Relaxed);
        t.member.store(NIL, Relaxed);
        t.state.store(task::TODO, Relaxed);
        self.link_after_last(partition, slot, id)?;
        self.push_back(slot)?;
        Ok(Some(slot))
    }

    /// Cuts task `slot` (doing) at `at`, strictly inside its shard: the
    /// slot keeps `[start, at)`, and a new task in a free slot takes
    /// `[at, end)`, doing for the same member with the same retries and a
    /// lease until `lease_ns`, linked right after it in its partition.
    /// `None` if the task table is full (nothing changed).
    pub(crate) fn split_task(&self, slot: u32, at: u64, lease_ns: u64) -> Result<Option<u32>, StoreError> {
        let Some(rest_slot) = self.free_slot() else {
            return Ok(None);
        };
        let id = self.next_id()?;
        let first = self.task(slot)?;
        let rest = &self.tasks[rest_slot as usize];
        let partition = first.partition.load(Relaxed);
        rest.id.store(id, Relaxed);
        rest.start.store(at, Relaxed);
        rest.end.store(first.end.load(Relaxed), Relaxed);
        rest.lease_ns.store(lease_ns, Relaxed);
        rest.next_id.store(first.next_id.load(Relaxed), Relaxed);
        rest.next_slot.store(first.next_slot.load(Relaxed), Relaxed);
        rest.partition.store(partition, Relaxed);
        rest.retries.store(first.retries.load(Relaxed), Relaxed);
        rest.member.store(first.member.load(Relaxed), Relaxed);
        rest.state.store(task::DOING, Relaxed);
        first.end.store(at, Relaxed);
        first.next_id.store(id, Relaxed);
        first.next_slot.store(rest_slot, Relaxed);
        let p = partition as usize;
        if self.last_cut_slot[p].load(Relaxed) == slot && self.last_cut_id[p].load(Relaxed) == first.id.load(Relaxed) {
            self.last_cut_slot[p].store(rest_slot, Relaxed);
            self.last_cut_id[p].store(id, Relaxed);
        }
        self.header.doing.fetch_add(1, Relaxed);
        Ok(Some(rest_slot))
    }

    /// Links the task `(slot, id)` after the shard cut last in `partition`,
    /// and makes it the last one.
    pub(crate) fn link_after_last(&self, partition: u32, slot: u32, id: u64) -> Result<(), StoreError> {
        let p = partition as usize;
        let (last_slot, last_id) = (self.last_cut_slot[p].load(Relaxed), self.last_cut_id[p].load(Relaxed));
        if last_slot != NIL {
            let last = self.task(last_slot)?;
            if last.id.load(Relaxed) == last_id && last.state.load(Relaxed) != task::FREE {
                last.next_id.store(id, Relaxed);
                last.next_slot.store(slot, Relaxed);
            }
        }
        self.last_cut_slot[p].store(slot, Relaxed);
        self.last_cut_id[p].store(id, Relaxed);
        Ok(())
    }

    /// Clears everything: the group's record becomes free.
    pub(crate) fn reset(&self) {
        let h = &self.header;
        h.state.store(FREE, Relaxed);
        for word in [&h.todo_head, &h.todo_len, &h.doing, &h.dead, &h.rr, &h.free_hint] {
            word.store(0, Relaxed);
        }
        for word in [&h.next_task_id, &h.next_sweep_ns, &h.done_tasks, &h.failed_tasks, &h.requeued_tasks] {
            word.store(0, Relaxed);
        }
        for p in 0..MAX_PARTITIONS {
            self.next_cut[p].store(0, Relaxed);
            self.last_cut_slot[p].store(NIL, Relaxed);
            self.last_cut_id[p].store(0, Relaxed);
        }
        for m in &self.members {
            m.state.store(FREE, Relaxed);
        }
        for t in &self.tasks {
            t.state.store(task::FREE, Relaxed);
        }
    }
}

/// Clears a member's record for a new member.
pub(crate) fn reset_member(m: &MemberSlot) {
    for word in [&m.last_seen_ns, &m.tasks_held, &m.tasks_done] {
        word.store(0, Relaxed);
    }
    for p in 0..MAX_PARTITIONS {
        m.done_batches[p].store(0, Relaxed);
        m.done_rows[p].store(0, Relaxed);
    }
}
