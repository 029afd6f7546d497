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
//!
//! The `client` feature (on by default) is the Kafka client: everything
//! here but [`source_status`] and its types, which read what running
//! sources publish in a store and need no librdkafka (`quiver stat` uses
//! them in every build).

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod json;
#[cfg(feature = "client")]
mod record;
#[cfg(feature = "client")]
mod sink;
#[cfg(feature = "client")]
mod source;
mod status;

#[cfg(feature = "client")]
pub use client::*;
pub use status::{source_status, PartitionStatus, SourceStatus};
