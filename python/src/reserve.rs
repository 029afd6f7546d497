//! `Reservation`: a batch built in place in shared memory from Python
//! (`Producer.reserve`), through writable NumPy arrays.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::errors;
use crate::stream::{lock, Producer};

/// A batch being built in place in shared memory (`Producer.reserve`):
/// writable NumPy arrays over its columns, by name, then `commit()`.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Reservation {
    producer: Py<Producer>,
    /// The arrays' base: the reservation, then the committed batch's view
    /// (let go by an abort: the last array then frees it).
    memory: Mutex<Option<Py<crate::arrays::Memory>>>,
    /// The arrays this reservation made, by name, in column order: the
    /// only objects it makes read-only (emptied by an abort).
    arrays: Mutex<Vec<(Py<pyo3::types::PyString>, Py<PyAny>)>>,
    partition: u32,
    offset: u64,
    /// Committed or aborted.
    done: Mutex<bool>,
}

impl Reservation {
    /// `Producer.reserve`: takes the offset and makes the arrays.
    pub(crate) fn new(slf: &Bound<'_, Producer>, rows: usize, partition: Option<u32>) -> PyResult<Self> {
        let py = slf.py();
        let this = slf.get();
        let columns = this.fast.numpy(py)?;
        columns.reservable().map_err(errors::invalid)?;
        let mut guard = lock(&this.inner)?;
        let producer: &mut quiver::Producer = &mut guard;
        let mut reserved = py
            .detach(|| {
                let reservation = match partition {
                    Some(p) => producer.reserve_to(p, rows),
                    None => producer.reserve(rows),
                };
                reservation.map(quiver::Reservation::into_reserved)
            })
            .map_err(errors::stream)?;
        let appended = reserved.appended();
        // Each column's values, `rows` of its width (the layout's own).
        let buffers: Vec<(*mut u8, usize)> =
            reserved.columns_mut().into_iter().map(|column| (column.into_bytes().as_mut_ptr(), rows)).collect();
        let memory =
            Bound::new(py, crate::arrays::Memory { held: Mutex::new(crate::arrays::Held::Reserved(reserved)) })?;
        let arrays = columns.reserve(py, &buffers, memory.as_any())?;
        Ok(Self {
            producer: slf.clone().unbind(),
            memory: Mutex::new(Some(memory.unbind())),
            arrays: Mutex::new(arrays.into_iter().map(|(name, array)| (name.unbind(), array.unbind())).collect()),
            partition: appended.partition,
            offset: appended.offset,
            done: Mutex::new(false),
        })
    }

    fn already(&self) -> PyErr {
        errors::Error::new_err(format!(
            "the reservation at partition {} offset {} was already committed or aborted",
            self.partition, self.offset
        ))
    }

    /// Ends the reservation's writes: every array it handed out becomes
    /// read-only. An error if it was already committed or aborted.
    fn finish(&self, py: Python<'_>) -> PyResult<()> {
        let mut done = lock(&self.done)?;
        if *done {
            return Err(self.already());
        }
        *done = true;
        for (_, array) in lock(&self.arrays)?.iter() {
            crate::arrays::freeze(array.bind(py));
        }
        Ok(())
    }
}

#[pymethods]
impl Reservation {
    /// The column `name`'s values: a writable NumPy array over the store.
    fn __getitem__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let arrays = lock(&self.arrays)?;
        if let Some((_, array)) = arrays.iter().find(|(n, _)| n.bind(py).to_str().is_ok_and(|n| n == name)) {
            return Ok(array.bind(py).clone());
        }
        match arrays.is_empty() {
            true => Err(errors::Error::new_err("the reservation was aborted: its arrays are gone")),
            false => Err(pyo3::exceptions::PyKeyError::new_err(name.to_string())),
        }
    }

    /// The columns by name: a new dict of the writable NumPy arrays.
    #[getter]
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let dict = pyo3::types::PyDict::new(py);
        for (name, array) in lock(&self.arrays)?.iter() {
            dict.set_item(name.bind(py), array.bind(py))?;
        }
        Ok(dict)
    }

    /// The partition the batch goes to.
    #[getter]
    fn partition(&self) -> u32 {
        self.partition
    }

    /// Its offset there.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// Seals the batch: consumers see it from now on. The arrays become
    /// read-only (they still show the batch, which stays in the store
    /// while any of them lives); views made of them before must not be
    /// written any more. Returns `(partition, offset)`.
    fn commit(&self, py: Python<'_>) -> PyResult<(u32, u64)> {
        // Everything that can refuse comes first: a refused commit changes
        // nothing and can be made again.
        let producer = self.producer.bind(py).get();
        let mut guard = lock(&producer.inner)?;
        let p: &mut quiver::Producer = &mut guard;
        let memory = lock(&self.memory)?.as_ref().map(|m| m.clone_ref(py));
        let Some(memory) = memory else {
            return Err(self.already());
        };
        let memory = memory.bind(py).get();
        let mut held = lock(&memory.held)?;
        if !*lock(&self.done)? && !matches!(*held, crate::arrays::Held::Reserved(_)) {
            return Err(errors::Error::new_err("the reservation holds no batch"));
        }
        self.finish(py)?;
        let crate::arrays::Held::Reserved(reserved) = std::mem::replace(&mut *held, crate::arrays::Held::Empty) else {
            unreachable!("checked just above, under the same lock")
        };
        let store = p.stream().store().clone();
        match py.detach(|| p.commit_reserved(reserved, true)) {
            Ok((appended, view)) => {
                *held = match view {
                    Some(view) => crate::arrays::Held::View(view),
                    None => crate::arrays::Held::Store(store),
                };
                Ok((appended.partition, appended.offset))
            }
            Err(e) => {
                // The batch was given up; its arrays (read-only now) stay
                // over mapped memory.
                *held = crate::arrays::Held::Store(store);
                Err(errors::stream(e))
            }
        }
    }

    /// Gives the batch up: its offset becomes a hole that consumers pass,
    /// at once if no array of the reservation is still alive, else when
    /// the last is gone (they are read-only now, and their memory is never
    /// reused under them).
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py)?;
        lock(&self.arrays)?.clear();
        // With the last reference (this one, or the last array's), the
        // reservation is dropped, which aborts its object.
        drop(lock(&self.memory)?.take());
        Ok(())
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Commits, or aborts if the block raised.
    fn __exit__(
        &self,
        py: Python<'_>,
        kind: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if *lock(&self.done)? {
            return Ok(false);
        }
        match kind {
            None => self.commit(py).map(|_| false),
            Some(_) => self.abort(py).map(|_| false),
        }
    }

    fn __repr__(&self) -> String {
        format!("<quiver.Reservation partition {} offset {}>", self.partition, self.offset)
    }
}
