//! `Store`: a handle on a store file in shared memory.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::cells::Cells;
use crate::errors;
use crate::objects::{ObjectBuilder, ObjectId, ObjectView};
use crate::wait;

/// A store: named objects in a file in shared memory (`/dev/shm`), which
/// every process that opens it sees.
///
/// `Store.create(name, capacity=...)` makes one, `Store.open(name)` joins
/// one, `Store.remove(name)` removes its file. A store is a context
/// manager: `close()` (or the end of the `with` block) gives this handle up.
/// Objects and views made through it stay valid after `close()`.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct Store {
    inner: std::sync::Mutex<Option<quiver::Store>>,
}

impl Store {
    pub(crate) fn wrap(store: quiver::Store) -> Self {
        Store { inner: std::sync::Mutex::new(Some(store)) }
    }

    /// The Rust handle (a cheap clone of an `Arc`).
    pub(crate) fn handle(&self) -> PyResult<quiver::Store> {
        self.inner
            .lock()
            .map_err(|_| errors::Error::new_err("poisoned"))?
            .clone()
            .ok_or_else(|| errors::Error::new_err("the store was closed"))
    }
}

/// A Python value as JSON-like Python objects (dicts, lists, numbers).
pub(crate) fn to_python<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| errors::Error::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

#[pymethods]
impl Store {
    /// Creates the store `name` (its file is `/dev/shm/quiver-NAME`), or a
    /// store at `path` (a file anywhere) instead of a name.
    ///
    /// `capacity` is the bytes of its arena (objects' data, metadata and a
    /// 64-byte header each); `max_objects` the objects it can hold at once.
    /// Raises `AlreadyExists` if the name is taken.
    #[staticmethod]
    #[pyo3(signature = (name = None, *, capacity = 256 << 20, max_objects = None, path = None, prefault = true))]
    fn create(
        py: Python<'_>,
        name: Option<&str>,
        capacity: u64,
        max_objects: Option<u64>,
        path: Option<std::path::PathBuf>,
        prefault: bool,
    ) -> PyResult<Self> {
        let mut config = match (name, path) {
            (Some(name), None) => quiver::StoreConfig::new(name),
            (None, Some(path)) => quiver::StoreConfig::at_path(path),
            _ => return Err(errors::invalid("give a store name or a path, not both")),
        };
        config = config.capacity(capacity).prefault(prefault);
        if let Some(n) = max_objects {
            config = config.max_objects(n);
        }
        let store = py.detach(|| quiver::Store::create(config)).map_err(errors::store)?;
        Ok(Store::wrap(store))
    }

    /// Opens the existing store `name` (or the store file at `path`).
    /// `allow_other_owner` opens a store that belongs to another user.
    #[staticmethod]
    #[pyo3(signature = (name = None, *, path = None, allow_other_owner = false))]
    fn open(
        py: Python<'_>,
        name: Option<&str>,
        path: Option<std::path::PathBuf>,
        allow_other_owner: bool,
    ) -> PyResult<Self> {
        let config = match (name, path) {
            (Some(name), None) => quiver::OpenConfig::new(name),
            (None, Some(path)) => quiver::OpenConfig::at_path(path),
            _ => return Err(errors::invalid("give a store name or a path, not both")),
        };
        let config = config.allow_other_owner(allow_other_owner);
        let store = py.detach(|| quiver::Store::open_with(config)).map_err(errors::store)?;
        Ok(Store::wrap(store))
    }

    /// Removes the store file `name`. Processes that have it open keep
    /// their mapping until they close it. With `check=True`, refuses what
    /// is not a quiver store and a store that live processes have open
    /// (as `quiver rm` does).
    #[staticmethod]
    #[pyo3(signature = (name, *, check = false))]
    fn remove(name: &str, check: bool) -> PyResult<()> {
        if check {
            quiver::store::files::remove(name, false).map(|_| ()).map_err(errors::store)
        } else {
            quiver::Store::remove(name).map_err(errors::store)
        }
    }

