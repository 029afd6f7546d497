//! The exception hierarchy: `quiver.Error`, and a subclass for each failure
//! a user acts on differently. Every library error maps to one of them,
//! with the library's message (and its causes) as the text.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use quiver::arrow::{BatchError, ImportError};
use quiver::shard::{CheckpointError, ShardError};
use quiver::store::StoreError;
use quiver::stream::StreamError;

create_exception!(quiver, Error, PyException, "Every error quiver raises.");
create_exception!(quiver, InvalidArgument, Error, "An argument or configuration that cannot work (also a ValueError).");
create_exception!(quiver, NotFound, Error, "No store, stream, group or object of that name or ID.");
create_exception!(quiver, AlreadyExists, Error, "A store, stream or object of that name or ID exists already.");
create_exception!(
    quiver,
    NotAStore,
    Error,
    "The file is not a quiver store this build can open (or is another user's)."
);
create_exception!(quiver, StoreFull, Error, "No room in the store (after waiting, where the call waits).");
create_exception!(quiver, StreamClosed, Error, "The stream was closed: nothing more can be appended.");
create_exception!(quiver, CorruptBatch, Error, "A batch that cannot be decoded; `Consumer.skip` passes it.");
create_exception!(quiver, Corrupted, Error, "The store file's bytes violate the format.");
create_exception!(quiver, NotSealed, Error, "The object is still being created (not sealed).");
create_exception!(quiver, LockTimeout, Error, "Another process held the store's lock too long (stopped?).");
create_exception!(quiver, StoreGone, Error, "The store file was removed or cut short while in use.");
create_exception!(quiver, TaskNotHeld, Error, "The shard manager's task is no longer held by this member.");
create_exception!(quiver, CheckpointInvalid, Error, "A checkpoint file that cannot be read.");

/// `InvalidArgument` is also a `ValueError`, as Python code expects.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    let invalid = py.get_type::<InvalidArgument>();
    // Add ValueError to its bases: `except ValueError` catches it.
    let bases = pyo3::types::PyTuple::new(py, [py.get_type::<Error>(), py.get_type::<PyValueError>()])?;
    invalid.setattr("__bases__", bases)?;
    m.add("InvalidArgument", invalid)?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("NotAStore", py.get_type::<NotAStore>())?;
    m.add("StoreFull", py.get_type::<StoreFull>())?;
    m.add("StreamClosed", py.get_type::<StreamClosed>())?;
    m.add("CorruptBatch", py.get_type::<CorruptBatch>())?;
    m.add("Corrupted", py.get_type::<Corrupted>())?;
    m.add("NotSealed", py.get_type::<NotSealed>())?;
    m.add("LockTimeout", py.get_type::<LockTimeout>())?;
    m.add("StoreGone", py.get_type::<StoreGone>())?;
    m.add("TaskNotHeld", py.get_type::<TaskNotHeld>())?;
    m.add("CheckpointInvalid", py.get_type::<CheckpointInvalid>())?;
    Ok(())
}

/// The message with its chain of causes, as `anyhow`'s `{:#}` prints it.
fn text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

pub(crate) fn store(e: StoreError) -> PyErr {
    let msg = text(&e);
    match e {
        StoreError::InvalidName(_) | StoreError::InvalidConfig(_) | StoreError::InvalidArgument(_) => {
            InvalidArgument::new_err(msg)
        }
        StoreError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => NotFound::new_err(msg),
        StoreError::NotFound(_) => NotFound::new_err(msg),
        StoreError::StoreExists(_) | StoreError::AlreadyExists(_) => AlreadyExists::new_err(msg),
        StoreError::NotAStore(_)
        | StoreError::OtherOwner { .. }
        | StoreError::Truncated { .. }
        | StoreError::VersionMismatch { .. }
        | StoreError::NotReady(_) => NotAStore::new_err(msg),
        StoreError::StoreFull { .. } | StoreError::TooLarge { .. } | StoreError::NoSpace { .. } => {
            StoreFull::new_err(msg)
        }
        StoreError::Corrupted(_) => Corrupted::new_err(msg),
        StoreError::NotSealed(_) => NotSealed::new_err(msg),
        StoreError::LockTimeout { .. } => LockTimeout::new_err(msg),
        StoreError::Removed(_) | StoreError::Shrunk { .. } => StoreGone::new_err(msg),
        _ => Error::new_err(msg),
    }
}

pub(crate) fn batch(e: BatchError) -> PyErr {
    match e {
        BatchError::Store(e) => store(e),
        BatchError::SchemaMismatch { .. } | BatchError::Unsupported(_) => InvalidArgument::new_err(text(&e)),
        e => Error::new_err(text(&e)),
    }
}

pub(crate) fn stream(e: StreamError) -> PyErr {
    let msg = text(&e);
    match e {
        StreamError::Store(e) => store(e),
        StreamError::Batch(e) => batch(e),
        StreamError::CorruptBatch { .. } => CorruptBatch::new_err(msg),
        StreamError::NotFound(_) | StreamError::NoSuchGroup { .. } | StreamError::Removed(_) => NotFound::new_err(msg),
        StreamError::Exists(_) => AlreadyExists::new_err(msg),
        StreamError::ConfigMismatch { .. }
        | StreamError::InvalidConfig(_)
        | StreamError::InvalidArgument(_)
        | StreamError::NoSuchPartition { .. }
        | StreamError::OffsetOutOfRange { .. } => InvalidArgument::new_err(msg),
        StreamError::Closed(_) => StreamClosed::new_err(msg),
        StreamError::Full { .. } => StoreFull::new_err(msg),
        _ => Error::new_err(msg),
    }
}

pub(crate) fn shard(e: ShardError) -> PyErr {
    let msg = text(&e);
    match e {
        ShardError::Stream(e) => stream(e),
        ShardError::Checkpoint(e) => checkpoint(e),
        ShardError::TaskNotHeld(_) => TaskNotHeld::new_err(msg),
        ShardError::InvalidConfig(_) | ShardError::InvalidArgument(_) => InvalidArgument::new_err(msg),
        _ => Error::new_err(msg),
    }
}

pub(crate) fn checkpoint(e: CheckpointError) -> PyErr {
    CheckpointInvalid::new_err(text(&e))
}

pub(crate) fn import(e: ImportError) -> PyErr {
    match e {
        ImportError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            NotFound::new_err(text(&e))
        }
        e => InvalidArgument::new_err(text(&e)),
    }
}

pub(crate) fn train(e: quiver_train::TrainError) -> PyErr {
    InvalidArgument::new_err(text(&e))
}

pub(crate) fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(msg.into())
}
