"""Type stubs of the native module `quiver._quiver` (re-exported by `quiver`)."""

from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Literal, Optional, Sequence, Union, overload

import pyarrow as pa

FORMAT_VERSION: int
"""The store file format this build reads and writes."""

class Error(Exception):
    """Every error quiver raises."""

class InvalidArgument(Error, ValueError):
    """An argument or configuration that cannot work."""

class NotFound(Error):
    """No store, stream, group or object of that name or ID."""

class AlreadyExists(Error):
    """A store, stream or object of that name or ID exists already."""

class NotAStore(Error):
    """The file is not a quiver store this build can open (or is another user's)."""

class StoreFull(Error):
    """No room in the store (after waiting, where the call waits)."""

class StreamClosed(Error):
    """The stream was closed: nothing more can be appended."""

class CorruptBatch(Error):
    """A batch that cannot be decoded; `Consumer.skip` passes it."""

class NotSealed(Error):
    """The object is still being created (not sealed)."""

class Corrupted(Error):
    """The store file's bytes violate the format."""

class LockTimeout(Error):
    """Another process held the store's lock too long (stopped?); the message names it."""

class StoreGone(Error):
    """The store file was removed or cut short while in use."""

class TaskNotHeld(Error):
    """The shard manager's task is no longer held by this member."""

class CheckpointInvalid(Error):
    """A checkpoint file that cannot be read."""

class EndOfStream(Error):
    """The stream is closed and every batch (or shard) was read."""

# The kinds of object IDs (the core's `IdKind`), by the names Python gives them.
_IdKind = Literal["sequential", "random", "schema", "shared_model", "kafka_status", "plasma", "plasma_settings", "torch_steps"]

class ObjectId:
    """A 24-byte object ID."""

    def __init__(self, raw: bytes) -> None:
        """An ID from its 24 bytes (`bytes(id)` gives them back)."""
    @staticmethod
    def sequential(ns: int, partition: int, offset: int) -> ObjectId:
        """The ID of the `offset`-th object of `partition` in namespace `ns`:
        every process computes the same ID without talking to the others."""
    @staticmethod
    def random() -> ObjectId:
        """A random ID."""
    @staticmethod
    def with_kind(kind: _IdKind, rest: bytes) -> ObjectId:
        """An ID of kind `kind` with the 23 bytes after the kind byte given
        (`ValueError` for another kind name or length). The kinds are the
        core's `IdKind`, each its own first byte, so IDs of different kinds
        never meet: `with_kind("plasma", ...)` is how `quiver.plasma` makes
        its IDs."""
    @staticmethod
    def named(kind: _IdKind, name: str, tag: int = 0, token: bytes = b"\0" * 8) -> ObjectId:
        """The ID of kind `kind` naming `name` (its hash), with a 32-bit `tag`
        and an 8-byte `token`: any process derives it from the name."""
    def is_named(self, kind: _IdKind, name: str) -> bool:
        """Whether this ID is `named(kind, name, ...)`, whatever its tag and token."""
    @property
    def kind(self) -> Optional[_IdKind]:
        """The ID's kind, as `with_kind` names it, or None if its first byte
        is no kind's (an ID made from arbitrary bytes)."""
    @staticmethod
    def parse(text: str) -> ObjectId:
        """Parses the hexadecimal form `str(id)` prints."""
    def sequential_parts(self) -> Optional[tuple[int, int, int]]:
        """`(ns, partition, offset)` of a sequential ID, else None."""
    def binary(self) -> bytes:
        """The 24 bytes."""
    def __bytes__(self) -> bytes: ...
    def __hash__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __lt__(self, other: ObjectId) -> bool: ...
    def __le__(self, other: ObjectId) -> bool: ...
    def __gt__(self, other: ObjectId) -> bool: ...
    def __ge__(self, other: ObjectId) -> bool: ...

class ObjectBuilder:
    """An object being created: a writable buffer into shared memory.

    Fill it through the buffer protocol (`memoryview(builder)`) or `write`,
    then `seal()`; as a context manager it seals at the end of the block
    (aborts if the block raised). Release every memoryview before sealing.
    """

    @property
    def id(self) -> ObjectId:
        """The object's ID."""
    @property
    def metadata(self) -> bytes:
        """The metadata given at creation."""
    def __len__(self) -> int:
        """The size of the data in bytes."""
    def write(self, data: bytes, offset: int = 0) -> None:
        """Copies `data` into the object at `offset`."""
    def seal(self) -> None:
        """Makes the object immutable and visible to every process."""
    def seal_keeping_buffers(self) -> None:
        """Seals although buffers of the object are open (Plasma's semantics):
        it stays referenced until they are all gone. Don't write after it."""
    def abort(self) -> None:
        """Gives the object up: its memory is freed and its ID is free again."""
    def __buffer__(self, flags: int) -> memoryview: ...
    def __enter__(self) -> ObjectBuilder: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

