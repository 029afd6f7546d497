//! The fixed shape of a batch whose columns all hold fixed-width values.
//!
//! For such a schema, the IPC message of a batch of `n` rows is the same
//! bytes every time except for the column data and each column's null
//! count: the header (a flatbuffer) depends only on the row count. A
//! [`Layout`] is that header, where its null counts sit, and where each
//! column's validity bitmap and values lie in the message. The writer makes
//! one per row count (by encoding a batch of zeros once) and then writes
//! batches without arrow-ipc's encoder, or hands the column regions of a
//! store object to a producer that fills them in place
//! ([`BatchSlot`](super::BatchSlot)). The reader keeps the layout of the
//! last header it verified and decodes a batch whose header matches it
//! byte for byte (null counts aside) without parsing it again.

use std::sync::Arc;

use arrow_array::{downcast_primitive, make_array, ArrayRef, BooleanArray, PrimitiveArray, RecordBatch};
use arrow_buffer::{BooleanBuffer, BooleanBufferBuilder, Buffer, MutableBuffer, NullBuffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef};
use std::ops::Range;

use super::BatchError;

/// How a column's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// This many bytes per value (primitive types, fixed-size binary).
    Bytes(usize),
    /// One bit per value (booleans).
    Bits,
}

impl Width {
    /// The width of a column of type `t`, if its values have a fixed width
    /// and no child arrays.
    pub(crate) fn of(t: &DataType) -> Option<Width> {
        match t {
            DataType::Boolean => Some(Width::Bits),
            DataType::FixedSizeBinary(n) if *n > 0 => Some(Width::Bytes(*n as usize)),
            t if t.is_primitive() => t.primitive_width().map(Width::Bytes),
            _ => None,
        }
    }

    /// Bytes of `rows` values.
    pub(crate) fn bytes(self, rows: usize) -> Option<usize> {
        match self {
            Width::Bytes(n) => rows.checked_mul(n),
            Width::Bits => Some(rows.div_ceil(8)),
        }
    }
}

/// Where one column's bytes lie.
#[derive(Clone, Debug)]
pub(crate) struct ColumnLayout {
    /// Where the null count of the column's IPC node sits in the header.
    pub null_count_at: usize,
    /// The validity bitmap, as byte offsets into the message (empty when
    /// the message carries none).
    pub validity: Range<usize>,
    /// The values, as byte offsets into the message.
    pub values: Range<usize>,
}

/// The shape of every batch of one fixed-width schema and one row count.
#[derive(Debug)]
pub(crate) struct Layout {
    pub rows: usize,
    /// The framed IPC header: continuation marker, length, flatbuffer,
    /// padding to 64 bytes. The body starts right after it.
    pub header: Vec<u8>,
    /// Bytes of the whole message (header and body).
    pub size: usize,
    /// One per field of the schema, in order; their ranges ascend and do
    /// not overlap.
    pub columns: Vec<ColumnLayout>,
}

/// Bytes of a validity bitmap of `rows` rows.
fn bitmap_bytes(rows: usize) -> usize {
    rows.div_ceil(8)
}

impl Layout {
    /// Whether batches of `schema` have a fixed layout: at least one column,
    /// and every column fixed-width values.
    pub(crate) fn fits(schema: &Schema) -> bool {
        !schema.fields().is_empty() && schema.fields().iter().all(|f| Width::of(f.data_type()).is_some())
    }

