//! Arrow record batches in store objects: written once, read in place.
//!
//! A [`BatchWriter`] encodes each batch as one Arrow IPC record-batch
//! message straight into a store object: the encoder hands out the batch's
//! own buffers, the exact size is known before the object is created, and
//! the column data is copied once, into shared memory. The schema is not
//! repeated in every object: it is written once, into an object whose ID is
//! derived from the schema's fingerprint ([`ObjectId::schema`]), and every
//! batch object names that fingerprint in its metadata.
//!
//! A [`BatchReader`] turns an object back into a `RecordBatch` whose column
//! buffers are slices of the mapping: the object is wrapped as an Arrow
//! buffer that owns the [`ObjectView`](crate::store::ObjectView), so the object's reference is held
//! until the last buffer of the batch is dropped. Decoding requires aligned
//! buffers (a misaligned one is an error, never a silent copy) and validates
//! by default; skipping validation is an `unsafe` choice.
//!
//! Object layout, all little-endian (see docs/format.md):
//!
//! - batch metadata, 32 bytes: `"QVRB"`, version `1`, three zero bytes, the
//!   schema fingerprint (u64), the append time (u64, ns since the epoch,
//!   stamped just before the seal), the row count (u64);
//! - batch data: one encapsulated IPC message (`0xFFFFFFFF`, the i32 length
//!   of the flatbuffer header, the header padded to 64 bytes, the body with
//!   every buffer 64-byte aligned);
//! - schema metadata, 8 bytes: `"QVRS"`, version `1`, three zero bytes;
//! - schema data: one encapsulated IPC schema message. The fingerprint is
//!   the FNV-1a 64-bit hash of those bytes.

mod error;
pub mod import;
mod layout;
mod reader;
mod slot;
mod writer;

pub use error::{BatchError, ImportError};
pub(crate) use reader::load_schema;
pub use reader::{BatchMeta, BatchReader};
pub use slot::{BatchSlot, ColumnMut};
pub(crate) use writer::stamp_append_time;
pub use writer::BatchWriter;
pub(crate) use writer::Encoded;

use arrow_schema::{DataType, Field};

use crate::store::ObjectId;

pub(crate) const BATCH_MAGIC: [u8; 4] = *b"QVRB";
pub(crate) const SCHEMA_MAGIC: [u8; 4] = *b"QVRS";
pub(crate) const FORMAT_VERSION: u8 = 1;
pub(crate) const BATCH_META_LEN: usize = 32;
const _: () = assert!(BATCH_META_LEN == crate::store::METADATA_HEAD);
pub(crate) const SCHEMA_META_LEN: usize = 8;
/// Every IPC header and buffer is padded to this, matching the store's payload alignment.
pub(crate) const IPC_ALIGNMENT: usize = 64;
const CONTINUATION: [u8; 4] = [0xFF; 4];

/// The fingerprint of a schema's bytes: FNV-1a, which every process
/// computes the same way.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    crate::store::fnv1a(bytes)
}

/// The length of the framed header (prefix + flatbuffer + padding) of the
/// encapsulated IPC message at the start of `data`, checked against `data`.
/// arrow-ipc indexes these bytes without checking, so this runs first.
pub(crate) fn framed_header_len(id: ObjectId, data: &[u8]) -> Result<usize, BatchError> {
    let not = |why: &str| BatchError::NotABatch { id, why: why.to_string() };
    if data.len() < 8 {
        return Err(not("shorter than an IPC message prefix"));
    }
    if data[..4] != CONTINUATION {
        return Err(not("no IPC continuation marker"));
    }
    let len = i32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    let header = usize::try_from(len).ok().and_then(|len| len.checked_add(8));
    match header {
        Some(header) if len > 0 && header <= data.len() => Ok(header),
        _ => Err(not("IPC header length out of range")),
    }
}

