//! Columns as NumPy arrays over the store's memory, made through NumPy's
//! C API: `Consumer.poll_numpy` (read-only views of a polled batch) and
//! `Producer.reserve` (writable views of a batch being built in place).
//!
//! A view's base object owns what keeps the memory mapped and referenced
//! (the polled batch, or the reservation and then the sealed batch), so
//! an array stays valid for as long as Python keeps it, whatever else is
//! dropped. NumPy is imported on first use only: the rest of quiver works
//! without it.

use std::ffi::c_void;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use numpy::npyffi::{npy_intp, NpyTypes, PyArrayObject, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors;

/// How one column becomes an array.
enum Kind {
    /// A view of the values, with this dtype.
    View(Py<PyArrayDescr>),
    /// Booleans are bits in Arrow and bytes in NumPy: copied.
    Bool,
    /// No NumPy form without a copy of another kind: the reason.
    Refused(String),
}

/// The NumPy form of a schema's columns, worked out once per handle.
pub(crate) struct Columns {
    names: Vec<Py<PyString>>,
    /// The same names, for messages.
    labels: Vec<String>,
    kinds: Vec<Kind>,
}

/// The NumPy dtype of fixed-width values of `data_type`, or why there is none.
fn dtype<'py>(py: Python<'py>, data_type: &DataType) -> PyResult<Result<Bound<'py, PyArrayDescr>, String>> {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    let named = |name: String| -> PyResult<Result<Bound<'py, PyArrayDescr>, String>> {
        Ok(Ok(PyArrayDescr::new(py, name.as_str())?))
    };
    Ok(Ok(match data_type {
        DataType::Int8 => numpy::dtype::<i8>(py),
        DataType::Int16 => numpy::dtype::<i16>(py),
        DataType::Int32 => numpy::dtype::<i32>(py),
        DataType::Int64 => numpy::dtype::<i64>(py),
        DataType::UInt8 => numpy::dtype::<u8>(py),
        DataType::UInt16 => numpy::dtype::<u16>(py),
        DataType::UInt32 => numpy::dtype::<u32>(py),
        DataType::UInt64 => numpy::dtype::<u64>(py),
        DataType::Float16 => return named("float16".into()),
        DataType::Float32 => numpy::dtype::<f32>(py),
        DataType::Float64 => numpy::dtype::<f64>(py),
        // Time zones are the schema's business: NumPy's datetimes are UTC.
        DataType::Timestamp(u, _) => return named(format!("datetime64[{}]", unit(u))),
        DataType::Duration(u) => return named(format!("timedelta64[{}]", unit(u))),
        DataType::Date32 => numpy::dtype::<i32>(py),
        DataType::Date64 => return named("datetime64[ms]".into()),
        DataType::Time32(_) => numpy::dtype::<i32>(py),
        DataType::Time64(_) => numpy::dtype::<i64>(py),
        other => return Ok(Err(format!("{other} values have no NumPy view"))),
    }))
}

impl Columns {
    pub(crate) fn new(py: Python<'_>, schema: &SchemaRef) -> PyResult<Self> {
        let mut names = Vec::with_capacity(schema.fields().len());
        let labels = schema.fields().iter().map(|f| f.name().clone()).collect();
        let mut kinds = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            names.push(PyString::intern(py, field.name()).unbind());
            kinds.push(match field.data_type() {
                DataType::Boolean => Kind::Bool,
                t => match dtype(py, t)? {
                    Ok(d) => Kind::View(d.unbind()),
                    Err(why) => Kind::Refused(why),
                },
            });
        }
        Ok(Columns { names, labels, kinds })
    }

    /// `batch`'s columns as a dict of read-only arrays by name. Values are
    /// views (booleans are copied); a column with nulls is a
    /// `numpy.ma.MaskedArray` over the view, masked where null.
    pub(crate) fn read<'py>(&self, py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let owner = Bound::new(py, BatchMemory(batch.clone()))?.into_any();
        for (i, column) in batch.columns().iter().enumerate() {
            let array = match &self.kinds[i] {
                Kind::View(descr) => {
                    let (ptr, len) = values(column)?;
                    // SAFETY: `ptr` points at `len` values of this dtype's
                    // width in a buffer `owner` keeps alive (it holds the
                    // batch); the array is read-only.
                    unsafe { view(py, descr.bind(py), ptr as *mut c_void, len, false, &owner)? }
                }
                Kind::Bool => {
                    let bits = column.as_any().downcast_ref::<arrow_array::BooleanArray>();
                    let bits = bits.ok_or_else(|| errors::invalid("a boolean column that is not one"))?;
                    PyArray1::<bool>::from_iter(py, bits.values().iter()).into_any()
                }
                Kind::Refused(why) => {
                    return Err(errors::invalid(format!(
                        "column {:?}: {why} (poll() gives the batch as pyarrow)",
                        self.labels[i]
                    )));
                }
            };
            let array = match column.nulls().filter(|n| n.null_count() > 0) {
                None => array,
                Some(nulls) => {
                    let mask = PyArray1::<bool>::from_iter(py, nulls.iter().map(|valid| !valid));
                    let ma = py.import(pyo3::intern!(py, "numpy.ma"))?;
                    ma.getattr(pyo3::intern!(py, "MaskedArray"))?.call1((array, mask))?
                }
            };
            dict.set_item(self.names[i].bind(py), array)?;
        }
        Ok(dict)
    }

    /// Writable views of the value buffers of a batch being built in place
    /// (`Producer.reserve`), a dict by name. Only columns with a view
    /// (fixed-width, byte-addressed values) can be reserved.
    pub(crate) fn reserve<'py>(
        &self,
        py: Python<'py>,
        buffers: &[(*mut u8, usize)],
        owner: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyString>, Bound<'py, PyAny>)>> {
        let mut out = Vec::with_capacity(buffers.len());
        for (i, &(ptr, len)) in buffers.iter().enumerate() {
            let Kind::View(descr) = &self.kinds[i] else { unreachable!("checked by `reservable`") };
            // SAFETY: the caller passes the reservation's own value buffers
            // (`len` values each) and, as `owner`, what keeps them alive.
            let array = unsafe { view(py, descr.bind(py), ptr.cast(), len, true, owner)? };
            out.push((self.names[i].bind(py).clone(), array));
        }
        Ok(out)
    }

    /// Why a batch of this schema cannot be read as arrays, if it cannot.
    pub(crate) fn readable(&self) -> Result<(), String> {
        for (name, kind) in self.labels.iter().zip(&self.kinds) {
            if let Kind::Refused(why) = kind {
                return Err(format!("column {name:?}: {why} (poll() gives the batch as pyarrow)"));
            }
        }
        Ok(())
    }

    /// Why a batch of this schema cannot be reserved, if it cannot.
    pub(crate) fn reservable(&self) -> Result<(), String> {
        for (name, kind) in self.labels.iter().zip(&self.kinds) {
            match kind {
                Kind::View(_) => {}
                Kind::Bool => return Err(format!("column {name:?}: booleans are bits: append a pyarrow batch")),
                Kind::Refused(why) => return Err(format!("column {name:?}: {why}: append a pyarrow batch")),
            }
        }
        Ok(())
    }
}

