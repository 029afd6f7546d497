//! The shard manager: DLRover's streaming data shard manager, kept in the
//! shared file so no master process is needed, with its known defects fixed.
//!
//! For one consumer group of a stream, the manager cuts the stream into
//! shards `(partition, [start, end))` and hands them to the group's members
//! as tasks. Members share the partitions this way; different groups each
//! see everything.
//!
//! - **Splitter.** Per partition, the first offset not yet cut; a round
//!   cuts one shard from each partition in turn (round-robin), of
//!   `shard_size` batches or rows. A partial shard is cut only when the
//!   stream is closed or the partition has been idle longer than `linger`.
//!   A shard is cut once and never handed out twice while nothing fails.
//! - **Tasks and leases.** `get_task` takes the front of the todo queue
//!   (cutting a round first if it is empty) and leases it. `report(Done)`
//!   finishes it; `report(Failed)` puts it at the back of todo, and after
//!   `max_retries` failures into the dead letters. A member that dies (its
//!   store client's liveness lock is gone) or whose lease expires has its
//!   tasks put back at the front of todo.
//! - **Commits.** The group's committed offset in a partition is the end of
//!   the contiguous run of finished shards (done, or given up as dead
//!   letters); retention frees data up to it. Each task links to the shard
//!   cut after it in its partition, so the run advances in O(1) per shard.
//! - **Checkpoints.** [`ShardManager::checkpoint`] copies the state under
//!   the lock and writes it outside it (the live state is never disturbed);
//!   [`ShardManager::restore`] puts doing and todo back into todo, doing
//!   first, each shard keeping its partition.

mod checkpoint;
mod registry;

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

pub use checkpoint::{Checkpoint, ShardUnit, TaskRecord};
pub use registry::{MAX_MEMBERS, MAX_SHARD_GROUPS, MAX_TASKS};

use crate::arrow::{now_ns, BatchReader};
use crate::error::{CheckpointError, StoreError, StreamError};
use crate::store::{Locked, ObjectState, Store};
use crate::stream::registry::{self as streams, GroupSlot, StreamRecord, CLOSED};
use crate::stream::{join_group, Result, StartAt, Stream, StreamBatch};
use registry::{task, ShardGroup, FREE, LIVE, NIL};

/// How often `get_task` looks for dead members and expired leases.
const SWEEP: Duration = Duration::from_millis(100);

/// How big a shard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSize {
    /// This many batches.
    Batches(u64),
    /// At least this many rows, in whole batches.
    Rows(u64),
}

/// How a shard-managed group works. The first member to join a group sets
/// it; later members use the one in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// Shard size (default: 16 batches).
    pub shard_size: ShardSize,
    /// How long a partition must be idle before a partial shard is cut
    /// (default 100 ms).
    pub linger: Duration,
    /// How long a member holds a task before it is given to someone else
    /// (default 30 s).
    pub lease: Duration,
    /// Failures before a task becomes a dead letter (default 3).
    pub max_retries: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            shard_size: ShardSize::Batches(16),
            linger: Duration::from_millis(100),
            lease: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

/// A task: one shard to process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Monotonic within the group.
    pub id: u64,
    /// The shard's partition.
    pub partition: u32,
    /// Its first offset.
    pub start: u64,
    /// One past its last offset.
    pub end: u64,
    /// How often it failed before.
    pub retries: u32,
    slot: u32,
}

/// How a task went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: never handed out again.
    Done,
    /// Not processed: handed out again, or a dead letter after too many failures.
    Failed,
}

/// What [`ShardManager::next_task`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A task to process.
    Task(Task),
    /// No task before the timeout.
    TimedOut,
    /// The stream is closed and every shard is done (or a dead letter).
    End,
}

/// A member of a shard-managed consumer group.
pub struct ShardManager {
    stream: Stream,
    group: String,
    /// The shard group's slot in the shard area, and what identifies it.
    index: usize,
    group_slot: usize,
    group_created_ns: u64,
    member: u32,
    /// When this member joined: tells it from a later member in the same
    /// slot (after a restore, say), even in the same process.
    joined_ns: u64,
    reader: BatchReader,
}

impl std::fmt::Debug for ShardManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardManager")
            .field("stream", &self.stream.name())
            .field("group", &self.group)
            .field("member", &self.member)
            .finish()
    }
}

/// What one locked step of `get_task` found.
enum Step {
    Task(Task),
    Nothing,
    End,
}

