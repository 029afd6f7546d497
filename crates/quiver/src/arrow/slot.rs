//! Building a record batch in place, in a store object: the publish path
//! with no copy at all.

use std::sync::Arc;

use arrow_array::{ArrowPrimitiveType, PrimitiveArray};
use arrow_schema::{ArrowError, SchemaRef};

use super::layout::{Layout, Width};
use super::{stamp_append_time, BatchError};
use crate::shm::clock::wall_ns;
use crate::store::{ObjectBuilder, ObjectId, StoreError};

/// A record batch of a fixed number of rows being written straight into a
/// store object, column by column, as Plasma's create-then-write and
/// iceoryx2's loans do: the producer fills the columns where consumers
/// will read them, and nothing is copied. Made by
/// [`BatchWriter::reserve`](super::BatchWriter::reserve) (and, for streams,
/// `Producer::reserve`).
///
/// Every column must have fixed-width values (integers, floats, decimals,
/// dates, times, timestamps, durations, intervals, booleans, fixed-size
/// binary); batches with strings, lists or structs go through the one-copy
/// `append`. Every row starts valid: mark nulls with
/// [`set_null`](Self::set_null) or [`validity_mut`](Self::validity_mut)
/// (nullable columns only); the null counts are taken at the seal.
///
/// The values are **not** cleared: until written, they hold whatever
/// earlier objects left in that memory of the store. Write every value of
/// every column. Dropped unsealed, the object is aborted.
pub struct BatchSlot {
    object: ObjectBuilder,
    layout: Arc<Layout>,
    schema: SchemaRef,
    /// Columns whose validity bitmap was handed out: their nulls are
    /// counted at the seal. The others have none.
    touched: Vec<bool>,
}

impl std::fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSlot").field("id", &self.object.id()).field("rows", &self.layout.rows).finish()
    }
}

impl BatchSlot {
    /// Lays out a new object created with `layout.size` bytes: the header,
    /// every validity bit set, zeroed padding. The values are left as they are.
    pub(crate) fn new(mut object: ObjectBuilder, layout: Arc<Layout>, schema: SchemaRef) -> Result<Self, BatchError> {
        let data = object.data_mut();
        if data.len() != layout.size {
            return Err(StoreError::corrupted("a batch object is not the size it was created with").into());
        }
        data[..layout.header.len()].copy_from_slice(&layout.header);
        let mut end = layout.header.len();
        for column in &layout.columns {
            data[end..column.validity.start].fill(0);
            data[column.validity.clone()].fill(0xFF);
            data[column.validity.end..column.values.start].fill(0);
            end = column.values.end;
        }
        data[end..].fill(0);
        let touched = vec![false; layout.columns.len()];
        Ok(BatchSlot { object, layout, schema, touched })
    }

    /// The object the batch is written into.
    pub fn id(&self) -> ObjectId {
        self.object.id()
    }

