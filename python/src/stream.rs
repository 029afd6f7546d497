//! `Stream`, `Producer`, `Consumer`: streams of pyarrow record batches.

use std::sync::Mutex;
use std::time::Duration;

use arrow_array::{Array, RecordBatch};
use arrow_pyarrow::{FromPyArrow, ToPyArrow};
use arrow_schema::Schema;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use crate::errors;
use crate::fast::FastPath;
use crate::objects::ObjectId;
use crate::reserve::Reservation;
use crate::store::{to_python, Store};
use crate::wait;

/// Takes a handle for one call. A handle serves one thread at a time (as
/// an iterator does): a second thread calling it meanwhile gets an error,
/// never a wait, which could deadlock on the GIL the first one needs back.
pub(crate) fn lock<T>(m: &Mutex<T>) -> PyResult<std::sync::MutexGuard<'_, T>> {
    m.try_lock().map_err(|e| match e {
        std::sync::TryLockError::WouldBlock => {
            errors::Error::new_err("this handle is in use by another thread: give each thread its own")
        }
        std::sync::TryLockError::Poisoned(_) => errors::Error::new_err("a previous call on this handle panicked"),
    })
}

/// The record batches of a pyarrow `RecordBatch`, `Table` (one per chunk)
/// or anything else exporting Arrow data (`__arrow_c_array__`,
/// `__arrow_c_stream__`), imported without copying the data.
/// The bool says whether it was one batch (not a table).
pub(crate) fn batches_of(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<RecordBatch>, bool)> {
    if let Ok(batch) = RecordBatch::from_pyarrow_bound(obj) {
        return Ok((vec![batch], true));
    }
    if obj.hasattr("to_batches")? {
        let batches = obj.call_method0("to_batches")?.try_iter()?.map(|b| RecordBatch::from_pyarrow_bound(&b?));
        return Ok((batches.collect::<PyResult<_>>()?, false));
    }
    Err(errors::invalid(format!("expected a pyarrow.RecordBatch or pyarrow.Table, not {}", obj.get_type().name()?)))
}

fn back_pressure(name: &str) -> PyResult<quiver::BackPressure> {
    match name {
        "block" => Ok(quiver::BackPressure::Block),
        "drop_oldest" => Ok(quiver::BackPressure::DropOldest),
        "error" => Ok(quiver::BackPressure::Error),
        other => Err(errors::invalid(format!("back_pressure is 'block', 'drop_oldest' or 'error', not {other:?}"))),
    }
}

/// A stream: a named log of record batches in a store, with partitions and
/// consumer groups, which any process opens by name.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Stream {
    pub(crate) inner: quiver::Stream,
}

