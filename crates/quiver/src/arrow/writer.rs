//! Writing record batches into store objects.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{downcast_primitive_array, Array, RecordBatch};
use arrow_ipc::writer::{write_message, DictionaryTracker, IpcDataGenerator, IpcWriteOptions, StreamEncoder};
use arrow_ipc::MetadataVersion;
use arrow_schema::SchemaRef;

use super::layout::Layout;
use super::{
    check_supported, fingerprint, BATCH_MAGIC, BATCH_META_LEN, FORMAT_VERSION, IPC_ALIGNMENT, SCHEMA_MAGIC,
    SCHEMA_META_LEN,
};
use super::{BatchError, BatchSlot};
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
    /// Whether the schema has a fixed layout (see [`Layout`]).
    fixed: bool,
    /// The layouts of appended batches met, by row count and which of the
    /// (first 64) columns have nulls.
    layouts: HashMap<(usize, u64), Arc<Layout>>,
    /// The layouts of reserved batches, by row count: every nullable column
    /// has its validity bitmap.
    reserved: HashMap<usize, Arc<Layout>>,
}

/// How many layouts a writer keeps of each kind.
const LAYOUTS: usize = 64;

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
        let fixed = Layout::fits(&schema);
        Ok(BatchWriter {
            store: store.clone(),
            schema,
            fingerprint,
            encoder,
            fixed,
            layouts: HashMap::new(),
            reserved: HashMap::new(),
        })
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
        let mut builder = self.store.create_object_with(id, encoded.size, &self.metadata(encoded.rows, 0), options)?;
        encoded.write_into(&mut builder)?;
        stamp_append_time(&mut builder, wall_ns());
        builder.seal()?;
        Ok(())
    }

    /// Creates object `id` for a batch of `rows` rows and hands out its
    /// columns to fill in place ([`BatchSlot`]): the publish path with no
    /// copy. Every column must have fixed-width values
    /// ([`BatchError::Unsupported`] otherwise).
    pub fn reserve(&mut self, id: ObjectId, rows: usize, options: CreateOptions) -> Result<BatchSlot, BatchError> {
        let layout = self.reserve_layout(rows)?;
        let object = self.store.create_object_with(id, layout.size as u64, &self.metadata(rows as u64, 0), options)?;
        BatchSlot::new(object, layout, self.schema.clone())
    }

    /// The layout of a batch of `rows` rows for [`reserve`](Self::reserve):
    /// refused for a schema without a fixed layout, or for more rows than
    /// IPC allows or the store could ever hold (checked before the layout's
    /// template batch is allocated).
    pub(crate) fn reserve_layout(&mut self, rows: usize) -> Result<Arc<Layout>, BatchError> {
        if !self.fixed {
            return Err(BatchError::Unsupported(
                "batches are built in place only when every column has fixed-width values; append this schema's batches"
                    .into(),
            ));
        }
        let pad = |n: usize| n.checked_next_multiple_of(IPC_ALIGNMENT);
        let body = self.schema.fields().iter().try_fold(0usize, |sum, f| {
            let values = super::layout::Width::of(f.data_type())?.bytes(rows)?;
            sum.checked_add(pad(rows.div_ceil(8))?)?.checked_add(pad(values)?)
        });
        let capacity = self.store.mapped_range().len() as u64;
        match body {
            Some(body) if rows <= i32::MAX as usize && (body as u64) < capacity => {}
            _ => return Err(StoreError::TooLarge { requested: body.map_or(u64::MAX, |b| b as u64), capacity }.into()),
        }
        if let Some(layout) = self.reserved.get(&rows) {
            return Ok(layout.clone());
        }
        let nullable = |i: usize| self.schema.field(i).is_nullable();
        let layout = Layout::template(&self.schema, rows, nullable, &write_options()?)?
            .ok_or_else(|| BatchError::Unsupported("no fixed layout for this schema".into()))?;
        Ok(cache(&mut self.reserved, rows, layout))
    }

    /// The cached layout of `rows` rows with nulls in the columns of
    /// `nulls` (a bit per column), made the first time.
    fn layout(&mut self, rows: usize, nulls: u64) -> Result<Option<Arc<Layout>>, BatchError> {
        if let Some(layout) = self.layouts.get(&(rows, nulls)) {
            return Ok(Some(layout.clone()));
        }
        let with_nulls = |i: usize| nulls & (1 << i) != 0;
        let Some(layout) = Layout::template(&self.schema, rows, with_nulls, &write_options()?)? else {
            return Ok(None);
        };
        Ok(Some(cache(&mut self.layouts, (rows, nulls), layout)))
    }

    /// Checks `batch` against the schema and encodes it as one IPC message:
    /// from the layout of its row count when it has one (no encoder, the
    /// columns copied straight from the batch), by arrow-ipc otherwise.
    pub(crate) fn encode<'b>(&mut self, batch: &'b RecordBatch) -> Result<Encoded<'b>, BatchError> {
        if !Arc::ptr_eq(&batch.schema(), &self.schema) && *batch.schema() != *self.schema {
            return Err(BatchError::SchemaMismatch {
                expected: self.schema.to_string(),
                found: batch.schema().to_string(),
            });
        }
        let rows = batch.num_rows() as u64;
        if self.fixed && batch.num_columns() <= 64 && batch.columns().iter().all(|c| laid_out(c.as_ref())) {
            let nulls =
                batch.columns().iter().enumerate().fold(0u64, |m, (i, c)| m | u64::from(c.null_count() > 0) << i);
            if let Some(layout) = self.layout(batch.num_rows(), nulls)? {
                let size = layout.size as u64;
                return Ok(Encoded { body: Body::Laid { layout, batch }, size, rows });
            }
        }
        let buffers = self.encoder.encode(batch)?;
        let size = buffers.iter().map(|b| b.len() as u64).sum();
        Ok(Encoded { body: Body::Buffers(buffers), size, rows })
    }

    /// The object metadata of a batch of `rows` rows appended at `append_ns`.
    pub(crate) fn metadata(&self, rows: u64, append_ns: u64) -> [u8; BATCH_META_LEN] {
        let mut meta = [0u8; BATCH_META_LEN];
        meta[..4].copy_from_slice(&BATCH_MAGIC);
        meta[4] = FORMAT_VERSION;
        meta[8..16].copy_from_slice(&self.fingerprint.to_le_bytes());
        meta[16..24].copy_from_slice(&append_ns.to_le_bytes());
        meta[24..32].copy_from_slice(&rows.to_le_bytes());
        meta
    }
}