impl ShardManager {
    /// Joins consumer group `group` of `stream` as a new member. The group
    /// is made if it does not exist (starting at the oldest retained
    /// batch), and its shard state with `config`.
    pub fn join(stream: &Stream, group: &str, config: ShardConfig) -> Result<ShardManager> {
        check_config(&config)?;
        streams::check_name("group", group)?;
        let (index, group_slot, group_created_ns, member) = stream.with_record(|l, record| {
            let (g, created) = join_group(record, group, StartAt::Oldest)?;
            let index = match find(l, stream, g, created)? {
                Some(index) => index,
                None => {
                    let (index, sg) = allocate(l)?;
                    init(sg, stream, record, g, created, &config)?;
                    sg.header.state.store(LIVE, Release);
                    index
                }
            };
            let member = add_member(l, &registry::area(l)?.groups[index])?;
            Ok((index, g, created, member))
        })?;
        Ok(ShardManager {
            stream: stream.clone(),
            group: group.to_string(),
            index,
            group_slot,
            group_created_ns,
            member: member.0,
            joined_ns: member.1,
            reader: BatchReader::new(stream.store()).expect_schema(stream.schema().clone()),
        })
    }

    /// The stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Runs `f` under the lock on this group's records, after checking they
    /// are still this group's and that this member is still one.
    fn with_group<R>(
        &self,
        f: impl FnOnce(&Locked<'_>, &StreamRecord, &GroupSlot, &ShardGroup) -> Result<R>,
    ) -> Result<R> {
        self.stream.with_record(|l, record| {
            let sg = &registry::area(l)?.groups[self.index];
            let h = &sg.header;
            let group =
                record.groups.get(self.group_slot).ok_or_else(|| StoreError::corrupted("group slot out of range"))?;
            let ours = h.state.load(Relaxed) == LIVE
                && h.stream_namespace.load(Relaxed) == self.stream.inner().namespace
                && h.group_slot.load(Relaxed) as usize == self.group_slot
                && h.group_created_ns.load(Relaxed) == self.group_created_ns
                && group.state.load(Relaxed) == LIVE
                && group.created_ns.load(Relaxed) == self.group_created_ns;
            if !ours {
                return Err(StreamError::NoSuchGroup {
                    stream: self.stream.name().to_string(),
                    group: self.group.clone(),
                });
            }
            f(l, record, group, sg)
        })
    }

    /// Takes the next task without waiting: `None` if there is none now
    /// (see [`next_task`](Self::next_task) to wait, and to learn of the end).
    pub fn get_task(&mut self) -> Result<Option<Task>> {
        Ok(match self.step()? {
            Step::Task(task) => Some(task),
            Step::Nothing | Step::End => None,
        })
    }

    /// Takes the next task, waiting up to `timeout` for one; [`Next::End`]
    /// once the stream is closed and every shard is finished.
    pub fn next_task(&mut self, timeout: Duration) -> Result<Next> {
        let deadline = Instant::now().checked_add(timeout);
        let stream = self.stream.clone();
        let store = stream.store();
        let cell = store.registry_cell(streams::stream_cell_offset(stream.inner().slot))?;
        loop {
            let left = deadline.map_or(SWEEP, |d| d.saturating_duration_since(Instant::now()));
            // Slices: a partition can turn idle (linger) and a member can die
            // without anyone notifying.
            let found = cell.wait_until(left.min(SWEEP), store.wait_strategy(), || {
                Ok::<_, StreamError>(match self.step()? {
                    Step::Task(task) => Some(Next::Task(task)),
                    Step::End => Some(Next::End),
                    Step::Nothing => None,
                })
            })?;
            match found {
                Some(next) => return Ok(next),
                None if left.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) => return Ok(Next::TimedOut),
                // A producer that died mid-append leaves a batch being
                // written, which a shard of rows cannot be cut past until
                // recovery removes it.
                None => {
                    store.recover_dead_clients()?;
                }
            }
        }
    }

