//! The Kafka client (feature `client`): the error type, the formats,
//! [`Source`], [`Sink`] and [`create_topic`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rdkafka::ClientConfig;

use quiver::StreamError;

pub use crate::sink::{Sink, SinkConfig, SinkFormat};
pub use crate::source::{Source, SourceConfig, SourceStats};

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
    /// The stream's shard-managed groups could not be read.
    #[error(transparent)]
    Shard(#[from] quiver::ShardError),
    /// The topic does not exist or cannot be used.
    #[error("topic {topic:?}: {why}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        why: String,
    },
    /// A configuration that cannot work (a setting, or a stream whose
    /// partitions are not the topic's).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The brokers did not answer within the time given.
    #[error("no answer from the brokers within {0:?}")]
    NoAnswer(Duration),
    /// The stream's schema cannot hold this format's rows.
    #[error("the stream's schema does not fit the {format} format: {why}")]
    StreamSchema {
        /// The format (`raw`, `json`).
        format: &'static str,
        /// What does not fit.
        why: String,
    },
    /// Arrow refused to build or encode a batch.
    #[error("{what}")]
    Arrow {
        /// What was being done.
        what: &'static str,
        /// Arrow's reason.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A batch's rows cannot be written as JSON records.
    #[error("a batch cannot be written as records: {0}")]
    Encode(String),
    /// A group of the stream has committed past the partition's head: it
    /// was restored from a checkpoint after the source started, so its
    /// commits cover batches nobody read. Nothing is committed to Kafka.
    #[error(
        "group {group:?} has committed offset {committed} of partition {partition}, past its head {head}: a \
         group restored from a checkpoint after the source started? (restore groups first: the source then \
         starts past them)"
    )]
    GroupAhead {
        /// The group.
        group: String,
        /// The partition.
        partition: usize,
        /// The group's committed offset there.
        committed: u64,
        /// The partition's head.
        head: u64,
    },
    /// The stream's schema is not known yet: it does not exist, the format
    /// does not say it and no record has shown it.
    #[error("the stream's schema is not known yet")]
    NoSchema,
    /// The source's thread that commits to Kafka is gone.
    #[error("the source's commit thread is gone")]
    CommitterGone,
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
        /// The reader's or Arrow's error, where one said it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The store refused the source's status object.
    #[error("the source's status")]
    Status(#[source] quiver::StoreError),
    /// The source's status could not be encoded.
    #[error("the source's status cannot be encoded")]
    StatusEncode(#[source] serde_json::Error),
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
pub(crate) fn with_kafka_fields(fields: impl IntoIterator<Item = Field>, json: bool) -> SchemaRef {
    let mut all: Vec<Field> = fields.into_iter().collect();
    all.extend(kafka_fields());
    if json {
        all.push(Field::new("_unparsed", DataType::Utf8, true));
    }
    Arc::new(Schema::new(all))
}

impl Format {
    /// The stream's schema, when the format knows it before any record.
    pub(crate) fn known_schema(&self) -> Option<SchemaRef> {
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
            return Err(KafkaError::NoAnswer(timeout));
        }
        std::thread::park_timeout(left.min(Duration::from_millis(10)));
    }
}
