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

import collections
import functools
import hashlib
import json
import os
import pathlib
import tempfile
import time
import warnings
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

try:
    import torch
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError("quiver.torch needs PyTorch: pip install quiver[torch] (or pip install torch)") from e

import pyarrow as pa

from . import _quiver

__all__ = ["to_tensors", "Loader", "StreamDataset", "Checkpoint", "merge_states"]

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


# A linger no producer's pause reaches: with `deterministic=True` a partial
# shard is cut only when the stream is closed, so every boundary falls at a
# multiple of the shard size on every run.
_FOREVER = 10 * 365 * 86400.0

STATE_FORMAT = "quiver.torch.Loader/1"


def _ranks(ranks: Any) -> Tuple[int, int, Optional[bytes]]:
    """`(rank, ranks, token)` of the loader's `ranks` argument."""
    if ranks is None:
        return 0, 1, None
    if isinstance(ranks, str):
        if ranks != "auto":
            raise ValueError(f"ranks={ranks!r}: 'auto', None or (rank, ranks, key)")
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return 0, 1, None
        # One collective when the loader is made, none per step: rank 0's
        # random token names this run's step cells.
        token = _broadcast_bytes(os.urandom(8))
        return dist.get_rank(), dist.get_world_size(), token
    try:
        rank, count, key = ranks
    except (TypeError, ValueError):
        raise ValueError(f"ranks={ranks!r}: 'auto', None or (rank, ranks, key)") from None
    if not (isinstance(rank, int) and isinstance(count, int) and 0 <= rank < count):
        raise ValueError(f"ranks={ranks!r}: rank {rank!r} is not one of {count!r} ranks")
    return rank, count, hashlib.sha256(str(key).encode()).digest()[:8]


def _device() -> "torch.device":
    """Where the process group's collectives take tensors (NCCL: the GPU)."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast_bytes(data: bytes) -> bytes:
    """Rank 0's `data` (as long as every rank's) on every rank, through a
    tensor (the object collectives need NumPy, which torch does not)."""
    tensor = torch.tensor(list(data), dtype=torch.uint8, device=_device())
    torch.distributed.broadcast(tensor, src=0)
    return bytes(tensor.tolist())


def _all_gather_bytes(data: bytes) -> list:
    """Every rank's `data`, in rank order."""
    dist = torch.distributed
    count, device = dist.get_world_size(), _device()
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(count)]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=device))
    longest = max(int(size.item()) for size in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    parts = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(count)]
    dist.all_gather(parts, padded)
    return [bytes(part[: int(size.item())].tolist()) for part, size in zip(parts, sizes)]


