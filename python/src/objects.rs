//! Object IDs, and the two handles on an object's bytes: `ObjectBuilder`
//! (a writable buffer into shared memory, then `seal`) and `ObjectView` (a
//! read-only, zero-copy buffer that keeps the object referenced while any
//! memoryview or pyarrow buffer of it lives).
//!
//! Both export their bytes through the buffer protocol, so `memoryview(b)`,
//! `numpy.frombuffer(b)` and `pyarrow.py_buffer(b)` see the shared memory
//! itself. A builder counts its exports and refuses to seal or abort while
//! one is open: a writable view must never outlive the moment the object
//! becomes immutable (or its memory is freed).

use std::ffi::c_int;
use std::hash::{Hash, Hasher};

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors;

/// A 24-byte object ID.
#[pyclass(module = "quiver", frozen, eq, ord, from_py_object)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjectId(pub quiver::ObjectId);

#[pymethods]
impl ObjectId {
    /// An ID from its 24 bytes (`bytes(id)` gives them back).
    #[new]
    fn new(raw: &[u8]) -> PyResult<Self> {
        let bytes: [u8; 24] =
            raw.try_into().map_err(|_| errors::invalid(format!("an ObjectId is 24 bytes, not {}", raw.len())))?;
        Ok(ObjectId(quiver::ObjectId::from_bytes(bytes)))
    }

    /// The ID of the `offset`-th object of `partition` in namespace `ns`:
    /// every process computes the same ID without talking to the others.
    #[staticmethod]
    fn sequential(ns: u64, partition: u32, offset: u64) -> Self {
        ObjectId(quiver::ObjectId::sequential(ns, partition, offset))
    }

    /// A random ID (from the OS's random source).
    #[staticmethod]
    fn random() -> Self {
        ObjectId(quiver::ObjectId::random())
    }

    /// An ID of kind `kind` (`"plasma"`, `"plasma_settings"`, ...: see
    /// `kind`) with the 23 bytes after the kind byte given: the kinds are
    /// the core's `IdKind`, so IDs made here never meet another kind's.
    #[staticmethod]
    fn with_kind(kind: &str, rest: &[u8]) -> PyResult<Self> {
        let kind = id_kind(kind)?;
        let rest: [u8; 23] = rest
            .try_into()
            .map_err(|_| errors::invalid(format!("an ObjectId has 23 bytes after its kind, not {}", rest.len())))?;
        Ok(ObjectId(quiver::ObjectId::with_kind(kind, rest)))
    }

    /// The ID of kind `kind` that names `name` (the core's
    /// `ObjectId::named`): any process derives it from the name, `tag` and
    /// the 8-byte `token`; `is_named` finds it again.
    #[staticmethod]
    #[pyo3(signature = (kind, name, tag = 0, token = [0u8; 8].as_slice()))]
    fn named(kind: &str, name: &str, tag: u32, token: &[u8]) -> PyResult<Self> {
        let kind = id_kind(kind)?;
        let token: [u8; 8] =
            token.try_into().map_err(|_| errors::invalid(format!("a token is 8 bytes, not {}", token.len())))?;
        Ok(ObjectId(quiver::ObjectId::named(kind, name, tag, token)))
    }

    /// Whether this ID is `named(kind, name, ...)`, whatever its tag and token.
    fn is_named(&self, kind: &str, name: &str) -> PyResult<bool> {
        Ok(self.0.is_named(id_kind(kind)?, name))
    }

    /// The ID's kind (`"sequential"`, `"random"`, `"schema"`,
    /// `"shared_model"`, `"kafka_status"`, `"plasma"`, `"plasma_settings"`
    /// or `"torch_steps"`), or `None` if its first byte is none of them.
    #[getter]
    fn kind(&self) -> Option<&'static str> {
        self.0.kind().map(kind_name)
    }

    /// Parses the hexadecimal form `str(id)` prints.
    #[staticmethod]
    fn parse(text: &str) -> PyResult<Self> {
        text.parse().map(ObjectId).map_err(|e| errors::invalid(format!("{e}")))
    }

    /// `(ns, partition, offset)` of a sequential ID, else `None`.
    fn sequential_parts(&self) -> Option<(u64, u32, u64)> {
        self.0.sequential_parts()
    }

    /// The 24 bytes.
    fn binary<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.0.as_bytes())
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.binary(py)
    }

    fn __hash__(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut h);
        h.finish()
    }

    fn __str__(&self) -> String {
        self.0.to_string()
    }

    fn __repr__(&self) -> String {
        format!("ObjectId('{}')", self.0)
    }
}

/// The ID kind Python calls `name`.
fn id_kind(name: &str) -> PyResult<quiver::IdKind> {
    quiver::IdKind::ALL.into_iter().find(|&k| kind_name(k) == name).ok_or_else(|| {
        let names: Vec<_> = quiver::IdKind::ALL.into_iter().map(kind_name).collect();
        errors::invalid(format!("no ID kind {name:?}: one of {}", names.join(", ")))
    })
}

