//! Kafka in and out: a topic's records appended to a quiver stream, with
//! Kafka offsets committed only once the stream's consumer groups have
//! committed past them (end-to-end at-least-once); and a stream consumer
//! group's batches produced to a topic ([`Sink`]), the group committing
//! once Kafka acknowledged them.
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
//! Formats ([`Format`]): `raw` (each record's key, value and timestamp),
//! `json` (one object per record, into the columns of a schema given or
//! inferred from the first record) and `arrow` (one Arrow IPC stream of one
//! or more batches per record). Every row also carries its record's Kafka
//! partition and offset (`kafka_partition`, `kafka_offset`), so each batch
//! says which Kafka range it holds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
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
    /// A record that cannot become rows (an Arrow record that is not Arrow
    /// IPC, or holds another schema). It is not committed: the source stops
    /// before it.
    #[error("record at partition {partition}, offset {offset}: {why}")]
    Record {
        /// The Kafka partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// What is wrong.
        why: String,
    },
}

/// The result of a Kafka operation.
pub type Result<T> = std::result::Result<T, KafkaError>;

/// How Kafka records become rows.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Format {
    /// One row per record: `key` and `value` (binary, null when absent),
    /// `timestamp_ms` (the record's timestamp, null when it has none).
    Raw,
    /// One row per record, a JSON object whose members fill the columns of
    /// `schema` by name (Int64, Float64, Boolean, Utf8; other members are
    /// ignored, missing ones are null). `None`: the schema is inferred from
    /// the records of the first batch (integers Int64, or Float64 where any
    /// has a fraction; booleans; strings Utf8; anything else, or a mix, Utf8
    /// holding its JSON text). A record
    /// that is not an object, or a member that does not fit its column,
    /// keeps its text in `_unparsed`: nothing is dropped.
    Json(Option<SchemaRef>),
    /// Each record an Arrow IPC stream (a schema, then batches); each batch
    /// is appended as it is.
    Arrow,
}

/// The columns every format adds, after its own.
fn kafka_fields() -> [Field; 2] {
    [Field::new("kafka_partition", DataType::Int32, false), Field::new("kafka_offset", DataType::Int64, false)]
}

/// `fields`, then the Kafka columns (and `_unparsed` for JSON).
fn with_kafka_fields(fields: impl IntoIterator<Item = Field>, json: bool) -> SchemaRef {
    let mut all: Vec<Field> = fields.into_iter().collect();
    all.extend(kafka_fields());
    if json {
        all.push(Field::new("_unparsed", DataType::Utf8, true));
    }
    Arc::new(Schema::new(all))
}

impl Format {
    /// The stream's schema, when the format knows it before any record.
    fn known_schema(&self) -> Option<SchemaRef> {
        match self {
            Format::Raw => Some(with_kafka_fields(
                [
                    Field::new("key", DataType::Binary, true),
                    Field::new("value", DataType::Binary, true),
                    Field::new("timestamp_ms", DataType::Int64, true),
                ],
                false,
            )),
            Format::Json(Some(schema)) => {
                Some(with_kafka_fields(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)), true))
            }
            Format::Json(None) | Format::Arrow => None,
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

/// A record gathered for the next batch.
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp_ms: Option<i64>,
    offset: i64,
}

/// Records of one partition gathered for the next batch.
#[derive(Default)]
struct Gathering {
    records: Vec<Record>,
    /// When the first record of the batch arrived.
    since: Option<Instant>,
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
    /// Partitions rebalances took from this source.
    pub revoked: u64,
}

/// A topic's records appended to a stream, Kafka offsets committed once the
/// stream's groups have committed past them. See the module docs.
pub struct Source {
    consumer: BaseConsumer<Handover>,
    store: Store,
    stream_name: String,
    partitions: u32,
    /// Opened (or created) once its schema is known: at once for formats
    /// that know it, at the first record for the others.
    stream: Option<(Stream, Producer)>,
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
        f.debug_struct("Source").field("topic", &self.config.topic).field("stream", &self.stream_name).finish()
    }
}

/// Notes the partitions a rebalance takes from this source, for the source
/// to forget what it gathered and has not committed there: their next
/// owner reads them again from Kafka's committed offsets (duplicates, never
/// a loss), and this source never commits an offset there again, which
/// could move the new owner's commits back.
#[derive(Default)]
struct Handover {
    revoked: std::sync::Mutex<Vec<i32>>,
}