#[pymethods]
impl Stream {
    /// Creates stream `name` in `store` for batches of `schema` (a
    /// `pyarrow.Schema`). `groups` are consumer groups that must each see
    /// every batch (declared now, they miss nothing). `back_pressure` is
    /// what an append does when the store is full: `'block'` (wait for the
    /// producer's timeout), `'drop_oldest'` or `'error'`. `max_age`
    /// (seconds) and `max_bytes` drop old data.
    #[staticmethod]
    #[pyo3(signature = (store, name, schema, *, partitions = 1, groups = Vec::new(), back_pressure = "block", max_age = None, max_bytes = None, exist_ok = false))]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        store: &Store,
        name: &str,
        schema: &Bound<'_, PyAny>,
        partitions: u32,
        groups: Vec<String>,
        back_pressure: &str,
        max_age: Option<f64>,
        max_bytes: Option<u64>,
        exist_ok: bool,
    ) -> PyResult<Self> {
        let schema = Schema::from_pyarrow_bound(schema)?;
        let mut config = quiver::StreamConfig::new(name, schema.into())
            .partitions(partitions)
            .back_pressure(self::back_pressure(back_pressure)?);
        for group in groups {
            config = config.group(group);
        }
        if let Some(age) = max_age {
            config = config.max_age(crate::wait::seconds(age)?);
        }
        if let Some(bytes) = max_bytes {
            config = config.max_bytes(bytes);
        }
        let store = store.handle()?;
        let stream = py.detach(|| match exist_ok {
            true => quiver::Stream::open_or_create(&store, config),
            false => quiver::Stream::create(&store, config),
        });
        Ok(Stream { inner: stream.map_err(errors::stream)? })
    }

    /// Opens stream `name` of `store`.
    #[staticmethod]
    fn open(py: Python<'_>, store: &Store, name: &str) -> PyResult<Self> {
        let store = store.handle()?;
        let stream = py.detach(|| quiver::Stream::open(&store, name)).map_err(errors::stream)?;
        Ok(Stream { inner: stream })
    }

    /// Removes stream `name` of `store` and frees its batches.
    #[staticmethod]
    fn remove(py: Python<'_>, store: &Store, name: &str) -> PyResult<()> {
        let store = store.handle()?;
        py.detach(|| quiver::Stream::remove(&store, name)).map_err(errors::stream)
    }

    /// The streams of `store`: their stats, a dict each.
    #[staticmethod]
    fn list<'py>(py: Python<'py>, store: &Store) -> PyResult<Bound<'py, PyAny>> {
        let store = store.handle()?;
        let list = py.detach(|| quiver::Stream::list(&store)).map_err(errors::stream)?;
        to_python(py, &list)
    }

    /// The stream's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The stream's schema, a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.inner.schema().to_pyarrow(py)
    }

    /// The store the stream is in (a handle of its own: closing it leaves
    /// the stream's handle open).
    #[getter]
    fn store(&self) -> crate::store::Store {
        crate::store::Store::wrap(self.inner.store().clone())
    }

    /// The stream's namespace: the number in its batches' object IDs,
    /// drawn when the stream was made (a stream made again under the same
    /// name has another, so offsets saved from one mean nothing in the other).
    #[getter]
    fn namespace(&self) -> u64 {
        self.inner.namespace()
    }

    /// The number of partitions.
    #[getter]
    fn partitions(&self) -> u32 {
        self.inner.partitions()
    }

    /// Whether the stream was closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.inner.is_closed()).map_err(errors::stream)
    }

    /// The ID of the batch object at `offset` of `partition`.
    fn object_id(&self, partition: u32, offset: u64) -> ObjectId {
        ObjectId(self.inner.object_id(partition, offset))
    }

    /// Ends the stream: no more appends; consumers that read everything
    /// see its end.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close()).map_err(errors::stream)
    }

    /// A producer. Under `'block'` back-pressure an append waits up to
    /// `timeout` seconds for space.
    #[pyo3(signature = (*, timeout = 30.0))]
    fn producer(&self, py: Python<'_>, timeout: f64) -> PyResult<Producer> {
        let timeout = crate::wait::seconds(timeout)?;
        let producer = py.detach(|| self.inner.producer()).map_err(errors::stream)?.with_timeout(timeout);
        let revalidate = self.inner.schema().fields().iter().any(|f| f.data_type().primitive_width().is_none());
        Ok(Producer {
            inner: Mutex::new(producer),
            fast: FastPath::new(py, self.inner.schema())?,
            last: Mutex::new(None),
            revalidate,
        })
    }

    /// A consumer: a member of consumer group `group` (made if new,
    /// starting at `start`: `'oldest'` or `'newest'`), or a reader outside
    /// any group if `group` is `None`. `partitions` reads only those;
    /// `skip_corrupt` passes batches that cannot be decoded (counted and
    /// listed in the stream's stats) instead of raising `CorruptBatch`.
    #[pyo3(signature = (group = None, *, start = "oldest", partitions = None, skip_corrupt = false))]
    fn consumer(
        &self,
        py: Python<'_>,
        group: Option<String>,
        start: &str,
        partitions: Option<Vec<u32>>,
        skip_corrupt: bool,
    ) -> PyResult<Consumer> {
        let start = match start {
            "oldest" => quiver::StartAt::Oldest,
            "newest" => quiver::StartAt::Newest,
            other => return Err(errors::invalid(format!("start is 'oldest' or 'newest', not {other:?}"))),
        };
        let mut config = match group {
            Some(g) => quiver::ConsumerConfig::group(g),
            None => quiver::ConsumerConfig::reader(),
        }
        .start(start)
        .skip_corrupt(skip_corrupt);
        if let Some(p) = partitions {
            config = config.partitions(p);
        }
        let consumer = py.detach(|| self.inner.consumer(config)).map_err(errors::stream)?;
        Ok(Consumer {
            inner: Mutex::new(consumer),
            fast: FastPath::new(py, self.inner.schema())?,
            ended: Mutex::new(false),
        })
    }

    /// Frees what every group committed past and applies the limits now.
    fn enforce_retention(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.enforce_retention()).map_err(errors::stream)
    }

    /// The stream's numbers as a dict: partitions, groups with their lag,
    /// counters, skipped batches.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = py.detach(|| self.inner.stats()).map_err(errors::stream)?;
        to_python(py, &stats)
    }

    fn __repr__(&self) -> String {
        format!("<quiver.Stream {:?}, {} partitions>", self.inner.name(), self.inner.partitions())
    }
}

