//! Reading record batches from store objects without copying.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::ArrayRef;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::RecordBatchDecoder;
use arrow_ipc::MetadataVersion;
use arrow_schema::SchemaRef;

use super::layout::Layout;
use super::BatchError;
use super::{
    check_batch_message, fingerprint, framed_header_len, BATCH_MAGIC, BATCH_META_LEN, FORMAT_VERSION, SCHEMA_MAGIC,
};
use crate::store::{ObjectId, ObjectView, Store};

/// What a batch object's metadata says about it, without decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// The fingerprint of the batch's schema.
    pub schema_fingerprint: u64,
    /// When the batch was sealed, in nanoseconds since the Unix epoch.
    pub append_ns: u64,
    /// Rows in the batch.
    pub rows: u64,
}

impl BatchMeta {
    /// Parses the metadata of object `id`.
    pub fn parse(id: ObjectId, meta: &[u8]) -> Result<Self, BatchError> {
        let not = |why: &str| BatchError::NotABatch { id, why: why.to_string() };
        if meta.len() != BATCH_META_LEN || meta[..4] != BATCH_MAGIC {
            return Err(not("its metadata is not a quiver batch header"));
        }
        if meta[4] != FORMAT_VERSION {
            return Err(not(&format!("batch format version {} (this build reads {FORMAT_VERSION})", meta[4])));
        }
        let word = |at: usize| u64::from_le_bytes(meta[at..at + 8].try_into().unwrap_or_default());
        Ok(BatchMeta { schema_fingerprint: word(8), append_ns: word(16), rows: word(24) })
    }
}

/// Maps keyed by schema fingerprint, which is a hash already: it is used
/// as it is, not hashed again for every batch.
type ByFingerprint = std::hash::BuildHasherDefault<FingerprintHasher>;

#[derive(Default)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are u64); fold anything else in.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, fingerprint: u64) {
        self.0 = fingerprint;
    }
}

/// How many layouts a reader keeps per schema.
const LAYOUTS_PER_SCHEMA: usize = 4;

/// Reads record batches out of a store, zero-copy. Keeps a decoder per
/// schema it has met.
pub struct BatchReader {
    store: Store,
    /// The schemas met, by fingerprint.
    schemas: HashMap<u64, SchemaRef, ByFingerprint>,
    /// For schemas with a fixed layout, the layouts of the last batches
    /// decoded in full (a few per schema: row counts and which columns
    /// carry a bitmap vary): a batch with the same header as one of them
    /// (null counts aside) is decoded without parsing its header again.
    layouts: HashMap<u64, Vec<Layout>, ByFingerprint>,
    /// Batches carry no dictionaries (refused at the writer).
    no_dictionaries: HashMap<i64, ArrayRef>,
    expected: Option<SchemaRef>,
    skip_validation: bool,
}

impl std::fmt::Debug for BatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReader").field("schemas", &self.schemas.len()).finish()
    }
}

impl BatchReader {
    /// A reader of batches in `store`, validating what it decodes.
    pub fn new(store: &Store) -> Self {
        BatchReader {
            store: store.clone(),
            schemas: HashMap::default(),
            layouts: HashMap::default(),
            no_dictionaries: HashMap::new(),
            expected: None,
            skip_validation: false,
        }
    }

    /// Refuse batches whose schema is not `schema` ([`BatchError::SchemaMismatch`]).
    pub fn expect_schema(mut self, schema: SchemaRef) -> Self {
        self.expected = Some(schema);
        self
    }

    /// Skips Arrow's validation of decoded arrays (offsets, UTF-8, ...).
    ///
    /// # Safety
    ///
    /// The bytes of every batch object this reader decodes, and of the schema
    /// objects they name, must have been written by a trusted
    /// [`BatchWriter`](super::BatchWriter) and not changed since: invalid
    /// arrays are undefined behaviour when used. (Schema objects are found by
    /// a 64-bit FNV-1a fingerprint, which is not collision-resistant against
    /// an adversary.)
    pub unsafe fn with_skip_validation(mut self, skip: bool) -> Self {
        self.skip_validation = skip;
        self
    }

    /// The batch in object `id`, waiting up to `timeout` for it to be
    /// sealed; `Ok(None)` if it was not sealed in time.
    pub fn get_batch(&mut self, id: ObjectId, timeout: Duration) -> Result<Option<RecordBatch>, BatchError> {
        Ok(self.get_batch_with_meta(id, timeout)?.map(|(batch, _)| batch))
    }