/// Checks the record-batch message in `data` (framed header of
/// `header_len` bytes, then the body) before arrow-ipc sees it: arrow-ipc
/// slices buffers at the offsets the message gives without checking them
/// against the body, so every one is checked here. Returns the verified
/// record-batch header, which the decoder then reads without parsing and
/// verifying the flatbuffer a second time.
pub(crate) fn check_batch_message<'d>(
    id: ObjectId,
    schema: &arrow_schema::Schema,
    data: &'d [u8],
    header_len: usize,
) -> Result<arrow_ipc::RecordBatch<'d>, BatchError> {
    let not = |why: String| BatchError::NotABatch { id, why };
    // The body must start 64-byte aligned, as quiver's writer pads the
    // header to, or its buffers would be misaligned in memory (see below).
    if header_len % IPC_ALIGNMENT != 0 {
        return Err(not(format!("the IPC header ends at {header_len}, not on a {IPC_ALIGNMENT}-byte boundary")));
    }
    let message = arrow_ipc::root_as_message(&data[8..header_len])
        .map_err(|e| not(format!("invalid IPC message header: {e}")))?;
    let batch = message.header_as_record_batch().ok_or_else(|| not("the IPC message is not a record batch".into()))?;
    let body = (data.len() - header_len) as u64;
    if u64::try_from(message.bodyLength()).ok() != Some(body) {
        return Err(not(format!("the IPC body is {} bytes, the object holds {body}", message.bodyLength())));
    }
    check_record_batch(schema, batch, body, IPC_ALIGNMENT as i64, false).map_err(not)?;
    Ok(batch)
}

/// Checks a record-batch message whose body holds `body` bytes against
/// `schema`, before arrow-ipc sees it: no compression, every buffer inside
/// the body and at a multiple of `align`, every node's length within what
/// its place in the schema allows, every fixed-width buffer whole values,
/// every union's type IDs covering it (`v4`: metadata version V4, whose
/// unions have a validity buffer).
/// Shared by the store's decoder and the import of Arrow files.
pub(crate) fn check_record_batch(
    schema: &arrow_schema::Schema,
    batch: arrow_ipc::RecordBatch<'_>,
    body: u64,
    align: i64,
    v4: bool,
) -> Result<(), String> {
    if batch.compression().is_some() {
        return Err("compressed IPC bodies are not supported".into());
    }
    for buffer in batch.buffers().into_iter().flatten() {
        let end = u64::try_from(buffer.offset())
            .ok()
            .zip(u64::try_from(buffer.length()).ok())
            .and_then(|(o, l)| o.checked_add(l));
        if !end.is_some_and(|end| end <= body) {
            return Err(format!("an IPC buffer [{}, +{}) lies outside the body", buffer.offset(), buffer.length()));
        }
        // Quiver's writer aligns every buffer to 64 bytes (the IPC format
        // asks for 8). A misaligned one would reach arrow's validation,
        // which asserts alignment (a panic) before arrow-ipc's own alignment
        // check gets to refuse it.
        if buffer.offset() % align != 0 {
            return Err(format!("an IPC buffer at {} is not {align}-byte aligned", buffer.offset()));
        }
    }
    // Lengths that no buffer backs (null columns, all-null children) would
    // otherwise let a few bytes make arrow allocate and fill gigabytes of
    // validity bits. Each node is bounded by what its place in the schema
    // allows: the batch's rows at the top, its parent's length inside a
    // struct, union or run-end array, parent × size inside a fixed-size
    // list, and for the children of variable-length lists (whose length the
    // offsets give) by the body, since n values need at least n bits of it.
    let rows = batch.length();
    if !(0..=i32::MAX as i64).contains(&rows) {
        return Err(format!("the batch claims {rows} rows"));
    }
    let loose = (rows as u64).max(body.saturating_mul(8));
    let mut nodes = batch.nodes().into_iter().flatten();
    for field in schema.fields() {
        check_node(field, &mut nodes, rows as u64, loose)?;
    }
    if nodes.next().is_some() {
        return Err("more IPC nodes than the schema has fields".into());
    }
    // Each buffer's length must be whole values of its type: arrow asserts
    // that (a panic) when it validates offsets and builds primitive arrays.
    let mut walk = BufferWalk {
        buffers: batch.buffers().into_iter().flatten().map(|b| b.length()),
        variadic: batch.variadicBufferCounts().into_iter().flatten(),
        nodes: batch.nodes().into_iter().flatten().map(|n| n.length()),
        v4,
    };
    for field in schema.fields() {
        walk.column(field.data_type())?;
    }
    Ok(())
}

