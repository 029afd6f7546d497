//! Kafka in: a topic's records appended to a quiver stream, with Kafka
//! offsets committed only once the stream's consumer groups have committed
//! past them (end-to-end at-least-once).
//!
//! A [`Source`] is a member of a Kafka consumer group. Kafka partition `p`
//! goes to quiver partition `p` (the stream has the topic's partition
//! count), in order. Records are gathered per partition into batches of up
//! to `batch_records` or `linger`, whichever comes first; each batch is one
//! append. The Kafka offset after a batch's last record is committed to
//! Kafka only when every required group of the stream has committed past
//! the batch's quiver offset: a crash of the source, a worker or the whole
//! host (the store lost, groups restored from their checkpoints) then
//! costs duplicates, never a record, because reading resumes from Kafka's
//! committed offsets.
//!
//! Formats this version reads: `raw` (the key, value, timestamp, Kafka
//! partition and offset of each record as columns, so each batch records
//! the Kafka range it came from).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::store::Store;
use crate::stream::{Producer, Stream, StreamConfig, StreamError};

/// What can go wrong moving records between Kafka and quiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// The Kafka client (librdkafka) reported an error.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The stream refused an operation.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The topic does not exist or cannot be used.
    #[error("topic {topic:?}: {why}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
    /// A configuration that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// The result of a Kafka operation.
pub type Result<T> = std::result::Result<T, KafkaError>;

/// How Kafka records become rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One row per record: `key` and `value` (binary, null when absent),
    /// `timestamp_ms` (the record's timestamp, null when it has none),
    /// `kafka_partition` and `kafka_offset`.
    Raw,
}

impl Format {
    /// The schema of the stream a source of this format appends to.
    pub fn schema(self) -> SchemaRef {
        match self {
            Format::Raw => Arc::new(Schema::new(vec![
                Field::new("key", DataType::Binary, true),
                Field::new("value", DataType::Binary, true),
                Field::new("timestamp_ms", DataType::Int64, true),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ])),
        }
    }
}

/// How a [`Source`] reads and batches.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    brokers: String,
    topic: String,
    group: String,
    format: Format,
    batch_records: usize,
    linger: Duration,
    required_groups: Vec<String>,
    properties: Vec<(String, String)>,
}

impl SourceConfig {
    /// A source of `topic` on the brokers `brokers` (`host:port,...`) as a
    /// member of Kafka consumer group `group`; raw format, batches of up to
    /// 1,000 records or 10 ms.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, group: impl Into<String>) -> Self {
        SourceConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group: group.into(),
            format: Format::Raw,
            batch_records: 1000,
            linger: Duration::from_millis(10),
            required_groups: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// The format of the records.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// At most this many records per batch (at least 1).
    pub fn batch_records(mut self, records: usize) -> Self {
        self.batch_records = records.max(1);
        self
    }

    /// A partition's records wait at most this long for their batch to fill.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The stream's consumer groups that must commit a batch before its
    /// Kafka offsets are committed (default: every group the stream has).
    pub fn required_group(mut self, group: impl Into<String>) -> Self {
        self.required_groups.push(group.into());
        self
    }

    /// A librdkafka configuration property (security, timeouts, ...).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

/// Records of one partition gathered for the next batch.
struct Gathering {
    keys: BinaryBuilder,
    values: BinaryBuilder,
    timestamps: Int64Builder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    rows: usize,
    /// When the first record of the batch arrived.
    since: Option<Instant>,
    /// The Kafka offset after the last record gathered.
    next: i64,
}

impl Gathering {
    fn new() -> Self {
        Gathering {
            keys: BinaryBuilder::new(),
            values: BinaryBuilder::new(),
            timestamps: Int64Builder::new(),
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            rows: 0,
            since: None,
            next: -1,
        }
    }
}

/// Progress of a [`Source`], for `quiver stat` and the terminal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records appended to the stream.
    pub records: u64,
    /// Batches appended.
    pub batches: u64,
    /// Per Kafka partition: the offset committed to Kafka (-1: none yet).
    pub committed: Vec<i64>,
    /// Per Kafka partition: the offset after the last record appended.
    pub appended: Vec<i64>,
}

/// A topic's records appended to a stream, Kafka offsets committed once the
/// stream's groups have committed past them. See the module docs.
pub struct Source {
    consumer: BaseConsumer,
    stream: Stream,
    producer: Producer,
    config: SourceConfig,
    gathering: Vec<Gathering>,
    /// Per partition: appended batches not yet committed to Kafka, as
    /// (quiver offset, the Kafka offset after its last record).
    pending: Vec<VecDeque<(u64, i64)>>,
    stats: SourceStats,
    last_commit_check: Option<Instant>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("topic", &self.config.topic).field("stream", &self.stream.name()).finish()
    }
}

/// How often a source looks at the groups' commits to commit to Kafka.
const COMMIT_EVERY: Duration = Duration::from_millis(50);

