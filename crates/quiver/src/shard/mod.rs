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
//!
//! Files: this one holds [`ShardManager`] and its types; `config` how a
//! group works ([`ShardConfig`]); `steps` the steps
//! run under the lock (splitter, sweep, committed run, checkpoint copies);
//! `registry` the shared structs; `checkpoint` the file format; `stats`
//! what `quiver stat` reports.

mod checkpoint;
mod config;
mod error;
mod lease;
mod registry;
mod stats;
mod steps;

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::time::{Duration, Instant};

pub use checkpoint::{Checkpoint, CheckpointError, ShardUnit, TaskRecord};
pub use config::{ShardConfig, ShardSize};
pub use error::{Result, ShardError};
pub use lease::Heartbeat;
pub use registry::{MAX_MEMBERS, MAX_SHARD_GROUPS, MAX_TASKS};
pub use stats::{known_ends, list, MemberStats, ShardStats};

use stats::group_stats;
use steps::{
    add_member, all_cut, allocate, check_config, check_member, cut, drained, find, finished, init, load, manages,
    requeue, settle, snapshot, sweep, take_share,
};

use crate::arrow::BatchReader;
use crate::shm::clock::monotonic_ns;
use crate::store::StoreError;
use crate::stream::StreamError;
use crate::stream::{GroupKey, StartAt, Stream, StreamBatch, StreamTxn, Taken, HOLE_BUDGET, READ_AHEAD};
use registry::{task, ShardGroup, FREE, LIVE, NIL};

/// How often `get_task` looks for dead members and expired leases.
const SWEEP: Duration = Duration::from_millis(100);

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

/// A fixed share of a group's shards, for members that must see the same
/// shards in the same order on every run ([`ShardManager::next_task_in`]):
/// shard `k` of partition `p` (the one starting at offset `k × shard size`,
/// or inside it after a split) is number `k × partitions + p`, and share
/// `index` of `of` holds the numbers equal to `index` modulo `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Which share, below `of`.
    pub index: u32,
    /// How many shares.
    pub of: u32,
}

/// What [`ShardManager::next_task`] and [`ShardManager::get_task`] return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A task to process.
    Task(Task),
    /// No task before the timeout (none now, for `get_task`).
    TimedOut,
    /// The stream is closed and every shard is done (or a dead letter).
    End,
}

impl Next {
    /// The task, if this is one.
    pub fn task(self) -> Option<Task> {
        match self {
            Next::Task(task) => Some(task),
            Next::TimedOut | Next::End => None,
        }
    }
}

/// One member of a shard-managed consumer group: this process's handle on the
/// group, taking tasks for itself. Every process (or thread) that works on
/// the group joins as a member of its own; the shared state lives in the file.
pub struct ShardManager {
    stream: Stream,
    group: String,
    /// The shard group's slot in the shard area, and the stream group it
    /// manages.
    index: usize,
    group_key: GroupKey,
    member: u32,
    /// When this member joined: tells it from a later member in the same
    /// slot (after a restore, say), even in the same process.
    joined_ns: u64,
    reader: BatchReader,
}