/// Walks the buffers of each column in the order arrow-ipc reads them,
/// beside the columns' nodes (both are in pre-order over the fields),
/// checking that each fixed-width buffer holds whole values and that a
/// union's type IDs (and a dense union's offsets) cover its length: arrow
/// slices those at the node's length without checking.
struct BufferWalk<B, V, N> {
    buffers: B,
    variadic: V,
    nodes: N,
    /// Metadata version V4, whose unions carry a validity buffer.
    v4: bool,
}

impl<B: Iterator<Item = i64>, V: Iterator<Item = i64>, N: Iterator<Item = i64>> BufferWalk<B, V, N> {
    /// The next buffer, checked to be whole `width`-byte values of `t`.
    fn next(&mut self, t: &DataType, width: i64) -> Result<i64, String> {
        let len = self.buffers.next().ok_or("fewer IPC buffers than the schema needs")?;
        if width > 1 && len % width != 0 {
            return Err(format!("an IPC buffer of {len} bytes is not whole {width}-byte values of {t}"));
        }
        Ok(len)
    }

    fn column(&mut self, t: &DataType) -> Result<(), String> {
        // `check_node` has checked the nodes: here only their lengths matter.
        let len = self.nodes.next().ok_or("fewer IPC nodes than the schema has fields")?.max(0);
        match t {
            DataType::Null => Ok(()),
            DataType::Boolean => {
                self.next(t, 1)?;
                self.next(t, 1).map(drop)
            }
            DataType::Utf8 | DataType::Binary => {
                self.next(t, 1)?;
                self.next(t, 4)?;
                self.next(t, 1).map(drop)
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                self.next(t, 1)?;
                self.next(t, 8)?;
                self.next(t, 1).map(drop)
            }
            DataType::Utf8View | DataType::BinaryView => {
                self.next(t, 1)?;
                self.next(t, 16)?;
                let count = self.variadic.next().ok_or("a view column without its variadic buffer count")?;
                for _ in 0..count.clamp(0, 1 << 16) {
                    self.next(t, 1)?;
                }
                Ok(())
            }
            DataType::List(child) | DataType::Map(child, _) => {
                self.next(t, 1)?;
                self.next(t, 4)?;
                self.column(child.data_type())
            }
            DataType::LargeList(child) => {
                self.next(t, 1)?;
                self.next(t, 8)?;
                self.column(child.data_type())
            }
            DataType::ListView(child) => {
                self.next(t, 1)?;
                self.next(t, 4)?;
                self.next(t, 4)?;
                self.column(child.data_type())
            }
            DataType::LargeListView(child) => {
                self.next(t, 1)?;
                self.next(t, 8)?;
                self.next(t, 8)?;
                self.column(child.data_type())
            }
            DataType::FixedSizeList(child, _) => {
                self.next(t, 1)?;
                self.column(child.data_type())
            }
            DataType::Struct(children) => {
                self.next(t, 1)?;
                children.iter().try_for_each(|c| self.column(c.data_type()))
            }
            DataType::Union(children, mode) => {
                if self.v4 {
                    self.next(t, 1)?;
                }
                if self.next(t, 1)? < len {
                    return Err(format!("a union's type IDs cover fewer than its {len} values"));
                }
                if *mode == arrow_schema::UnionMode::Dense && self.next(t, 4)? < len.saturating_mul(4) {
                    return Err(format!("a dense union's offsets cover fewer than its {len} values"));
                }
                children.iter().try_for_each(|(_, c)| self.column(c.data_type()))
            }
            DataType::RunEndEncoded(ends, values) => {
                self.column(ends.data_type())?;
                self.column(values.data_type())
            }
            other => {
                // Fixed-width values: validity, then values of the type's
                // width (bytes for FixedSizeBinary; bits, so any length, for
                // others without a byte width).
                self.next(t, 1)?;
                let width = match other {
                    DataType::FixedSizeBinary(n) => (*n).max(1) as i64,
                    _ => other.primitive_width().map_or(1, |w| w as i64),
                };
                self.next(t, width).map(drop)
            }
        }
    }
}