/// Appends record batches to a stream.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Producer {
    pub(crate) inner: Mutex<quiver::Producer>,
    pub(crate) fast: FastPath,
    /// The last `pyarrow.RecordBatch` appended and its import: appending
    /// the same object again (a batch whose buffers are refilled in place)
    /// imports nothing. Held strongly, so its address is not reused.
    last: Mutex<Option<(Py<PyAny>, RecordBatch)>>,
    /// Whether a batch of the schema has anything to validate beyond its
    /// buffers' sizes (variable-width or nested values), which a refill
    /// could change: such a batch is validated at every append.
    revalidate: bool,
}

impl Producer {
    /// `obj` imported, through the cache of the last batch appended.
    fn imported(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<(Vec<RecordBatch>, bool)> {
        if let Some((last, batch)) = lock(&self.last)?.as_ref() {
            if obj.is(last.bind(py)) {
                if self.revalidate {
                    batch
                        .columns()
                        .iter()
                        .try_for_each(|c| c.to_data().validate_full())
                        .map_err(|e| errors::invalid(format!("an invalid batch: {e}")))?;
                }
                return Ok((vec![batch.clone()], true));
            }
        }
        match self.fast.import_batch(py, obj)? {
            Some(batch) => {
                *lock(&self.last)? = Some((obj.clone().unbind(), batch.clone()));
                Ok((vec![batch], true))
            }
            None => batches_of(obj),
        }
    }

    fn each(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        mut append: impl FnMut(&mut quiver::Producer, &RecordBatch) -> quiver::stream::Result<Vec<quiver::Appended>> + Send,
    ) -> PyResult<(Vec<(u32, u64)>, bool)> {
        let (batches, single) = self.imported(py, data)?;
        let mut guard = lock(&self.inner)?;
        let producer: &mut quiver::Producer = &mut guard;
        let mut out = Vec::with_capacity(batches.len());
        for batch in &batches {
            let appended = py.detach(|| append(producer, batch)).map_err(errors::stream)?;
            out.extend(appended.iter().map(|a| (a.partition, a.offset)));
            py.check_signals()?;
        }
        Ok((out, single))
    }
}

#[pymethods]
impl Producer {
    /// Appends a `pyarrow.RecordBatch` (or each batch of a `pyarrow.Table`)
    /// to the next partition in turn. Returns `(partition, offset)` for a
    /// batch, a list of them for a table. The data is read in place
    /// through the Arrow C Data Interface and copied once, into shared memory.
    fn append(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (out, single) = self.each(py, batch, |p, b| p.append(b).map(|a| vec![a]))?;
        answer(py, out, single)
    }

