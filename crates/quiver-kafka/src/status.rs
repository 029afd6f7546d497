//! A source's progress, published in the store for `quiver stat`: Kafka's
//! offsets (the partition's end, what was appended, what Kafka holds as
//! committed) beside the stream's own.
//!
//! Each running [`Source`] keeps one small object of JSON in the store,
//! rewritten every second, under an ID of kind `b'K'`: bytes 4..8 the
//! source's process ID, bytes 8..16 a hash of the stream's name, bytes
//! 16..24 random, drawn once per source (two sources of one stream in one
//! process, or in two containers whose process IDs agree, never share one). The
//! object says which stream it is about; a reader trusts nothing else in
//! it, and a status that does not parse is skipped. A source that stops
//! deletes its status; one that was killed leaves it, and its age shows
//! that it is stale.

use serde::{Deserialize, Serialize};

use quiver::{IdKind, ObjectState, StoreError, Stream};

/// A status larger than this is not one of ours.
const MAX_STATUS_BYTES: usize = 1 << 20;

/// One Kafka partition as a source last saw it. Offsets are -1 when not
/// known (not heard from the broker yet, or the partition is not this
/// source's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The Kafka partition (and stream partition).
    pub partition: u32,
    /// The partition's end (high watermark) on the broker.
    pub end: i64,
    /// The offset after the last record appended to the stream.
    pub appended: i64,
    /// The offset Kafka acknowledged as committed for the source's group.
    pub committed: i64,
    /// Batches appended that wait for the stream's groups to commit them.
    pub waiting_batches: u64,
}

impl PartitionStatus {
    /// Records on the broker the source's Kafka group has not committed:
    /// Kafka's consumer lag (`None` until this source has heard the
    /// partition's end and had a commit acknowledged, as Kafka's own tools
    /// show no lag for a group without a committed offset).
    pub fn kafka_lag(&self) -> Option<i64> {
        (self.end >= 0 && self.committed >= 0).then(|| (self.end - self.committed).max(0))
    }
}

/// What a running source publishes about itself (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The stream it appends to.
    pub stream: String,
    /// The topic it reads.
    pub topic: String,
    /// Its Kafka consumer group.
    pub kafka_group: String,
    /// The brokers it was given.
    pub brokers: String,
    /// Its process.
    pub pid: u32,
    /// When it started and when it wrote this, in ms since the Unix epoch.
    pub started_ms: u64,
    /// When this was written.
    pub updated_ms: u64,
    /// Records and batches appended.
    pub records: u64,
    /// Batches appended.
    pub batches: u64,
    /// Failures it rode out, and the last of them.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Per partition.
    pub partitions: Vec<PartitionStatus>,
}

/// Writing statuses: what a running source does (the `client` feature).
#[cfg(feature = "client")]
mod publish {
    use quiver::{IdKind, ObjectId, Store, StoreError};

    use super::SourceStatus;
    use crate::KafkaError;

    /// A source's own random part of its status ID.
    pub(crate) fn token() -> [u8; 8] {
        let random = ObjectId::random();
        let mut token = [0u8; 8];
        token.copy_from_slice(&random.as_bytes()[16..24]);
        token
    }

    /// The ID of the status of the source `token` in process `pid` for `stream`.
    fn status_id(stream: &str, pid: u32, token: &[u8; 8]) -> ObjectId {
        ObjectId::named(IdKind::KafkaStatus, stream, pid, *token)
    }

    /// Replaces the status of the source `token` for `status.stream`.
    pub(crate) fn publish(store: &Store, token: &[u8; 8], status: &SourceStatus) -> Result<(), KafkaError> {
        let bytes = serde_json::to_vec(status).map_err(KafkaError::StatusEncode)?;
        let id = status_id(&status.stream, status.pid, token);
        remove_id(store, id).map_err(KafkaError::Status)?;
        let mut builder = store.create_object(id, bytes.len() as u64, &[]).map_err(KafkaError::Status)?;
        builder.data_mut().copy_from_slice(&bytes);
        builder.seal().map_err(KafkaError::Status)
    }

    /// Deletes the status of the source `token` for `stream`, if there is one.
    pub(crate) fn remove(store: &Store, token: &[u8; 8], stream: &str) -> Result<(), StoreError> {
        remove_id(store, status_id(stream, std::process::id(), token))
    }

    fn remove_id(store: &Store, id: ObjectId) -> Result<(), StoreError> {
        match store.delete(id) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(feature = "client")]
pub(crate) use publish::{publish, remove, token};

/// The statuses the Kafka sources of `stream` published (see the module
/// docs), oldest source first; statuses that do not parse are skipped.
pub fn source_status(stream: &Stream) -> Result<Vec<SourceStatus>, StoreError> {
    let store = stream.store();
    let mut found = Vec::new();
    for info in store.list()? {
        if !info.id.is_named(IdKind::KafkaStatus, stream.name()) || info.state != ObjectState::Sealed {
            continue;
        }
        if info.data_size > MAX_STATUS_BYTES as u64 {
            continue;
        }
        // Objects come and go meanwhile; one of kind K that is not a
        // status (shared cells, say) is passed over like a bad status.
        let view = match store.get(info.id, std::time::Duration::ZERO) {
            Ok(Some(view)) => view,
            Ok(None) | Err(StoreError::NotFound(_) | StoreError::CellsObject(_)) => continue,
            Err(e) => return Err(e),
        };
        if let Ok(status) = serde_json::from_slice::<SourceStatus>(view.data()) {
            if status.stream == stream.name() {
                found.push(status);
            }
        }
    }
    found.sort_by_key(|s| (s.started_ms, s.pid));
    Ok(found)
}