/// Checks the IPC node of `field` (and, recursively, of its children) in
/// pre-order: its length at most `bound`, its null count at most its length.
fn check_node<'a>(
    field: &Field,
    nodes: &mut impl Iterator<Item = &'a arrow_ipc::FieldNode>,
    bound: u64,
    loose: u64,
) -> Result<(), String> {
    let node = nodes.next().ok_or("fewer IPC nodes than the schema has fields")?;
    let len = u64::try_from(node.length()).ok().filter(|&n| n <= bound);
    let Some(len) = len else {
        return Err(format!(
            "the IPC node of column {:?} claims {} values, at most {bound} fit",
            field.name(),
            node.length()
        ));
    };
    if !u64::try_from(node.null_count()).is_ok_and(|n| n <= len) {
        return Err(format!("the IPC node of column {:?} has a bad null count", field.name()));
    }
    match field.data_type() {
        DataType::Struct(children) => children.iter().try_for_each(|c| check_node(c, nodes, len, loose)),
        DataType::Union(children, _) => children.iter().try_for_each(|(_, c)| check_node(c, nodes, len, loose)),
        DataType::RunEndEncoded(ends, values) => {
            check_node(ends, nodes, len, loose)?;
            check_node(values, nodes, len, loose)
        }
        DataType::FixedSizeList(child, size) => {
            let bound = u64::try_from(*size).ok().and_then(|s| len.checked_mul(s)).ok_or("bad fixed size")?;
            check_node(child, nodes, bound, loose)
        }
        DataType::List(child)
        | DataType::LargeList(child)
        | DataType::ListView(child)
        | DataType::LargeListView(child)
        | DataType::Map(child, _) => check_node(child, nodes, loose, loose),
        _ => Ok(()),
    }
}

/// Refuses dictionary-encoded columns, anywhere in the schema (their
/// dictionaries would have to travel with every batch or be tracked per
/// reader; quiver does neither yet).
pub(crate) fn check_supported(fields: &[arrow_schema::FieldRef]) -> Result<(), BatchError> {
    fn walk(field: &Field) -> Result<(), BatchError> {
        let nested: Vec<&Field> = match field.data_type() {
            DataType::Dictionary(_, _) => {
                return Err(BatchError::Unsupported(format!(
                    "column {:?} is dictionary-encoded; cast it to its value type first",
                    field.name()
                )))
            }
            DataType::FixedSizeBinary(n) | DataType::FixedSizeList(_, n) if *n < 0 => {
                return Err(BatchError::Unsupported(format!("column {:?} has a negative fixed size", field.name())))
            }
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => vec![f.as_ref()],
            DataType::Struct(fields) => fields.iter().map(|f| f.as_ref()).collect(),
            DataType::Union(fields, _) => fields.iter().map(|(_, f)| f.as_ref()).collect(),
            DataType::RunEndEncoded(a, b) => vec![a.as_ref(), b.as_ref()],
            _ => Vec::new(),
        };
        nested.into_iter().try_for_each(walk)
    }
    fields.iter().try_for_each(|f| walk(f))
}
