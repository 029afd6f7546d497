"""quiver: shared-memory object stores and Arrow record batch streams.

A producer appends ``pyarrow.RecordBatch``es to a stream in a store in
``/dev/shm``; consumer processes poll them with timeouts and get
``pyarrow.RecordBatch``es whose buffers are the shared memory itself (no
copy). Consumer groups keep their offsets in the store; the shard manager
shares a group's stream out among processes with leases, retries and
checkpoints; ``SgdRegressor`` trains online linear regression on batches,
and ``SharedModel`` is one such model that worker processes train together.

>>> import pyarrow as pa, quiver
>>> with quiver.Store.create("example", capacity=64 << 20) as store:
...     stream = quiver.Stream.create(store, "s", pa.schema([("x", pa.float64())]), groups=["g"])
...     stream.producer().append(pa.record_batch([pa.array([1.0, 2.0])], names=["x"]))
...     consumer = stream.consumer("g")
...     consumer.poll(timeout=1.0).num_rows
(0, 0)
2
>>> quiver.Store.remove("example")
"""

from ._quiver import (
    FORMAT_VERSION,
    AlreadyExists,
    Cells,
    CheckpointInvalid,
    Consumer,
    Corrupted,
    CorruptBatch,
    EndOfStream,
    Error,
    InvalidArgument,
    LockTimeout,
    NotAStore,
    NotFound,
    NotSealed,
    NumpyBatches,
    ObjectBuilder,
    ObjectId,
    ObjectView,
    Producer,
    Reservation,
    SgdRegressor,
    ShardManager,
    SharedModel,
    SharedTrainer,
    StoreFull,
    StoreGone,
    Stream,
    StreamBatch,
    StreamClosed,
    Store,
    Task,
    TaskNotHeld,
    read_file,
)

# `import quiver.plasma as plasma`: the pyarrow.plasma API on quiver.
from . import plasma  # noqa: E402

__all__ = [
    "FORMAT_VERSION",
    "AlreadyExists",
    "Cells",
    "CheckpointInvalid",
    "Consumer",
    "Corrupted",
    "CorruptBatch",
    "EndOfStream",
    "Error",
    "InvalidArgument",
    "LockTimeout",
    "NotAStore",
    "NotFound",
    "NotSealed",
    "NumpyBatches",
    "ObjectBuilder",
    "ObjectId",
    "ObjectView",
    "Producer",
    "Reservation",
    "SgdRegressor",
    "ShardManager",
    "SharedModel",
    "SharedTrainer",
    "StoreFull",
    "StoreGone",
    "Stream",
    "StreamBatch",
    "StreamClosed",
    "Store",
    "Task",
    "TaskNotHeld",
    "plasma",
    "read_file",
]
