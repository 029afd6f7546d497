//! A lean export of record batches through the Arrow C Data Interface.
//!
//! arrow-rs's `FFI_ArrowArray::new` allocates private data, a buffer list
//! and a child list for every column, after the batch was turned into a
//! struct array's `ArrayData` (more allocations): about 0.2 µs a column,
//! as much as pyarrow's own import of it. A polled batch's columns are
//! flat (primitive, boolean, binary and string types) almost always, so
//! this module exports those in one allocation: an [`Export`] holds the
//! batch (which owns every buffer), every buffer pointer and every child
//! array, and the parent and each child hold a reference count on it, so a
//! child the consumer moves out stays valid after the parent is released,
//! as the interface requires. Anything else takes arrow-rs's path.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

/// The interface's `struct ArrowArray`, laid out as its specification says.
#[repr(C)]
pub(crate) struct CArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut CArray,
    dictionary: *mut CArray,
    release: Option<unsafe extern "C" fn(*mut CArray)>,
    private_data: *mut c_void,
}

/// What an exported batch's arrays point into. Every pointer into it is
/// taken after it is in its `Arc`, where it stays until the last count goes.
struct Export {
    /// Owns every buffer the pointers below point at.
    _batch: RecordBatch,
    /// The struct's validity slot (null), then each column's buffers.
    buffers: Box<[*const c_void]>,
    /// The columns' arrays (releases write their `release` field).
    children: Box<[UnsafeCell<CArray>]>,
    /// Pointers to them: the parent's `children` list.
    child_ptrs: Box<[UnsafeCell<*mut CArray>]>,
}

// SAFETY: the raw pointers point into the `Export` itself and into the
// batch's buffers, which nothing writes. The only writes are releases
// marking an array released: the interface has each array released once,
// by whoever owns it (a parent releases only the children not moved out,
// which it still owns), so no two threads write the same field, and the
// `Arc` count orders the final drop after every release.
unsafe impl Send for Export {}
// SAFETY: as above.
unsafe impl Sync for Export {}

/// Whether a column is exported here: no children, no dictionary, no
/// variadic buffers, a validity slot in its layout, and a validity bitmap
/// (if any) at the array's own offset.
fn flat(data: &arrow_data::ArrayData) -> bool {
    let kind = matches!(
        data.data_type(),
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Interval(_)
            | DataType::Decimal32(_, _)
            | DataType::Decimal64(_, _)
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
            | DataType::FixedSizeBinary(_)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
    );
    kind && data.child_data().is_empty() && data.nulls().is_none_or(|n| n.offset() == data.offset())
}

/// Releases an array made by [`export`]; called by the consumer.
///
/// # Safety
///
/// `array` is null, or points to a `CArray` made by [`export`] (or a copy
/// of one the consumer moved), not released yet or marked released.
unsafe extern "C" fn release(array: *mut CArray) {
    if array.is_null() {
        return;
    }
    // SAFETY: the caller passes one of our arrays (or a moved copy).
    let a = unsafe { &mut *array };
    if a.release.is_none() {
        return;
    }
    // A parent releases the children the consumer did not move out.
    for i in 0..usize::try_from(a.n_children).unwrap_or(0) {
        // SAFETY: `children` holds `n_children` pointers to our children,
        // which live in the `Export` this parent still counts on.
        let child = unsafe { *a.children.add(i) };
        // SAFETY: as above; a moved child is marked released (no callback).
        if let Some(release_child) = unsafe { (*child).release } {
            // SAFETY: an unreleased child of ours.
            unsafe { release_child(child) };
        }
    }
    // SAFETY: `private_data` is the `Arc` count this array holds, taken by
    // `Arc::into_raw` in `export` and given back once, here.
    drop(unsafe { Arc::from_raw(a.private_data as *const Export) });
    a.release = None;
}

/// An exported batch not handed over yet: released on drop unless the
/// consumer moved it out (which marks it released).
pub(crate) struct Exported(*mut CArray);

impl Exported {
    /// The address to give the consumer (`_import_from_c`).
    pub(crate) fn address(&self) -> usize {
        self.0 as usize
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `Box::into_raw` in `export` and is freed
        // only here, below; its contents are ours or a released shell, and
        // releasing it (if the consumer did not move it out) comes first.
        unsafe {
            if let Some(release_array) = (*self.0).release {
                release_array(self.0);
            }
            drop(Box::from_raw(self.0));
        }
    }
}

/// `batch` as a C struct array, if every column is [`flat`].
pub(crate) fn export(batch: &RecordBatch) -> Option<Exported> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        let data = column.to_data();
        if !flat(&data) {
            return None;
        }
        columns.push(data);
    }
    let null = std::ptr::null::<c_void>();
    let mut buffers = vec![null];
    let mut starts = Vec::with_capacity(columns.len());
    for data in &columns {
        starts.push(buffers.len());
        buffers.push(data.nulls().map_or(null, |n| n.buffer().as_ptr().cast()));
        buffers.extend(data.buffers().iter().map(|b| b.as_ptr().cast::<c_void>()));
    }
    let n = columns.len();
    let export = Arc::new(Export {
        _batch: batch.clone(),
        buffers: buffers.into(),
        children: columns
            .iter()
            .map(|data| {
                UnsafeCell::new(CArray {
                    length: data.len() as i64,
                    null_count: data.null_count() as i64,
                    offset: data.offset() as i64,
                    n_buffers: 1 + data.buffers().len() as i64,
                    n_children: 0,
                    buffers: std::ptr::null_mut(),
                    children: std::ptr::null_mut(),
                    dictionary: std::ptr::null_mut(),
                    release: Some(release),
                    private_data: std::ptr::null_mut(),
                })
            })
            .collect(),
        child_ptrs: (0..n).map(|_| UnsafeCell::new(std::ptr::null_mut())).collect(),
    });
    // The consumer only reads the buffer lists (`const void**`).
    let base = export.buffers.as_ptr();
    for (i, (cell, &start)) in export.children.iter().zip(&starts).enumerate() {
        let child = cell.get();
        // SAFETY: `child` and the pointer slot are in `export`, which no
        // other code sees yet; `start` is within `buffers` (it was pushed
        // with this column's buffers after it).
        unsafe {
            (*child).buffers = base.add(start).cast_mut();
            (*child).private_data = Arc::into_raw(export.clone()).cast_mut().cast();
            *export.child_ptrs[i].get() = child;
        }
    }
    let parent = CArray {
        length: batch.num_rows() as i64,
        null_count: 0,
        offset: 0,
        n_buffers: 1,
        n_children: n as i64,
        buffers: base.cast_mut(),
        // `UnsafeCell<*mut CArray>` has the layout of `*mut CArray`.
        children: export.child_ptrs.as_ptr().cast_mut().cast(),
        dictionary: std::ptr::null_mut(),
        release: Some(release),
        private_data: Arc::into_raw(export).cast_mut().cast(),
    };
    Some(Exported(Box::into_raw(Box::new(parent))))
}