class ObjectView:
    """A read-only, zero-copy view of a sealed object.

    `memoryview(view)`, `pyarrow.py_buffer(view)` and `numpy.frombuffer(view)`
    see the shared memory itself. The object stays in memory while the view
    or any buffer made from it lives.
    """

    @property
    def id(self) -> ObjectId:
        """The object's ID."""
    @property
    def metadata(self) -> bytes:
        """The object's metadata."""
    def __len__(self) -> int:
        """The size of the data in bytes."""
    def to_bytes(self) -> bytes:
        """The data as bytes (a copy)."""
    def release(self) -> None:
        """Gives up this handle's reference (buffers made from it keep theirs)."""
    def __buffer__(self, flags: int) -> memoryview: ...
    def __enter__(self) -> ObjectView: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

class Store:
    """A store: named objects in a file in shared memory (`/dev/shm`), which
    every process that opens it sees. A context manager (`close()` at the end)."""

    @staticmethod
    def create(
        name: Optional[str] = None,
        *,
        capacity: int = 256 << 20,
        max_objects: Optional[int] = None,
        path: Union[str, PathLike[str], None] = None,
        prefault: bool = True,
    ) -> Store:
        """Creates the store `name` (its file is `/dev/shm/quiver-NAME`), or a
        store file at `path`. `capacity` is the bytes of its arena."""
    @staticmethod
    def open(
        name: Optional[str] = None, *, path: Union[str, PathLike[str], None] = None, allow_other_owner: bool = False
    ) -> Store:
        """Opens an existing store."""
    @staticmethod
    def remove(name: str, *, check: bool = False) -> None:
        """Removes the store file `name`; with `check=True` refuses what is not
        a store and a store that live processes have open."""
    @staticmethod
    def list_stores() -> list[dict[str, Any]]:
        """The stores in /dev/shm (name, owner, size, live clients, state)."""
    def close(self) -> None:
        """Gives this handle up (objects and views made through it stay valid)."""
    @property
    def path(self) -> Path:
        """The store's file."""
    def create_object(
        self, id: ObjectId, size: int, metadata: bytes = b"", *, timeout: Optional[float] = None, pinned: bool = False
    ) -> ObjectBuilder:
        """Creates object `id` with `size` bytes of data; waits up to `timeout`
        seconds for space if the store is full."""
    def create_cells(self, id: ObjectId, count: int, metadata: bytes = b"") -> Cells:
        """Creates object `id` of `count` shared 64-bit cells, zeroed (pinned,
        never read as bytes); AlreadyExists if `id` exists."""
    def get_cells(self, id: ObjectId) -> Optional[Cells]:
        """The cells object `id`, or None while it does not exist or is being created."""
    def put(self, id: ObjectId, data: bytes, metadata: bytes = b"") -> None:
        """Creates, fills and seals object `id` in one call."""
    def get(self, id: ObjectId, timeout: Optional[float] = 0.0) -> Optional[ObjectView]:
        """A zero-copy view of sealed object `id`, waiting up to `timeout`
        seconds (None: for ever); None if it was not sealed in time."""
    def get_many(self, ids: Sequence[ObjectId], timeout: Optional[float] = 0.0) -> list[Optional[ObjectView]]:
        """Views of several objects, waiting up to `timeout` seconds in all."""
    def contains(self, id: ObjectId) -> bool:
        """Whether object `id` exists and is sealed."""
    def delete(self, id: ObjectId) -> None:
        """Deletes sealed object `id`; its memory is freed once no view holds it."""
    def list(self) -> list[dict[str, Any]]:
        """Every object: id, sizes, state, references, pinned, age."""
    def stats(self) -> dict[str, Any]:
        """The store's numbers: capacity, used, payload, objects, clients, ..."""
    def delete_many(self, ids: Sequence[ObjectId]) -> int:
        """Deletes the sealed objects among `ids` in one go (others passed over);
        returns how many were deleted."""
    def evict(self, num_bytes: int) -> int:
        """Evicts least recently used unreferenced objects until `num_bytes`
        of data and metadata are freed (or none is left); returns the bytes."""
    def recover_dead_clients(self) -> int:
        """Releases what dead clients left behind; returns how many."""
    def mapped_range(self) -> tuple[int, int]:
        """The address range of this handle's mapping."""
    def __enter__(self) -> Store: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