    /// Appends to partition `partition`.
    fn append_to(&self, py: Python<'_>, partition: u32, batch: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (out, single) = self.each(py, batch, |p, b| p.append_to(partition, b).map(|a| vec![a]))?;
        answer(py, out, single)
    }

    /// Splits the batch by the hash of column `key` (integers, strings or
    /// binary) so that equal keys always land in the same partition, in
    /// order. Returns the `(partition, offset)` of every piece.
    fn append_keyed(&self, py: Python<'_>, batch: &Bound<'_, PyAny>, key: &str) -> PyResult<Vec<(u32, u64)>> {
        Ok(self.each(py, batch, |p, b| p.append_keyed(b, key))?.0)
    }

    /// Benchmark baseline (not API): appends `batch` `n` times from Rust,
    /// importing it once, so `append`'s own cost can be told from the
    /// library's. Returns the seconds the appends took.
    fn _append_native(&self, py: Python<'_>, batch: &Bound<'_, PyAny>, n: u64) -> PyResult<f64> {
        let batch = RecordBatch::from_pyarrow_bound(batch)?;
        let mut guard = lock(&self.inner)?;
        let producer: &mut quiver::Producer = &mut guard;
        py.detach(|| {
            let started = std::time::Instant::now();
            for _ in 0..n {
                producer.append(&batch)?;
            }
            Ok(started.elapsed().as_secs_f64())
        })
        .map_err(errors::stream)
    }

    /// Takes the next offset for a batch of `rows` rows built in place,
    /// and returns a `Reservation`: writable NumPy arrays over the batch's
    /// columns in shared memory (`reservation["x"][:] = ...`), then
    /// `commit()`. Nothing is copied. Every column must have fixed-width,
    /// byte-sized values (integers, floats, temporal types); no value is
    /// null. `partition` picks one (default: the next in turn).
    ///
    /// A reservation is also a context manager: it commits at the end of
    /// the `with` block, or aborts if the block raised. Dropped without a
    /// commit it is aborted, and consumers pass over its offset (a hole).
    #[pyo3(signature = (rows, *, partition = None))]
    fn reserve(slf: &Bound<'_, Self>, rows: usize, partition: Option<u32>) -> PyResult<Reservation> {
        Reservation::new(slf, rows, partition)
    }

    /// Ends the stream (as `Stream.close`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let guard = lock(&self.inner)?;
        let producer: &quiver::Producer = &guard;
        py.detach(|| producer.close()).map_err(errors::stream)
    }
}

/// `(partition, offset)` for one batch, a list for several.
fn answer(py: Python<'_>, out: Vec<(u32, u64)>, single: bool) -> PyResult<Py<PyAny>> {
    Ok(match (single, out.as_slice()) {
        (true, [one]) => one.into_pyobject(py)?.into_any().unbind(),
        _ => out.into_pyobject(py)?.into_any().unbind(),
    })
}

/// A batch read from a stream, with where it came from.
#[pyclass(module = "quiver", frozen, get_all)]
pub(crate) struct StreamBatch {
    /// The `pyarrow.RecordBatch` (its buffers are the shared memory).
    batch: Py<PyAny>,
    /// The partition it was appended to.
    partition: u32,
    /// Its offset there.
    offset: u64,
    /// When it was appended, nanoseconds since the Unix epoch.
    append_ns: u64,
}

#[pymethods]
impl StreamBatch {
    fn __repr__(&self) -> String {
        format!("<quiver.StreamBatch partition {} offset {}>", self.partition, self.offset)
    }
}

/// Reads a stream: polls with timeouts, iterates, commits its group's offsets.
///
/// `poll(timeout)` returns the next `pyarrow.RecordBatch`, or `None` if
/// nothing arrived in time, and raises `EndOfStream` once the stream is
/// closed and everything was read; `for batch in consumer:` waits for each
/// batch and stops at the end. The batches are zero-copy: their buffers are
/// the shared memory, and the object stays referenced until pyarrow frees
/// the last of them.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Consumer {
    inner: Mutex<quiver::Consumer>,
    fast: FastPath,
    ended: Mutex<bool>,
}

