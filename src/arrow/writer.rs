//! Writing record batches into store objects.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::{write_message, DictionaryTracker, IpcDataGenerator, IpcWriteOptions, StreamEncoder};
use arrow_ipc::MetadataVersion;
use arrow_schema::SchemaRef;

use super::BatchError;
use super::{
    check_supported, fingerprint, BATCH_MAGIC, BATCH_META_LEN, FORMAT_VERSION, IPC_ALIGNMENT, SCHEMA_MAGIC,
    SCHEMA_META_LEN,
};
use crate::shm::clock::wall_ns;
use crate::store::StoreError;
use crate::store::{CreateOptions, ObjectBuilder, ObjectId, Store};

/// Writes record batches of one schema into store objects, one batch per
/// object, the schema once per store.
pub struct BatchWriter {
    store: Store,
    schema: SchemaRef,
    fingerprint: u64,
    encoder: StreamEncoder,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter").field("fingerprint", &self.fingerprint).finish()
    }
}

fn write_options() -> Result<IpcWriteOptions, BatchError> {
    Ok(IpcWriteOptions::try_new(IPC_ALIGNMENT, false, MetadataVersion::V5)?)
}

/// The encapsulated IPC schema message for `schema`.
pub(crate) fn schema_message(schema: &SchemaRef) -> Result<Vec<u8>, BatchError> {
    let options = write_options()?;
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut DictionaryTracker::new(false),
        &options,
    );
    let mut bytes = Vec::new();
    write_message(&mut bytes, encoded, &options)?;
    Ok(bytes)
}

impl BatchWriter {
    /// A writer of batches of `schema` into `store`. Publishes the schema in
    /// the store (once: writers of the same schema share it). Refuses
    /// dictionary-encoded columns with [`BatchError::Unsupported`].
    pub fn new(store: &Store, schema: SchemaRef) -> Result<Self, BatchError> {
        check_supported(schema.fields())?;
        let message = schema_message(&schema)?;
        let fingerprint = fingerprint(&message);
        publish_schema(store, fingerprint, &message)?;
        let mut encoder = StreamEncoder::try_new_with_options(&schema, write_options()?)?;
        // The encoder emits the schema message with its first batch; spend
        // that on an empty batch so every later output is one record batch.
        encoder.encode(&RecordBatch::new_empty(schema.clone()))?;
        Ok(BatchWriter { store: store.clone(), schema, fingerprint, encoder })
    }

    /// The schema every batch must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The schema's fingerprint (its object is `ObjectId::schema(fingerprint)`).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Encodes `batch` into a new object `id` and seals it.
    pub fn put_batch(&mut self, id: ObjectId, batch: &RecordBatch) -> Result<(), BatchError> {
        self.put_batch_with(id, batch, CreateOptions::default())
    }

    /// [`put_batch`](Self::put_batch) with the store's create options
    /// (waiting for space, pinning).
    pub fn put_batch_with(
        &mut self,
        id: ObjectId,
        batch: &RecordBatch,
        options: CreateOptions,
    ) -> Result<(), BatchError> {
        let encoded = self.encode(batch)?;
        let mut builder = self.store.create_object_with(id, encoded.size, &self.metadata(&encoded, 0), options)?;
        encoded.write_into(&mut builder)?;
        stamp_append_time(&mut builder, wall_ns());
        builder.seal()?;
        Ok(())
    }

    /// Checks `batch` against the schema and encodes it as one IPC message.
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<Encoded, BatchError> {
        if !Arc::ptr_eq(&batch.schema(), &self.schema) && *batch.schema() != *self.schema {
            return Err(BatchError::SchemaMismatch {
                expected: self.schema.to_string(),
                found: batch.schema().to_string(),
            });
        }
        let buffers = self.encoder.encode(batch)?;
        let size = buffers.iter().map(|b| b.len() as u64).sum();
        Ok(Encoded { buffers, size, rows: batch.num_rows() as u64 })
    }

    /// The object metadata of an encoded batch appended at `append_ns`.
    pub(crate) fn metadata(&self, encoded: &Encoded, append_ns: u64) -> [u8; BATCH_META_LEN] {
        let mut meta = [0u8; BATCH_META_LEN];
        meta[..4].copy_from_slice(&BATCH_MAGIC);
        meta[4] = FORMAT_VERSION;
        meta[8..16].copy_from_slice(&self.fingerprint.to_le_bytes());
        meta[16..24].copy_from_slice(&append_ns.to_le_bytes());
        meta[24..32].copy_from_slice(&encoded.rows.to_le_bytes());
        meta
    }
}

/// A record batch encoded as one IPC message: the encoder's buffers (which
/// share the batch's memory) and their total size.
pub(crate) struct Encoded {
    buffers: Vec<arrow_buffer::Buffer>,
    /// Bytes of the message.
    pub size: u64,
    /// Rows of the batch.
    pub rows: u64,
}

impl Encoded {
    /// Copies the message into a new object created with `self.size` bytes:
    /// the one copy of the column data.
    pub(crate) fn write_into(&self, builder: &mut ObjectBuilder) -> Result<(), BatchError> {
        let id = builder.id();
        let data = builder.data_mut();
        if data.len() as u64 != self.size {
            return Err(StoreError::corrupted(format_args!("object {id} is not the size it was created with")).into());
        }
        let mut at = 0;
        for buffer in &self.buffers {
            data[at..at + buffer.len()].copy_from_slice(buffer.as_slice());
            at += buffer.len();
        }
        Ok(())
    }
}

/// Writes the append time into a batch object's metadata before its seal.
pub(crate) fn stamp_append_time(builder: &mut ObjectBuilder, append_ns: u64) {
    if let Some(field) = builder.metadata_mut().get_mut(16..24) {
        field.copy_from_slice(&append_ns.to_le_bytes());
    }
}

/// Puts the schema message in the store under its fingerprint, pinned, unless
/// it is there already (then it must hold the same bytes). If another writer
/// is publishing it, waits for its seal; if that writer dies first (its
/// object is then aborted), publishes it itself.
fn publish_schema(store: &Store, fingerprint: u64, message: &[u8]) -> Result<(), BatchError> {
    let id = ObjectId::schema(fingerprint);
    let mut meta = [0u8; SCHEMA_META_LEN];
    meta[..4].copy_from_slice(&SCHEMA_MAGIC);
    meta[4] = FORMAT_VERSION;
    let options = CreateOptions::new().pinned(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match store.create_object_with(id, message.len() as u64, &meta, options) {
            Ok(mut builder) => {
                if builder.data_mut().len() != message.len() {
                    return Err(StoreError::corrupted("a new schema object has the wrong size").into());
                }
                builder.data_mut().copy_from_slice(message);
                builder.seal()?;
                return Ok(());
            }
            Err(StoreError::AlreadyExists(_)) => {
                if let Some(view) = store.get(id, std::time::Duration::from_millis(100))? {
                    if view.data() != message || view.metadata() != meta {
                        return Err(BatchError::SchemaMismatch {
                            expected: format!("the schema with fingerprint {fingerprint:016x}"),
                            found: format!("object {id}, which holds other bytes"),
                        });
                    }
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    return Err(BatchError::NotABatch { id, why: "the schema object was never sealed".into() });
                }
                // Its creator may have died: recover it, then try again.
                store.recover_dead_clients()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
