//! What a user sets to make a stream ([`StreamConfig`] and its
//! [`BackPressure`] policy) and a consumer ([`ConsumerConfig`], where it
//! starts: [`StartAt`]).

use std::time::Duration;

use arrow_schema::SchemaRef;

use super::registry::{self, MAX_GROUPS, MAX_PARTITIONS};
use super::{Result, StreamError};
use crate::store::StoreError;

/// What an append does when the store has no room for its batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackPressure {
    /// Wait for consumers to free space, up to the producer's timeout, then
    /// fail with [`StreamError::Full`]. Nothing is ever dropped.
    #[default]
    Block,
    /// Drop the stream's oldest batches (by append time) until the new one
    /// fits, counting each in [`StreamStats::dropped`](super::StreamStats::dropped).
    DropOldest,
    /// Fail at once with [`StreamError::Full`].
    Error,
}

impl BackPressure {
    pub(super) fn to_word(self) -> u32 {
        match self {
            BackPressure::Block => 0,
            BackPressure::DropOldest => 1,
            BackPressure::Error => 2,
        }
    }

    pub(super) fn from_word(word: u32) -> Result<Self, StoreError> {
        match word {
            0 => Ok(BackPressure::Block),
            1 => Ok(BackPressure::DropOldest),
            2 => Ok(BackPressure::Error),
            _ => Err(StoreError::corrupted(format_args!("back-pressure policy {word} is unknown"))),
        }
    }
}

/// How to make a stream.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub(super) name: String,
    pub(super) schema: SchemaRef,
    pub(super) partitions: u32,
    pub(super) groups: Vec<String>,
    pub(super) back_pressure: BackPressure,
    pub(super) max_age: Option<Duration>,
    pub(super) max_bytes: Option<u64>,
}

impl StreamConfig {
    /// A stream called `name` of batches of `schema`, with one partition,
    /// no groups, `Block` back-pressure and no limits.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        StreamConfig {
            name: name.into(),
            schema,
            partitions: 1,
            groups: Vec::new(),
            back_pressure: BackPressure::Block,
            max_age: None,
            max_bytes: None,
        }
    }

    /// The number of partitions (1 to [`MAX_PARTITIONS`]).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Declares a consumer group, which then sees the stream from its first
    /// batch (a group made later starts at the oldest retained batch).
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.groups.push(name.into());
        self
    }

    /// What an append does when the store is full.
    pub fn back_pressure(mut self, policy: BackPressure) -> Self {
        self.back_pressure = policy;
        self
    }

    /// Drop batches older than this (counted in [`StreamStats::expired`](super::StreamStats::expired)).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Drop the oldest batches while the stream holds more than this many
    /// payload bytes (counted in [`StreamStats::trimmed`](super::StreamStats::trimmed)).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    pub(super) fn check(&self) -> Result<()> {
        registry::check_name("stream", &self.name).map_err(StreamError::InvalidConfig)?;
        if self.partitions == 0 || self.partitions as usize > MAX_PARTITIONS {
            return Err(StreamError::InvalidConfig(format!(
                "a stream has 1 to {MAX_PARTITIONS} partitions, not {}",
                self.partitions
            )));
        }
        if self.groups.len() > MAX_GROUPS {
            return Err(StreamError::RegistryFull { what: "groups per stream", limit: MAX_GROUPS });
        }
        for (i, group) in self.groups.iter().enumerate() {
            registry::check_name("group", group).map_err(StreamError::InvalidConfig)?;
            if self.groups[..i].contains(group) {
                return Err(StreamError::InvalidConfig(format!("group {group:?} is declared twice")));
            }
        }
        if self.max_age.is_some_and(|a| a.is_zero()) || self.max_bytes == Some(0) {
            return Err(StreamError::InvalidConfig("max_age and max_bytes must be above zero".into()));
        }
        Ok(())
    }
}

/// Where a new group (or a consumer without a group) starts reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// At the oldest retained batch of each partition.
    #[default]
    Oldest,
    /// At the head: only batches appended from now on.
    Newest,
}

/// How to make a consumer.
#[derive(Clone, Debug, Default)]
pub struct ConsumerConfig {
    pub(super) group: Option<String>,
    pub(super) start: StartAt,
    pub(super) partitions: Option<Vec<u32>>,
    pub(super) skip_corrupt: bool,
}

impl ConsumerConfig {
    /// A member of consumer group `name`: it starts at the group's committed
    /// offsets and its commits hold the stream's data for the group. A group
    /// that does not exist yet is made, starting where [`start`](Self::start) says.
    pub fn group(name: impl Into<String>) -> Self {
        ConsumerConfig { group: Some(name.into()), ..Default::default() }
    }

    /// A reader outside any group: it starts where [`start`](Self::start)
    /// says, commits nothing, and holds no data (retention does not wait
    /// for it).
    pub fn reader() -> Self {
        ConsumerConfig::default()
    }

    /// Where to start if the group is new (or for a reader).
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Read only these partitions (all of them by default): for consumers
    /// the user places by hand. The members of a shard-managed group do not
    /// use this: they take shards as tasks from the shard manager.
    pub fn partitions(mut self, partitions: Vec<u32>) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// Pass batches that cannot be decoded instead of stopping at them
    /// (off by default): each is [skipped](super::Consumer::skip), so counted and
    /// listed with its reason, and the poll goes on to the next batch.
    pub fn skip_corrupt(mut self, skip: bool) -> Self {
        self.skip_corrupt = skip;
        self
    }
}