class _Steps:
    """The agreement of a loader's ranks on their steps, held in shared
    cells of the store (no collective per step).

    Each rank has a word per epoch parity: the epoch (16 bits), whether it
    has ended, and how many steps it can take (what it has handed out plus
    the batches in hand). At step i a rank goes on once every rank's word
    for the epoch says it can take step i; if one has ended at i, every
    rank ends at i. A rank publishes only when it reaches the step the
    ranks last agreed on, so between shards a step costs no shared access.
    Ranks are never more than an epoch apart (each waits for all at every
    epoch's last step), so two words per rank suffice."""

    ENDED = 1 << 47
    COUNT = ENDED - 1

    def __init__(self, stream: _quiver.Stream, group: str, rank: int, ranks: int, token: bytes, wait: float) -> None:
        self.rank, self.ranks = rank, ranks
        store = stream.store
        name = f"{stream.name}/{group}"
        cells_id = _quiver.ObjectId.named("torch_steps", name, ranks, token)
        # Cell 0 unused; then two words per rank; then each rank's owner.
        count = 1 + 3 * ranks
        if rank == 0:
            # Cells of earlier runs (a rank killed before it closed) go.
            for obj in store.list():
                stale = obj["id"]
                if stale != cells_id and stale.is_named("torch_steps", name):
                    try:
                        store.delete(stale)
                    except _quiver.Error:
                        pass
            try:
                self._cells = store.create_cells(cells_id, count, f"{name} {ranks} ranks".encode())
            except _quiver.AlreadyExists:
                raise _quiver.AlreadyExists(
                    f"the step cells of {name!r} for this run exist already: a run with the same key is "
                    "going on, or one did not close (give each run a key of its own)"
                ) from None
        else:
            deadline = time.monotonic() + wait
            while (cells := store.get_cells(cells_id)) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rank 0 did not make the step cells of {name!r} within {wait} s")
                time.sleep(0.01)
            self._cells = cells
        if len(self._cells) != count:
            raise _quiver.Error(f"the step cells of {name!r} hold {len(self._cells)} cells, not {count}")
        # Each rank claims its place: a second process with the same rank
        # (or one that finds a dead run's cells) is refused.
        nonce = int.from_bytes(os.urandom(8), "little") | 1
        swapped, owner = self._cells.compare_exchange(1 + 2 * ranks + rank, 0, nonce)
        if not swapped:
            raise _quiver.Error(
                f"rank {rank} of {name!r} is taken by another process (two processes with one rank, "
                "or the cells of a run that did not close: give each run a key of its own)"
            )
        self._store = store

    def agree(self, epoch: int, step: int, count: int, ended: bool, keepalive: Any, timeout: Optional[float]) -> int:
        """Publishes that this rank can take `count` steps of `epoch` (and
        no more, if `ended`), and waits until every rank has said whether it
        can take step `step`. Returns how many steps all ranks can take: at
        most `step` means they all end there."""
        tag = epoch % 0xFFFF + 1
        bank = epoch % 2
        word = tag << 48 | (self.ENDED if ended else 0) | min(count, self.COUNT)
        self._cells.store(1 + 2 * self.rank + bank, word)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0001
        while True:
            words = self._cells.load_all()[1 + bank : 1 + 2 * self.ranks : 2]
            limit, waiting = None, []
            for rank, word in enumerate(words):
                steps = word & self.COUNT
                if word >> 48 != tag or (steps <= step and not word & self.ENDED):
                    waiting.append(rank)  # not yet at this step, or still looking for a batch for it
                    continue
                limit = steps if limit is None else min(limit, steps)
            if not waiting:
                return limit
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"ranks {waiting} did not reach step {step} within {timeout} s")
            keepalive()
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def close(self) -> None:
        if self.rank == 0:
            # Deleted once every rank's handle is gone.
            try:
                self._store.delete(self._cells.id)
            except _quiver.Error:
                pass


def _spans(consumed: Sequence[Sequence[int]]) -> Dict[int, list]:
    """`[[partition, start, end], ...]` as sorted, merged spans per partition."""
    by_partition: Dict[int, list] = {}
    for item in consumed:
        partition, start, end = (int(v) for v in item)
        if start < end:
            by_partition.setdefault(partition, []).append((start, end))
    merged: Dict[int, list] = {}
    for partition, spans in by_partition.items():
        out: list = []
        for start, end in sorted(spans):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        merged[partition] = out
    return merged


def _flat(spans: Dict[int, list]) -> list:
    """Spans per partition back to `[(partition, start, end), ...]`."""
    return [(p, s, e) for p, parts in spans.items() for s, e in parts]


def _in_spans(spans: Optional[list], offset: int) -> bool:
    return bool(spans) and any(start <= offset < end for start, end in spans)


def _covered_until(spans: Optional[list], start: int) -> int:
    """The end of the span holding `start`, or `start` if none does."""
    for s, e in spans or ():
        if s <= start < e:
            return e
    return start