impl ClientContext for Handover {}

impl ConsumerContext for Handover {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            revoked.extend(list.elements().iter().map(|e| e.partition()));
        }
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
        let consumer: BaseConsumer<Handover> = client.create_with_context(Handover::default())?;
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
        consumer.subscribe(&[&config.topic])?;
        let n = partitions as usize;
        let mut source = Source {
            consumer,
            store: store.clone(),
            stream_name: stream.to_string(),
            partitions,
            stream: None,
            gathering: (0..n).map(|_| Gathering::default()).collect(),
            pending: vec![VecDeque::new(); n],
            stats: SourceStats { committed: vec![-1; n], appended: vec![-1; n], ..Default::default() },
            config,
            last_commit_check: None,
        };
        let existing = match Stream::open(store, stream) {
            Ok(existing) => Some(existing.schema().clone()),
            Err(StreamError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(schema) = existing.or_else(|| source.config.format.known_schema()) {
            source.open_stream(schema)?;
        }
        Ok(source)
    }

    /// Opens the stream, creating it with `schema` if it does not exist.
    fn open_stream(&mut self, schema: SchemaRef) -> Result<&mut (Stream, Producer)> {
        if self.stream.is_none() {
            let mut config = StreamConfig::new(&self.stream_name, schema).partitions(self.partitions);
            for group in &self.config.required_groups {
                config = config.group(group.clone());
            }
            let stream = Stream::open_or_create(&self.store, config)?;
            if stream.partitions() != self.partitions {
                return Err(KafkaError::InvalidConfig(format!(
                    "stream {:?} has {} partitions, topic {:?} has {}",
                    self.stream_name,
                    stream.partitions(),
                    self.config.topic,
                    self.partitions
                )));
            }
            let producer = stream.producer()?;
            self.stream = Some((stream, producer));
        }
        self.stream.as_mut().ok_or_else(|| KafkaError::InvalidConfig("no stream".into()))
    }

    /// The stream the source appends to, once it is open (see [`Format`]:
    /// at once, or at the first record).
    pub fn stream(&self) -> Option<&Stream> {
        self.stream.as_ref().map(|(stream, _)| stream)
    }

    /// The topic's partition count (and the stream's).
    pub fn partitions(&self) -> u32 {
        self.partitions
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
                    gathering.records.push(Record {
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        timestamp_ms: message.timestamp().to_millis(),
                        offset: message.offset(),
                    });
                    gathering.since.get_or_insert_with(Instant::now);
                    if gathering.records.len() >= self.config.batch_records {
                        self.flush(g)?;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            self.forget_revoked();
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

    /// Forgets what was gathered and is pending on partitions a rebalance
    /// took away (see [`Handover`]).
    fn forget_revoked(&mut self) {
        let revoked = std::mem::take(&mut *self.consumer.context().revoked.lock().unwrap_or_else(|p| p.into_inner()));
        for p in revoked {
            if let Some(g) = usize::try_from(p).ok().filter(|&g| g < self.gathering.len()) {
                self.gathering[g] = Gathering::default();
                self.pending[g].clear();
                self.stats.revoked += 1;
            }
        }
    }

    /// Appends partition `g`'s gathered records (one batch; for the Arrow
    /// format, the batches the records hold).
    fn flush(&mut self, g: usize) -> Result<()> {
        let records = std::mem::take(&mut self.gathering[g].records);
        self.gathering[g].since = None;
        let Some(last) = records.last() else { return Ok(()) };
        let next = last.offset + 1;
        let batches = match &self.config.format {
            Format::Raw => {
                let schema = self.schema_for(None)?;
                vec![raw_batch(&schema, g as i32, &records)?]
            }
            Format::Json(_) => {
                let schema = match self.stream() {
                    Some(stream) => stream.schema().clone(),
                    None => self.schema_for(Some(json::infer(&records)))?,
                };
                vec![json::batch(&schema, g as i32, &records)?]
            }
            Format::Arrow => self.arrow_batches(g as i32, &records)?,
        };
        let (_, producer) = self.stream.as_mut().ok_or_else(|| KafkaError::InvalidConfig("no stream".into()))?;
        let mut last_offset = None;
        for batch in &batches {
            last_offset = Some(producer.append_to(g as u32, batch)?.offset);
            self.stats.batches += 1;
        }
        match (last_offset, self.pending[g].back_mut()) {
            (Some(offset), _) => self.pending[g].push_back((offset, next)),
            // Records that held no rows (Arrow streams without a batch) wait
            // for the batch before them, or for nothing.
            (None, Some(last)) => last.1 = next,
            (None, None) => {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&self.config.topic, g as i32, Offset::Offset(next))?;
                self.consumer.commit(&list, CommitMode::Sync)?;
                self.stats.committed[g] = next;
            }
        }
        self.stats.records += records.len() as u64;
        self.stats.appended[g] = next;
        Ok(())
    }

    /// The stream's schema, opening the stream (with `inferred` when it does
    /// not exist and the format does not say).
    fn schema_for(&mut self, inferred: Option<SchemaRef>) -> Result<SchemaRef> {
        if let Some(stream) = self.stream() {
            return Ok(stream.schema().clone());
        }
        let schema = self
            .config
            .format
            .known_schema()
            .or(inferred)
            .ok_or_else(|| KafkaError::InvalidConfig("the stream's schema is not known yet".into()))?;
        Ok(self.open_stream(schema)?.0.schema().clone())
    }

    /// The batches Arrow IPC records hold, each with the Kafka columns.
    fn arrow_batches(&mut self, partition: i32, records: &[Record]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for record in records {
            let bad = |why: String| KafkaError::Record { partition, offset: record.offset, why };
            let bytes = record.value.as_deref().unwrap_or_default();
            let imported = crate::arrow::import::read_ipc(bytes).map_err(|e| bad(e.to_string()))?;
            let expected = with_kafka_fields(imported.schema.fields().iter().map(|f| f.as_ref().clone()), false);
            let schema = self.schema_for(Some(expected.clone()))?;
            if schema != expected {
                return Err(bad(format!("its schema {expected} is not the stream's {schema}")));
            }
            for batch in imported.batches {
                let rows = batch.num_rows();
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(Int32Array::from(vec![partition; rows])));
                columns.push(Arc::new(Int64Array::from(vec![record.offset; rows])));
                out.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| bad(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// Commits to Kafka, per partition, the offset after the last batch
    /// every required group has committed.
    fn commit_committed(&mut self) -> Result<()> {
        self.last_commit_check = Some(Instant::now());
        if self.pending.iter().all(VecDeque::is_empty) {
            return Ok(());
        }
        let Some(stream) = self.stream() else { return Ok(()) };
        let stats = stream.stats()?;
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

/// A raw batch: key, value, timestamp, then the Kafka columns.
fn raw_batch(schema: &SchemaRef, partition: i32, records: &[Record]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter(records.iter().map(|r| r.key.as_deref()))),
        Arc::new(BinaryArray::from_iter(records.iter().map(|r| r.value.as_deref()))),
        Arc::new(Int64Array::from_iter(records.iter().map(|r| r.timestamp_ms))),
        Arc::new(Int32Array::from(vec![partition; records.len()])),
        Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.offset))),
    ];
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| KafkaError::InvalidConfig(format!("the stream's schema is not the raw format's: {e}")))
}

mod json;
mod sink;

pub use sink::{Sink, SinkConfig, SinkFormat};

/// Creates `topic` with `partitions` partitions (replication 1) on
/// `brokers`, waiting up to `timeout`: for tests, benchmarks and first
/// runs (production topics are usually made by their operators).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32, timeout: Duration) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(timeout));
    for result in block_on(admin.create_topics([&new], &options), timeout)?? {
        result.map_err(|(topic, code)| KafkaError::Topic { topic, why: format!("not created: {code}") })?;
    }
    Ok(())
}

/// Runs a future to completion on this thread, for at most `timeout`.
fn block_on<F: std::future::Future>(future: F, timeout: Duration) -> Result<F::Output> {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Ok(output);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::InvalidConfig(format!("no answer from the brokers within {timeout:?}")));
        }
        std::thread::park_timeout(left.min(Duration::from_millis(10)));
    }
}