    /// The batch's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.layout.rows
    }

    /// The values of primitive column `column` (e.g. `Float64Type` for a
    /// `Float64` column), one per row, to fill.
    pub fn values_mut<T: ArrowPrimitiveType>(&mut self, column: usize) -> Result<&mut [T::Native], BatchError> {
        let field = self.field(column)?;
        if !PrimitiveArray::<T>::is_compatible(field.data_type()) {
            return Err(BatchError::SchemaMismatch {
                expected: format!("column {column} ({:?}) of type {}", field.name(), field.data_type()),
                found: format!("values of type {}", T::DATA_TYPE),
            });
        }
        let range = self.layout.columns[column].values.clone();
        typed::<T>(&mut self.object.data_mut()[range], self.layout.rows)
    }

    /// Every column's values at once, to fill side by side (`values_mut`
    /// lends one column at a time):
    ///
    /// ```no_run
    /// # use arrow_array::types::{Float64Type, Int64Type};
    /// # fn fill(slot: &mut quiver::BatchSlot) -> Result<(), quiver::BatchError> {
    /// let mut columns = slot.columns_mut().into_iter();
    /// let (Some(seq), Some(value)) = (columns.next(), columns.next()) else { return Ok(()) };
    /// let (seq, value) = (seq.into_values::<Int64Type>()?, value.into_values::<Float64Type>()?);
    /// for (row, (s, v)) in seq.iter_mut().zip(value).enumerate() {
    ///     (*s, *v) = (row as i64, row as f64 * 0.5);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn columns_mut(&mut self) -> Vec<ColumnMut<'_>> {
        let rows = self.layout.rows;
        let mut rest = self.object.data_mut();
        let mut at = 0;
        let mut out = Vec::with_capacity(self.layout.columns.len());
        for (column, field) in self.layout.columns.iter().zip(self.schema.fields()) {
            // The layout's ranges ascend without overlapping.
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(column.values.start - at);
            let (values, tail) = tail.split_at_mut(column.values.len());
            rest = tail;
            at = column.values.end;
            out.push(ColumnMut { field: field.as_ref(), rows, values });
        }
        out
    }

    /// The raw values of column `column`, little-endian: `rows × width`
    /// bytes for fixed-width types (fixed-size binary included), one bit
    /// per row (least significant first) for booleans.
    pub fn bytes_mut(&mut self, column: usize) -> Result<&mut [u8], BatchError> {
        self.field(column)?;
        let range = self.layout.columns[column].values.clone();
        Ok(&mut self.object.data_mut()[range])
    }

    /// The validity bitmap of nullable column `column`: bit `i` (least
    /// significant first) set when row `i` is valid. Every bit starts set.
    pub fn validity_mut(&mut self, column: usize) -> Result<&mut [u8], BatchError> {
        let field = self.field(column)?;
        if !field.is_nullable() {
            return Err(BatchError::Arrow(ArrowError::InvalidArgumentError(format!(
                "column {column} ({:?}) is not nullable",
                field.name()
            ))));
        }
        self.touched[column] = true;
        let range = self.layout.columns[column].validity.clone();
        Ok(&mut self.object.data_mut()[range])
    }

    /// Marks row `row` of nullable column `column` null.
    pub fn set_null(&mut self, column: usize, row: usize) -> Result<(), BatchError> {
        let rows = self.layout.rows;
        if row >= rows {
            return Err(BatchError::Arrow(ArrowError::InvalidArgumentError(format!(
                "row {row} of a batch of {rows} rows"
            ))));
        }
        self.validity_mut(column)?[row / 8] &= !(1 << (row % 8));
        Ok(())
    }

    /// Seals the batch: it becomes visible to readers.
    pub fn seal(self) -> Result<(), BatchError> {
        let mut object = self.finish()?;
        stamp_append_time(&mut object, wall_ns());
        object.seal()?;
        Ok(())
    }

    /// Gives the object up, unsealed.
    pub fn abort(self) -> Result<(), BatchError> {
        Ok(self.object.abort()?)
    }

    /// Writes the null counts into the header; the object is then ready
    /// for its seal. A null in a column that is not nullable is refused
    /// (the object is aborted).
    pub(crate) fn finish(mut self) -> Result<ObjectBuilder, BatchError> {
        let rows = self.layout.rows;
        for (i, column) in self.layout.columns.iter().enumerate() {
            if !self.touched[i] {
                continue;
            }
            let data = self.object.data_mut();
            let bits = &data[column.validity.clone()];
            let full = rows / 8;
            let mut valid: usize = bits[..full].iter().map(|b| b.count_ones() as usize).sum();
            if rows % 8 != 0 {
                valid += (bits[full] & ((1u8 << (rows % 8)) - 1)).count_ones() as usize;
            }
            let nulls = (rows - valid) as i64;
            data[column.null_count_at..column.null_count_at + 8].copy_from_slice(&nulls.to_le_bytes());
            if nulls > 0 && !self.schema.field(i).is_nullable() {
                let name = self.schema.field(i).name().clone();
                return Err(BatchError::Arrow(ArrowError::InvalidArgumentError(format!(
                    "column {name:?} is not nullable, yet {nulls} of its rows are null"
                ))));
            }
        }
        Ok(self.object)
    }

    /// The row count as the object metadata stores it.
    pub(crate) fn rows(&self) -> u64 {
        self.layout.rows as u64
    }

    /// Bytes of the message.
    pub(crate) fn size(&self) -> u64 {
        self.layout.size as u64
    }

    fn field(&self, column: usize) -> Result<&arrow_schema::Field, BatchError> {
        let columns = self.schema.fields().len();
        let field = self.schema.fields().get(column).ok_or_else(|| {
            BatchError::Arrow(ArrowError::InvalidArgumentError(format!(
                "column {column} of a batch of {columns} columns"
            )))
        })?;
        debug_assert!(Width::of(field.data_type()).is_some());
        Ok(field)
    }
}

/// One column's values in a [`BatchSlot`], from
/// [`columns_mut`](BatchSlot::columns_mut).
#[derive(Debug)]
pub struct ColumnMut<'a> {
    field: &'a arrow_schema::Field,
    rows: usize,
    values: &'a mut [u8],
}

impl<'a> ColumnMut<'a> {
    /// The column's field.
    pub fn field(&self) -> &arrow_schema::Field {
        self.field
    }

    /// The values of a primitive column, one per row (as
    /// [`BatchSlot::values_mut`]).
    pub fn into_values<T: ArrowPrimitiveType>(self) -> Result<&'a mut [T::Native], BatchError> {
        if !PrimitiveArray::<T>::is_compatible(self.field.data_type()) {
            return Err(BatchError::SchemaMismatch {
                expected: format!("column {:?} of type {}", self.field.name(), self.field.data_type()),
                found: format!("values of type {}", T::DATA_TYPE),
            });
        }
        typed::<T>(self.values, self.rows)
    }

    /// The raw values (as [`BatchSlot::bytes_mut`]).
    pub fn into_bytes(self) -> &'a mut [u8] {
        self.values
    }
}

/// `bytes` as the `rows` values of `T`.
fn typed<T: ArrowPrimitiveType>(bytes: &mut [u8], rows: usize) -> Result<&mut [T::Native], BatchError> {
    // SAFETY: `T::Native` is one of arrow's native types (integers, floats,
    // i256, intervals): plain bytes, valid for every bit pattern, so viewing
    // initialised bytes as them is sound.
    let (head, values, tail) = unsafe { bytes.align_to_mut::<T::Native>() };
    if !head.is_empty() || !tail.is_empty() || values.len() != rows {
        return Err(StoreError::corrupted("a batch object's column is misaligned in the mapping").into());
    }
    Ok(values)
}
