//! How a shard-managed group works: [`ShardConfig`] and [`ShardSize`].

use std::time::Duration;

/// How big a shard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSize {
    /// This many batches.
    Batches(u64),
    /// At least this many rows, in whole batches.
    Rows(u64),
}

/// How a shard-managed group works, built like every quiver config:
/// `ShardConfig::new().shard_size(ShardSize::Batches(200))`. The first
/// member to join a group sets it; later members use the one in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    pub(super) shard_size: ShardSize,
    pub(super) linger: Duration,
    pub(super) lease: Duration,
    pub(super) max_retries: u32,
}

impl ShardConfig {
    /// Shards of 16 batches, a linger of 100 ms, leases of 30 s, 3 retries.
    pub fn new() -> Self {
        ShardConfig {
            shard_size: ShardSize::Batches(16),
            linger: Duration::from_millis(100),
            lease: Duration::from_secs(30),
            max_retries: 3,
        }
    }

    /// Shard size, in batches or in rows (above zero).
    pub fn shard_size(mut self, size: ShardSize) -> Self {
        self.shard_size = size;
        self
    }

    /// How long a partition must be idle before a partial shard is cut.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long a member holds a task before it is given to someone else
    /// (above zero; [`ShardManager::extend_lease`](super::ShardManager::extend_lease) renews it).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Failures before a task becomes a dead letter.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig::new()
    }
}