    /// [`get_batch`](Self::get_batch), with what the object's metadata says.
    pub fn get_batch_with_meta(
        &mut self,
        id: ObjectId,
        timeout: Duration,
    ) -> Result<Option<(RecordBatch, BatchMeta)>, BatchError> {
        match self.store.get(id, timeout)? {
            Some(view) => self.decode(view).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes a view of a batch object. The batch's buffers point into the
    /// view's bytes and keep the view (and so the object) alive.
    pub fn decode(&mut self, view: ObjectView) -> Result<(RecordBatch, BatchMeta), BatchError> {
        let id = view.id();
        let meta = BatchMeta::parse(id, view.metadata())?;
        let schema = self.schema(id, meta.schema_fingerprint)?;
        let buffer = wrap(view);
        let data = buffer.as_slice();
        let header = framed_header_len(id, data)?;
        let known = self.layouts.get(&meta.schema_fingerprint).and_then(|layouts| {
            layouts
                .iter()
                .find(|l| l.rows as u64 == meta.rows && data.len() == l.size && l.same_header(&data[..header]))
        });
        if let Some(layout) = known {
            let batch = layout.decode(&schema, &buffer).map_err(|why| BatchError::NotABatch { id, why })?;
            return Ok((batch, meta));
        }
        // Checked (and its flatbuffer verified) once, here; the decoder
        // reads the verified header as it is.
        let batch_header = check_batch_message(id, &schema, data, header)?;
        let layout = Layout::from_header(&schema, &data[..header], batch_header, data.len() - header);
        let body = buffer.slice(header);
        let decode = || {
            let mut decoder = RecordBatchDecoder::try_new(
                &body,
                batch_header,
                schema.clone(),
                &self.no_dictionaries,
                &MetadataVersion::V5,
            )?
            .with_require_alignment(true);
            if self.skip_validation {
                let mut skip = arrow_data::UnsafeFlag::new();
                // SAFETY: the caller of `with_skip_validation` promised that
                // every object this reader decodes comes from a trusted writer.
                unsafe { skip.set(true) };
                decoder = decoder.with_skip_validation(skip);
            }
            decoder.read_record_batch()
        };
        // The message was checked above; should arrow-ipc still panic on
        // some other inconsistency, the bytes are reported as not a batch
        // rather than taking the process down.
        let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
            .map_err(|_| BatchError::NotABatch { id, why: "arrow-ipc could not decode the message".into() })??;
        if batch.num_rows() as u64 != meta.rows {
            let why = format!("its metadata says {} rows, its message {}", meta.rows, batch.num_rows());
            return Err(BatchError::NotABatch { id, why });
        }
        if let Some(layout) = layout {
            let layouts = self.layouts.entry(meta.schema_fingerprint).or_default();
            if layouts.len() >= LAYOUTS_PER_SCHEMA {
                layouts.remove(0);
            }
            layouts.push(layout);
        }
        Ok((batch, meta))
    }

    /// The schema with fingerprint `fp`, loading its object the first time.
    fn schema(&mut self, id: ObjectId, fp: u64) -> Result<SchemaRef, BatchError> {
        if let Some(schema) = self.schemas.get(&fp) {
            return Ok(schema.clone());
        }
        let mut schema = load_schema(&self.store, id, fp)?;
        if let Some(expected) = &self.expected {
            if **expected != *schema {
                return Err(BatchError::SchemaMismatch { expected: expected.to_string(), found: schema.to_string() });
            }
            // Equal: batches carry the caller's own `Arc`, so callers that
            // compare schemas find them identical without a deep compare.
            schema = expected.clone();
        }
        self.schemas.insert(fp, schema.clone());
        Ok(schema)
    }
}

/// Reads the schema object with fingerprint `fp`, checking its bytes.
pub(crate) fn load_schema(store: &Store, id: ObjectId, fp: u64) -> Result<SchemaRef, BatchError> {
    let view =
        store.get(ObjectId::schema(fp), Duration::ZERO)?.ok_or(BatchError::UnknownSchema { id, fingerprint: fp })?;
    let schema_id = view.id();
    let not = |why: &str| BatchError::NotABatch { id: schema_id, why: why.to_string() };
    if view.metadata().len() < 5 || view.metadata()[..4] != SCHEMA_MAGIC || view.metadata()[4] != FORMAT_VERSION {
        return Err(not("its metadata is not a quiver schema header"));
    }
    if fingerprint(view.data()) != fp {
        return Err(not("its bytes do not match its fingerprint"));
    }
    framed_header_len(schema_id, view.data())?;
    let schema = arrow_ipc::convert::try_schema_from_ipc_buffer(view.data())?;
    super::check_supported(schema.fields())?;
    Ok(Arc::new(schema))
}

/// Wraps a view's data as an Arrow buffer that owns the view: the object
/// stays referenced until the last slice of the buffer is dropped.
fn wrap(view: ObjectView) -> Buffer {
    let data = view.data();
    let (ptr, len) = (NonNull::from(data).cast::<u8>(), data.len());
    // SAFETY: `ptr..ptr + len` are the bytes of a sealed object in the
    // shared mapping. The `Arc` passed as the owner holds the view, which
    // holds both the mapping and the object's reference, so the bytes stay
    // mapped, allocated and unchanged (sealed objects are immutable) for as
    // long as the buffer or any slice of it lives.
    unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(view)) }
}