    fn step(&mut self) -> Result<Step> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        self.with_group(|l, record, group, sg| {
            let now = now_ns();
            let me = check_member(l, sg, (member, joined_ns))?;
            me.last_seen_ns.store(now, Relaxed);
            let h = &sg.header;
            if now >= h.next_sweep_ns.load(Relaxed) {
                sweep(l, sg, now)?;
                h.next_sweep_ns.store(now + SWEEP.as_nanos() as u64, Relaxed);
            }
            if sg.todo_is_empty()? {
                cut(l, record, sg, now)?;
            }
            if let Some(slot) = sg.pop_front()? {
                let t = sg.task(slot)?;
                if t.state.load(Relaxed) != task::TODO
                    || t.partition.load(Relaxed) >= record.slot.partitions.load(Relaxed)
                {
                    return Err(
                        StoreError::corrupted(format_args!("todo names task slot {slot}, which is not todo")).into()
                    );
                }
                t.state.store(task::DOING, Relaxed);
                t.member.store(member, Relaxed);
                t.lease_ns.store(now.saturating_add(h.lease_ns.load(Relaxed)), Relaxed);
                h.doing.fetch_add(1, Relaxed);
                me.tasks_held.fetch_add(1, Relaxed);
                let task = Task {
                    id: t.id.load(Relaxed),
                    partition: t.partition.load(Relaxed),
                    start: t.start.load(Relaxed),
                    end: t.end.load(Relaxed),
                    retries: t.retries.load(Relaxed),
                    slot,
                };
                return Ok(Step::Task(task));
            }
            if finished(record, group, sg)? {
                return Ok(Step::End);
            }
            let _ = group;
            Ok(Step::Nothing)
        })
    }

    /// Reports how `task` went. `Done` finishes it (and moves the group's
    /// committed offset over every contiguous finished shard, which lets
    /// retention free them); `Failed` hands it out again, or makes it a dead
    /// letter after `max_retries` failures. Fails with
    /// [`StreamError::TaskNotHeld`] if this member no longer holds the task.
    pub fn report(&mut self, task: Task, outcome: Outcome) -> Result<()> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        let requeued = self.with_group(|l, record, group, sg| {
            let me = check_member(l, sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            let held = t.id.load(Relaxed) == task.id
                && t.state.load(Relaxed) == task::DOING
                && t.member.load(Relaxed) == member;
            if !held {
                return Err(StreamError::TaskNotHeld(task.id));
            }
            // Everything that can fail first, then the changes.
            let p = t.partition.load(Relaxed) as usize;
            if p >= record.slot.partitions.load(Relaxed) as usize || p >= crate::stream::MAX_PARTITIONS {
                return Err(StoreError::corrupted(format_args!("task {} names partition {p}", task.id)).into());
            }
            let (start, end) = (t.start.load(Relaxed), t.end.load(Relaxed));
            let rows = match outcome {
                Outcome::Done => rows_in(l, &self.stream, p as u32, start, end)?,
                Outcome::Failed => 0,
            };
            let h = &sg.header;
            h.doing.fetch_sub(1, Relaxed);
            me.tasks_held.fetch_sub(1, Relaxed);
            me.last_seen_ns.store(now_ns(), Relaxed);
            match outcome {
                Outcome::Done => {
                    t.state.store(task::DONE, Relaxed);
                    h.done_tasks.fetch_add(1, Relaxed);
                    me.tasks_done.fetch_add(1, Relaxed);
                    me.done_batches[p].fetch_add(end.saturating_sub(start), Relaxed);
                    me.done_rows[p].fetch_add(rows, Relaxed);
                    settle(l, record, group, sg, task.slot)?;
                    Ok(false)
                }
                Outcome::Failed => {
                    h.failed_tasks.fetch_add(1, Relaxed);
                    let retries = t.retries.load(Relaxed).saturating_add(1);
                    t.retries.store(retries, Relaxed);
                    t.member.store(NIL, Relaxed);
                    if retries > h.max_retries.load(Relaxed) {
                        t.state.store(task::DEAD, Relaxed);
                        h.dead.fetch_add(1, Relaxed);
                        settle(l, record, group, sg, task.slot)?;
                        Ok(false)
                    } else {
                        t.state.store(task::TODO, Relaxed);
                        sg.push_back(task.slot)?;
                        Ok(true)
                    }
                }
            }
        })?;
        if requeued {
            self.notify();
        }
        Ok(())
    }

    /// Gives a task back to the group's queue front without counting a
    /// failure (for a member that stops before processing it).
    pub fn release(&mut self, task: Task) -> Result<()> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        self.with_group(|l, _, _, sg| {
            let me = check_member(l, sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            if t.id.load(Relaxed) != task.id || t.state.load(Relaxed) != task::DOING || t.member.load(Relaxed) != member
            {
                return Err(StreamError::TaskNotHeld(task.id));
            }
            me.tasks_held.fetch_sub(1, Relaxed);
            requeue(sg, &[task.slot])?;
            Ok(())
        })?;
        self.notify();
        Ok(())
    }

    /// Extends this member's lease on `task` by the group's lease time from now.
    pub fn extend_lease(&mut self, task: Task) -> Result<()> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        self.with_group(|l, _, _, sg| {
            check_member(l, sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            if t.id.load(Relaxed) != task.id || t.state.load(Relaxed) != task::DOING || t.member.load(Relaxed) != member
            {
                return Err(StreamError::TaskNotHeld(task.id));
            }
            t.lease_ns.store(now_ns().saturating_add(sg.header.lease_ns.load(Relaxed)), Relaxed);
            Ok(())
        })
    }

    /// The batches of `task`'s shard, in offset order, waiting up to
    /// `timeout` in all for batches not yet appended or sealed; `None` if
    /// they did not all come in time. Offsets without a batch (a producer
    /// died mid-append) are passed; so are batches a limit or `DropOldest`
    /// already dropped.
    pub fn read_task(&mut self, task: &Task, timeout: Duration) -> Result<Option<Vec<StreamBatch>>> {
        let partitions = self.stream.partitions();
        if task.partition >= partitions {
            return Err(StreamError::NoSuchPartition { partition: task.partition, partitions });
        }
        if task.start > task.end {
            return Err(StreamError::InvalidConfig(format!("a task from {} to {}", task.start, task.end)));
        }
        let deadline = Instant::now().checked_add(timeout);
        let stream = self.stream.clone();
        let store = stream.store();
        let cell = store.registry_cell(streams::partition_cell_offset(stream.inner().slot, task.partition as usize))?;
        let mut out = Vec::with_capacity((task.end - task.start).min(1024) as usize);
        let mut holes = 0;
        let mut offset = task.start;
        while offset < task.end {
            let id = stream.object_id(task.partition, offset);
            loop {
                let mut unsealed = false;
                let left = deadline.map_or(SWEEP, |d| d.saturating_duration_since(Instant::now()));
                // `Ok(view)`: the batch; `Err(next)`: nothing here, go on at `next`.
                let found = cell.wait_until(left.min(SWEEP), store.wait_strategy(), || {
                    stream.with_record(|l, record| {
                        let (tail, head) = streams::range(&record.partitions[task.partition as usize])?;
                        if offset < tail {
                            return Ok(Some(Err(tail))); // dropped by a limit or DropOldest
                        }
                        if offset >= head {
                            return Ok(None); // not appended yet
                        }
                        if let Some(view) = l.view(id)? {
                            return Ok(Some(Ok(view)));
                        }
                        if l.object(id)?.is_some() {
                            unsealed = true;
                            return Ok(None);
                        }
                        Ok(Some(Err(offset + 1))) // a hole
                    })
                })?;
                match found {
                    Some(Ok(view)) => {
                        let (batch, meta) = self.reader.decode(view)?;
                        out.push(StreamBatch { partition: task.partition, offset, append_ns: meta.append_ns, batch });
                        offset += 1;
                        break;
                    }
                    Some(Err(next)) => {
                        if next == offset + 1 {
                            // A hole. More of them than producer deaths
                            // could explain is corruption.
                            holes += 1;
                            if holes > streams::HOLE_BUDGET {
                                return Err(StoreError::corrupted(format_args!(
                                    "task {} covers more than {} offsets without batches",
                                    task.id,
                                    streams::HOLE_BUDGET
                                ))
                                .into());
                            }
                        }
                        offset = next.max(offset + 1);
                        break;
                    }
                    None if left.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                    None if unsealed => {
                        store.recover_dead_clients()?;
                    }
                    None => {}
                }
            }
        }
        Ok(Some(out))
    }

    /// The group's state: tasks, dead letters, members, offsets.
    pub fn stats(&self) -> Result<ShardStats> {
        self.with_group(|_, record, group, sg| group_stats(&self.stream, record, group, sg))
    }

    /// Writes a checkpoint of the group to `path` (atomically): the state is
    /// copied under the lock and written after it is released, so taking a
    /// checkpoint never disturbs the live state. Returns what was written.
    pub fn checkpoint(&self, path: impl AsRef<Path>) -> Result<Checkpoint> {
        let checkpoint =
            self.with_group(|_, record, group, sg| snapshot(&self.stream, &self.group, record, group, sg))?;
        checkpoint.write(path.as_ref())?;
        Ok(checkpoint)
    }

    /// Restores group `group` of `stream` from the checkpoint at `path` and
    /// joins it. Doing and todo tasks both go back into todo, doing first,
    /// each shard keeping its partition, so every batch not known to be done
    /// is processed again. The group's shard state, if any, is replaced.
    pub fn restore(stream: &Stream, group: &str, path: impl AsRef<Path>) -> Result<ShardManager> {
        let checkpoint = Checkpoint::read(path.as_ref())?;
        let found = format!(
            "stream {:?} ({} partitions), group {:?}",
            checkpoint.stream, checkpoint.partitions, checkpoint.group
        );
        let expected = format!("stream {:?} ({} partitions), group {group:?}", stream.name(), stream.partitions());
        if checkpoint.stream != stream.name()
            || checkpoint.partitions != stream.partitions()
            || checkpoint.group != group
        {
            return Err(CheckpointError::Mismatch { found, expected }.into());
        }
        let config = ShardConfig {
            shard_size: match checkpoint.unit {
                ShardUnit::Batches => ShardSize::Batches(checkpoint.shard_size),
                ShardUnit::Rows => ShardSize::Rows(checkpoint.shard_size),
            },
            linger: Duration::from_nanos(checkpoint.linger_ns),
            lease: Duration::from_nanos(checkpoint.lease_ns),
            max_retries: checkpoint.max_retries,
        };
        check_config(&config)?;
        let (index, group_slot, group_created_ns, member) = stream.with_record(|l, record| {
            let (g, created) = join_group(record, group, StartAt::Oldest)?;
            let index = match find(l, stream, g, created)? {
                Some(index) => index,
                None => allocate(l)?.0,
            };
            let sg = &registry::area(l)?.groups[index];
            sg.reset();
            init(sg, stream, record, g, created, &config)?;
            load(sg, &record.groups[g], &checkpoint)?;
            sg.header.state.store(LIVE, Release);
            let member = add_member(l, sg)?;
            streams::release_consumed(l, record)?;
            Ok((index, g, created, member))
        })?;
        let manager = ShardManager {
            stream: stream.clone(),
            group: group.to_string(),
            index,
            group_slot,
            group_created_ns,
            member: member.0,
            joined_ns: member.1,
            reader: BatchReader::new(stream.store()).expect_schema(stream.schema().clone()),
        };
        manager.notify();
        Ok(manager)
    }

    /// Leaves the group: the tasks this member holds go back to the front
    /// of todo. Dropping the manager does the same.
    pub fn leave(mut self) -> Result<()> {
        self.leave_group()
    }

    fn leave_group(&mut self) -> Result<()> {
        let member = std::mem::replace(&mut self.member, NIL);
        if member == NIL {
            return Ok(());
        }
        let joined_ns = self.joined_ns;
        self.with_group(|l, _, _, sg| {
            // Only our own slot: after a restore it may be someone else's.
            let Ok(me) = check_member(l, sg, (member, joined_ns)) else {
                return Ok(());
            };
            let held: Vec<u32> = (0..MAX_TASKS as u32)
                .filter(|&s| {
                    let t = &sg.tasks[s as usize];
                    t.state.load(Relaxed) == task::DOING && t.member.load(Relaxed) == member
                })
                .collect();
            requeue(sg, &held)?;
            me.state.store(FREE, Release);
            Ok(())
        })?;
        self.notify();
        Ok(())
    }

    /// Wakes members waiting for a task (they wait on the stream's cell).
    fn notify(&self) {
        self.stream.store().notify_registry_cell(streams::stream_cell_offset(self.stream.inner().slot));
    }
}

