//! Leases kept alive: a member renews the lease of the task it works on
//! from a thread of its own (a heartbeat, as DLRover's workers send), so
//! only a dead or stopped member loses its task.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::registry::task;
use super::steps::check_member;
use super::{group_of, Result, ShardError, ShardManager, Task};
use crate::shm::clock::monotonic_ns;
use crate::stream::{GroupKey, Stream};

impl ShardManager {
    /// Extends this member's lease on `task` by the group's lease time from now.
    pub fn extend_lease(&mut self, task: Task) -> Result<()> {
        self.keeper().extend(&task).map(drop)
    }

    /// What extending this member's leases needs, for a thread of its own.
    fn keeper(&self) -> LeaseKeeper {
        LeaseKeeper {
            stream: self.stream.clone(),
            group: self.group.clone(),
            index: self.index,
            group_key: self.group_key,
            member: (self.member, self.joined_ns),
        }
    }

    /// Renews this member's lease on `task` from a thread, every third of
    /// the group's lease time, until the returned guard drops: a member
    /// that works on a shard longer than a lease keeps it while it lives
    /// and runs (as DLRover's workers send heartbeats); a member that dies
    /// or is stopped sends none, and its task goes to another member when
    /// the lease runs out. [`run`](Self::run) does this around `work`.
    pub fn keep_lease(&self, task: &Task) -> Heartbeat {
        let keeper = self.keeper();
        let task = *task;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || loop {
            let Ok(lease) = keeper.extend(&task) else { return };
            let every = Duration::from_nanos(lease / 3).max(Duration::from_millis(1));
            match stopped.recv_timeout(every) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        });
        Heartbeat { stop: Some(stop), thread: Some(thread) }
    }
}

/// A member's identity in its group, to extend its leases from another
/// thread ([`ShardManager::keep_lease`]).
struct LeaseKeeper {
    stream: Stream,
    group: String,
    index: usize,
    group_key: GroupKey,
    member: (u32, u64),
}

impl LeaseKeeper {
    /// Extends the lease on `task` by the group's lease time from now;
    /// returns that time (ns).
    fn extend(&self, task: &Task) -> Result<u64> {
        let (member, joined_ns) = self.member;
        self.stream.transaction(|tx| -> Result<_> {
            let sg = group_of(tx, &self.stream, self.index, self.group_key, &self.group)?;
            check_member(tx.locked(), sg, (member, joined_ns))?;
            let t = sg.task(task.slot)?;
            if t.id.load(Relaxed) != task.id || t.state.load(Relaxed) != task::DOING || t.member.load(Relaxed) != member
            {
                return Err(ShardError::TaskNotHeld(task.id));
            }
            let lease = sg.header.lease_ns.load(Relaxed);
            t.lease_ns.store(monotonic_ns().saturating_add(lease), Relaxed);
            Ok(lease)
        })
    }
}

/// Renews a lease until dropped (see [`ShardManager::keep_lease`]).
#[must_use = "the lease is renewed only while the heartbeat lives"]
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat").finish_non_exhaustive()
    }
}