impl Source {
    /// Joins the Kafka group and opens the stream `stream` in `store`,
    /// creating it with the topic's partition count and the format's schema
    /// (and the required groups) if it does not exist.
    pub fn new(store: &Store, stream: &str, config: SourceConfig) -> Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let consumer: BaseConsumer = client.create()?;
        let metadata = consumer.fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .ok_or_else(|| KafkaError::Topic { topic: config.topic.clone(), why: "not in the cluster".into() })?;
        if let Some(err) = topic.error() {
            let why = format!("{err:?}");
            return Err(KafkaError::Topic { topic: config.topic.clone(), why });
        }
        let partitions = u32::try_from(topic.partitions().len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| KafkaError::Topic { topic: config.topic.clone(), why: "it has no partitions".into() })?;
        let mut stream_config = StreamConfig::new(stream, config.format.schema()).partitions(partitions);
        for group in &config.required_groups {
            stream_config = stream_config.group(group.clone());
        }
        let stream = Stream::open_or_create(store, stream_config)?;
        if stream.partitions() != partitions {
            return Err(KafkaError::InvalidConfig(format!(
                "stream {stream:?} has {} partitions, topic {:?} has {partitions}",
                stream.partitions(),
                config.topic
            )));
        }
        let producer = stream.producer()?;
        consumer.subscribe(&[&config.topic])?;
        let n = partitions as usize;
        Ok(Source {
            consumer,
            stream,
            producer,
            gathering: (0..n).map(|_| Gathering::new()).collect(),
            pending: vec![VecDeque::new(); n],
            stats: SourceStats { committed: vec![-1; n], appended: vec![-1; n], ..Default::default() },
            config,
            last_commit_check: None,
        })
    }

    /// The stream the source appends to.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Progress so far.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// Reads for up to `timeout`: gathers records, appends every batch that
    /// is full or has lingered long enough, and commits to Kafka what the
    /// stream's groups have committed. Returns the records appended.
    pub fn step(&mut self, timeout: Duration) -> Result<u64> {
        let before = self.stats.records;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(self.config.linger.max(Duration::from_millis(1)));
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let p = message.partition();
                    let Some(g) = usize::try_from(p).ok().filter(|&p| p < self.gathering.len()) else {
                        return Err(KafkaError::Topic {
                            topic: self.config.topic.clone(),
                            why: format!("a record of partition {p}, past the stream's partitions"),
                        });
                    };
                    let gathering = &mut self.gathering[g];
                    gathering.keys.append_option(message.key());
                    gathering.values.append_option(message.payload());
                    gathering.timestamps.append_option(message.timestamp().to_millis());
                    gathering.partitions.append_value(p);
                    gathering.offsets.append_value(message.offset());
                    gathering.rows += 1;
                    gathering.since.get_or_insert_with(Instant::now);
                    gathering.next = message.offset() + 1;
                    if gathering.rows >= self.config.batch_records {
                        self.flush(g)?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            for g in 0..self.gathering.len() {
                if self.gathering[g].since.is_some_and(|t| t.elapsed() >= self.config.linger) {
                    self.flush(g)?;
                }
            }
            if self.last_commit_check.map_or(true, |t| t.elapsed() >= COMMIT_EVERY) {
                self.commit_committed()?;
            }
            if Instant::now() >= deadline {
                return Ok(self.stats.records - before);
            }
        }
    }

    /// Appends partition `g`'s gathered records as one batch.
    fn flush(&mut self, g: usize) -> Result<()> {
        let gathering = &mut self.gathering[g];
        if gathering.rows == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(gathering.keys.finish()),
            Arc::new(gathering.values.finish()),
            Arc::new(gathering.timestamps.finish()),
            Arc::new(gathering.partitions.finish()),
            Arc::new(gathering.offsets.finish()),
        ];
        let rows = gathering.rows as u64;
        let next = gathering.next;
        gathering.rows = 0;
        gathering.since = None;
        let batch = RecordBatch::try_new(self.stream.schema().clone(), columns)
            .map_err(|e| KafkaError::InvalidConfig(format!("the raw batch does not fit the stream's schema: {e}")))?;
        let appended = self.producer.append_to(g as u32, &batch)?;
        self.pending[g].push_back((appended.offset, next));
        self.stats.records += rows;
        self.stats.batches += 1;
        self.stats.appended[g] = next;
        Ok(())
    }

    /// Commits to Kafka, per partition, the offset after the last batch
    /// every required group has committed.
    fn commit_committed(&mut self) -> Result<()> {
        self.last_commit_check = Some(Instant::now());
        if self.pending.iter().all(VecDeque::is_empty) {
            return Ok(());
        }
        let stats = self.stream.stats()?;
        let groups: Vec<_> = stats
            .groups
            .iter()
            .filter(|g| self.config.required_groups.is_empty() || self.config.required_groups.contains(&g.name))
            .collect();
        if groups.is_empty() {
            // Nobody reads the stream: nothing may be committed yet.
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (p, pending) in self.pending.iter_mut().enumerate() {
            let done = groups.iter().map(|g| g.committed.get(p).copied().unwrap_or(0)).min().unwrap_or(0);
            let mut commit = None;
            while pending.front().is_some_and(|&(offset, _)| offset < done) {
                commit = pending.pop_front().map(|(_, next)| next);
            }
            if let Some(next) = commit {
                list.add_partition_offset(&self.config.topic, p as i32, Offset::Offset(next))?;
                self.stats.committed[p] = next;
            }
        }
        if list.count() > 0 {
            self.consumer.commit(&list, CommitMode::Sync)?;
        }
        Ok(())
    }

    /// Appends what is gathered and commits what the groups have committed:
    /// call before stopping (dropping the source loses nothing either: what
    /// was not committed is read again).
    pub fn flush_all(&mut self) -> Result<()> {
        for g in 0..self.gathering.len() {
            self.flush(g)?;
        }
        self.commit_committed()
    }
}
