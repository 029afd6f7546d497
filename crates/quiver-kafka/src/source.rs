//! Kafka in: [`Source`], a member of a Kafka consumer group appending a
//! topic's records to a stream and committing Kafka offsets only once the
//! stream's groups have committed past them.
//!
//! Broker trouble is not an error: librdkafka reconnects on its own, so a
//! poll or a commit that fails for want of a broker is counted, kept as the
//! last error, and tried again; reading goes on once the broker is back
//! ([`SourceStats::errors`]). Only what cannot heal stops the source: a
//! fatal client error, a record that cannot become rows, the store.
//! Commits are asynchronous; a failed one is sent again, and the offsets
//! Kafka acknowledged are [`SourceStats::committed`].

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch};
use arrow_schema::SchemaRef;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use quiver::{Producer, Store, Stream, StreamConfig, StreamError};

use crate::record::Record;
use crate::status::{self, SourceStatus};
use crate::{json, with_kafka_fields, Format, KafkaError, Result};

/// How a [`Source`] reads and batches.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub(super) brokers: String,
    pub(super) topic: String,
    pub(super) group: String,
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
#[derive(Default)]
struct Gathering {
    records: Vec<Record>,
    /// When the first record of the batch arrived.
    since: Option<Instant>,
}

/// Progress of a [`Source`], for `quiver stat` and the terminal. Offsets
/// are per Kafka partition; -1 means none (yet, or not this source's: a
/// rebalance took the partition).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records appended to the stream.
    pub records: u64,
    /// Batches appended.
    pub batches: u64,
    /// The offset Kafka acknowledged as committed.
    pub committed: Vec<i64>,
    /// The offset after the last record appended.
    pub appended: Vec<i64>,
    /// The partition's end (high watermark) as last heard from the broker
    /// (-1: not heard yet). `end - committed` is the group's Kafka lag.
    pub end: Vec<i64>,
    /// Partitions rebalances took from this source.
    pub revoked: u64,
    /// Failures the source rode out (broker gone, a commit refused), each
    /// tried again.
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
    /// Times the status for `quiver stat` could not be written (a full
    /// store, say), and why the last time.
    pub status_errors: u64,
    /// Why the status could not be written, the last time.
    pub last_status_error: Option<String>,
}

/// What librdkafka's callbacks tell the source, handed over at each step.
#[derive(Default)]
struct Heard {
    /// Partitions a rebalance took away.
    revoked: Vec<i32>,
    /// Commits Kafka acknowledged: (partition, offset, the partition's
    /// generation when the commit was sent).
    committed: Vec<(i32, i64, u64)>,
    /// The committer finished a commit (acknowledged or not).
    commit_finished: bool,
    /// High watermarks from the client's statistics: (partition, offset).
    ends: Vec<(i32, i64)>,
    /// Errors the client reported and rides out.
    errors: Vec<String>,
}

/// A commit for the committer thread: the offsets, and each partition's
/// generation (bumped at every revoke) when it was sent, so that an answer
/// about a partition since revoked is not taken for the new owner's.
struct CommitRequest {
    list: TopicPartitionList,
    generations: Vec<u64>,
}

/// The consumer's context: notes rebalances, commit results, statistics
/// and errors for the source to act on (see [`Heard`]).
///
/// On a revoke the source forgets what it gathered and has not committed
/// there: the partition's next owner reads it again from Kafka's committed
/// offsets (duplicates, never a loss), and this source never commits an
/// offset there again, which could move the new owner's commits back.
struct Listener {
    topic: String,
    heard: Mutex<Heard>,
}

impl Listener {
    fn with<R>(&self, f: impl FnOnce(&mut Heard) -> R) -> R {
        f(&mut self.heard.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ClientContext for Listener {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let ends: Vec<(i32, i64)> = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.hi_offset >= 0)
            .map(|p| (p.partition, p.hi_offset))
            .collect();
        self.with(|heard| heard.ends.extend(ends));
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.with(|heard| heard.errors.push(format!("{error}: {reason}")));
    }
}

impl ConsumerContext for Listener {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.with(|heard| heard.revoked.extend(list.elements().iter().map(|e| e.partition())));
        }
    }
}