/// Keeps `layout` in `map` (emptied when it holds [`LAYOUTS`]).
fn cache<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Arc<Layout>>, key: K, layout: Layout) -> Arc<Layout> {
    if map.len() >= LAYOUTS {
        map.clear();
    }
    let layout = Arc::new(layout);
    map.insert(key, layout.clone());
    layout
}

/// The values of a fixed-width column as bytes, when they can be copied
/// as they are: primitive values, or booleans starting on a byte.
fn values_bytes(array: &dyn Array) -> Option<&[u8]> {
    downcast_primitive_array!(
        array => Some(array.values().inner().as_slice()),
        arrow_schema::DataType::Boolean => {
            let values = array.as_boolean().values();
            let start = values.offset();
            (start % 8 == 0).then(|| &values.inner().as_slice()[start / 8..][..values.len().div_ceil(8)])
        }
        _ => None
    )
}

/// The validity bitmap of a column as bytes, when it starts on a byte.
fn validity_bytes(nulls: &arrow_buffer::NullBuffer) -> Option<&[u8]> {
    let start = nulls.offset();
    (start % 8 == 0).then(|| &nulls.buffer().as_slice()[start / 8..][..nulls.len().div_ceil(8)])
}

/// Whether a column can be written from a layout (else arrow-ipc encodes it).
fn laid_out(array: &dyn Array) -> bool {
    values_bytes(array).is_some() && array.nulls().map_or(true, |n| validity_bytes(n).is_some())
}

/// A record batch encoded as one IPC message, not yet written anywhere.
pub(crate) struct Encoded<'b> {
    body: Body<'b>,
    /// Bytes of the message.
    pub size: u64,
    /// Rows of the batch.
    pub rows: u64,
}

enum Body<'b> {
    /// arrow-ipc's buffers (which share the batch's memory).
    Buffers(Vec<arrow_buffer::Buffer>),
    /// The header of the batch's layout, then its columns as they are.
    Laid { layout: Arc<Layout>, batch: &'b RecordBatch },
}

impl Encoded<'_> {
    /// Copies the message into a new object created with `self.size` bytes:
    /// the one copy of the column data.
    pub(crate) fn write_into(&self, builder: &mut ObjectBuilder) -> Result<(), BatchError> {
        let id = builder.id();
        let data = builder.data_mut();
        if data.len() as u64 != self.size {
            return Err(StoreError::corrupted(format_args!("object {id} is not the size it was created with")).into());
        }
        match &self.body {
            Body::Buffers(buffers) => {
                let mut at = 0;
                for buffer in buffers {
                    data[at..at + buffer.len()].copy_from_slice(buffer.as_slice());
                    at += buffer.len();
                }
            }
            Body::Laid { layout, batch } => {
                let mut end = layout.header.len();
                data[..end].copy_from_slice(&layout.header);
                for (column, array) in layout.columns.iter().zip(batch.columns()) {
                    let nulls = array.null_count();
                    data[column.null_count_at..column.null_count_at + 8].copy_from_slice(&(nulls as i64).to_le_bytes());
                    data[end..column.validity.start].fill(0);
                    // The layout has a bitmap exactly for the columns with nulls.
                    let validity = &mut data[column.validity.clone()];
                    match array.nulls().filter(|_| nulls > 0).and_then(validity_bytes) {
                        Some(bits) if bits.len() == validity.len() => validity.copy_from_slice(bits),
                        None if validity.is_empty() => {}
                        _ => return Err(not_laid_out(id)),
                    }
                    data[column.validity.end..column.values.start].fill(0);
                    match values_bytes(array.as_ref()) {
                        Some(values) if values.len() == column.values.len() => {
                            data[column.values.clone()].copy_from_slice(values)
                        }
                        _ => return Err(not_laid_out(id)),
                    }
                    end = column.values.end;
                }
                data[end..].fill(0);
            }
        }
        Ok(())
    }
}

fn not_laid_out(id: ObjectId) -> BatchError {
    BatchError::NotABatch { id, why: "a column does not have its layout's size".into() }
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
