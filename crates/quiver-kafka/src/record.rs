//! A Kafka record as the source gathers it for its next batch: what the
//! source reads off a message, and what the batch builders (`json`, the raw
//! columns) take.

/// A record gathered for the next batch.
pub(crate) struct Record {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) offset: i64,
}