pyo3::create_exception!(quiver, EndOfStream, errors::Error, "The stream is closed and every batch was read.");

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EndOfStream", m.py().get_type::<EndOfStream>())
}

impl Consumer {
    /// Waits up to `timeout` for the next batch: `Some(None)` at the end.
    fn next_batch(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Option<quiver::StreamBatch>>> {
        let mut guard = lock(&self.inner)?;
        let consumer: &mut quiver::Consumer = &mut guard;
        // A batch that is there is taken with the GIL held: that look
        // neither waits nor locks, and releasing and taking back the GIL
        // would cost a tenth of the poll.
        if let Some(batch) = consumer.poll_ready().map_err(errors::stream)? {
            return Ok(Some(Some(batch)));
        }
        let polled = wait::sliced(
            py,
            timeout,
            |slice| {
                Ok(match consumer.poll(slice)? {
                    quiver::Polled::Batch(b) => Some(Some(b)),
                    quiver::Polled::EndOfStream => Some(None),
                    quiver::Polled::TimedOut => None,
                })
            },
            errors::stream,
        )?;
        if let Some(None) = polled {
            *lock(&self.ended)? = true;
        }
        Ok(polled)
    }

    /// A polled batch as a pyarrow batch, or with `numpy` a dict of NumPy
    /// arrays; if that fails, the consumer goes back to it, so the next
    /// poll meets it again rather than passing it.
    fn handed_over<'py>(&self, py: Python<'py>, b: &quiver::StreamBatch, numpy: bool) -> PyResult<Bound<'py, PyAny>> {
        let handed = match numpy {
            true => self.fast.to_numpy(py, &b.batch),
            false => self.fast.to_pyarrow(py, &b.batch),
        };
        handed.inspect_err(|_| {
            if let Ok(mut consumer) = lock(&self.inner) {
                let _ = consumer.seek(b.partition, b.offset);
            }
        })
    }

    /// `poll` and `poll_numpy`.
    fn poll_as(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        with_meta: bool,
        numpy: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        match self.next_batch(py, wait::timeout(timeout)?)? {
            None => Ok(None),
            Some(None) => Err(EndOfStream::new_err("the stream is closed and every batch was read")),
            Some(Some(b)) => {
                let batch = self.handed_over(py, &b, numpy)?;
                if !with_meta {
                    return Ok(Some(batch.unbind()));
                }
                let meta = StreamBatch {
                    batch: batch.unbind(),
                    partition: b.partition,
                    offset: b.offset,
                    append_ns: b.append_ns,
                };
                Ok(Some(Bound::new(py, meta)?.into_any().unbind()))
            }
        }
    }

    /// The next batch for an iterator; `StopIteration` at the end.
    pub(crate) fn next_as<'py>(&self, py: Python<'py>, numpy: bool) -> PyResult<Bound<'py, PyAny>> {
        match self.next_batch(py, None)? {
            Some(Some(b)) => self.handed_over(py, &b, numpy),
            _ => Err(PyStopIteration::new_err(())),
        }
    }
}

/// Iterates a consumer's batches as dicts of NumPy arrays
/// (`Consumer.iter_numpy`).
#[pyclass(module = "quiver", frozen)]
pub(crate) struct NumpyBatches {
    consumer: Py<Consumer>,
}

#[pymethods]
impl NumpyBatches {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Waits for the next batch (Ctrl-C interrupts); stops at the end.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.consumer.bind(py).get().next_as(py, true)
    }
}