/// How often a source looks at the groups' commits to commit to Kafka.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// How long after a failed commit the next one is sent.
const RECOMMIT_AFTER: Duration = Duration::from_secs(1);
/// How often the source publishes its progress for `quiver stat`.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A topic's records appended to a stream, Kafka offsets committed once the
/// stream's groups have committed past them. See the module docs.
pub struct Source {
    consumer: Arc<BaseConsumer<Listener>>,
    /// Sends offsets to the committer thread (see [`committer`]); taken,
    /// and the thread joined, on drop.
    commits: Option<mpsc::Sender<CommitRequest>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Per partition: bumped at every revoke.
    generation: Vec<u64>,
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
    /// Per partition: the offset to commit (-1: nothing).
    wanted: Vec<i64>,
    /// A commit is with the committer; and when the next may be sent.
    committing: bool,
    next_commit: Option<Instant>,
    stats: SourceStats,
    last_commit_check: Option<Instant>,
    last_status: Option<Instant>,
    started_ms: u64,
    /// This source's own part of its status object's ID.
    status_token: [u8; 8],
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("topic", &self.config.topic).field("stream", &self.stream_name).finish()
    }
}

impl Source {
    /// Joins the Kafka group and opens the stream `stream` in `store`,
    /// creating it with the topic's partition count and the format's schema
    /// (and the required groups) if it does not exist. A broker that does
    /// not answer within 10 s is an error here.
    pub fn new(store: &Store, stream: &str, config: SourceConfig) -> Result<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let listener = Listener { topic: config.topic.clone(), heard: Mutex::default() };
        let consumer: Arc<BaseConsumer<Listener>> = Arc::new(client.create_with_context(listener)?);
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
        let none = vec![-1; n];
        let (commits, committer) = committer(&consumer);
        let mut source = Source {
            commits: Some(commits),
            committer: Some(committer),
            generation: vec![0; n],
            consumer,
            store: store.clone(),
            stream_name: stream.to_string(),
            partitions,
            stream: None,
            gathering: (0..n).map(|_| Gathering::default()).collect(),
            pending: vec![VecDeque::new(); n],
            wanted: none.clone(),
            committing: false,
            next_commit: None,
            stats: SourceStats { committed: none.clone(), appended: none.clone(), end: none, ..Default::default() },
            config,
            last_commit_check: None,
            last_status: None,
            started_ms: quiver::shm::clock::wall_ns() / 1_000_000,
            status_token: status::token(),
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
    /// Empty partitions whose groups were restored past their head (a new
    /// store after a disaster) go on from past what the groups know: see
    /// [`quiver::shard::known_ends`].
    fn open_stream(&mut self, schema: SchemaRef) -> Result<&mut (Stream, Producer)> {
        let opened = match self.stream.take() {
            Some(opened) => opened,
            None => {
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
                let mut producer = stream.producer()?;
                for (p, offset) in quiver::shard::known_ends(&stream)?.into_iter().enumerate() {
                    producer.skip_to(p as u32, offset)?;
                }
                (stream, producer)
            }
        };
        Ok(self.stream.insert(opened))
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
                    let g = self.gather(record_of(&message))?;
                    if self.gathering[g].records.len() >= self.config.batch_records {
                        self.flush(g)?;
                    }
                }
                Some(Err(e)) if rides_out(&e) => self.note_error(e.to_string()),
                // A record the client could not deliver (damaged, or its
                // topic gone): stop before it, nothing committed past it.
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            self.take_heard();
            for g in 0..self.gathering.len() {
                if self.gathering[g].since.is_some_and(|t| t.elapsed() >= self.config.linger) {
                    self.flush(g)?;
                }
            }
            if self.last_commit_check.map_or(true, |t| t.elapsed() >= COMMIT_EVERY) {
                self.commit_committed()?;
            }
            if self.last_status.map_or(true, |t| t.elapsed() >= STATUS_EVERY) {
                self.publish_status();
            }
            if Instant::now() >= deadline {
                return Ok(self.stats.records - before);
            }
        }
    }

    /// Adds a record to its partition's next batch; returns the partition.
    fn gather(&mut self, (p, record): (i32, Record)) -> Result<usize> {
        let Some(g) = usize::try_from(p).ok().filter(|&p| p < self.gathering.len()) else {
            return Err(KafkaError::Topic {
                topic: self.config.topic.clone(),
                why: format!("a record of partition {p}, past the stream's partitions"),
            });
        };
        let gathering = &mut self.gathering[g];
        gathering.records.push(record);
        gathering.since.get_or_insert_with(Instant::now);
        Ok(g)
    }

    fn note_error(&mut self, error: String) {
        self.stats.errors += 1;
        self.stats.last_error = Some(error);
    }

    /// Acts on what the client's callbacks heard (see [`Listener`]).
    fn take_heard(&mut self) {
        let heard = self.consumer.context().with(std::mem::take);
        for (p, end) in heard.ends {
            if let Some(slot) = usize::try_from(p).ok().and_then(|p| self.stats.end.get_mut(p)) {
                *slot = end;
            }
        }
        for (p, offset, generation) in heard.committed {
            let Some(p) = usize::try_from(p).ok().filter(|&p| p < self.stats.committed.len()) else { continue };
            // An answer about a partition revoked since says nothing now.
            if self.generation[p] == generation {
                self.stats.committed[p] = self.stats.committed[p].max(offset);
            }
        }
        let failed = !heard.errors.is_empty();
        for error in heard.errors {
            self.note_error(error);
        }
        if heard.commit_finished {
            self.committing = false;
            self.next_commit = failed.then(|| Instant::now() + RECOMMIT_AFTER);
        }
        for p in heard.revoked {
            if let Some(g) = usize::try_from(p).ok().filter(|&g| g < self.gathering.len()) {
                self.gathering[g] = Gathering::default();
                self.pending[g].clear();
                self.wanted[g] = -1;
                self.generation[g] += 1;
                self.stats.committed[g] = -1;
                self.stats.appended[g] = -1;
                self.stats.end[g] = -1;
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
        let (_, producer) = self.stream.as_mut().ok_or(KafkaError::NoSchema)?;
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
            (None, None) => self.wanted[g] = self.wanted[g].max(next),
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
        let schema = self.config.format.known_schema().or(inferred).ok_or(KafkaError::NoSchema)?;
        Ok(self.open_stream(schema)?.0.schema().clone())
    }

    /// The batches Arrow IPC records hold, each with the Kafka columns.
    fn arrow_batches(&mut self, partition: i32, records: &[Record]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for record in records {
            let bad = |why: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| KafkaError::Record {
                partition,
                offset: record.offset,
                why,
                source,
            };
            let bytes = record.value.as_deref().unwrap_or_default();
            let imported = quiver::arrow::import::read_ipc(bytes)
                .map_err(|e| bad("not an Arrow IPC stream".into(), Some(Box::new(e))))?;
            let expected = with_kafka_fields(imported.schema.fields().iter().map(|f| f.as_ref().clone()), false);
            let schema = self.schema_for(Some(expected.clone()))?;
            if schema != expected {
                return Err(bad(format!("its schema {expected} is not the stream's {schema}"), None));
            }
            for batch in imported.batches {
                let rows = batch.num_rows();
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(Int32Array::from(vec![partition; rows])));
                columns.push(Arc::new(Int64Array::from(vec![record.offset; rows])));
                let batch = RecordBatch::try_new(schema.clone(), columns)
                    .map_err(|e| bad("its rows do not fit the stream's schema".into(), Some(Box::new(e))))?;
                out.push(batch);
            }
        }
        Ok(out)
    }

    /// Commits to Kafka, per partition, the offset after the last batch
    /// every required group has committed. The committer thread sends it
    /// (one commit at a time, so a broker that is away never blocks
    /// reading); what Kafka did not acknowledge is sent again with the next
    /// commit, at most every [`RECOMMIT_AFTER`] after a failure.
    fn commit_committed(&mut self) -> Result<()> {
        self.last_commit_check = Some(Instant::now());
        if let Some(stream) = self.stream().filter(|_| self.pending.iter().any(|p| !p.is_empty())) {
            // Every 50 ms while batches wait: the offsets alone, not the
            // stream's statistics (which count lag rows under the lock).
            let offsets = stream.group_offsets()?;
            let groups: Vec<_> = offsets
                .groups
                .iter()
                .filter(|(name, _)| {
                    self.config.required_groups.is_empty() || self.config.required_groups.contains(name)
                })
                .collect();
            // A group committed past a partition's head was restored from a
            // checkpoint after this source appended there: its commits
            // cover batches nobody read. Nothing is committed to Kafka.
            for (name, committed) in &groups {
                for (p, (&c, &head)) in committed.iter().zip(&offsets.heads).enumerate() {
                    if c > head {
                        return Err(KafkaError::GroupAhead { group: name.clone(), partition: p, committed: c, head });
                    }
                }
            }
            // With no group, nobody reads the stream: nothing may be committed.
            if !groups.is_empty() {
                for (p, pending) in self.pending.iter_mut().enumerate() {
                    let done = groups.iter().map(|(_, c)| c.get(p).copied().unwrap_or(0)).min().unwrap_or(0);
                    while let Some(&(_, next)) = pending.front().filter(|&&(offset, _)| offset < done) {
                        self.wanted[p] = self.wanted[p].max(next);
                        pending.pop_front();
                    }
                }
            }
        }
        if self.committing || self.next_commit.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for p in 0..self.wanted.len() {
            if self.wanted[p] > self.stats.committed[p] {
                list.add_partition_offset(&self.config.topic, p as i32, Offset::Offset(self.wanted[p]))?;
            }
        }
        if list.count() > 0 {
            let request = CommitRequest { list, generations: self.generation.clone() };
            if self.commits.as_ref().map_or(true, |c| c.send(request).is_err()) {
                return Err(KafkaError::CommitterGone);
            }
            self.committing = true;
        }
        Ok(())
    }

    /// Publishes the source's progress in the store for `quiver stat`
    /// ([`crate::source_status`]). Best effort: a store too full for it is
    /// counted ([`SourceStats::status_errors`]), and the next second tries
    /// again.
    fn publish_status(&mut self) {
        self.last_status = Some(Instant::now());
        let Some(stream) = self.stream() else { return };
        let now = self.status_for(stream.name());
        if let Err(e) = status::publish(&self.store, &self.status_token, &now) {
            self.stats.status_errors += 1;
            // The error and its causes, on one line.
            let causes = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
            self.stats.last_status_error = Some(causes.map(|e| e.to_string()).collect::<Vec<_>>().join(": "));
        }
    }

    /// Progress as `quiver stat` shows it (`None` until the stream is open).
    pub fn status(&self) -> Option<SourceStatus> {
        self.stream().map(|stream| self.status_for(stream.name()))
    }

    pub(super) fn config(&self) -> &SourceConfig {
        &self.config
    }

    pub(super) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    pub(super) fn pending_batches(&self, p: usize) -> usize {
        self.pending.get(p).map_or(0, VecDeque::len)
    }

    /// Appends what is gathered and commits what the groups have committed,
    /// waiting up to 5 s for Kafka to acknowledge: call before stopping
    /// (dropping the source loses nothing either: what was not committed is
    /// read again).
    pub fn flush_all(&mut self) -> Result<()> {
        for g in 0..self.gathering.len() {
            self.flush(g)?;
        }
        self.commit_committed()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while (0..self.wanted.len()).any(|p| self.wanted[p] > self.stats.committed[p]) && Instant::now() < deadline {
            self.commit_committed()?;
            // Serves the commit callbacks. A record that arrives meanwhile
            // waits for the next step (or, if the source stops, for the
            // partition's next reader: it is not committed).
            match self.consumer.poll(Duration::from_millis(10)) {
                Some(Ok(message)) => {
                    let record = record_of(&message);
                    drop(message);
                    self.gather(record)?;
                }
                Some(Err(e)) if !rides_out(&e) => return Err(e.into()),
                _ => {}
            }
            self.take_heard();
        }
        self.publish_status();
        Ok(())
    }
}

