//! `ShardManager` and `Task`: a group's stream shared out as shards among
//! member processes, with leases, retries and checkpoints.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::errors;
use crate::store::to_python;
use crate::stream::{lock, Stream};
use crate::wait;

/// A shard handed to a member: `partition` and the offsets `[start, end)`.
#[pyclass(module = "quiver", frozen, skip_from_py_object)]
#[derive(Clone)]
pub(crate) struct Task {
    /// Monotonic within the group.
    #[pyo3(get)]
    id: u64,
    /// The shard's partition.
    #[pyo3(get)]
    partition: u32,
    /// Its first offset.
    #[pyo3(get)]
    start: u64,
    /// One past its last offset.
    #[pyo3(get)]
    end: u64,
    /// How often it failed before.
    #[pyo3(get)]
    retries: u32,
    inner: quiver::Task,
}

impl Task {
    fn wrap(t: quiver::Task) -> Self {
        Task { id: t.id, partition: t.partition, start: t.start, end: t.end, retries: t.retries, inner: t }
    }
}

#[pymethods]
impl Task {
    fn __repr__(&self) -> String {
        format!("<quiver.Task {} partition {} [{}, {})>", self.id, self.partition, self.start, self.end)
    }
}

/// A member of a shard-managed consumer group.
///
/// `ShardManager.join(stream, group, shard_size=...)` joins (making the
/// group's shard state if new), `ShardManager.restore(stream, group, path)`
/// rebuilds it from a checkpoint. `next_task(timeout)` hands out a shard
/// (`None` if none came in time; `EndOfStream` once every shard is done),
/// `read_task(task)` gives its batches, `report(task, done=True)` finishes
/// it (or gives it back to be retried).
#[pyclass(module = "quiver")]
pub(crate) struct ShardManager {
    inner: Mutex<Option<quiver::ShardManager>>,
    fast: crate::fast::FastPath,
}

impl ShardManager {
    fn with<R>(&self, f: impl FnOnce(&mut quiver::ShardManager) -> PyResult<R>) -> PyResult<R> {
        let mut guard = lock(&self.inner)?;
        let manager: &mut quiver::ShardManager =
            guard.as_mut().ok_or_else(|| errors::Error::new_err("this member left its group"))?;
        f(manager)
    }
}

#[pymethods]
impl ShardManager {
    /// Joins shard-managed group `group` of `stream`. A shard is
    /// `shard_size` batches (or, with `shard_rows`, whole batches adding
    /// up to at least that many rows); `lease` seconds to report before the
    /// shard is handed to another member; `max_retries` failures before a
    /// shard becomes a dead letter.
    #[staticmethod]
    #[pyo3(signature = (stream, group, *, shard_size = 16, shard_rows = None, lease = 30.0, max_retries = 3, linger = None))]
    #[allow(clippy::too_many_arguments)]
    fn join(
        py: Python<'_>,
        stream: &Stream,
        group: &str,
        shard_size: u64,
        shard_rows: Option<u64>,
        lease: f64,
        max_retries: u32,
        linger: Option<f64>,
    ) -> PyResult<Self> {
        let size = match shard_rows {
            Some(rows) => quiver::ShardSize::Rows(rows),
            None => quiver::ShardSize::Batches(shard_size),
        };
        let mut config =
            quiver::ShardConfig::new().shard_size(size).lease(crate::wait::seconds(lease)?).max_retries(max_retries);
        if let Some(linger) = linger {
            config = config.linger(crate::wait::seconds(linger)?);
        }
        let manager = py.detach(|| quiver::ShardManager::join(&stream.inner, group, config)).map_err(errors::shard)?;
        let fast = crate::fast::FastPath::new(py, stream.inner.schema())?;
        Ok(ShardManager { inner: Mutex::new(Some(manager)), fast })
    }

    /// Rebuilds group `group` of `stream` from the checkpoint at `path` and joins it.
    #[staticmethod]
    fn restore(py: Python<'_>, stream: &Stream, group: &str, path: std::path::PathBuf) -> PyResult<Self> {
        let manager =
            py.detach(|| quiver::ShardManager::restore(&stream.inner, group, &path)).map_err(errors::shard)?;
        let fast = crate::fast::FastPath::new(py, stream.inner.schema())?;
        Ok(ShardManager { inner: Mutex::new(Some(manager)), fast })
    }

