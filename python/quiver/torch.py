"""quiver as PyTorch's data plane: a stream's batches as ``torch.Tensor``s
whose memory is the store object itself, read by the training process as a
member of a shard-managed group.

- :func:`to_tensors` turns one pyarrow ``RecordBatch`` into a dict (or a
  tuple) of tensors. A fixed-width numeric column without nulls becomes a
  tensor over the column's own bytes: no copy, through DLPack (pyarrow 15
  and later) or NumPy. The tensor keeps the batch's memory, and with it the
  store object, alive for as long as it lives. What is copied, and why:
  a column with nulls when ``fill_null`` is given (a tensor has no nulls;
  without it such a column is refused), a ``bool`` column (Arrow packs
  booleans into bits, torch keeps a byte each), a dtype conversion the
  caller asks for, and the columns stacked into one 2-D tensor. Strings,
  lists and other types that are not numbers are refused.
- :class:`StreamDataset` is a ``torch.utils.data.IterableDataset`` for code
  that keeps its ``DataLoader``: each worker process (or the main process,
  with ``num_workers=0``) joins the group as a member of its own and reads
  the shards it leases. torch then copies each tensor a worker yields into
  shared memory of its own to hand it to the main process.
- :class:`Loader` is the fast path: the training process joins a
  shard-managed group of the stream and reads the shards it leases, zero
  copy, while preprocessing runs in the producer processes that append to
  the stream (Python, ``quiver produce``, a Kafka source: any number, any
  language). It replaces the ``DataLoader``'s worker pool rather than
  sitting behind it, so no batch is pickled or copied between processes.
  A shard is reported done only when the training loop asks for the batch
  after its last one, so a process killed mid-shard loses nothing: another
  member (or this one, restarted) reads the shard again.

torch is an optional dependency: ``pip install quiver[torch]``.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

try:
    import torch
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("quiver.torch needs PyTorch: pip install quiver[torch] (or pip install torch)") from e

import pyarrow as pa

from . import _quiver

__all__ = ["to_tensors", "Loader", "StreamDataset"]

# Arrow's fixed-width numeric types and the torch dtype of the same bytes.
_DTYPES = {
    pa.int8(): torch.int8,
    pa.int16(): torch.int16,
    pa.int32(): torch.int32,
    pa.int64(): torch.int64,
    pa.uint8(): torch.uint8,
    pa.float16(): torch.float16,
    pa.float32(): torch.float32,
    pa.float64(): torch.float64,
}
# Unsigned types wider than a byte exist in torch from 2.3 on, with few
# operations; they are read as they are where torch has them.
for _arrow, _name in ((pa.uint16(), "uint16"), (pa.uint32(), "uint32"), (pa.uint64(), "uint64")):
    if hasattr(torch, _name):
        _DTYPES[_arrow] = getattr(torch, _name)

Tensors = Union[Dict[str, "torch.Tensor"], Tuple["torch.Tensor", ...]]


def _column_tensor(name: str, column: pa.Array, fill_null: Optional[float]) -> torch.Tensor:
    """The tensor of one column: over its own bytes when it can be."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    if kind != pa.bool_() and kind not in _DTYPES:
        raise TypeError(
            f"column {name!r} is {kind}, not a fixed-width number: a tensor holds numbers "
            f"({', '.join(str(t) for t in _DTYPES)} or bool)"
        )
    if column.null_count:
        if fill_null is None:
            raise ValueError(
                f"column {name!r} has {column.null_count} nulls: a tensor cannot hold them "
                "(pass fill_null=VALUE to copy the column with the nulls filled)"
            )
        value = bool(fill_null) if kind == pa.bool_() else fill_null
        column = column.fill_null(pa.scalar(value, kind))
    if kind == pa.bool_():
        # Arrow packs booleans into bits, torch keeps a byte each: a copy.
        return torch.tensor(column.to_pylist(), dtype=torch.bool)
    return _zero_copy(column)


_DLPACK = hasattr(pa.Array, "__dlpack__")  # pyarrow 15 and later


def _zero_copy(column: pa.Array) -> torch.Tensor:
    """A tensor over `column`'s values buffer (no nulls, a numeric type)."""
    if _DLPACK:
        return torch.from_dlpack(column)
    # pyarrow before 15: through a read-only NumPy view, which torch warns
    # about; the tensor must not be written to either way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(column.to_numpy(zero_copy_only=True))