class Loader:
    """Batches of `stream` as tensors, for the training process, which is a
    member of the shard-managed group `group` (see the module docs).

    Iterate it: each item is what :func:`to_tensors` makes of a batch (the
    keyword arguments it does not take go to it). An iteration ends once
    the stream is closed and every shard of the group is done, or (with
    `idle`) once no new shard came for `idle` seconds: a window of a
    stream that goes on. Iterate again for the next window or epoch.
    `timeout` bounds each wait (``None``: for ever; past it,
    ``TimeoutError``); Ctrl-C interrupts a wait.

    **Reports.** A shard is reported done when the loop asks for the batch
    after its last one (with `report_lag=K`, K items later: a
    ``DataLoader`` worker's items wait in its queue, and
    :class:`StreamDataset` sets this); a process killed mid-shard loses
    nothing, since the shard goes to another member, which reads it again.
    Leaving the loop inside a shard finishes the part before the batch in
    hand and gives the rest back. Leases are renewed while the loader is
    used; a loop that stays away longer than a lease loses its shards to
    other members, which read them again: rows read twice, never lost.
    With a :class:`Checkpoint` (or :meth:`hold_reports`), nothing is
    reported until :meth:`commit`: the group's position then follows the
    saved model.

    **Ranks.** With ``ranks="auto"`` (the default) and ``torch.distributed``
    initialized with more than one rank, every rank is a member of the same
    group, reads different shards, and every rank takes the same number of
    steps: the ranks agree through shared cells in the store, with no
    collective per step, and when one rank runs out of data (the stream
    closed and drained, or `idle`) all end at the same step, so none waits
    in an all-reduce the others never join. Rows that did not fit the last
    common step are not lost: they stay in hand for the next iteration
    (given back, uncommitted, when the loader closes). ``ranks=(rank,
    ranks, key)`` does the same without ``torch.distributed`` (`key` names
    the run: every rank gives the same, and each run its own); ``None``
    turns it off.

    **Determinism.** With ``deterministic=True`` each rank takes a fixed
    share of the shards, in offset order (shard k of partition p is number
    k × partitions + p; rank r takes those equal to r modulo the ranks), and
    shards are cut only at multiples of `shard_size` (a partial one only
    when the stream is closed): the same ranks see the same batches in the
    same order on every run. The price: no rank takes another's share, so a
    slow rank is not helped, and a shard given back (a dead rank's) waits
    for its own rank.
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
        idle: Optional[float] = None,
        ranks: Any = "auto",
        deterministic: bool = False,
        dtypes: Optional[Mapping[str, "torch.dtype"]] = None,
        stack: Optional[Mapping[str, Sequence[str]]] = None,
        fill_null: Optional[float] = None,
        as_tuple: bool = False,
        report_lag: int = 1,
    ) -> None:
        if report_lag < 1:
            raise ValueError(f"report_lag is {report_lag}: at least 1 (a shard is reported when the loop asks past it)")
        for what, value in (("timeout", timeout), ("idle", idle), ("lease", lease)):
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise ValueError(f"{what} is {value!r}: a number of seconds, not negative (None: for ever)")
        if lease == 0:
            raise ValueError("lease is 0: a lease must be above zero")
        rank, count, token = _ranks(ranks)
        self._stream = stream
        self._group = group
        self._manager = _quiver.ShardManager.join(
            stream, group, shard_size=shard_size, lease=lease, linger=_FOREVER if deterministic else None
        )
        self._rank, self._ranks = rank, count
        self._share = (rank, count) if deterministic else None
        self._steps = None
        if count > 1:
            assert token is not None
            self._steps = _Steps(stream, group, rank, count, token, 60.0 if timeout is None else timeout)
        self._lease = lease
        self._report_lag = report_lag
        self._timeout = timeout
        self._idle = idle
        self._convert: Dict[str, Any] = dict(
            columns=columns, dtypes=dtypes, stack=stack, fill_null=fill_null, as_tuple=as_tuple
        )
        self._epoch = 0
        self._iterating = False
        self._hold = False
        # The shard in hand: its task, when its lease was renewed, its
        # batches not yet handed out [(offset, batch)], the offset after the
        # last batch handed out, and the one after the last the loop asked
        # past.
        self._task: Optional[_quiver.Task] = None
        self._renewed = 0.0
        self._renew_at = 0.0
        self._batches: collections.deque = collections.deque()
        self._upto = 0
        self._passed = 0
        # The last `report_lag` batches handed out of the shard in hand.
        self._handed: collections.deque = collections.deque(maxlen=report_lag)
        # Shards whose batches were all handed out, not yet reported:
        # [task, items still to wait for (None: until a commit), renewed].
        self._done: list = []
        # Per partition, spans of offsets already in the model (a loaded
        # state's) that are not passed to the loop again.
        self._skip: Dict[int, list] = {}

    @property
    def manager(self) -> _quiver.ShardManager:
        """The group membership behind the loader (for its stats, say)."""
        return self._manager

    @property
    def rank(self) -> int:
        """This loader's rank (0 without ranks)."""
        return self._rank

    @property
    def ranks(self) -> int:
        """How many ranks share the group's steps (1 without ranks)."""
        return self._ranks

    # ---- leases and reports ----

    def _renew(self) -> None:
        """Renews the leases of the shards held that are a third of a lease old."""
        now = time.monotonic()
        # Looked at again in a tenth of a lease (the loop's fast path).
        self._renew_at = now + self._lease / 10
        if self._task is not None and now - self._renewed > self._lease / 3:
            try:
                self._manager.extend_lease(self._task)
                self._renewed = now
            except _quiver.TaskNotHeld:
                self._lost_current()
        keep = []
        for entry in self._done:
            if now - entry[2] > self._lease / 3:
                try:
                    self._manager.extend_lease(entry[0])
                    entry[2] = now
                except _quiver.TaskNotHeld:
                    self._lost(entry[0].partition, entry[0].start, entry[0].end)
                    continue
            keep.append(entry)
        self._done = keep

    def _lost(self, partition: int, start: int, end: int) -> None:
        """A shard whose lease ran out went to another member, which reads
        it again. Held for a commit, its rows are in the model: they stay
        in this loader's position."""
        if self._hold and start < end:
            self._skip = _spans(_flat(self._skip) + [(partition, start, end)])

    def _lost_current(self) -> None:
        task = self._task
        assert task is not None
        self._lost(task.partition, task.start, self._upto)
        self._task = None
        if self._steps is None:
            # Read on elsewhere, not twice here. Ranks keep the batches in
            # hand: the others count on the steps they make.
            self._batches.clear()

    def _settle(self) -> None:
        """Reports the shards whose wait is over (never while reports are held)."""
        if self._hold:
            return
        keep = []
        for entry in self._done:
            if entry[1] is not None and entry[1] <= 0:
                try:
                    self._manager.report(entry[0])
                except _quiver.TaskNotHeld:
                    pass  # its lease ran out: another member reads it again
                continue
            keep.append(entry)
        self._done = keep

    def _report_waiting(self) -> None:
        """No new shard at once: the waiting reports go now."""
        for entry in self._done:
            if entry[1] is not None:
                entry[1] = 0
        self._settle()

    def hold_reports(self) -> None:
        """From now on, reports wait for :meth:`commit` (what a
        :class:`Checkpoint` asks): the group's committed position then
        moves only over what a durable save holds."""
        self._hold = True
        for entry in self._done:
            entry[1] = None

    # ---- taking shards ----

    def _take(self) -> bool:
        """A shard with batches to hand out, in hand; False when this
        loader has none to come (the end, a drained group for ranks, the
        end of its share, or `idle`)."""
        start = time.monotonic()
        deadline = None if self._timeout is None else start + self._timeout
        idle_end = None if self._idle is None else start + self._idle
        while True:
            now = time.monotonic()
            # Slices short enough to renew leases, to report waiting shards
            # soon once no new shard comes, and for ranks to see the group
            # drained (a close wakes no one while others hold shards).
            left = 0.05 if self._done else 0.1 if self._steps is not None else self._lease / 3
            for end in (deadline, idle_end):
                if end is not None:
                    left = min(left, max(0.0, end - now))
            try:
                task = self._manager.next_task(timeout=left, share=self._share)
            except _quiver.EndOfStream:
                return False
            self._renew()
            if task is None:
                self._report_waiting()
                now = time.monotonic()
                if self._steps is not None and self._manager.drained():
                    return False  # nothing left to take: the ranks end together
                if self._hold and self._holds_the_rest():
                    return False  # the end waits only for this loader's commit
                if idle_end is not None and now >= idle_end:
                    return False
                if deadline is not None and now >= deadline:
                    raise TimeoutError(f"no shard within {self._timeout} s")
                continue
            batches = self._manager.read_task(task, timeout=max(self._lease / 2, 1.0), with_offsets=True)
            if batches is None:
                # Its batches were not all sealed in time: handed out again.
                self._manager.report(task, done=False)
                continue
            spans = self._skip.get(task.partition)
            self._task, self._renewed = task, time.monotonic()
            self._upto = self._passed = task.start
            self._handed.clear()
            self._batches.extend((o, b) for o, b in batches if not _in_spans(spans, o))
            if self._batches:
                return True
            self._finish()  # every batch already in the model

    def _holds_the_rest(self) -> bool:
        """Whether the group is drained and every shard still out is one
        this loader holds for a commit."""
        if not self._manager.drained():
            return False
        held = len(self._done) + (self._task is not None)
        return self._manager.stats()["doing"] == held

    def _finish(self) -> None:
        """The shard in hand was handed out whole: it waits for its report."""
        task = self._task
        assert task is not None
        wait = None if self._hold else self._report_lag - 1
        self._done.append([task, wait, self._renewed])
        self._task = None
        self._settle()

    # ---- iteration ----

    def __iter__(self) -> Iterator[Tensors]:
        if self._iterating:
            raise RuntimeError("this loader is being iterated already")
        self._iterating = True
        epoch, self._epoch = self._epoch, self._epoch + 1
        step, agreed = 0, 0
        abandoned = True
        try:
            while True:
                ended = False
                if not self._batches:
                    if self._task is not None:
                        self._finish()
                    ended = not self._take()
                if self._steps is not None and step >= agreed:
                    agreed = self._steps.agree(
                        epoch, step, step + len(self._batches), ended, self._renew, self._timeout
                    )
                    if agreed <= step:
                        break  # every rank ends here
                elif ended:
                    break
                offset, batch = self._batches.popleft()
                self._handed.append((offset, batch))
                self._upto = offset + 1
                yield to_tensors(batch, **self._convert)
                # The loop asked past it.
                self._passed = self._upto
                step += 1
                if self._done:
                    for entry in self._done:
                        if entry[1] is not None:
                            entry[1] -= 1
                    self._settle()
                if time.monotonic() > self._renew_at:
                    self._renew()
            abandoned = False
        finally:
            self._iterating = False
            self._end_iteration(abandoned)

    def _end_iteration(self, abandoned: bool) -> None:
        """An iteration ended: at the stream's end or the ranks' common
        step, or abandoned by the loop (a ``break``, an error in the loop,
        the iterator dropped). An abandoned loop may not have used the last
        `report_lag` items it was handed (a ``DataLoader`` drops what waits
        in its queue): they are not counted as passed, and shards whose
        report still waited go back unfinished.

        Without held reports, the part of the shard in hand that is passed
        is reported and the rest given back. With them, the shard stays in
        hand for the next iteration, a commit reporting the part passed."""
        if abandoned:
            unused = list(self._handed)
            task = self._task
            if task is not None and unused and unused[0][0] >= task.start:
                self._batches.extendleft(reversed(unused))
                self._upto = self._passed = unused[0][0]
            keep = []
            for entry in self._done:
                if entry[1] is not None and entry[1] > 0:
                    try:
                        self._manager.release(entry[0])
                    except _quiver.Error:
                        pass
                    continue
                keep.append(entry)
            self._done = keep
        self._handed.clear()
        if not self._hold and self._task is not None:
            try:
                rest = self._manager.report_until(self._task, self._passed)
                if rest is not None:
                    self._manager.release(rest)
            except _quiver.TaskNotHeld:
                pass
            except _quiver.Error:
                # No room to split: the whole shard is read again.
                try:
                    self._manager.release(self._task)
                except _quiver.Error:
                    pass
            self._task = None
        if self._task is None:
            self._batches.clear()
        self._report_waiting()

    # ---- position ----

    def state_dict(self) -> Dict[str, Any]:
        """The loader's data position, as torchdata's ``StatefulDataLoader``
        gives it: the offsets handed to the loop that the group has not
        committed (per partition, as ``[partition, start, end]`` spans).
        Save it with the model; :meth:`load_state_dict` in a new loader
        skips those rows, and :meth:`commit` reports them once the save is
        durable."""
        consumed = _flat(self._skip)
        consumed += [(entry[0].partition, entry[0].start, entry[0].end) for entry in self._done]
        if self._task is not None and self._upto > self._task.start:
            consumed.append((self._task.partition, self._task.start, self._upto))
        committed = self._manager.stats()["committed"]
        spans = _spans([(p, max(s, committed[p]), e) for p, s, e in consumed if p < len(committed)])
        return {
            "format": STATE_FORMAT,
            "stream": self._stream.name,
            "namespace": self._stream.namespace,
            "group": self._group,
            "consumed": [list(span) for span in sorted(_flat(spans))],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Takes up the position `state` (this loader's or another rank's
        :meth:`state_dict`, or several merged by :func:`merge_states`):
        rows it holds are not handed to the loop again. Raises
        ``ValueError`` for a state of another stream, group or format."""
        _check_state(state, self._stream, self._group)
        if self._iterating:
            raise RuntimeError("load_state_dict while the loader is being iterated")
        self._skip = _spans(_flat(self._skip) + [tuple(item) for item in state["consumed"]])

    def commit(self, state: Optional[Mapping[str, Any]] = None) -> None:
        """Reports done the shards, and the part of the shard in hand,
        that `state` (a :meth:`state_dict` of this loader; by default its
        position now) holds: call it once `state` is saved durably. The
        group's committed offsets, and a Kafka source's behind them, move
        only over what the save holds."""
        if state is None:
            state = self.state_dict()
        else:
            _check_state(state, self._stream, self._group)
        spans = _spans(state["consumed"])
        keep = []
        for entry in self._done:
            task = entry[0]
            if _covered_until(spans.get(task.partition), task.start) >= task.end:
                try:
                    self._manager.report(task)
                except _quiver.TaskNotHeld:
                    # Its lease ran out: its rows are in the saved state,
                    # and stay in this loader's position.
                    self._lost(task.partition, task.start, task.end)
                continue
            keep.append(entry)
        self._done = keep
        task = self._task
        if task is not None:
            upto = min(_covered_until(spans.get(task.partition), task.start), self._upto, task.end)
            if upto > task.start:
                try:
                    self._task = self._manager.report_until(task, upto)
                    self._renewed = time.monotonic()
                    self._passed = max(self._passed, upto)
                except _quiver.TaskNotHeld:
                    self._lost_current()

    def close(self) -> None:
        """Leaves the group: shards in hand go back at once, unfinished."""
        self._task = None
        self._batches.clear()
        self._done = []
        if self._steps is not None:
            self._steps.close()
        self._manager.leave()

    def __enter__(self) -> "Loader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_state(state: Mapping[str, Any], stream: _quiver.Stream, group: str) -> None:
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not a quiver.torch loader state (format {STATE_FORMAT!r})")
    found = (state.get("stream"), state.get("namespace"), state.get("group"))
    if found != (stream.name, stream.namespace, group):
        raise ValueError(
            f"the state is of stream {found[0]!r} (namespace {found[1]}) group {found[2]!r}, "
            f"not stream {stream.name!r} (namespace {stream.namespace}) group {group!r}: "
            "a stream made again has new offsets, and the state's mean nothing in it"
        )
    consumed = state.get("consumed")
    if not isinstance(consumed, (list, tuple)):
        raise ValueError(f"the state's consumed spans are a list, not {consumed!r}")
    for item in consumed:
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 3
            or not all(type(v) is int and 0 <= v < 1 << 63 for v in item)
            or item[0] >= stream.partitions
            or item[1] > item[2]
        ):
            raise ValueError(
                f"a consumed span is [partition, start, end] of offsets in one of the stream's "
                f"{stream.partitions} partitions, start <= end, not {item!r}"
            )


def merge_states(states: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One position of several ranks' states (:meth:`Loader.state_dict`, of the
    same stream and group): every rank of a resumed run loads it, and
    whichever reads a shard skips what any rank had handed out."""
    if not states:
        raise ValueError("no state to merge")
    first = states[0]
    for state in states:
        if (state.get("format"), state.get("stream"), state.get("namespace"), state.get("group")) != (
            first.get("format"),
            first.get("stream"),
            first.get("namespace"),
            first.get("group"),
        ):
            raise ValueError("states of different streams or groups")
    spans = _spans([item for state in states for item in state["consumed"]])
    merged = dict(first)
    merged["consumed"] = [list(span) for span in sorted(_flat(spans))]
    return merged


CHECKPOINT_FORMAT = "quiver.torch.Checkpoint/1"


class Checkpoint:
    """The model's and optimizer's state and the loader's data position in
    one file, written atomically; the group's offsets are committed only
    once the file is durable.

    ``Checkpoint(path, loader, model, optimizer)`` makes the loader hold
    its reports (:meth:`Loader.hold_reports`). :meth:`save` (call it at the
    same step on every rank) writes a new file beside `path`, syncs it,
    renames it over `path` and syncs the directory, then commits what the
    file holds: a process killed at any moment leaves the last file whole,
    and the group has committed nothing the file does not hold. With
    several ranks (``torch.distributed``), the ranks' positions are
    gathered and rank 0 writes the file; a barrier keeps every rank's
    commit after it. :meth:`load` (every rank, before iterating) takes the
    model, the optimizer and the position back: the loop continues with
    the first batch after the save, no row skipped, and rows handed out
    after the save read again. Behind a Kafka source whose commits follow
    the group (``quiver kafka source --group``), Kafka's committed offsets
    follow the saved model too.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        loader: Loader,
        model: Optional["torch.nn.Module"] = None,
        optimizer: Optional["torch.optim.Optimizer"] = None,
    ) -> None:
        self.path = pathlib.Path(path)
        self.loader = loader
        self.model = model
        self.optimizer = optimizer
        loader.hold_reports()

    def _gather(self, state: Dict[str, Any]) -> Dict[str, Any]:
        if self.loader.ranks == 1:
            return state
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() == self.loader.ranks):
            raise RuntimeError("a Checkpoint of several ranks gathers their positions with torch.distributed")
        states = [json.loads(data) for data in _all_gather_bytes(json.dumps(state).encode())]
        return merge_states(states)

    def save(self, **extra: Any) -> None:
        """Saves the model, the optimizer, the position and `extra` (plain
        values: a step count, a loss), then commits the position."""
        state = self.loader.state_dict()
        merged = self._gather(state)
        if self.loader.rank == 0:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "model": None if self.model is None else self.model.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "loader": merged,
                "extra": extra,
            }
            _write_durably(self.path, payload)
        if self.loader.ranks > 1:
            torch.distributed.barrier()
        self.loader.commit(state)

    def load(self) -> Optional[Dict[str, Any]]:
        """Takes the saved state back into the model, the optimizer and the
        loader, and returns the `extra` values saved with it; ``None`` (and
        nothing changed) if there is no file yet. A file that is not a
        checkpoint, or one of another stream or group, raises
        ``ValueError``."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise ValueError(f"{self.path} is not a regular file")
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{self.path} is not a readable checkpoint: {e}") from e
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.path} is not a quiver.torch checkpoint (format {CHECKPOINT_FORMAT!r})")
        missing = {"model", "optimizer", "loader", "extra"} - set(payload)
        if missing or not isinstance(payload["extra"], dict):
            raise ValueError(f"{self.path} is a damaged checkpoint (missing {sorted(missing)} or extra not a dict)")
        _check_state(payload["loader"], self.loader._stream, self.loader._group)
        # The loader's position last: a model that does not take its state
        # leaves the loader as it was.
        if self.model is not None and payload["model"] is not None:
            self.model.load_state_dict(payload["model"])
        if self.optimizer is not None and payload["optimizer"] is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
        self.loader.load_state_dict(payload["loader"])
        return dict(payload["extra"])


def _write_durably(path: pathlib.Path, payload: Any) -> None:
    """`payload` into a new file beside `path` (exclusive, random name,
    0600), synced, renamed over `path`, and the directory synced. Refuses
    to replace anything but a regular file."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"{path} exists and is not a regular file: not replacing it")
    directory = path.parent if str(path.parent) else pathlib.Path(".")
    with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        tmp = pathlib.Path(f.name)
        try:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        # Workers are members of their own; they share no steps.
        loader.setdefault("ranks", None)
        self._loader = loader

    def __iter__(self) -> Iterator[Tensors]:
        store_name, stream_name, group = self._names
        with _quiver.Store.open(store_name) as store:
            stream = _quiver.Stream.open(store, stream_name)
            with Loader(stream, group, self._columns, **self._loader) as loader:
                yield from loader
