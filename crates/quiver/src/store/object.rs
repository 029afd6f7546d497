//! The two handles on an object's bytes: [`ObjectBuilder`], which its
//! creator fills and seals, and [`ObjectView`], a read-only, zero-copy view
//! of a sealed object that holds a reference until it is dropped.
//!
//! Preconditions live in the types: only a builder can write, and sealing
//! consumes it, so a sealed object cannot be written through quiver's API.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::client::ClientState;
use super::{ObjectId, Result, StoreError};
use crate::shm::Span;

/// An object being created. Write its data with [`data_mut`], then
/// [`seal`] it; dropping it unsealed aborts it and frees its memory.
///
/// [`data_mut`]: ObjectBuilder::data_mut
/// [`seal`]: ObjectBuilder::seal
pub struct ObjectBuilder {
    shared: Arc<ClientState>,
    entry: u32,
    id: ObjectId,
    /// The data and the metadata, checked against the mapping once, here.
    data: Span,
    meta: Span,
    finished: bool,
}

impl ObjectBuilder {
    /// The builder of the object this client just placed at entry `entry`.
    /// If its bytes do not lie in the mapping (the allocator's ranges are
    /// checked against the arena, so only a bug gets here), the object is
    /// aborted and the error returned.
    pub(crate) fn new(
        shared: Arc<ClientState>,
        entry: u32,
        id: ObjectId,
        data_offset: u64,
        data_size: u64,
        meta_size: u64,
    ) -> Result<Self> {
        let spans = shared.region().span(data_offset, data_size).and_then(|data| {
            let meta = shared.region().span(data_offset + data_size, meta_size)?;
            Ok((data, meta))
        });
        match spans {
            Ok((data, meta)) => Ok(ObjectBuilder { shared, entry, id, data, meta, finished: false }),
            Err(e) => {
                let _ = shared.abort(entry, id);
                Err(e.into())
            }
        }
    }