#[pymethods]
impl Consumer {
    /// The next batch, waiting up to `timeout` seconds (0: look once;
    /// `None`: wait for ever); `None` if nothing arrived in time. Raises
    /// `EndOfStream` at the end of the stream, `CorruptBatch` at a batch
    /// that cannot be decoded (the consumer stays on it: `skip` it).
    /// With `with_meta=True` returns a `StreamBatch` (batch, partition,
    /// offset, append_ns). Ctrl-C interrupts the wait.
    #[pyo3(signature = (timeout = None, *, with_meta = false))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>, with_meta: bool) -> PyResult<Option<Py<PyAny>>> {
        self.poll_as(py, timeout, with_meta, false)
    }

    /// `poll`, with the batch as a dict of NumPy arrays by column name:
    /// read-only views of the shared memory, no copy (booleans are
    /// copied; a column with nulls is a `numpy.ma.MaskedArray`). The store
    /// object stays referenced while any of the arrays lives. Columns
    /// without a NumPy form (strings, nested types) raise: use `poll`.
    #[pyo3(signature = (timeout = None, *, with_meta = false))]
    fn poll_numpy(&self, py: Python<'_>, timeout: Option<f64>, with_meta: bool) -> PyResult<Option<Py<PyAny>>> {
        self.poll_as(py, timeout, with_meta, true)
    }

    /// Up to `n` batches in one call: waits up to `timeout` seconds for
    /// the first (0: look once; `None`: wait for ever), then takes what is
    /// ready without waiting. Returns a list, empty if nothing arrived in
    /// time; raises `EndOfStream` only when there is no batch left to
    /// return. With `numpy=True` each batch is a dict of NumPy arrays
    /// (as `poll_numpy`).
    #[pyo3(signature = (n, timeout = 0.0, *, numpy = false))]
    fn poll_many<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
        numpy: bool,
    ) -> PyResult<Bound<'py, pyo3::types::PyList>> {
        let list = pyo3::types::PyList::empty(py);
        if n == 0 {
            return Ok(list);
        }
        if numpy {
            // Refused before anything is polled, rather than batch by batch.
            self.fast.numpy(py)?.readable().map_err(errors::invalid)?;
        }
        let first = match self.next_batch(py, wait::timeout(timeout)?)? {
            None => return Ok(list),
            Some(None) => return Err(EndOfStream::new_err("the stream is closed and every batch was read")),
            Some(Some(b)) => b,
        };
        let mut batches = vec![first];
        {
            let mut guard = lock(&self.inner)?;
            let consumer: &mut quiver::Consumer = &mut guard;
            let ended = py.detach(|| {
                while batches.len() < n {
                    // An error (a batch that cannot be decoded, say) is
                    // the next call's: the consumer stands on it, and
                    // the batches taken before it are handed over.
                    match consumer.poll(Duration::ZERO) {
                        Ok(quiver::Polled::Batch(b)) => batches.push(b),
                        Ok(quiver::Polled::EndOfStream) => return true,
                        Ok(quiver::Polled::TimedOut) | Err(_) => break,
                    }
                }
                false
            });
            if ended {
                *lock(&self.ended)? = true;
            }
        }
        for (i, b) in batches.iter().enumerate() {
            match self.handed_over(py, b, numpy) {
                Ok(batch) => list.append(batch)?,
                Err(e) => {
                    // The consumer goes back to this batch and to the
                    // first batch after it in every other partition: the
                    // ones before are delivered, the rest polled again.
                    let mut consumer = lock(&self.inner)?;
                    let mut seen = std::collections::HashSet::new();
                    for later in &batches[i..] {
                        if seen.insert(later.partition) {
                            let _ = consumer.seek(later.partition, later.offset);
                        }
                    }
                    *lock(&self.ended)? = false;
                    if i == 0 {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Waits for the next batch (Ctrl-C interrupts); stops at the end.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.next_as(py, false)
    }

    /// An iterator over the batches as dicts of NumPy arrays (as
    /// `poll_numpy`), waiting for each and stopping at the end:
    /// `for columns in consumer.iter_numpy():`.
    fn iter_numpy(slf: &Bound<'_, Self>) -> NumpyBatches {
        NumpyBatches { consumer: slf.clone().unbind() }
    }

    /// Benchmark baseline (not API): polls up to `n` batches from Rust
    /// without handing them to pyarrow (each decoded, then dropped), so
    /// `poll`'s own cost can be told from the library's. Returns the
    /// batches read and the seconds it took.
    fn _poll_native(&self, py: Python<'_>, n: u64) -> PyResult<(u64, f64)> {
        let mut guard = lock(&self.inner)?;
        let consumer: &mut quiver::Consumer = &mut guard;
        py.detach(|| {
            let started = std::time::Instant::now();
            let mut read = 0;
            while read < n {
                match consumer.poll(Duration::ZERO)? {
                    quiver::Polled::Batch(b) => {
                        std::hint::black_box(b.batch.num_rows());
                        read += 1;
                    }
                    _ => break,
                }
            }
            Ok((read, started.elapsed().as_secs_f64()))
        })
        .map_err(errors::stream)
    }

    /// Whether a poll met the end of the stream.
    #[getter]
    fn ended(&self) -> PyResult<bool> {
        Ok(*lock(&self.ended)?)
    }

    /// Commits this consumer's positions for its group: everything polled
    /// so far is done, and retention may free it.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = lock(&self.inner)?;
        let consumer: &mut quiver::Consumer = &mut guard;
        py.detach(|| consumer.commit()).map_err(errors::stream)
    }

    /// Moves the position in `partition` to `offset` (a retained one).
    fn seek(&self, py: Python<'_>, partition: u32, offset: u64) -> PyResult<()> {
        let mut guard = lock(&self.inner)?;
        let consumer: &mut quiver::Consumer = &mut guard;
        py.detach(|| consumer.seek(partition, offset)).map_err(errors::stream)?;
        *lock(&self.ended)? = false;
        Ok(())
    }

    /// Passes the batch at `offset` of `partition` that `CorruptBatch`
    /// stopped at, recording `reason` in the stream's stats.
    #[pyo3(signature = (partition, offset, reason = "skipped by the application"))]
    fn skip(&self, py: Python<'_>, partition: u32, offset: u64, reason: &str) -> PyResult<()> {
        let mut guard = lock(&self.inner)?;
        let consumer: &mut quiver::Consumer = &mut guard;
        py.detach(|| consumer.skip(partition, offset, reason)).map_err(errors::stream)
    }

    /// The next offset this consumer reads in `partition`.
    fn position(&self, partition: u32) -> PyResult<Option<u64>> {
        Ok(lock(&self.inner)?.position(partition))
    }

    /// The group's committed offset in `partition`.
    fn committed(&self, py: Python<'_>, partition: u32) -> PyResult<u64> {
        let guard = lock(&self.inner)?;
        let consumer: &quiver::Consumer = &guard;
        py.detach(|| consumer.committed(partition)).map_err(errors::stream)
    }

    /// Offsets passed because their producer died before sealing them.
    #[getter]
    fn holes(&self) -> PyResult<u64> {
        Ok(lock(&self.inner)?.holes())
    }

    /// Batches dropped (by a limit or `'drop_oldest'`) before this consumer read them.
    #[getter]
    fn missed(&self) -> PyResult<u64> {
        Ok(lock(&self.inner)?.missed())
    }

    /// Batches this consumer skipped because they could not be decoded.
    #[getter]
    fn skipped(&self) -> PyResult<u64> {
        Ok(lock(&self.inner)?.skipped())
    }

    /// Batches appended to this consumer's partitions not read yet.
    #[getter]
    fn backlog(&self) -> PyResult<u64> {
        lock(&self.inner)?.backlog().map_err(errors::stream)
    }

    /// The consumer's group, or `None` for a reader.
    #[getter]
    fn group(&self) -> PyResult<Option<String>> {
        Ok(lock(&self.inner)?.group().map(str::to_string))
    }

    fn __repr__(&self) -> PyResult<String> {
        let c = lock(&self.inner)?;
        Ok(format!("<quiver.Consumer of {:?}, group {:?}>", c.stream().name(), c.group()))
    }
}