impl Drop for Source {
    /// Takes the source's status out of `quiver stat` (what was not
    /// committed is read again by the partitions' next reader).
    fn drop(&mut self) {
        if self.stream.is_some() {
            let _ = status::remove(&self.store, &self.status_token, &self.stream_name);
        }
        // The committer ends once its queue is closed and its commit done
        // (at most 5 s are waited for it): the consumer is then closed here,
        // on this thread, leaving the group before the process goes on (or
        // exits), not on a thread that may never get to it.
        drop(self.commits.take());
        if let Some(thread) = self.committer.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Starts the thread that commits offsets for `consumer`, one request at
/// a time, and tells the source what came of each through the consumer's
/// [`Listener`]. A synchronous commit waits for the broker as long as it
/// takes; here that wait is off the source's path. The thread ends when the
/// source drops its sender.
fn committer(consumer: &Arc<BaseConsumer<Listener>>) -> (mpsc::Sender<CommitRequest>, std::thread::JoinHandle<()>) {
    let (send, receive) = mpsc::channel::<CommitRequest>();
    let consumer = Arc::clone(consumer);
    let thread = std::thread::spawn(move || {
        for request in receive {
            let result = consumer.commit(&request.list, CommitMode::Sync);
            consumer.context().with(|heard| {
                match result {
                    Ok(()) => heard.committed.extend(request.list.elements().iter().filter_map(|e| {
                        let generation = usize::try_from(e.partition()).ok().and_then(|p| request.generations.get(p));
                        match (e.offset(), generation) {
                            (Offset::Offset(o), Some(&generation)) => Some((e.partition(), o, generation)),
                            _ => None,
                        }
                    })),
                    Err(e) => heard.errors.push(format!("a commit failed (it is sent again): {e}")),
                }
                heard.commit_finished = true;
            });
        }
    });
    (send, thread)
}

/// Whether a poll error is broker trouble that librdkafka heals by itself
/// (the broker gone, a leader moving, a timeout): counted, and reading goes
/// on. Any other error stops the source.
fn rides_out(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError as K;
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        K::Global(_) => true,
        K::MessageConsumption(code) => matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::CoordinatorNotAvailable
                | C::NotCoordinator
        ),
        _ => false,
    }
}