    /// The next shard, waiting up to `timeout` seconds (`None`: for ever);
    /// `None` if none came in time. Raises `EndOfStream` once the stream is
    /// closed and every shard is done. Ctrl-C interrupts the wait.
    ///
    /// With `share=(index, of)` the shard is the lowest-numbered waiting one
    /// of that fixed share (shard k of partition p is number
    /// `k * partitions + p`; the share holds those equal to `index` modulo
    /// `of`), so the same members see the same shards in the same order on
    /// every run; `EndOfStream` then comes once no shard of the share is
    /// left to take.
    #[pyo3(signature = (timeout = None, *, share = None))]
    fn next_task(&self, py: Python<'_>, timeout: Option<f64>, share: Option<(u32, u32)>) -> PyResult<Option<Task>> {
        let timeout = wait::timeout(timeout)?;
        let share = share.map(|(index, of)| quiver::Share { index, of });
        let next = self.with(|m| {
            wait::sliced(
                py,
                timeout,
                |slice| {
                    let next = match share {
                        Some(share) => m.next_task_in(slice, share)?,
                        None => m.next_task(slice)?,
                    };
                    Ok(match next {
                        quiver::Next::Task(t) => Some(Some(t)),
                        quiver::Next::End => Some(None),
                        quiver::Next::TimedOut => None,
                    })
                },
                errors::shard,
            )
        })?;
        match next {
            None => Ok(None),
            Some(Some(t)) => Ok(Some(Task::wrap(t))),
            Some(None) => Err(crate::stream::EndOfStream::new_err("the stream is closed and every shard is done")),
        }
    }

    /// Whether the stream is closed and no shard is left to take: each is
    /// done or held by a member (which may still give it back). A member
    /// that finds the group drained has nothing to wait for unless a holder
    /// fails; `EndOfStream` comes once the held shards are done too.
    fn drained(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(|m| py.detach(|| m.drained()).map_err(errors::shard))
    }

    /// The batches of `task` (pyarrow RecordBatches, zero-copy), waiting up
    /// to `timeout` seconds for any still being written; `None` if they
    /// were not all sealed in time. With `with_offsets=True`, a list of
    /// `(offset, batch)` (an offset whose batch was lost with a producer
    /// that died mid-append has none).
    #[pyo3(signature = (task, timeout = 10.0, *, with_offsets = false))]
    fn read_task<'py>(
        &self,
        py: Python<'py>,
        task: &Task,
        timeout: f64,
        with_offsets: bool,
    ) -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
        let timeout = crate::wait::seconds(timeout)?;
        let batches = self.with(|m| py.detach(|| m.read_task(&task.inner, timeout)).map_err(errors::shard))?;
        let Some(batches) = batches else {
            return Ok(None);
        };
        let items = batches.iter().map(|b| {
            let batch = self.fast.to_pyarrow(py, &b.batch)?;
            if with_offsets {
                (b.offset, batch).into_pyobject(py).map(Bound::into_any)
            } else {
                Ok(batch)
            }
        });
        Ok(Some(items.collect::<PyResult<_>>()?))
    }

    /// Finishes `task`: done (never handed out again), or not (`done=False`:
    /// handed out again, or a dead letter after too many failures).
    #[pyo3(signature = (task, done = true))]
    fn report(&self, py: Python<'_>, task: &Task, done: bool) -> PyResult<()> {
        let outcome = if done { quiver::Outcome::Done } else { quiver::Outcome::Failed };
        self.with(|m| py.detach(|| m.report(task.inner, outcome)).map_err(errors::shard))
    }

    /// Reports the part of `task` before offset `upto` done and returns the
    /// rest, `[upto, end)`, as a new task this member holds (`None` when
    /// `upto` is the task's end: it is reported whole).
    fn report_until(&self, py: Python<'_>, task: &Task, upto: u64) -> PyResult<Option<Task>> {
        let rest = self.with(|m| py.detach(|| m.report_until(task.inner, upto)).map_err(errors::shard))?;
        Ok(rest.map(Task::wrap))
    }

    /// Gives `task` back unprocessed, without counting a failure.
    fn release(&self, py: Python<'_>, task: &Task) -> PyResult<()> {
        self.with(|m| py.detach(|| m.release(task.inner)).map_err(errors::shard))
    }

    /// Renews the lease of `task` (for work that takes longer than a lease).
    fn extend_lease(&self, py: Python<'_>, task: &Task) -> PyResult<()> {
        self.with(|m| py.detach(|| m.extend_lease(task.inner)).map_err(errors::shard))
    }

    /// Writes the group's state to `path` (atomically): a crash then loses
    /// nothing that a restore from it cannot redo.
    fn checkpoint(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        self.with(|m| py.detach(|| m.checkpoint(&path)).map(|_| ()).map_err(errors::shard))
    }

    /// The group's state as a dict: tasks, dead letters, members, offsets.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.with(|m| py.detach(|| m.stats()).map_err(errors::shard))?;
        to_python(py, &stats)
    }

    /// Leaves the group: this member's tasks go back to the queue at once.
    fn leave(&self, py: Python<'_>) -> PyResult<()> {
        let manager = lock(&self.inner)?.take();
        match manager {
            Some(m) => py.detach(|| m.leave()).map_err(errors::shard),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _kind: Option<Bound<'_, PyAny>>,
        _value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.leave(py)?;
        Ok(false)
    }
}