/// The name Python gives an ID kind: the `IdKind` variant in snake case.
fn kind_name(kind: quiver::IdKind) -> &'static str {
    match kind {
        quiver::IdKind::Sequential => "sequential",
        quiver::IdKind::Random => "random",
        quiver::IdKind::Schema => "schema",
        quiver::IdKind::SharedModel => "shared_model",
        quiver::IdKind::KafkaStatus => "kafka_status",
        quiver::IdKind::Plasma => "plasma",
        quiver::IdKind::PlasmaSettings => "plasma_settings",
        quiver::IdKind::TorchSteps => "torch_steps",
    }
}

/// Fills `view` for `len` bytes at `ptr`, owned by `owner`.
///
/// # Safety
///
/// `view` is the buffer the interpreter passed to `__getbuffer__`, and the
/// bytes stay valid (and, if `writable`, writable by nobody else) for as
/// long as `owner` lives, which the filled view keeps alive.
unsafe fn fill(
    view: *mut pyo3::ffi::Py_buffer,
    flags: c_int,
    owner: Bound<'_, PyAny>,
    ptr: *const u8,
    len: usize,
    writable: bool,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("no buffer to fill"));
    }
    if !writable && flags & pyo3::ffi::PyBUF_WRITABLE != 0 {
        return Err(PyBufferError::new_err("a sealed object is read-only"));
    }
    let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("object larger than a buffer can be"))?;
    // SAFETY: `view` is non-null and the interpreter's; `ptr..ptr + len` is
    // valid as the caller promises; PyBuffer_FillInfo takes a new reference
    // to `owner` (stored in `view.obj`), which keeps the bytes alive until
    // the buffer is released.
    let rc = unsafe {
        pyo3::ffi::PyBuffer_FillInfo(view, owner.as_ptr(), ptr as *mut _, len, c_int::from(!writable), flags)
    };
    if rc == -1 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}

/// An object being created: a writable buffer into shared memory.
///
/// Fill it through the buffer protocol (`memoryview(builder)`,
/// `numpy.frombuffer(builder, ...)`), or with `write`, then `seal()`; or
/// use it as a context manager, which seals at the end of the block (and
/// aborts if the block raised). An object never sealed is aborted when its
/// builder is freed. Release every memoryview first: sealing (or aborting)
/// with one still open raises `BufferError`, since the view would keep
/// writing into an object that can no longer change.
#[pyclass(module = "quiver")]
pub(crate) struct ObjectBuilder {
    inner: Option<quiver::ObjectBuilder>,
    exports: usize,
    /// After `seal_keeping_buffers`: the object, referenced for as long as
    /// this builder (and so every buffer of it) lives.
    sealed: Option<quiver::ObjectView>,
}

impl ObjectBuilder {
    pub(crate) fn new(inner: quiver::ObjectBuilder) -> Self {
        ObjectBuilder { inner: Some(inner), exports: 0, sealed: None }
    }

    fn builder(&mut self) -> PyResult<&mut quiver::ObjectBuilder> {
        self.inner.as_mut().ok_or_else(|| errors::Error::new_err("the object was sealed or aborted already"))
    }

    fn finish(&mut self, what: &str) -> PyResult<quiver::ObjectBuilder> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "{} memoryview(s) of the object are still open: release them before {what}",
                self.exports
            )));
        }
        self.inner.take().ok_or_else(|| errors::Error::new_err("the object was sealed or aborted already"))
    }
}

#[pymethods]
impl ObjectBuilder {
    /// The object's ID.
    #[getter]
    fn id(&self) -> PyResult<ObjectId> {
        self.inner.as_ref().map(|b| ObjectId(b.id())).ok_or_else(|| errors::Error::new_err("finished"))
    }

    /// The size of the data in bytes.
    fn __len__(&mut self) -> PyResult<usize> {
        Ok(self.builder()?.data().len())
    }