def to_tensors(
    batch: pa.RecordBatch,
    columns: Optional[Sequence[str]] = None,
    *,
    dtypes: Optional[Mapping[str, "torch.dtype"]] = None,
    stack: Optional[Mapping[str, Sequence[str]]] = None,
    fill_null: Optional[float] = None,
    as_tuple: bool = False,
) -> Tensors:
    """The columns of `batch` as tensors, by name (or a tuple, in order).

    - `columns`: the columns to take (all of them by default), in order.
    - `dtypes`: a dtype per column name; a conversion is a copy.
    - `stack`: new names for 2-D tensors of several columns each
      (``{"features": ["a", "b", "c"]}`` gives one ``(rows, 3)`` tensor):
      one copy. Stacked columns are taken out of the result.
    - `fill_null`: the value nulls become (a copy of those columns); without
      it a column with nulls is refused.

    A tensor made without a copy shares the store object's memory and keeps
    it alive; write to it and you write into the store, which other
    processes read: treat it as read-only.
    """
    groups = dict(stack or {})
    stacked = {c for cols in groups.values() for c in cols}
    all_names = batch.schema.names
    arrays = batch.columns  # one call: cheaper than a lookup per column
    if columns is None and not groups:
        chosen = list(zip(all_names, arrays))
    else:
        names = list(columns) if columns is not None else all_names
        index = {name: i for i, name in enumerate(all_names)}
        chosen = []
        # Each column once, in the order asked, then the stacked ones not asked.
        for name in dict.fromkeys(names + [c for cols in groups.values() for c in cols]):
            if name not in index:
                raise KeyError(f"the batch has no column {name!r} (it has {all_names})")
            chosen.append((name, arrays[index[name]]))
    tensors: Dict[str, torch.Tensor] = {}
    for name, column in chosen:
        tensor = _column_tensor(name, column, fill_null)
        if dtypes and name in dtypes and tensor.dtype != dtypes[name]:
            tensor = tensor.to(dtypes[name])  # a copy
        tensors[name] = tensor
    result = {name: t for name, t in tensors.items() if name not in stacked}
    for new, cols in groups.items():
        parts = [tensors[c] for c in cols]
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in parts))
        result[new] = torch.stack([p.to(dtype) for p in parts], dim=1)  # one copy
    return tuple(result.values()) if as_tuple else result


class _Pending:
    """Shards whose batches were all handed to the loop, waiting for the
    loop to ask for a number of items more before they are reported done;
    their leases renewed meanwhile."""

    def __init__(self, manager: _quiver.ShardManager, lease: float) -> None:
        self._manager = manager
        self._lease = lease
        # [task, items still to be asked for, when its lease was renewed]
        self._entries: list = []

    def __bool__(self) -> bool:
        return bool(self._entries)

    def add(self, task: _quiver.Task, wait: int) -> None:
        self._entries.append([task, wait, time.monotonic()])
        self._settle()

    def resumed(self) -> None:
        """The loop asked for one more item."""
        for entry in self._entries:
            entry[1] -= 1
        self._settle()

    def _settle(self) -> None:
        now = time.monotonic()
        keep = []
        for entry in self._entries:
            task, wait, renewed = entry
            try:
                if wait <= 0:
                    self._manager.report(task)
                    continue
                if now - renewed > self._lease / 3:
                    self._manager.extend_lease(task)
                    entry[2] = now
            except _quiver.TaskNotHeld:
                # Its lease ran out: another member reads it again.
                continue
            keep.append(entry)
        self._entries = keep

    def report_all(self) -> None:
        for entry in self._entries:
            entry[1] = 0
        self._settle()

    def take(self) -> list:
        """The tasks still waiting, given up by this object."""
        tasks = [entry[0] for entry in self._entries]
        self._entries = []
        return tasks