/// A message's partition and its record, copied out of librdkafka's buffer.
fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> (i32, Record) {
    let record = Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        timestamp_ms: message.timestamp().to_millis(),
        offset: message.offset(),
    };
    (message.partition(), record)
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
        .map_err(|e| KafkaError::StreamSchema { format: "raw", why: e.to_string() })
}

impl Source {
    /// What this source publishes about itself, for `stream`.
    fn status_for(&self, stream: &str) -> SourceStatus {
        let source = self;
        let stats = source.stats();
        let config = source.config();
        SourceStatus {
            stream: stream.to_string(),
            topic: config.topic.clone(),
            kafka_group: config.group.clone(),
            brokers: config.brokers.clone(),
            pid: std::process::id(),
            started_ms: source.started_ms(),
            updated_ms: quiver::shm::clock::wall_ns() / 1_000_000,
            records: stats.records,
            batches: stats.batches,
            errors: stats.errors,
            last_error: stats.last_error.clone(),
            partitions: (0..source.partitions() as usize)
                .map(|p| status::PartitionStatus {
                    partition: p as u32,
                    end: stats.end.get(p).copied().unwrap_or(-1),
                    appended: stats.appended.get(p).copied().unwrap_or(-1),
                    committed: stats.committed.get(p).copied().unwrap_or(-1),
                    waiting_batches: source.pending_batches(p) as u64,
                })
                .collect(),
        }
    }
}