    /// The stores in `/dev/shm`: a dict for each (name, owner, size, live
    /// clients, state), without opening any of them.
    #[staticmethod]
    fn list_stores(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let files = quiver::store::files::list().map_err(errors::store)?;
        to_python(py, &files)
    }

    /// Gives this handle up (objects and views made through it stay valid).
    fn close(&self) -> PyResult<()> {
        self.inner.lock().map_err(|_| errors::Error::new_err("poisoned"))?.take();
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        _kind: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close()?;
        Ok(false)
    }

    /// The store's file.
    #[getter]
    fn path(&self) -> PyResult<std::path::PathBuf> {
        Ok(self.handle()?.path().to_path_buf())
    }

    /// Creates object `id` with `size` bytes of data and `metadata`, and
    /// returns its builder (a writable buffer; `seal()` it when filled).
    /// Waits up to `timeout` seconds for space if the store is full
    /// (`None`, the default: raise `StoreFull` at once); `pinned` objects
    /// are never evicted.
    #[pyo3(signature = (id, size, metadata = b"".as_slice(), *, timeout = None, pinned = false))]
    fn create_object(
        &self,
        py: Python<'_>,
        id: ObjectId,
        size: u64,
        metadata: &[u8],
        timeout: Option<f64>,
        pinned: bool,
    ) -> PyResult<ObjectBuilder> {
        let store = self.handle()?;
        let mut options = quiver::CreateOptions::new().pinned(pinned);
        if let Some(t) = wait::timeout(timeout)? {
            options = options.timeout(t);
        }
        let metadata = metadata.to_vec();
        let builder = py.detach(|| store.create_object_with(id.0, size, &metadata, options)).map_err(errors::store)?;
        Ok(ObjectBuilder::new(builder))
    }

    /// Creates object `id` holding `count` shared 64-bit cells, zeroed, and
    /// returns a handle (`Cells`): every process that opens it with
    /// `get_cells` reads and changes the same cells atomically. It is
    /// pinned, never read as bytes, and deleted once `delete`d and every
    /// handle is gone. Raises `AlreadyExists` if `id` exists.
    #[pyo3(signature = (id, count, metadata = b"".as_slice()))]
    fn create_cells(&self, py: Python<'_>, id: ObjectId, count: usize, metadata: &[u8]) -> PyResult<Cells> {
        let store = self.handle()?;
        let cells = py.detach(|| store.create_cells(id.0, count, metadata)).map_err(errors::store)?;
        Ok(Cells::wrap(cells))
    }

    /// The cells object `id` (see `create_cells`), or `None` while it does
    /// not exist or is being created.
    fn get_cells(&self, py: Python<'_>, id: ObjectId) -> PyResult<Option<Cells>> {
        let store = self.handle()?;
        let cells = py.detach(|| store.get_cells(id.0)).map_err(errors::store)?;
        Ok(cells.map(Cells::wrap))
    }

    /// Creates, fills and seals object `id` in one call.
    #[pyo3(signature = (id, data, metadata = b"".as_slice()))]
    fn put(&self, py: Python<'_>, id: ObjectId, data: &[u8], metadata: &[u8]) -> PyResult<()> {
        let store = self.handle()?;
        py.detach(|| {
            let mut builder = store.create_object(id.0, data.len() as u64, metadata)?;
            builder.data_mut().copy_from_slice(data);
            builder.seal()
        })
        .map_err(errors::store)
    }

    /// A read-only, zero-copy view of sealed object `id`, waiting up to
    /// `timeout` seconds for it to be sealed (0: look once; `None`: wait
    /// for ever). `None` if it was not sealed in time. Ctrl-C interrupts
    /// the wait.
    #[pyo3(signature = (id, timeout = 0.0))]
    fn get(&self, py: Python<'_>, id: ObjectId, timeout: Option<f64>) -> PyResult<Option<ObjectView>> {
        let store = self.handle()?;
        let found = wait::sliced(py, wait::timeout(timeout)?, |slice| store.get(id.0, slice), errors::store)?;
        Ok(found.map(ObjectView::new))
    }