_BatchLike = Union[pa.RecordBatch, pa.Table]

class Cells:
    """Shared 64-bit cells in a store object, changed atomically in place by
    every process holding a handle (`Store.create_cells`, `Store.get_cells`)."""

    @property
    def id(self) -> ObjectId:
        """The object's ID."""
    @property
    def metadata(self) -> bytes:
        """The metadata given at creation."""
    def __len__(self) -> int: ...
    def load(self, index: int) -> int:
        """The value of cell `index`."""
    def load_all(self) -> list[int]:
        """Every cell's value, in order (each read atomically)."""
    def store(self, index: int, value: int) -> None:
        """Sets cell `index` to `value`."""
    def fetch_add(self, index: int, value: int) -> int:
        """Adds `value` to cell `index` (wrapping); returns the old value."""
    def fetch_max(self, index: int, value: int) -> int:
        """Raises cell `index` to `value` if below; returns the old value."""
    def compare_exchange(self, index: int, current: int, new: int) -> tuple[bool, int]:
        """Sets cell `index` to `new` if it holds `current`: (swapped, old value)."""

class Stream:
    """A named log of record batches in a store, with partitions and consumer groups."""

    @staticmethod
    def create(
        store: Store,
        name: str,
        schema: pa.Schema,
        *,
        partitions: int = 1,
        groups: Sequence[str] = (),
        back_pressure: Literal["block", "drop_oldest", "error"] = "block",
        max_age: Optional[float] = None,
        max_bytes: Optional[int] = None,
        exist_ok: bool = False,
    ) -> Stream:
        """Creates stream `name` for batches of `schema`; `groups` each see every batch."""
    @staticmethod
    def open(store: Store, name: str) -> Stream:
        """Opens stream `name` of `store`."""
    @staticmethod
    def remove(store: Store, name: str) -> None:
        """Removes stream `name` and frees its batches."""
    @staticmethod
    def list(store: Store) -> list[dict[str, Any]]:
        """The streams of `store`, with their stats."""
    @property
    def name(self) -> str: ...
    @property
    def schema(self) -> pa.Schema: ...
    @property
    def store(self) -> Store:
        """The store the stream is in (a handle of its own)."""
    @property
    def namespace(self) -> int:
        """The number in the stream's batch IDs, drawn when it was made."""
    @property
    def partitions(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def object_id(self, partition: int, offset: int) -> ObjectId:
        """The ID of the batch object at `offset` of `partition`."""
    def close(self) -> None:
        """Ends the stream: consumers that read everything see its end."""
    def producer(self, *, timeout: float = 30.0) -> Producer:
        """A producer; under 'block' back-pressure an append waits up to `timeout` s."""
    def consumer(
        self,
        group: Optional[str] = None,
        *,
        start: Literal["oldest", "newest"] = "oldest",
        partitions: Optional[Sequence[int]] = None,
        skip_corrupt: bool = False,
    ) -> Consumer:
        """A member of consumer group `group`, or a reader outside any group."""
    def enforce_retention(self) -> None:
        """Frees what every group committed past and applies the limits now."""
    def stats(self) -> dict[str, Any]:
        """Partitions, groups with their lag, counters, skipped batches."""

class Producer:
    """Appends record batches to a stream (one copy, into shared memory)."""

    @overload
    def append(self, batch: pa.RecordBatch) -> tuple[int, int]: ...
    @overload
    def append(self, batch: pa.Table) -> list[tuple[int, int]]: ...
    def append_to(self, partition: int, batch: _BatchLike) -> Union[tuple[int, int], list[tuple[int, int]]]:
        """Appends to partition `partition`."""
    def append_keyed(self, batch: _BatchLike, key: str) -> list[tuple[int, int]]:
        """Splits by the hash of column `key`: equal keys land in the same partition."""
    def reserve(self, rows: int, *, partition: Optional[int] = None) -> Reservation:
        """Takes the next offset for a batch of `rows` rows built in place:
        writable NumPy arrays over its columns in shared memory, then
        `commit()`. Fixed-width, byte-sized columns only; no nulls."""
    def close(self) -> None:
        """Ends the stream."""

class Reservation:
    """A batch being built in place (`Producer.reserve`): writable NumPy
    arrays over its columns by name, then `commit()` (or `with`: commits at
    the end of the block, aborts if it raised)."""

    def __getitem__(self, name: str) -> Any:
        """Column `name`'s values: a writable `numpy.ndarray` over the store."""
    @property
    def columns(self) -> dict[str, Any]:
        """The columns by name (writable `numpy.ndarray`s)."""
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    def commit(self) -> tuple[int, int]:
        """Seals the batch; its arrays become read-only. Returns `(partition, offset)`."""
    def abort(self) -> None:
        """Gives the batch up: its offset becomes a hole consumers pass."""
    def __enter__(self) -> Reservation: ...
    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

class StreamBatch:
    """A batch read from a stream, with where it came from."""

    @property
    def batch(self) -> pa.RecordBatch:
        """The record batch (its buffers are the shared memory)."""
    @property
    def partition(self) -> int:
        """The partition it was appended to."""
    @property
    def offset(self) -> int:
        """Its offset there."""
    @property
    def append_ns(self) -> int:
        """When it was appended, nanoseconds since the Unix epoch."""

class Consumer:
    """Reads a stream: polls with timeouts, iterates, commits its group's offsets."""

    @overload
    def poll(self, timeout: Optional[float] = None, *, with_meta: Literal[False] = False) -> Optional[pa.RecordBatch]: ...
    @overload
    def poll(self, timeout: Optional[float] = None, *, with_meta: Literal[True]) -> Optional[StreamBatch]: ...
    @overload
    def poll_numpy(self, timeout: Optional[float] = None, *, with_meta: Literal[False] = False) -> Optional[dict[str, Any]]: ...
    @overload
    def poll_numpy(self, timeout: Optional[float] = None, *, with_meta: Literal[True]) -> Optional[StreamBatch]: ...
    def poll_many(self, n: int, timeout: Optional[float] = 0.0, *, numpy: bool = False) -> list[Any]:
        """Up to `n` batches: waits up to `timeout` for the first, then takes
        what is ready (pyarrow batches, or dicts of NumPy arrays)."""
    def __iter__(self) -> Iterator[pa.RecordBatch]: ...
    def __next__(self) -> pa.RecordBatch: ...
    def iter_numpy(self) -> NumpyBatches:
        """The batches as dicts of read-only NumPy arrays by column name."""
    @property
    def ended(self) -> bool:
        """Whether a poll met the end of the stream."""
    def commit(self) -> None:
        """Commits this consumer's positions for its group."""
    def seek(self, partition: int, offset: int) -> None:
        """Moves the position in `partition` to `offset`."""
    def skip(self, partition: int, offset: int, reason: str = "skipped by the application") -> None:
        """Passes the batch `CorruptBatch` stopped at, recording `reason`."""
    def position(self, partition: int) -> Optional[int]: ...
    def committed(self, partition: int) -> int: ...
    @property
    def holes(self) -> int: ...
    @property
    def missed(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def backlog(self) -> int: ...
    @property
    def group(self) -> Optional[str]: ...

class NumpyBatches:
    """Iterates a consumer's batches as dicts of NumPy arrays (`Consumer.iter_numpy`)."""

    def __iter__(self) -> NumpyBatches: ...
    def __next__(self) -> dict[str, Any]: ...

class Task:
    """A shard handed to a member: `partition` and the offsets `[start, end)`."""

    @property
    def id(self) -> int:
        """Monotonic within the group."""
    @property
    def partition(self) -> int:
        """The shard's partition."""
    @property
    def start(self) -> int:
        """Its first offset."""
    @property
    def end(self) -> int:
        """One past its last offset."""
    @property
    def retries(self) -> int:
        """How often it failed before."""

class ShardManager:
    """A member of a shard-managed consumer group (a context manager: leaves at the end)."""

    @staticmethod
    def join(
        stream: Stream,
        group: str,
        *,
        shard_size: int = 16,
        shard_rows: Optional[int] = None,
        lease: float = 30.0,
        max_retries: int = 3,
        linger: Optional[float] = None,
    ) -> ShardManager:
        """Joins shard-managed group `group` of `stream`."""
    @staticmethod
    def restore(stream: Stream, group: str, path: Union[str, PathLike[str]]) -> ShardManager:
        """Rebuilds group `group` from a checkpoint and joins it."""
    def next_task(self, timeout: Optional[float] = None, *, share: Optional[tuple[int, int]] = None) -> Optional[Task]:
        """The next shard (None if none came in time); EndOfStream at the end.
        With `share=(index, of)`, the lowest-numbered waiting shard of that
        fixed share (the same shards in the same order on every run)."""
    def drained(self) -> bool:
        """Whether the stream is closed and no shard is left to take (each
        is done or held by a member)."""
    def read_task(self, task: Task, timeout: float = 10.0, *, with_offsets: bool = False) -> Optional[list[Any]]:
        """The batches of `task`, zero-copy (`(offset, batch)` pairs with
        `with_offsets=True`); None if they were not all sealed in time."""
    def report(self, task: Task, done: bool = True) -> None:
        """Finishes `task` (done), or gives it back to be retried."""
    def report_until(self, task: Task, upto: int) -> Optional[Task]:
        """Reports the part of `task` before offset `upto` done; returns the
        rest as a new task this member holds (None at the task's end)."""
    def release(self, task: Task) -> None:
        """Gives `task` back without counting a failure."""
    def extend_lease(self, task: Task) -> None:
        """Renews the lease of `task`."""
    def checkpoint(self, path: Union[str, PathLike[str]]) -> None:
        """Writes the group's state to `path` atomically."""
    def stats(self) -> dict[str, Any]:
        """Tasks, dead letters, members, offsets."""
    def leave(self) -> None:
        """Leaves the group: this member's tasks go back at once."""
    def __enter__(self) -> ShardManager: ...
    def __exit__(
        self, kind: Optional[type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> bool: ...

class SgdRegressor:
    """Online linear regression by SGD, with scikit-learn's settings, defaults and attribute names."""

    def __init__(
        self,
        *,
        loss: str = "squared_error",
        epsilon: float = 0.1,
        learning_rate: str = "invscaling",
        eta0: float = 0.01,
        power_t: float = 0.25,
        alpha: float = 0.0001,
        fit_intercept: bool = True,
        n_iter_no_change: int = 5,
        tol: float = 1e-3,
        epoch_rows: int = 10_000,
    ) -> None:
        """`loss` "squared_error" or "huber"; `learning_rate` "constant", "invscaling" or "adaptive"."""
    def partial_fit(self, batch: pa.RecordBatch, features: Sequence[str], target: str) -> SgdRegressor:
        """Trains on every row of `batch` (integer or float columns)."""
    def predict(self, batch: pa.RecordBatch, features: Sequence[str]) -> list[float]:
        """Predictions for every row of `batch`."""
    def score(self, batch: pa.RecordBatch, features: Sequence[str], target: str) -> float:
        """R² of the predictions for a labelled batch."""
    def save(self, path: Union[str, PathLike[str]], features: Sequence[str], target: str) -> None:
        """Writes the model and its columns to a JSON file, atomically (what `quiver train` writes)."""
    @staticmethod
    def load(path: Union[str, PathLike[str]]) -> SgdRegressor:
        """A model saved by `save` or `quiver train`."""
    @property
    def feature_names_in_(self) -> Optional[list[str]]: ...
    @property
    def target_(self) -> Optional[str]: ...
    @property
    def coef_(self) -> list[float]: ...
    @property
    def intercept_(self) -> float: ...
    @property
    def rows_seen(self) -> int: ...
    @property
    def learning_rate_(self) -> float: ...

class SharedModel:
    """One model in a store that worker processes train together (lock-free, Hogwild!-style)."""

    @staticmethod
    def create(
        store: Store, name: str, features: Sequence[str], target: str, model: Optional[SgdRegressor] = None
    ) -> SharedModel: ...
    @staticmethod
    def open(store: Store, name: str, timeout: Optional[float] = 10.0) -> SharedModel: ...
    @staticmethod
    def remove(store: Store, name: str) -> None: ...
    def trainer(self, sync_every: int = 1) -> SharedTrainer: ...
    def snapshot(self) -> SgdRegressor:
        """The model as it is now."""
    @property
    def rows_seen(self) -> int: ...

class SharedTrainer:
    """One process's side of a `SharedModel`."""

    def partial_fit(self, batch: pa.RecordBatch) -> int:
        """Trains the shared model on the batch's feature and target columns; returns the rows."""
    def sync(self) -> None:
        """Adds what was trained since the last exchange to the shared model."""

def read_file(
    path: Union[str, PathLike[str]], *, batch_rows: int = 1024
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """The batches of an Arrow IPC or CSV file, as `quiver produce` reads them."""