impl Drop for ShardManager {
    fn drop(&mut self) {
        // If this fails (the store or group is gone), the sweep of another
        // member requeues the tasks when this process's client is released.
        let _ = self.leave_group();
    }
}

fn check_config(config: &ShardConfig) -> Result<()> {
    let size = match config.shard_size {
        ShardSize::Batches(n) | ShardSize::Rows(n) => n,
    };
    if size == 0 || config.lease.is_zero() {
        return Err(StreamError::InvalidConfig("a shard size and a lease must be above zero".into()));
    }
    Ok(())
}

/// The live shard group managing stream group `(g, created)`.
fn find(l: &Locked<'_>, stream: &Stream, g: usize, created: u64) -> Result<Option<usize>> {
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
fn allocate<'a>(l: &Locked<'a>) -> Result<(usize, &'a ShardGroup)> {
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
fn group_gone(group: Option<&GroupSlot>, created: u64) -> bool {
    match group {
        Some(g) => g.state.load(Relaxed) != streams::LIVE || g.created_ns.load(Relaxed) != created,
        None => true,
    }
}

/// Sets a fresh shard group's identity, configuration and splitter (which
/// starts at the group's committed offsets).
fn init(
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
fn add_member(l: &Locked<'_>, sg: &ShardGroup) -> Result<(u32, u64)> {
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
    let joined_ns = now_ns();
    member.joined_ns.store(joined_ns, Relaxed);
    member.state.store(LIVE, Release);
    Ok((m as u32, joined_ns))
}

/// This member's record, checked to be still this client's.
fn check_member<'a>(
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
fn requeue(sg: &ShardGroup, slots: &[u32]) -> Result<()> {
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
fn sweep(l: &Locked<'_>, sg: &ShardGroup, now: u64) -> Result<()> {
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
fn cut(l: &Locked<'_>, record: &StreamRecord, sg: &ShardGroup, now: u64) -> Result<()> {
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
fn finished(record: &StreamRecord, _group: &GroupSlot, sg: &ShardGroup) -> Result<bool> {
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
fn settle(l: &Locked<'_>, record: &StreamRecord, group: &GroupSlot, sg: &ShardGroup, slot: u32) -> Result<()> {
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
fn rows_in(l: &Locked<'_>, stream: &Stream, p: u32, start: u64, end: u64) -> Result<u64> {
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

fn record_of(t: &registry::TaskSlot) -> TaskRecord {
    TaskRecord {
        id: t.id.load(Relaxed),
        partition: t.partition.load(Relaxed),
        start: t.start.load(Relaxed),
        end: t.end.load(Relaxed),
        retries: t.retries.load(Relaxed),
    }
}

/// A copy of the group's state, taken under the lock.
fn snapshot(
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
        taken_ns: now_ns(),
    })
}

/// Loads a checkpoint's state into a fresh shard group.
fn load(sg: &ShardGroup, group: &GroupSlot, c: &Checkpoint) -> Result<()> {
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

/// A shard-managed group's numbers, as [`ShardManager::stats`] and
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
    /// When it was last seen (ns since the epoch).
    pub last_seen_ns: u64,
}

fn group_stats(stream: &Stream, record: &StreamRecord, group: &GroupSlot, sg: &ShardGroup) -> Result<ShardStats> {
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
    let _ = record;
    Ok(ShardStats {
        stream: stream.name().to_string(),
        group: streams::read_name(&group.name, &group.name_len)?,
        shard_size: h.shard_size.load(Relaxed),
        unit: if h.unit.load(Relaxed) == 1 { "rows" } else { "batches" },
        todo: h.todo_len.load(Relaxed) as u64,
        doing: h.doing.load(Relaxed) as u64,
        done: h.done_tasks.load(Relaxed),
        failed: h.failed_tasks.load(Relaxed),
        requeued: h.requeued_tasks.load(Relaxed),
        next_cut: (0..partitions).map(|p| sg.next_cut[p].load(Relaxed)).collect(),
        committed: (0..partitions).map(|p| group.committed[p].load(Relaxed)).collect(),
        dead_letters,
        members,
    })
}

/// Every live shard-managed group in `store`.
pub fn list(store: &Store) -> Result<Vec<ShardStats>> {
    let found = store.locked(|l| -> Result<_> {
        let area = registry::area(l)?;
        let reg = streams::registry(l)?;
        let mut found = Vec::new();
        for sg in &area.groups {
            let h = &sg.header;
            if h.state.load(Relaxed) != LIVE {
                continue;
            }
            if let Some(r) = reg.streams.get(h.stream_slot.load(Relaxed) as usize) {
                let live = r.slot.state.load(Relaxed) == streams::LIVE
                    && r.slot.namespace.load(Relaxed) == h.stream_namespace.load(Relaxed);
                if live {
                    found.push(streams::read_name(&r.slot.name, &r.slot.name_len)?);
                }
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
            Err(e) => return Err(e),
        };
        let stats = stream.with_record(|l, record| {
            let area = registry::area(l)?;
            let mut stats = Vec::new();
            for sg in &area.groups {
                let h = &sg.header;
                if h.state.load(Relaxed) != LIVE || h.stream_namespace.load(Relaxed) != stream.inner().namespace {
                    continue;
                }
                if let Some(group) = record.groups.get(h.group_slot.load(Relaxed) as usize) {
                    if group.state.load(Relaxed) == streams::LIVE
                        && group.created_ns.load(Relaxed) == h.group_created_ns.load(Relaxed)
                    {
                        stats.push(group_stats(&stream, record, group, sg)?);
                    }
                }
            }
            Ok(stats)
        })?;
        out.extend(stats);
    }
    Ok(out)
}
