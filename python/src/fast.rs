//! `FastPath`: record batches of one schema across the Arrow C Data
//! Interface (only the array crosses), and as NumPy arrays.

use std::sync::Arc;

use arrow_array::ffi::FFI_ArrowArray;
use arrow_array::{Array, RecordBatch, RecordBatchOptions, StructArray};
use arrow_pyarrow::ToPyArrow;
use arrow_schema::{DataType, SchemaRef};
use pyo3::intern;
use pyo3::prelude::*;

use crate::errors;

/// Batches of one schema across the C Data Interface with nothing but the
/// array crossing: the schema is exchanged once, when the handle is made
/// (arrow-pyarrow's general path exports and parses the schema with every
/// batch, a microsecond or more per column).
pub(crate) struct FastPath {
    schema: SchemaRef,
    /// The same schema as a `pyarrow.Schema`.
    py_schema: Py<PyAny>,
    /// `pyarrow.RecordBatch`, and its `_import_from_c`.
    batch_type: Py<PyAny>,
    import: Py<PyAny>,
    /// The columns' NumPy forms, made on first use (NumPy is imported then).
    numpy: pyo3::sync::PyOnceLock<crate::arrays::Columns>,
}

impl FastPath {
    pub(crate) fn new(py: Python<'_>, schema: &SchemaRef) -> PyResult<Self> {
        let batch_type = py.import("pyarrow")?.getattr("RecordBatch")?;
        Ok(FastPath {
            schema: schema.clone(),
            py_schema: schema.to_pyarrow(py)?.unbind(),
            import: batch_type.getattr("_import_from_c")?.unbind(),
            batch_type: batch_type.unbind(),
            numpy: pyo3::sync::PyOnceLock::new(),
        })
    }

    /// The columns' NumPy forms.
    pub(crate) fn numpy(&self, py: Python<'_>) -> PyResult<&crate::arrays::Columns> {
        self.numpy.get_or_try_init(py, || crate::arrays::Columns::new(py, &self.schema))
    }

    /// `batch` as a dict of NumPy arrays by column name, read-only views of
    /// the shared memory (see `arrays::Columns::read`).
    pub(crate) fn to_numpy<'py>(&self, py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.numpy(py)?.read(py, batch)?.into_any())
    }

    /// `batch` as a `pyarrow.RecordBatch`, zero-copy: pyarrow gets the
    /// buffers' own addresses and a release callback that drops them (and
    /// with the last one the store object's reference).
    pub(crate) fn to_pyarrow<'py>(&self, py: Python<'py>, batch: &RecordBatch) -> PyResult<Bound<'py, PyAny>> {
        // The stream's readers hand out batches with the stream's own schema
        // `Arc` (`BatchReader::expect_schema`): the pointer test is the hit.
        if !Arc::ptr_eq(batch.schema_ref(), &self.schema) && *batch.schema() != *self.schema {
            return batch.to_pyarrow(py);
        }
        if let Some(exported) = crate::export::export(batch) {
            // Moved out by pyarrow, or released when `exported` drops.
            return self.import.bind(py).call1((exported.address(), self.py_schema.bind(py)));
        }
        let data = StructArray::from(batch.clone()).into_data();
        let array = Box::into_raw(Box::new(FFI_ArrowArray::new(&data)));
        let imported = self.import.bind(py).call1((array as usize, self.py_schema.bind(py)));
        // SAFETY: `array` came from `Box::into_raw` just above and nothing
        // else frees it. pyarrow moved the array out (leaving it released)
        // or, on an error, did not: the drop releases what is left.
        drop(unsafe { Box::from_raw(array) });
        imported
    }

    /// `obj` as a `RecordBatch` if it is a `pyarrow.RecordBatch` of this
    /// schema (field names and types; schema metadata aside): only the
    /// array crosses, read in place. `None` for anything else.
    pub(crate) fn import_batch(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<RecordBatch>> {
        if !obj.is_instance(self.batch_type.bind(py))? {
            return Ok(None);
        }
        let schema = obj.getattr(intern!(py, "schema"))?;
        // Metadata too: an extension type travels as field metadata, and
        // the general path (which then refuses) compares it as well.
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item(intern!(py, "check_metadata"), true)?;
        let same = schema.is(self.py_schema.bind(py))
            || schema.call_method(intern!(py, "equals"), (self.py_schema.bind(py),), Some(&kwargs))?.is_truthy()?;
        if !same {
            return Ok(None);
        }
        let mut array = FFI_ArrowArray::empty();
        obj.call_method1(intern!(py, "_export_to_c"), (&raw mut array as usize,))?;
        let struct_type = DataType::Struct(self.schema.fields().clone());
        // SAFETY: pyarrow filled `array` with a struct array of this schema's
        // fields (checked equal above); it stays alive, owned by the
        // imported data, until the last buffer is dropped.
        let data = unsafe { arrow_array::ffi::from_ffi_and_data_type(array, struct_type) }
            .map_err(|e| errors::invalid(format!("pyarrow exported a batch arrow cannot import: {e}")))?;
        // The import trusts the exporter; pyarrow checks less than arrow
        // (UTF-8, increasing offsets), and a batch is read by other
        // processes: validate it as the general path does.
        data.validate_full().map_err(|e| errors::invalid(format!("an invalid batch: {e}")))?;
        let rows = data.len();
        let (_, columns, _) = StructArray::from(data).into_parts();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map(Some)
            .map_err(|e| errors::invalid(e.to_string()))
    }
}
