//! `quiver.Cells`: an object of shared 64-bit atomic cells that processes
//! change in place (`Store.create_cells`, `Store.get_cells`), for the small
//! agreements between processes that need no lock, such as the steps of
//! `quiver.torch`'s ranks.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::objects::ObjectId;

/// A handle to an object of shared cells: each a 64-bit unsigned integer
/// read and changed atomically (sequentially consistent) by every process
/// that holds a handle. The object stays in the store while a handle
/// exists.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Cells {
    inner: quiver::Cells,
}

impl Cells {
    pub(crate) fn wrap(inner: quiver::Cells) -> Self {
        Cells { inner }
    }

    fn cell(&self, index: usize) -> PyResult<&AtomicU64> {
        let cells = self.inner.cells();
        cells
            .get(index)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err(format!("cell {index} of {} cells", cells.len())))
    }
}

#[pymethods]
impl Cells {
    /// The object's ID.
    #[getter]
    fn id(&self) -> ObjectId {
        ObjectId(self.inner.id())
    }

    /// The metadata given at creation.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.metadata())
    }

    fn __len__(&self) -> usize {
        self.inner.cells().len()
    }

    /// The value of cell `index`.
    fn load(&self, index: usize) -> PyResult<u64> {
        Ok(self.cell(index)?.load(SeqCst))
    }

    /// The values of every cell, in order (each read atomically, the whole
    /// not at one instant).
    fn load_all(&self) -> Vec<u64> {
        self.inner.cells().iter().map(|c| c.load(SeqCst)).collect()
    }

    /// Sets cell `index` to `value`.
    fn store(&self, index: usize, value: u64) -> PyResult<()> {
        self.cell(index)?.store(value, SeqCst);
        Ok(())
    }

    /// Adds `value` to cell `index` (wrapping) and returns the old value.
    fn fetch_add(&self, index: usize, value: u64) -> PyResult<u64> {
        Ok(self.cell(index)?.fetch_add(value, SeqCst))
    }

    /// Raises cell `index` to `value` if it is below, and returns the old value.
    fn fetch_max(&self, index: usize, value: u64) -> PyResult<u64> {
        Ok(self.cell(index)?.fetch_max(value, SeqCst))
    }

    /// Sets cell `index` to `new` if it holds `current`; returns
    /// `(swapped, the value it held)`.
    fn compare_exchange(&self, index: usize, current: u64, new: u64) -> PyResult<(bool, u64)> {
        Ok(match self.cell(index)?.compare_exchange(current, new, SeqCst, SeqCst) {
            Ok(old) => (true, old),
            Err(old) => (false, old),
        })
    }

    fn __repr__(&self) -> String {
        format!("Cells(id={}, count={})", self.inner.id(), self.inner.cells().len())
    }
}