class Loader:
    """Batches of `stream` as tensors, for the training process, which is a
    member of the shard-managed group `group` (see the module docs).

    Iterate it: each item is what :func:`to_tensors` makes of a batch (the
    keyword arguments it does not take go to it). Iteration ends once the
    stream is closed and every shard of the group is done. `timeout` bounds
    each wait for a new shard (``None``: wait for ever; a timeout raises
    ``TimeoutError``); Ctrl-C interrupts a wait.

    A shard is reported done when the loop asks for the batch after its
    last one; leaving the loop (``break``, an exception) gives the shard in
    hand back unfinished, so other members read it again. With
    `report_lag=K` a shard is reported only once the loop has asked for K
    items past its last one (a ``DataLoader`` worker's items wait in the
    ``DataLoader``'s queue before the loop has them: :class:`StreamDataset`
    sets it from the prefetch factor); shards whose report waits are
    reported as soon as no new shard comes at once. The lease is
    renewed while a shard's batches are in use; a loop that stays away
    from the loader longer than a lease (a long step, a paused
    ``DataLoader`` worker) loses the shard to another member, which reads
    it again whole: rows read twice, never lost. :meth:`close` (or
    ``with``) leaves the group.
    """

    def __init__(
        self,
        stream: _quiver.Stream,
        group: str,
        columns: Optional[Sequence[str]] = None,
        *,
        shard_size: int = 16,
        lease: float = 30.0,
        timeout: Optional[float] = None,
        dtypes: Optional[Mapping[str, "torch.dtype"]] = None,
        stack: Optional[Mapping[str, Sequence[str]]] = None,
        fill_null: Optional[float] = None,
        as_tuple: bool = False,
        report_lag: int = 1,
    ) -> None:
        if report_lag < 1:
            raise ValueError(f"report_lag is {report_lag}: at least 1 (a shard is reported when the loop asks past it)")
        self._manager = _quiver.ShardManager.join(stream, group, shard_size=shard_size, lease=lease)
        self._lease = lease
        self._report_lag = report_lag
        self._timeout = timeout
        self._convert: Dict[str, Any] = dict(
            columns=columns, dtypes=dtypes, stack=stack, fill_null=fill_null, as_tuple=as_tuple
        )

    @property
    def manager(self) -> _quiver.ShardManager:
        """The group membership behind the loader (for its stats, say)."""
        return self._manager

    def _next_task(self, pending: "_Pending") -> Optional[_quiver.Task]:
        """The next shard, or None at the end of the stream. Shards whose
        report waits (`pending`) are reported once no new shard comes at
        once: the group's end waits for them, and a loop that waits for
        data has taken what it was given."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if pending:
                left = min(left, 0.05) if left is not None else 0.05
            try:
                task = self._manager.next_task(timeout=left)
            except _quiver.EndOfStream:
                return None
            if task is not None:
                return task
            if pending:
                pending.report_all()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no shard within {self._timeout} s")

    def __iter__(self) -> Iterator[Tensors]:
        pending = _Pending(self._manager, self._lease)
        task = None
        try:
            while True:
                task = self._next_task(pending)
                if task is None:
                    pending.report_all()
                    return
                batches = self._manager.read_task(task, timeout=max(self._lease / 2, 1.0))
                if batches is None:
                    # Its batches were not all sealed in time: handed out again.
                    self._manager.report(task, done=False)
                    task = None
                    continue
                renewed = time.monotonic()
                for batch in batches:
                    if time.monotonic() - renewed > self._lease / 3:
                        try:
                            self._manager.extend_lease(task)
                        except _quiver.TaskNotHeld:
                            # The lease ran out while the loop was away (a
                            # paused DataLoader worker, a long step): the
                            # shard went to another member, which reads it
                            # whole. Read on elsewhere, not twice here.
                            task = None
                            break
                        renewed = time.monotonic()
                    yield to_tensors(batch, **self._convert)
                    pending.resumed()
                if task is not None:
                    pending.add(task, self._report_lag - 1)
                    task = None
        except BaseException:
            # The loop stopped (break, an error, a signal): the shard in hand
            # and those whose report waits go back unfinished, to be read
            # again. A member that has left its group gave them back already.
            for held in ([task] if task is not None else []) + pending.take():
                try:
                    self._manager.release(held)
                except _quiver.Error:
                    pass
            raise

    def close(self) -> None:
        """Leaves the group: shards in hand go back at once."""
        self._manager.leave()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamDataset(torch.utils.data.IterableDataset):
    """The batches of stream `stream` of store `store` (names: the dataset
    is pickled into ``DataLoader`` workers, which open the store
    themselves), for a ``torch.utils.data.DataLoader``.

    Each process that iterates it joins the shard-managed group `group` as
    a member of its own and reads the shards it leases, as a
    :class:`Loader` does (the keyword arguments are the Loader's): with
    ``num_workers=N`` the N workers share the stream dynamically, no worker
    idles while another has shards, and none reads a row twice unless one
    died. Each item is already a batch: give the ``DataLoader``
    ``batch_size=None``, and the same `prefetch_factor` (2 by default): a
    shard is reported done only once its items have left the
    ``DataLoader``'s queue, so a training loop that stops (a worker killed,
    an error) loses none of what was queued.

    torch hands a worker's tensors to the main process by copying them into
    shared memory of its own: the zero-copy path is :class:`Loader` in the
    training process (see the module docs).
    """

    def __init__(
        self,
        store: str,
        stream: str,
        group: str,
        columns: Optional[Sequence[str]] = None,
        *,
        prefetch_factor: int = 2,
        **loader: Any,
    ):
        super().__init__()
        self._names = (store, stream, group)
        self._columns = columns
        # A worker's item reaches the loop only after the DataLoader's queue
        # (`prefetch_factor` items a worker) and the loop's own step: its
        # shard is reported that many items later.
        loader.setdefault("report_lag", prefetch_factor + 2)
        self._loader = loader

    def __iter__(self) -> Iterator[Tensors]:
        store_name, stream_name, group = self._names
        with _quiver.Store.open(store_name) as store:
            stream = _quiver.Stream.open(store, stream_name)
            with Loader(stream, group, self._columns, **self._loader) as loader:
                yield from loader