    /// The layout arrow-ipc gives a batch of `schema` with `rows` rows
    /// under `options` in which the columns `with_nulls` names have nulls
    /// (arrow-ipc writes a validity bitmap for those only), found by
    /// encoding a batch of zeros; `None` if the schema does not
    /// [`fit`](Self::fits).
    pub(crate) fn template(
        schema: &SchemaRef,
        rows: usize,
        with_nulls: impl Fn(usize) -> bool,
        options: &IpcWriteOptions,
    ) -> Result<Option<Layout>, BatchError> {
        if !Self::fits(schema) {
            return Ok(None);
        }
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| zeros(f.data_type(), rows, with_nulls(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let mut encoder = StreamEncoder::try_new_with_options(schema, options.clone())?;
        // The first output carries the schema message; spend it on nothing.
        encoder.encode(&RecordBatch::new_empty(schema.clone()))?;
        let buffers = encoder.encode(&batch)?;
        let size: usize = buffers.iter().map(|b| b.len()).sum();
        // The framed header comes first: gather its bytes only.
        let mut header = Vec::new();
        let mut needed = 8;
        for buffer in &buffers {
            let mut at = 0;
            while header.len() < needed && at < buffer.len() {
                let take = (needed - header.len()).min(buffer.len() - at);
                header.extend_from_slice(&buffer[at..at + take]);
                at += take;
                if needed == 8 && header.len() == 8 {
                    let len = i32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                    needed += usize::try_from(len).map_err(|_| template_error())?;
                }
            }
        }
        let message = arrow_ipc::root_as_message(header.get(8..).ok_or_else(template_error)?)
            .map_err(|e| BatchError::Unsupported(format!("arrow-ipc wrote a header quiver cannot read: {e}")))?;
        let ipc = message.header_as_record_batch().ok_or_else(template_error)?;
        let body = size.checked_sub(header.len()).ok_or_else(template_error)?;
        let mut layout = Layout::from_header(schema, &header, ipc, body).ok_or_else(template_error)?;
        // The template's null counts are its own; a batch starts with none.
        for column in &layout.columns {
            layout.header[column.null_count_at..column.null_count_at + 8].fill(0);
        }
        Ok(Some(layout))
    }

    /// The layout described by a verified record-batch header (`header` is
    /// the framed header, `ipc` the record batch parsed from it) whose body
    /// holds `body` bytes: `None` unless it has the fixed shape, every
    /// column one node of the batch's length with a validity buffer (or
    /// none) and exactly its values, in ascending order inside the body.
    pub(crate) fn from_header(
        schema: &Schema,
        header: &[u8],
        ipc: arrow_ipc::RecordBatch<'_>,
        body: usize,
    ) -> Option<Layout> {
        if !Self::fits(schema) || ipc.compression().is_some() {
            return None;
        }
        let rows = usize::try_from(ipc.length()).ok()?;
        let nodes = ipc.nodes()?;
        let buffers = ipc.buffers()?;
        let fields = schema.fields();
        if nodes.len() != fields.len() || buffers.len() != 2 * fields.len() {
            return None;
        }
        // The node vector is inside `header`; each node is 16 bytes: its
        // length, then its null count.
        let nodes_at = (nodes.bytes().as_ptr() as usize).checked_sub(header.as_ptr() as usize)?;
        if nodes_at.checked_add(16 * nodes.len())? > header.len() {
            return None;
        }
        let size = header.len().checked_add(body)?;
        let range = |b: &arrow_ipc::Buffer, len: usize| -> Option<Range<usize>> {
            let start = header.len().checked_add(usize::try_from(b.offset()).ok()?)?;
            let end = start.checked_add(len)?;
            (len <= usize::try_from(b.length()).ok()? && end <= size).then_some(start..end)
        };
        let mut columns = Vec::with_capacity(fields.len());
        let mut end = header.len();
        for (i, field) in fields.iter().enumerate() {
            let width = Width::of(field.data_type())?;
            if usize::try_from(nodes.get(i).length()).ok()? != rows {
                return None;
            }
            let (validity, values) = (buffers.get(2 * i), buffers.get(2 * i + 1));
            let validity = match validity.length() {
                0 => range(validity, 0)?,
                _ => range(validity, bitmap_bytes(rows))?,
            };
            let values = range(values, width.bytes(rows)?)?;
            if validity.start < end || values.start < validity.end {
                return None;
            }
            end = values.end;
            columns.push(ColumnLayout { null_count_at: nodes_at + 16 * i + 8, validity, values });
        }
        Some(Layout { rows, header: header.to_vec(), size, columns })
    }

    /// Whether `header` is this layout's header, null counts aside.
    pub(crate) fn same_header(&self, header: &[u8]) -> bool {
        if header.len() != self.header.len() {
            return false;
        }
        let mut at = 0;
        for column in &self.columns {
            if header[at..column.null_count_at] != self.header[at..column.null_count_at] {
                return false;
            }
            at = column.null_count_at + 8;
        }
        header[at..] == self.header[at..]
    }

    /// The null count a header of this layout gives column `i`.
    pub(crate) fn null_count(&self, header: &[u8], i: usize) -> i64 {
        let at = self.columns[i].null_count_at;
        header.get(at..at + 8).map_or(-1, |b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    /// Decodes a message of this layout (`message`, whose header
    /// [`same_header`](Self::same_header) accepted) as a batch of `schema`,
    /// its arrays slices of `message`. Arrow validates every array; a null
    /// count that disagrees with its bitmap is an error.
    pub(crate) fn decode(&self, schema: &SchemaRef, message: &Buffer) -> Result<RecordBatch, String> {
        if message.len() != self.size || message.as_ptr() as usize % super::IPC_ALIGNMENT != 0 {
            return Err("the message does not have the size or alignment of its header".into());
        }
        let header = &message[..self.header.len()];
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, (column, field)) in self.columns.iter().zip(schema.fields()).enumerate() {
            let claimed = self.null_count(header, i);
            let nulls = if claimed == 0 {
                None
            } else {
                if column.validity.len() < bitmap_bytes(self.rows) {
                    return Err(format!("column {:?} has nulls but no validity bitmap", field.name()));
                }
                let bits = message.slice_with_length(column.validity.start, column.validity.len());
                let nulls = NullBuffer::new(BooleanBuffer::new(bits, 0, self.rows));
                if i64::try_from(nulls.null_count()).ok() != Some(claimed) {
                    return Err(format!(
                        "column {:?} claims {claimed} nulls, its bitmap has {}",
                        field.name(),
                        nulls.null_count()
                    ));
                }
                Some(nulls)
            };
            let values = message.slice_with_length(column.values.start, column.values.len());
            arrays.push(array(field.data_type(), self.rows, values, nulls).map_err(|e| e.to_string())?);
        }
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| e.to_string())
    }
}

/// A primitive array of `$t` over `values` (64-byte aligned: the
/// message's base and every buffer offset of a layout are).
macro_rules! primitive_array {
    ($t:ty, $rows:expr, $values:expr, $nulls:expr, $data_type:expr) => {
        PrimitiveArray::<$t>::try_new(ScalarBuffer::new($values, 0, $rows), $nulls)
            .map(|a| Arc::new(a.with_data_type($data_type.clone())) as ArrayRef)
    };
}

/// The array of `rows` values of fixed-width type `t` in `values`, built
/// directly (primitive and boolean columns; arrow's checks of lengths and
/// null counts apply), not through `ArrayData`.
fn array(t: &DataType, rows: usize, values: Buffer, nulls: Option<NullBuffer>) -> Result<ArrayRef, ArrowError> {
    if values.as_ptr() as usize % super::IPC_ALIGNMENT != 0 {
        return Err(ArrowError::InvalidArgumentError("a column's values are misaligned".into()));
    }
    downcast_primitive! {
        t => (primitive_array, rows, values, nulls, t),
        DataType::Boolean => {
            if nulls.as_ref().is_some_and(|n| n.len() != rows) {
                return Err(ArrowError::InvalidArgumentError("a validity bitmap of the wrong length".into()));
            }
            Ok(Arc::new(BooleanArray::new(BooleanBuffer::new(values, 0, rows), nulls)) as ArrayRef)
        }
        _ => {
            let data = ArrayData::builder(t.clone()).len(rows).add_buffer(values).nulls(nulls).build()?;
            Ok(make_array(data))
        }
    }
}

fn template_error() -> BatchError {
    BatchError::Unsupported("arrow-ipc wrote a batch header quiver does not recognise".into())
}

/// A column of `rows` zeros of fixed-width type `t`; `null` makes its
/// first row null.
fn zeros(t: &DataType, rows: usize, null: bool) -> Result<ArrayRef, BatchError> {
    let width = Width::of(t).ok_or_else(template_error)?;
    let bytes = width.bytes(rows).ok_or_else(template_error)?;
    let values: Buffer = MutableBuffer::from_len_zeroed(bytes).into();
    let nulls = (null && rows > 0).then(|| {
        let mut bits = BooleanBufferBuilder::new(rows);
        bits.append_n(rows, true);
        bits.set_bit(0, false);
        NullBuffer::new(bits.finish())
    });
    let data = ArrayData::builder(t.clone()).len(rows).add_buffer(values).nulls(nulls).build()?;
    Ok(make_array(data))
}