    /// Views of several objects, waiting up to `timeout` seconds in all;
    /// `None` in place of each one not sealed in time.
    #[pyo3(signature = (ids, timeout = 0.0))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<ObjectId>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<Option<ObjectView>>> {
        let store = self.handle()?;
        let ids: Vec<quiver::ObjectId> = ids.iter().map(|id| id.0).collect();
        let timeout = wait::timeout(timeout)?;
        let mut got: Vec<Option<quiver::ObjectView>> = (0..ids.len()).map(|_| None).collect();
        // Each slice asks for what is still missing; done when all are in.
        wait::sliced(
            py,
            timeout,
            |slice| {
                let missing: Vec<usize> = (0..ids.len()).filter(|&i| got[i].is_none()).collect();
                let asked: Vec<quiver::ObjectId> = missing.iter().map(|&i| ids[i]).collect();
                for (i, view) in missing.into_iter().zip(store.get_many(&asked, slice)?) {
                    got[i] = view;
                }
                Ok(got.iter().all(Option::is_some).then_some(()))
            },
            errors::store,
        )?;
        Ok(got.into_iter().map(|v| v.map(ObjectView::new)).collect())
    }

    /// Whether object `id` exists and is sealed.
    fn contains(&self, py: Python<'_>, id: ObjectId) -> PyResult<bool> {
        let store = self.handle()?;
        py.detach(|| store.contains(id.0)).map_err(errors::store)
    }

    /// Deletes sealed object `id`; its memory is freed once no view holds it.
    fn delete(&self, py: Python<'_>, id: ObjectId) -> PyResult<()> {
        let store = self.handle()?;
        py.detach(|| store.delete(id.0)).map_err(errors::store)
    }

    /// Deletes every sealed object among `ids` in one critical section,
    /// passing over IDs that name nothing or an object still being
    /// created; returns how many were deleted.
    fn delete_many(&self, py: Python<'_>, ids: Vec<ObjectId>) -> PyResult<usize> {
        let store = self.handle()?;
        let ids: Vec<quiver::ObjectId> = ids.iter().map(|id| id.0).collect();
        py.detach(|| store.delete_many(&ids)).map_err(errors::store)
    }

    /// Evicts least recently used objects (sealed, unpinned, with no view
    /// or buffer open) until their data and metadata add up to at least
    /// `num_bytes`, or none is left; returns the bytes evicted.
    fn evict(&self, py: Python<'_>, num_bytes: u64) -> PyResult<u64> {
        let store = self.handle()?;
        py.detach(|| store.evict(num_bytes)).map_err(errors::store)
    }

    /// Every object: a dict each (id, sizes, state, references, pinned, age).
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let store = self.handle()?;
        let objects = py.detach(|| store.list()).map_err(errors::store)?;
        let list = PyList::empty(py);
        for o in objects {
            let item = to_python(py, &o)?;
            item.set_item("id", ObjectId(o.id))?;
            list.append(item)?;
        }
        Ok(list)
    }

    /// The store's numbers as a dict: capacity, used, payload, objects,
    /// clients, evictions, repairs, ...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let store = self.handle()?;
        let stats = py.detach(|| store.stats()).map_err(errors::store)?;
        to_python(py, &stats)
    }

    /// Releases what clients that died left behind (their references and
    /// unfinished objects); returns how many were recovered. Waiting calls
    /// and new clients do this on their own when they meet a dead one.
    fn recover_dead_clients(&self, py: Python<'_>) -> PyResult<usize> {
        let store = self.handle()?;
        py.detach(|| store.recover_dead_clients()).map_err(errors::store)
    }

    /// The address range of this handle's mapping (start, end): every
    /// zero-copy buffer from this store lies inside it.
    fn mapped_range(&self) -> PyResult<(usize, usize)> {
        let range = self.handle()?.mapped_range();
        Ok((range.start, range.end))
    }

    fn __repr__(&self) -> String {
        match self.handle() {
            Ok(store) => format!("<quiver.Store {}>", store.path().display()),
            Err(_) => "<quiver.Store (closed)>".into(),
        }
    }
}