    /// Copies `data` into the object at `offset`.
    #[pyo3(signature = (data, offset = 0))]
    fn write(&mut self, data: &[u8], offset: usize) -> PyResult<()> {
        let target = self.builder()?.data_mut();
        let end = offset.checked_add(data.len()).filter(|&end| end <= target.len()).ok_or_else(|| {
            errors::invalid(format!("{} bytes at {offset} do not fit in {} bytes", data.len(), target.len()))
        })?;
        target[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// The metadata given at creation.
    #[getter]
    fn metadata<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.builder()?.metadata()))
    }

    /// Makes the object immutable and visible to every process.
    fn seal(&mut self) -> PyResult<()> {
        self.finish("sealing")?.seal().map_err(errors::store)
    }

    /// Seals the object although buffers of it are still open (what
    /// Plasma's `seal` allows): the object stays referenced, so never
    /// evicted or freed, until this builder and every buffer of it are
    /// gone. Writing through such a buffer after the seal breaks the
    /// promise that sealed objects do not change: don't.
    fn seal_keeping_buffers(&mut self) -> PyResult<()> {
        let builder =
            self.inner.take().ok_or_else(|| errors::Error::new_err("the object was sealed or aborted already"))?;
        self.sealed = Some(builder.seal_and_view().map_err(errors::store)?);
        Ok(())
    }

    /// Gives the object up: its memory is freed and its ID is free again.
    fn abort(&mut self) -> PyResult<()> {
        self.finish("aborting")?.abort().map_err(errors::store)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Seals the object, or aborts it if the block raised.
    fn __exit__(
        &mut self,
        kind: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.inner.is_none() {
            return Ok(false);
        }
        match kind {
            None => self.seal()?,
            Some(_) => {
                // A view still open cannot be helped: the drop aborts.
                if self.exports == 0 {
                    self.abort()?;
                }
            }
        }
        Ok(false)
    }

    /// # Safety
    ///
    /// Called by the interpreter with a buffer to fill.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let (ptr, len) = {
            let mut this = slf.borrow_mut();
            let data = this.builder()?.data_mut();
            let (ptr, len) = (data.as_mut_ptr() as *const u8, data.len());
            this.exports += 1;
            (ptr, len)
        };
        // SAFETY: the bytes are the builder's, writable only through it; the
        // builder cannot seal, abort or free them while `exports` counts
        // this view (decremented in `__releasebuffer__`), and the view keeps
        // the builder alive.
        let filled = unsafe { fill(view, flags, slf.clone().into_any(), ptr, len, true) };
        if filled.is_err() {
            slf.borrow_mut().exports -= 1;
        }
        filled
    }

    /// # Safety
    ///
    /// Called by the interpreter when a buffer `__getbuffer__` filled is released.
    unsafe fn __releasebuffer__(&mut self, _view: *mut pyo3::ffi::Py_buffer) {
        self.exports = self.exports.saturating_sub(1);
    }

    fn __repr__(&self) -> String {
        match &self.inner {
            Some(b) => format!("<quiver.ObjectBuilder {} of {} bytes>", b.id(), b.data().len()),
            None => "<quiver.ObjectBuilder (finished)>".into(),
        }
    }
}

/// A read-only, zero-copy view of a sealed object.
///
/// Its bytes are the shared memory itself: `memoryview(view)`,
/// `pyarrow.py_buffer(view)` and `numpy.frombuffer(view)` copy nothing.
/// The object stays in memory (not evicted or freed, even if deleted) for
/// as long as the view or any buffer made from it lives; `release()` (or
/// the end of a `with` block) gives the reference up early once no buffer
/// of it is open.
#[pyclass(module = "quiver", frozen)]
pub(crate) struct ObjectView {
    inner: std::sync::Mutex<Option<std::sync::Arc<quiver::ObjectView>>>,
    id: quiver::ObjectId,
}

impl ObjectView {
    pub(crate) fn new(view: quiver::ObjectView) -> Self {
        let id = view.id();
        ObjectView { inner: std::sync::Mutex::new(Some(std::sync::Arc::new(view))), id }
    }

    fn view(&self) -> PyResult<std::sync::Arc<quiver::ObjectView>> {
        self.inner
            .lock()
            .map_err(|_| errors::Error::new_err("poisoned"))?
            .clone()
            .ok_or_else(|| errors::Error::new_err("the view was released"))
    }
}

#[pymethods]
impl ObjectView {
    /// The object's ID.
    #[getter]
    fn id(&self) -> ObjectId {
        ObjectId(self.id)
    }

    /// The object's metadata (a copy: it is small).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.view()?.metadata()))
    }

    /// The size of the data in bytes.
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.view()?.data().len())
    }

    /// The data as `bytes` (a copy).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, self.view()?.data()))
    }

    /// Gives up this handle's reference to the object. Buffers made from
    /// the view keep theirs until they are released.
    fn release(&self) -> PyResult<()> {
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
        self.release()?;
        Ok(false)
    }

    /// # Safety
    ///
    /// Called by the interpreter with a buffer to fill.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut pyo3::ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let object = slf.get().view()?;
        let (ptr, len) = (object.data().as_ptr(), object.data().len());
        // The buffer owns an `Arc` of the view, so `release()` on this
        // handle does not free the bytes under an open buffer.
        let owner = Bound::new(slf.py(), Holder { _view: object })?.into_any();
        // SAFETY: the bytes are a sealed object's, immutable and kept
        // referenced by the `Holder` the buffer owns.
        unsafe { fill(view, flags, owner, ptr, len, false) }
    }

    fn __repr__(&self) -> String {
        format!("<quiver.ObjectView {}>", self.id)
    }
}

/// What an exported buffer of an `ObjectView` owns: the view itself, whose
/// drop gives the object's reference up.
#[pyclass(module = "quiver", frozen)]
struct Holder {
    _view: std::sync::Arc<quiver::ObjectView>,
}
