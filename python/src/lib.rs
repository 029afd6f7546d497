//! `quiver._quiver`: the Python extension behind the `quiver` package.
//!
//! A thin layer over the library: each class wraps one Rust handle, every
//! wait releases the GIL in slices short enough for Ctrl-C to interrupt it
//! (see [`wait`]), errors become the exceptions of [`errors`], and record
//! batches cross to and from pyarrow through the Arrow C Data Interface
//! without a copy (a batch read from a stream keeps its store object
//! referenced until pyarrow frees its last buffer, as in Rust). The
//! Pythonic surface (context managers, iteration, keyword arguments, type
//! stubs) is here and in `python/quiver/`.

mod arrays;
mod cells;
mod errors;
mod export;
mod fast;
mod objects;
mod reserve;
mod shard;
mod store;
mod stream;
mod train;
mod wait;

use pyo3::prelude::*;

/// The record batches of an Arrow IPC file (file or stream format) or a
/// CSV file with a header row, as `quiver produce` reads them (every
/// message checked first: a corrupt file raises, never crashes). Returns
/// `(schema, [batches])` as pyarrow objects.
#[pyfunction]
#[pyo3(signature = (path, *, batch_rows = 1024))]
fn read_file<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    batch_rows: usize,
) -> PyResult<(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>)> {
    use arrow_pyarrow::ToPyArrow;
    let imported = py.detach(|| quiver::arrow::import::read_path(&path, batch_rows)).map_err(errors::import)?;
    let batches = imported.batches.iter().map(|b| b.to_pyarrow(py)).collect::<PyResult<_>>()?;
    Ok((imported.schema.to_pyarrow(py)?, batches))
}

#[pymodule]
fn _quiver(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    stream::register(m)?;
    m.add_class::<objects::ObjectId>()?;
    m.add_class::<objects::ObjectBuilder>()?;
    m.add_class::<objects::ObjectView>()?;
    m.add_class::<store::Store>()?;
    m.add_class::<cells::Cells>()?;
    m.add_class::<stream::Stream>()?;
    m.add_class::<stream::Producer>()?;
    m.add_class::<stream::Consumer>()?;
    m.add_class::<stream::StreamBatch>()?;
    m.add_class::<reserve::Reservation>()?;
    m.add_class::<stream::NumpyBatches>()?;
    m.add_class::<shard::ShardManager>()?;
    m.add_class::<shard::Task>()?;
    m.add_class::<train::SgdRegressor>()?;
    m.add_class::<train::SharedModel>()?;
    m.add_class::<train::SharedTrainer>()?;
    m.add("FORMAT_VERSION", quiver::store::FORMAT_VERSION)?;
    m.add_function(wrap_pyfunction!(read_file, m)?)?;
    Ok(())
}
