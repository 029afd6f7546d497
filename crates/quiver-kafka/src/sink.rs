//! Kafka out: a stream consumer group's batches produced to a topic, the
//! group committing only once Kafka has acknowledged them.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use quiver::{Consumer, ConsumerConfig, Polled, Store, Stream};

use crate::{KafkaError, Result};

/// How a [`Sink`] writes batches as records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkFormat {
    /// One record per batch: an Arrow IPC stream (the schema, the batch).
    Arrow,
    /// One record per row: a JSON object of the row's columns.
    Json,
}

/// How a [`Sink`] produces.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    brokers: String,
    topic: String,
    format: SinkFormat,
    properties: Vec<(String, String)>,
}

impl SinkConfig {
    /// A sink to `topic` on `brokers`, one Arrow IPC record per batch.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        SinkConfig { brokers: brokers.into(), topic: topic.into(), format: SinkFormat::Arrow, properties: Vec::new() }
    }

    /// The format of the records.
    pub fn format(mut self, format: SinkFormat) -> Self {
        self.format = format;
        self
    }

    /// A librdkafka configuration property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

/// A stream consumer group's batches produced to a Kafka topic with an
/// idempotent producer: stream partition `p` to Kafka partition
/// `p % partitions`, in order; the group commits a batch only after Kafka
/// acknowledged every record of it, so a crash re-sends, never drops.
pub struct Sink {
    producer: BaseProducer,
    consumer: Consumer,
    config: SinkConfig,
    partitions: i32,
    /// Records acknowledged by Kafka.
    pub sent: u64,
    ended: bool,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("topic", &self.config.topic).field("sent", &self.sent).finish()
    }
}

/// How long a step waits for Kafka's acknowledgements at most.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

impl Sink {
    /// A sink of group `group` of stream `stream` in `store` to the topic.
    pub fn new(store: &Store, stream: &str, group: &str, config: SinkConfig) -> Result<Self> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers).set("enable.idempotence", "true");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let producer: BaseProducer = client.create()?;
        let metadata = producer.client().fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .filter(|&n| n > 0)
            .ok_or_else(|| KafkaError::Topic { topic: config.topic.clone(), why: "not in the cluster".into() })?;
        let consumer = Stream::open(store, stream)?.consumer(ConsumerConfig::group(group))?;
        Ok(Sink { producer, consumer, config, partitions, sent: 0, ended: false })
    }

    /// Sends what the group has to read for up to `timeout` (at least one
    /// poll), waits for Kafka's acknowledgement, then commits the group.
    /// Returns the records sent.
    pub fn step(&mut self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut sent = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.poll(left)? {
                Polled::Batch(got) => {
                    let partition = (got.partition as i32) % self.partitions;
                    for payload in self.records(&got.batch)? {
                        self.send(partition, &payload)?;
                        sent += 1;
                    }
                }
                Polled::EndOfStream => {
                    self.ended = true;
                    break;
                }
                Polled::TimedOut => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if sent > 0 {
            self.producer.flush(DELIVERY_TIMEOUT)?;
            if self.producer.in_flight_count() != 0 {
                return Err(KafkaError::Topic {
                    topic: self.config.topic.clone(),
                    why: "records not acknowledged within 30 s; the group did not commit".into(),
                });
            }
            self.consumer.commit()?;
            self.sent += sent;
        }
        Ok(sent)
    }

    /// Whether the stream is closed and the group has read all of it.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn send(&self, partition: i32, payload: &[u8]) -> Result<()> {
        let mut record = BaseRecord::<(), [u8]>::to(&self.config.topic).partition(partition).payload(payload);
        let start = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The queue is full: let deliveries drain, then try again.
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) if start.elapsed() < DELIVERY_TIMEOUT => {
                    self.producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// The records of a batch in the sink's format.
    fn records(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let bad = |source| KafkaError::Arrow { what: "a batch cannot be written as an Arrow record", source };
        match self.config.format {
            SinkFormat::Arrow => {
                let mut bytes = Vec::new();
                let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema()).map_err(bad)?;
                writer.write(batch).map_err(bad)?;
                writer.finish().map_err(bad)?;
                drop(writer);
                Ok(vec![bytes])
            }
            SinkFormat::Json => crate::json::rows(batch).map_err(KafkaError::Encode),
        }
    }
}
