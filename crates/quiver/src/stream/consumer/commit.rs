//! Committing a consumer's offsets for its group: lock-free, each offset
//! a compare-and-swap between two checks that the group and the stream are
//! still the ones joined; what the commit frees is freed under the lock.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::super::registry::{self, LIVE};
use super::super::{Result, StreamError};
use super::{Consumer, GroupRef};
use crate::store::StoreError;

impl Consumer {
    /// Commits this consumer's positions in all its partitions for its
    /// group: everything it has polled is done. Frees what every group has
    /// now committed past.
    /// A commit that changes nothing (the group's offsets are this
    /// consumer's positions already) costs a few loads and no write.
    pub fn commit(&mut self) -> Result<()> {
        if self.committed_already()? {
            return Ok(());
        }
        let offsets: Vec<(u32, u64)> = self.parts.iter().map(|&p| (p, self.pos[p as usize])).collect();
        self.commit_offsets(&offsets)
    }

    /// Whether the group this consumer joined (still the same group of
    /// the same stream) has committed exactly its positions, and nothing
    /// committed waits to be freed (a commit made while a stopped process
    /// held the lock left that to the next commit).
    fn committed_already(&self) -> Result<bool> {
        let Some(group) = self.group.as_ref() else { return Ok(false) };
        let record = self.stream.shared_record()?;
        let Some(slot) = record.groups.get(group.slot) else { return Ok(false) };
        let ours = record.slot.state.load(SeqCst) == LIVE
            && record.slot.namespace.load(SeqCst) == self.stream.inner().namespace
            && slot.state.load(SeqCst) == LIVE
            && slot.created_ns.load(SeqCst) == group.created_ns;
        Ok(ours
            && self.parts.iter().all(|&p| {
                let p = p as usize;
                let tail = record.partitions[p].tail.load(SeqCst);
                slot.committed[p].load(SeqCst) == self.pos[p]
                    && !matches!(registry::min_committed(record, p, tail), Some(upto) if upto > tail)
            }))
    }

    /// Commits the given `(partition, next offset to read)` pairs for this
    /// consumer's group. An offset past the head is refused; one below the
    /// tail means the tail (what lies below was dropped).
    ///
    /// Without the store's lock, so that a stopped or hung holder stalls no
    /// consumer: each offset is a word of the group's slot, changed with a
    /// compare-and-swap between two checks that the group and the stream
    /// are still the ones this consumer joined (see docs/format.md,
    /// "Readers without the lock"). What the commit frees is freed under
    /// the lock, unless its holder is stopped: then by the next commit, or
    /// by a producer that finds the store full.
    pub fn commit_offsets(&mut self, offsets: &[(u32, u64)]) -> Result<()> {
        let group = self.group_ref()?.clone();
        let partitions = self.stream.partitions();
        let stream = self.stream.clone();
        let record = stream.shared_record()?;
        let slot = record.groups.get(group.slot).ok_or_else(|| StoreError::corrupted("group slot out of range"))?;
        let ours = || {
            record.slot.state.load(SeqCst) == LIVE
                && record.slot.namespace.load(SeqCst) == stream.inner().namespace
                && slot.state.load(SeqCst) == LIVE
                && slot.created_ns.load(SeqCst) == group.created_ns
        };
        let gone = || StreamError::NoSuchGroup { stream: stream.name().to_string(), group: group.name.clone() };
        if !ours() {
            return Err(gone());
        }
        // All pairs are checked before any is stored: a commit is whole or nothing.
        let mut checked = Vec::with_capacity(offsets.len());
        for &(partition, offset) in offsets {
            if partition >= partitions {
                return Err(StreamError::NoSuchPartition { partition, partitions });
            }
            let part = &record.partitions[partition as usize];
            // A pair read across a change that makes no sense: the lock's.
            let (tail, head) = match registry::range(part) {
                Ok(bounds) => bounds,
                Err(_) => stream.with_record(|_, _| Ok(registry::range(part)?))?,
            };
            if offset > head {
                return Err(StreamError::OffsetOutOfRange { partition, offset, tail, head });
            }
            checked.push((partition as usize, offset.max(tail)));
        }
        for (p, offset) in checked {
            let word = &slot.committed[p];
            loop {
                let before = word.load(SeqCst);
                if !ours() {
                    return Err(gone());
                }
                if word.compare_exchange(before, offset, SeqCst, SeqCst).is_err() {
                    continue;
                }
                if !ours() {
                    // The slot became another group's meanwhile, whose
                    // creation wrote `before` just before the swap, or
                    // `offset` just after it. Either way the lower of the
                    // two skips nothing of it (at least once), unless
                    // that group has moved on.
                    let _ = word.compare_exchange(offset, offset.min(before), SeqCst, SeqCst);
                    return Err(gone());
                }
                break;
            }
        }
        let _upkeep = crate::store::NoWait::enter();
        match stream.with_record(|l, record| Ok(registry::release_consumed(l, record)?)) {
            Err(StreamError::Store(StoreError::LockTimeout { .. })) => {
                // Producers waiting for space free it themselves (see
                // `Producer::create`): let them look.
                stream.store().notify_space();
                Ok(())
            }
            other => other,
        }
    }

    /// The group's committed offset in `partition`.
    pub fn committed(&self, partition: u32) -> Result<u64> {
        let group = self.group_ref()?;
        let partitions = self.stream.partitions();
        if partition >= partitions {
            return Err(StreamError::NoSuchPartition { partition, partitions });
        }
        self.stream
            .with_record(|_, record| Ok(self.live_group(record, group)?.committed[partition as usize].load(Relaxed)))
    }

    fn group_ref(&self) -> Result<&GroupRef> {
        self.group
            .as_ref()
            .ok_or_else(|| StreamError::InvalidConfig("a consumer without a group has no committed offsets".into()))
    }

    /// The group's slot, checked to be still this group's.
    fn live_group<'a>(&self, record: &'a registry::StreamRecord, group: &GroupRef) -> Result<&'a registry::GroupSlot> {
        let slot = record.groups.get(group.slot).ok_or_else(|| StoreError::corrupted("group slot out of range"))?;
        if slot.state.load(Relaxed) != LIVE || slot.created_ns.load(Relaxed) != group.created_ns {
            return Err(StreamError::NoSuchGroup { stream: self.stream.name().to_string(), group: group.name.clone() });
        }
        Ok(slot)
    }
}