/// The address and length of a fixed-width column's values (its offset
/// applied: a primitive array's values slice starts at it).
fn values(column: &ArrayRef) -> PyResult<(*const u8, usize)> {
    let column = column.as_ref();
    arrow_array::downcast_primitive_array!(
        column => Ok((column.values().as_ptr().cast::<u8>(), column.len())),
        other => Err(errors::invalid(format!("{other} values are not fixed-width")))
    )
}

/// A one-dimensional array of `len` values of `descr` at `data`, whose base
/// object is `owner`.
///
/// # Safety
///
/// `data` points at `len` values of `descr`'s size, aligned for it, which
/// stay valid (and, if `writable`, writable by this process) for as long as
/// `owner` lives.
unsafe fn view<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    data: *mut c_void,
    len: usize,
    writable: bool,
    owner: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims = [len as npy_intp];
    let flags = if writable { NPY_ARRAY_WRITEABLE } else { 0 };
    // SAFETY: the NumPy C API, called with the GIL held: `NewFromDescr`
    // steals the reference to the descriptor (a new one, from
    // `into_ptr`), reads `dims`, and on success returns a new array over
    // `data` (which the caller vouches for) that does not own it.
    unsafe {
        let subtype = numpy::npyffi::get_type_object(py, NpyTypes::PyArray_Type);
        let array = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            subtype,
            descr.clone().into_ptr().cast(),
            1,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data,
            flags,
            std::ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, array)?;
        // Steals a new reference to `owner`, which then lives as long as
        // the array (and the views NumPy makes of it, which keep it).
        if PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast::<PyArrayObject>(), owner.clone().into_ptr()) != 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

/// Makes `array` (one this module made) read-only.
pub(crate) fn freeze(array: &Bound<'_, PyAny>) {
    // SAFETY: `array` is an ndarray (made by `view`); clearing the flag is
    // what NumPy's `PyArray_CLEARFLAGS` does, with the GIL held.
    unsafe { (*array.as_ptr().cast::<PyArrayObject>()).flags &= !NPY_ARRAY_WRITEABLE };
}

/// What keeps a polled batch's arrays valid: the batch, whose buffers hold
/// the store object's reference.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct BatchMemory(#[allow(dead_code)] RecordBatch);

/// What keeps a reservation's arrays valid: the reservation being filled,
/// then the view of the batch it became. The store stays mapped as long
/// as any.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Memory {
    pub(crate) held: std::sync::Mutex<Held>,
}

/// What a [`Memory`] holds.
pub(crate) enum Held {
    /// A reservation: taken out to be committed. An aborted one stays
    /// here until the last array over it is gone, so that its memory is
    /// never reused under an array.
    Reserved(quiver::Reserved),
    /// A committed reservation's batch, referenced.
    View(#[allow(dead_code)] quiver::ObjectView),
    /// A reservation whose commit failed, with the store kept mapped.
    Store(#[allow(dead_code)] quiver::Store),
    /// Nothing (while a commit runs).
    Empty,
}