    /// The object's ID.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's data, to fill. It starts 64-byte aligned.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: the span is of this region (made in `new`); the object is
        // unsealed and this client's, so no other process touches its bytes,
        // and `&mut self` makes this the only borrow of them in this one.
        unsafe { self.shared.region().write_bytes(self.data) }
    }

    /// The object's data as written so far.
    pub fn data(&self) -> &[u8] {
        // SAFETY: as in `data_mut`; `&self` rules out a mutable borrow.
        unsafe { self.shared.region().read_bytes(self.data) }
    }

    /// The metadata, to change before sealing (for example to stamp the time
    /// of the seal itself).
    pub fn metadata_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data_mut`, for the metadata's span.
        unsafe { self.shared.region().write_bytes(self.meta) }
    }

    /// The metadata given to `create`.
    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as in `data`, for the metadata's span.
        unsafe { self.shared.region().read_bytes(self.meta) }
    }

    /// Makes the object immutable and visible, and wakes every process
    /// waiting for it in `get`.
    pub fn seal(self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        super::locked::transaction(&shared, |l| l.seal(self))
    }

    /// Seals the object and, in the same critical section, takes a view of
    /// it: the object is referenced from the moment it is sealed, so it is
    /// never evicted or freed while the caller still holds pointers into
    /// its bytes (a Plasma-style client whose buffer outlives the seal).
    pub fn seal_and_view(self) -> Result<ObjectView> {
        let shared = Arc::clone(&self.shared);
        let id = self.id;
        super::locked::transaction(&shared, |l| {
            l.seal(self)?;
            l.view(id)?.ok_or(StoreError::NotFound(id))
        })
    }

    /// Seals an object of shared cells (`Store::create_cells`) and takes its
    /// handle in the same critical section.
    pub(crate) fn seal_and_cells(self) -> Result<Cells> {
        let shared = Arc::clone(&self.shared);
        let id = self.id;
        let view = super::locked::transaction(&shared, |l| {
            l.seal(self)?;
            l.cells_view(id)?.ok_or(StoreError::NotFound(id))
        })?;
        Cells::new(view)
    }

    /// Gives the object up and frees its memory (what dropping does, with
    /// the error reported).
    pub fn abort(self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        super::locked::transaction(&shared, |l| l.abort(self))
    }

    /// Hands the object over to a transaction of the same client, which
    /// seals or aborts it: the builder's drop does nothing from here on.
    pub(super) fn disarm(mut self, client: &Arc<ClientState>) -> Result<(u32, ObjectId)> {
        if !Arc::ptr_eq(&self.shared, client) {
            return Err(StoreError::InvalidArgument(format!(
                "object {} was created through another store handle",
                self.id
            )));
        }
        self.finished = true;
        Ok((self.entry, self.id))
    }
}

impl Drop for ObjectBuilder {
    fn drop(&mut self) {
        if !self.finished {
            // A failure here means the store was repaired under us; the
            // repair already freed or kept the object consistently.
            let _ = self.shared.abort(self.entry, self.id);
        }
    }
}

impl std::fmt::Debug for ObjectBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBuilder").field("id", &self.id).field("data_size", &self.data.len()).finish()
    }
}

/// A read-only view of a sealed object, pointing into the shared mapping.
/// The object stays in memory (it is neither evicted nor freed, even if
/// deleted) until the last view of it is dropped. Views are `Send + Sync`.
pub struct ObjectView {
    shared: Arc<ClientState>,
    entry: u32,
    id: ObjectId,
    /// The data and the metadata, checked against the mapping once, here.
    data: Span,
    meta: Span,
}

impl ObjectView {
    /// A view of the sealed object at entry `entry`, whose reference this
    /// client has just taken under the lock. If its bytes do not lie in the
    /// mapping (they were checked against the arena, so only a bug gets
    /// here), the error is returned and the reference stays recorded until
    /// this client closes: the safe direction, never freed early.
    pub(crate) fn new(
        shared: Arc<ClientState>,
        entry: u32,
        id: ObjectId,
        data_offset: u64,
        data_size: u64,
        meta_size: u64,
    ) -> Result<Self> {
        let data = shared.region().span(data_offset, data_size)?;
        let meta = shared.region().span(data_offset + data_size, meta_size)?;
        Ok(ObjectView { shared, entry, id, data, meta })
    }

    /// The object's ID.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's data, in place in shared memory (64-byte aligned).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the span is of this region (made in `new`); the object is
        // sealed and this view holds a reference to it, so no process writes
        // its bytes (nor frees or reuses them) while the view, and so the
        // slice, lives.
        unsafe { self.shared.region().read_bytes(self.data) }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as in `data`, for the metadata's span.
        unsafe { self.shared.region().read_bytes(self.meta) }
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.data.len() as usize
    }

    /// Whether the object has no data.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }
}

impl Clone for ObjectView {
    fn clone(&self) -> Self {
        self.shared.add_local_ref(self.entry);
        ObjectView { shared: self.shared.clone(), entry: self.entry, id: self.id, data: self.data, meta: self.meta }
    }
}

impl Drop for ObjectView {
    fn drop(&mut self) {
        // If the lock cannot be taken the reference stays recorded until this
        // client closes or dies, which is the safe direction (never freed early).
        let _ = self.shared.release(self.entry);
    }
}

impl AsRef<[u8]> for ObjectView {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl std::fmt::Debug for ObjectView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectView").field("id", &self.id).field("len", &self.data.len()).finish()
    }
}

/// A handle to an object of shared cells ([`super::Store::create_cells`]):
/// 64-bit atomics that every process holding a handle reads and changes in
/// place. The object stays allocated while a handle exists (it holds a
/// reference, like a view). Its bytes are never handed out as a slice: the
/// cells change under any reader, so only atomic access is sound.
pub struct Cells {
    view: ObjectView,
    count: u64,
}

impl Cells {
    /// Checks the view's data is whole, aligned cells of its region.
    pub(crate) fn new(view: ObjectView) -> Result<Cells> {
        let count = view.data.len() / 8;
        view.shared.region().slice::<AtomicU64>(view.data.offset(), count)?;
        Ok(Cells { view, count })
    }

    /// The object's ID.
    pub fn id(&self) -> ObjectId {
        self.view.id
    }

    /// The cells.
    pub fn cells(&self) -> &[AtomicU64] {
        // Checked in `new`: the same span of the same region cannot fail.
        self.view.shared.region().slice::<AtomicU64>(self.view.data.offset(), self.count).unwrap_or_default()
    }

    /// The metadata given at creation (never changed).
    pub fn metadata(&self) -> &[u8] {
        self.view.metadata()
    }
}

impl std::fmt::Debug for Cells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cells").field("id", &self.view.id).field("count", &self.count).finish()
    }
}