/// The shard group at `index`, checked to still manage the stream group
/// `group_key` (called `group`) of `stream`.
fn group_of<'a>(
    tx: &StreamTxn<'a>,
    stream: &Stream,
    index: usize,
    group_key: GroupKey,
    group: &str,
) -> Result<&'a ShardGroup> {
    let sg = &registry::area(tx.locked())?.groups[index];
    if !manages(sg, stream.identity().1, group_key) || !tx.group_live(group_key) {
        return Err(StreamError::NoSuchGroup { stream: stream.name().to_string(), group: group.to_string() }.into());
    }
    Ok(sg)
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
        let (index, group_key, member) = stream.transaction(|tx| -> Result<_> {
            let l = tx.locked();
            let g = tx.join_group(group, StartAt::Oldest)?;
            let index = match find(l, stream, g)? {
                Some(index) => index,
                None => {
                    let (index, sg) = allocate(l)?;
                    init(sg, tx, stream, g, &config)?;
                    sg.header.state.store(LIVE, Release);
                    index
                }
            };
            let member = add_member(l, &registry::area(l)?.groups[index])?;
            Ok((index, g, member))
        })?;
        Ok(ShardManager {
            stream: stream.clone(),
            group: group.to_string(),
            index,
            group_key,
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
    fn with_group<R>(&self, f: impl FnOnce(&StreamTxn<'_>, &ShardGroup) -> Result<R>) -> Result<R> {
        self.stream.transaction(|tx| -> Result<_> {
            f(tx, group_of(tx, &self.stream, self.index, self.group_key, &self.group)?)
        })
    }

    /// Takes the next task without waiting: [`Next::TimedOut`] if there is
    /// none now, [`Next::End`] once the stream is closed and every shard is
    /// finished (see [`next_task`](Self::next_task) to wait).
    pub fn get_task(&mut self) -> Result<Next> {
        Ok(match self.step(None)? {
            Step::Task(task) => Next::Task(task),
            Step::Nothing => Next::TimedOut,
            Step::End => Next::End,
        })
    }

    /// Takes the next task, waiting up to `timeout` for one; [`Next::End`]
    /// once the stream is closed and every shard is finished.
    pub fn next_task(&mut self, timeout: Duration) -> Result<Next> {
        self.next_task_of(timeout, None)
    }

    /// Takes the next task of `share`, the lowest-numbered of its shards
    /// that is waiting once every shard numbered below it is cut (a lagging
    /// partition holds the others back), cutting shards as the stream
    /// grows, and waiting up to `timeout` for one; [`Next::End`] once the stream is closed and no
    /// shard of the share is left to take (others' may be). The same
    /// members with the same shares then see the same shards in the same
    /// order on every run, as long as the shards are cut at multiples of
    /// the shard size: shards of batches, and a linger longer than any
    /// pause of the producers (a partial shard cut by the linger moves
    /// every later boundary). A shard given back (a dead member's, a
    /// released one) is taken again by its share.
    pub fn next_task_in(&mut self, timeout: Duration, share: Share) -> Result<Next> {
        if share.of == 0 || share.index >= share.of {
            return Err(ShardError::InvalidArgument(format!("share {} of {}", share.index, share.of)));
        }
        self.next_task_of(timeout, Some(share))
    }

    fn next_task_of(&mut self, timeout: Duration, share: Option<Share>) -> Result<Next> {
        let _call = crate::store::CallDeadline::enter(timeout);
        let deadline = Instant::now().checked_add(timeout);
        let stream = self.stream.clone();
        let store = stream.store();
        let cell = stream.stream_cell()?;
        loop {
            let left = deadline.map_or(SWEEP, |d| d.saturating_duration_since(Instant::now()));
            // Slices: a partition can turn idle (linger) and a member can die
            // without anyone notifying.
            let found = cell.wait_until(left.min(SWEEP), store.wait_strategy(), || {
                Ok::<_, ShardError>(match self.step(share)? {
                    Step::Task(task) => Some(Next::Task(task)),
                    Step::End => Some(Next::End),
                    Step::Nothing => None,
                })
            })?;
            match found {
                Some(next) => return Ok(next),
                None if left.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) => {
                    // Not "no task yet" if the store is gone.
                    store.check_present()?;
                    return Ok(Next::TimedOut);
                }
                // A producer that died mid-append leaves a batch being
                // written, which a shard of rows cannot be cut past until
                // recovery removes it.
                None => {
                    store.recover_dead_clients()?;
                }
            }
        }
    }

    /// Whether the stream is closed and no shard is left to take: each is
    /// finished or held by a member (which may still give it back). A
    /// member that finds the group drained has nothing more to wait for
    /// unless a holder fails; [`Next::End`] comes once the held ones are
    /// reported too.
    pub fn drained(&self) -> Result<bool> {
        self.with_group(|tx, sg| drained(tx, &self.stream, sg))
    }

    fn step(&mut self, share: Option<Share>) -> Result<Step> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        let stream = &self.stream;
        self.with_group(|tx, sg| {
            let l = tx.locked();
            // Leases, sweeps and liveness on the monotonic clock; the linger
            // against append times, which are wall-clock times.
            let now = monotonic_ns();
            let me = check_member(l, sg, (member, joined_ns))?;
            me.last_seen_ns.store(now, Relaxed);
            let h = &sg.header;
            if now >= h.next_sweep_ns.load(Relaxed) {
                sweep(l, sg, now)?;
                h.next_sweep_ns.store(now + SWEEP.as_nanos() as u64, Relaxed);
            }
            let taken = match share {
                None => {
                    if sg.todo_is_empty()? {
                        cut(tx, stream, sg)?;
                    }
                    sg.pop_front()?
                }
                Some(_) if h.unit.load(Relaxed) == 1 => {
                    return Err(ShardError::InvalidConfig("a share is of shards of batches, not of rows".into()));
                }
                Some(share) => {
                    // Cut until a shard of the share waits, or nothing more can be.
                    let mut found = take_share(tx, stream, sg, share)?;
                    while found.is_none() && cut(tx, stream, sg)? {
                        found = take_share(tx, stream, sg, share)?;
                    }
                    found
                }
            };
            if let Some(slot) = taken {
                let t = sg.task(slot)?;
                if t.state.load(Relaxed) != task::TODO || t.partition.load(Relaxed) >= stream.partitions() {
                    return Err(
                        StoreError::corrupted(format_args!("todo names task slot {slot}, which is not todo")).into()
                    );
                }
                t.state.store(task::DOING, Relaxed);
                crate::shm::crash::point();
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
            let end = match share {
                None => finished(tx, stream, sg)?,
                // Nothing of the share is todo (just looked), and no more can be cut.
                Some(_) => all_cut(tx, stream, sg)?,
            };
            if end {
                return Ok(Step::End);
            }
            Ok(Step::Nothing)
        })
    }

    /// Reports how `task` went. `Done` finishes it (and moves the group's
    /// committed offset over every contiguous finished shard, which lets
    /// retention free them); `Failed` hands it out again, or makes it a dead
    /// letter after `max_retries` failures. Fails with
    /// [`ShardError::TaskNotHeld`] if this member no longer holds the task.
    pub fn report(&mut self, task: Task, outcome: Outcome) -> Result<()> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        let (group, partitions) = (self.group_key, self.stream.partitions());
        self.with_group(|tx, sg| {
            let me = check_member(tx.locked(), sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            let held = t.id.load(Relaxed) == task.id
                && t.state.load(Relaxed) == task::DOING
                && t.member.load(Relaxed) == member;
            if !held {
                return Err(ShardError::TaskNotHeld(task.id));
            }
            // Everything that can fail first, then the changes.
            let p = t.partition.load(Relaxed);
            if p >= partitions {
                return Err(StoreError::corrupted(format_args!("task {} names partition {p}", task.id)).into());
            }
            let (start, end) = (t.start.load(Relaxed), t.end.load(Relaxed));
            let rows = match outcome {
                Outcome::Done => tx.rows_in(p, start, end)?,
                Outcome::Failed => 0,
            };
            let p = p as usize;
            let h = &sg.header;
            h.doing.fetch_sub(1, Relaxed);
            me.tasks_held.fetch_sub(1, Relaxed);
            me.last_seen_ns.store(monotonic_ns(), Relaxed);
            match outcome {
                Outcome::Done => {
                    t.state.store(task::DONE, Relaxed);
                    crate::shm::crash::point();
                    h.done_tasks.fetch_add(1, Relaxed);
                    me.tasks_done.fetch_add(1, Relaxed);
                    me.done_batches[p].fetch_add(end.saturating_sub(start), Relaxed);
                    me.done_rows[p].fetch_add(rows, Relaxed);
                    settle(tx, group, sg, task.slot)
                }
                Outcome::Failed => {
                    h.failed_tasks.fetch_add(1, Relaxed);
                    let retries = t.retries.load(Relaxed).saturating_add(1);
                    t.retries.store(retries, Relaxed);
                    t.member.store(NIL, Relaxed);
                    if retries > h.max_retries.load(Relaxed) {
                        t.state.store(task::DEAD, Relaxed);
                        h.dead.fetch_add(1, Relaxed);
                        settle(tx, group, sg, task.slot)
                    } else {
                        t.state.store(task::TODO, Relaxed);
                        sg.push_back(task.slot)?;
                        // Members waiting for a task wait on the stream's cell.
                        tx.wake_stream();
                        Ok(())
                    }
                }
            }
        })
    }

    /// Reports the part of `task` before offset `upto` done and keeps the
    /// rest, `[upto, end)`, as a new task this member holds (returned, with
    /// a lease from now). `upto` at the task's end reports it whole
    /// (`None`); at its start only renews the lease. A member that stops inside a
    /// shard, or saves its position inside one, finishes the part it
    /// processed this way and releases (or goes on with) the rest. Fails
    /// with [`ShardError::TaskNotHeld`] if this member no longer holds the
    /// task, and with [`ShardError::RegistryFull`] if the task table has no
    /// room for the rest (nothing changed).
    pub fn report_until(&mut self, task: Task, upto: u64) -> Result<Option<Task>> {
        if upto < task.start || upto > task.end {
            return Err(ShardError::InvalidArgument(format!(
                "offset {upto} is outside task {} ({}..{})",
                task.id, task.start, task.end
            )));
        }
        if upto == task.end {
            return self.report(task, Outcome::Done).map(|()| None);
        }
        if upto == task.start {
            self.extend_lease(task)?;
            return Ok(Some(task));
        }
        let (member, joined_ns) = (self.member, self.joined_ns);
        let (group, partitions) = (self.group_key, self.stream.partitions());
        self.with_group(|tx, sg| {
            let me = check_member(tx.locked(), sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            let held = t.id.load(Relaxed) == task.id
                && t.state.load(Relaxed) == task::DOING
                && t.member.load(Relaxed) == member
                && t.start.load(Relaxed) == task.start
                && t.end.load(Relaxed) == task.end;
            if !held {
                return Err(ShardError::TaskNotHeld(task.id));
            }
            let p = t.partition.load(Relaxed);
            if p >= partitions {
                return Err(StoreError::corrupted(format_args!("task {} names partition {p}", task.id)).into());
            }
            let rows = tx.rows_in(p, task.start, upto)?;
            let h = &sg.header;
            // The member is at work on the rest: a fresh lease, so a lease
            // that ran out unnoticed does not hand the rest out again.
            let lease = monotonic_ns().saturating_add(h.lease_ns.load(Relaxed));
            let Some(rest_slot) = sg.split_task(task.slot, upto, lease)? else {
                return Err(ShardError::RegistryFull { what: "tasks per group", limit: MAX_TASKS });
            };
            let rest = sg.task(rest_slot)?;
            // The first part is done: as `report` does.
            h.doing.fetch_sub(1, Relaxed);
            t.state.store(task::DONE, Relaxed);
            h.done_tasks.fetch_add(1, Relaxed);
            me.tasks_done.fetch_add(1, Relaxed);
            me.done_batches[p as usize].fetch_add(upto - task.start, Relaxed);
            me.done_rows[p as usize].fetch_add(rows, Relaxed);
            me.last_seen_ns.store(monotonic_ns(), Relaxed);
            let rest_task = Task {
                id: rest.id.load(Relaxed),
                partition: p,
                start: upto,
                end: task.end,
                retries: task.retries,
                slot: rest_slot,
            };
            settle(tx, group, sg, task.slot)?;
            Ok(Some(rest_task))
        })
    }

    /// Gives a task back to the group's queue front without counting a
    /// failure (for a member that stops before processing it).
    pub fn release(&mut self, task: Task) -> Result<()> {
        let (member, joined_ns) = (self.member, self.joined_ns);
        self.with_group(|tx, sg| {
            let me = check_member(tx.locked(), sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            if t.id.load(Relaxed) != task.id || t.state.load(Relaxed) != task::DOING || t.member.load(Relaxed) != member
            {
                return Err(ShardError::TaskNotHeld(task.id));
            }
            me.tasks_held.fetch_sub(1, Relaxed);
            requeue(sg, &[task.slot])?;
            tx.wake_stream();
            Ok(())
        })
    }

    /// The batches of `task`'s shard, in offset order, waiting up to
    /// `timeout` in all for batches not yet appended or sealed; `None` if
    /// they did not all come in time. Offsets without a batch (a producer
    /// died mid-append) are passed; so are batches a limit or `DropOldest`
    /// already dropped.
    pub fn read_task(&mut self, task: &Task, timeout: Duration) -> Result<Option<Vec<StreamBatch>>> {
        let _call = crate::store::CallDeadline::enter(timeout);
        let partitions = self.stream.partitions();
        if task.partition >= partitions {
            return Err(StreamError::NoSuchPartition { partition: task.partition, partitions }.into());
        }
        if task.start > task.end {
            return Err(ShardError::InvalidArgument(format!("a task from {} to {}", task.start, task.end)));
        }
        let deadline = Instant::now().checked_add(timeout);
        let stream = self.stream.clone();
        let store = stream.store();
        let cell = stream.partition_cell(task.partition)?;
        let mut taken = std::collections::VecDeque::with_capacity(READ_AHEAD);
        let mut out = Vec::with_capacity((task.end - task.start).min(1024) as usize);
        let mut holes = 0u64;
        let mut offset = task.start;
        while offset < task.end {
            let left = deadline.map_or(SWEEP, |d| d.saturating_duration_since(Instant::now()));
            let mut writing = false;
            // One look takes up to READ_AHEAD batches, passing holes and
            // what a limit or `DropOldest` already dropped.
            let moved = cell.wait_until(left.min(SWEEP), store.wait_strategy(), || {
                let before = offset;
                // Sealed batches first without the lock (views of pinned
                // objects): a stopped holder of the lock stalls no member
                // reading its shard. What they cannot tell (holes, batches
                // dropped or being written) is the lock's.
                while offset < task.end && taken.len() < READ_AHEAD {
                    let crate::shm::wait::Attempt::Ready(view) =
                        store.view_unlocked(stream.object_id(task.partition, offset))
                    else {
                        break;
                    };
                    taken.push_back(Taken { partition: task.partition, offset, view });
                    offset += 1;
                }
                if offset > before {
                    return Ok(Some(()));
                }
                let mut hole_budget = HOLE_BUDGET;
                let found = stream.transaction(|tx| -> crate::stream::Result<_> {
                    tx.fetch(task.partition, &mut offset, task.end, READ_AHEAD, &mut hole_budget, &mut taken)
                })?;
                holes += found.holes;
                writing = found.writing;
                Ok::<_, ShardError>((offset > before).then_some(()))
            })?;
            for t in taken.drain(..) {
                let (batch, meta) = self.reader.decode(t.view)?;
                out.push(StreamBatch { partition: t.partition, offset: t.offset, append_ns: meta.append_ns, batch });
            }
            // More holes than producer deaths could explain is corruption.
            if holes > HOLE_BUDGET as u64 {
                return Err(StoreError::corrupted(format_args!(
                    "task {} covers more than {HOLE_BUDGET} offsets without batches",
                    task.id
                ))
                .into());
            }
            match moved {
                Some(()) => {}
                None if left.is_zero() || deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
                // A producer that died mid-append: recovery removes its batch.
                None if writing => {
                    store.recover_dead_clients()?;
                }
                None => {}
            }
        }
        Ok(Some(out))
    }

    /// The whole loop of a member: takes each task (waiting up to `wait` at
    /// a time, as long as the stream goes on), reads its batches, hands them
    /// to `work` and reports what it returns, until the stream is closed and
    /// every shard is finished. Returns how many tasks this member did.
    ///
    /// A task whose batches do not all come within `wait` is reported
    /// [`Outcome::Failed`] (handed out again later). A task this member no
    /// longer holds when it reports (its lease expired while `work` ran:
    /// make the lease longer than the work) was handed to another member,
    /// which processes it again; the loop goes on. If reading the batches
    /// or `work` fails, the task is given back without counting a failure
    /// and the error is returned.
    pub fn run<E>(
        &mut self,
        wait: Duration,
        mut work: impl FnMut(&Task, Vec<StreamBatch>) -> std::result::Result<Outcome, E>,
    ) -> std::result::Result<u64, E>
    where
        E: From<ShardError>,
    {
        let mut done = 0;
        loop {
            let task = match self.next_task(wait)? {
                Next::Task(task) => task,
                Next::TimedOut => continue,
                Next::End => return Ok(done),
            };
            let outcome = match self.read_task(&task, wait) {
                Ok(Some(batches)) => {
                    let _beat = self.keep_lease(&task);
                    work(&task, batches)
                }
                Ok(None) => Ok(Outcome::Failed),
                Err(e) => Err(e.into()),
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    // The task is still held: give it back, then report the
                    // error (a failure to give it back is the lesser news;
                    // its lease expires anyway).
                    let _ = self.release(task);
                    return Err(e);
                }
            };
            match self.report(task, outcome) {
                Ok(()) => done += u64::from(outcome == Outcome::Done),
                // Someone else holds it now and will process it again.
                Err(ShardError::TaskNotHeld(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The group's state: tasks, dead letters, members, offsets.
    pub fn stats(&self) -> Result<ShardStats> {
        self.with_group(|tx, sg| group_stats(tx, &self.stream, self.group_key, sg))
    }

    /// Writes a checkpoint of the group to `path` (atomically): the state is
    /// copied under the lock and written after it is released, so taking a
    /// checkpoint never disturbs the live state. Returns what was written.
    pub fn checkpoint(&self, path: impl AsRef<Path>) -> Result<Checkpoint> {
        let checkpoint = self.with_group(|tx, sg| snapshot(tx, &self.stream, &self.group, self.group_key, sg))?;
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
        let config = ShardConfig::new()
            .shard_size(match checkpoint.unit {
                ShardUnit::Batches => ShardSize::Batches(checkpoint.shard_size),
                ShardUnit::Rows => ShardSize::Rows(checkpoint.shard_size),
            })
            .linger(Duration::from_nanos(checkpoint.linger_ns))
            .lease(Duration::from_nanos(checkpoint.lease_ns))
            .max_retries(checkpoint.max_retries);
        check_config(&config)?;
        let (index, group_key, member) = stream.transaction(|tx| -> Result<_> {
            let l = tx.locked();
            let g = tx.join_group(group, StartAt::Oldest)?;
            let index = match find(l, stream, g)? {
                Some(index) => index,
                None => allocate(l)?.0,
            };
            let sg = &registry::area(l)?.groups[index];
            sg.reset();
            init(sg, tx, stream, g, &config)?;
            load(sg, tx, g, &checkpoint)?;
            sg.header.state.store(LIVE, Release);
            let member = add_member(l, sg)?;
            tx.release_consumed()?;
            Ok((index, g, member))
        })?;
        let manager = ShardManager {
            stream: stream.clone(),
            group: group.to_string(),
            index,
            group_key,
            member: member.0,
            joined_ns: member.1,
            reader: BatchReader::new(stream.store()).expect_schema(stream.schema().clone()),
        };
        stream.notify_stream();
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
        self.with_group(|tx, sg| {
            // Only our own slot: after a restore it may be someone else's.
            let Ok(me) = check_member(tx.locked(), sg, (member, joined_ns)) else {
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
            tx.wake_stream();
            Ok(())
        })
    }
}

impl Drop for ShardManager {
    fn drop(&mut self) {
        // If this fails (the store or group is gone), the sweep of another
        // member requeues the tasks when this process's client is released.
        let _ = self.leave_group();
    }
}
