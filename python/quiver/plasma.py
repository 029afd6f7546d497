"""The ``pyarrow.plasma`` API on quiver: Plasma code moves by changing one import.

    import quiver.plasma as plasma      # was: import pyarrow.plasma as plasma

    with plasma.start_plasma_store(plasma_store_memory=1 << 30) as (name, _):
        client = plasma.connect(name)
        object_id = plasma.ObjectID.from_random()
        buf = client.create(object_id, 1000)        # a writable pyarrow.Buffer in shared memory
        ...                                         # fill it
        client.seal(object_id)
        [data] = client.get_buffers([object_id], timeout_ms=1000)   # zero-copy

What differs from Plasma, and why:

- There is no daemon. A "store" is a quiver store file in ``/dev/shm``;
  ``start_plasma_store`` creates one (and removes it at the end of its
  ``with`` block) and yields ``(name, handle)``, and ``connect(name)`` opens it.
  Every client maps the store itself: nothing goes through a socket.
- ``put``/``get`` serialize with pickle protocol 5, buffers out of band (so
  NumPy arrays and pyarrow buffers are stored and read back without a
  copy), where Plasma used the removed ``pyarrow.serialize``.
- Notifications (``subscribe``, ``get_notification_socket``,
  ``decode_notifications``), external stores, CUDA and huge pages have no
  equivalent and raise ``NotImplementedError``.
- ``release(object_id)`` does nothing: a buffer holds its object until the
  buffer is freed (Plasma did the same, plus a manual release).
- ``list()``'s ``construct_duration`` is known for objects this client
  sealed; for others it is -1 (as Plasma reported for unsealed objects).

Object IDs are Plasma's 20 bytes; in the store they are quiver IDs with a
prefix of their own, so Plasma objects and quiver's streams can share a
store without meeting.
"""

import os
import pickle
import secrets
import struct
import time
import uuid
from contextlib import contextmanager

import pyarrow as pa

from . import _quiver

__all__ = [
    "ObjectID",
    "ObjectNotAvailable",
    "PlasmaBuffer",
    "PlasmaClient",
    "PlasmaObjectExists",
    "PlasmaObjectNotFound",
    "PlasmaStoreFull",
    "connect",
    "start_plasma_store",
]

# Plasma's objects are quiver IDs of kind "plasma": b"P", the 20 bytes,
# three zero bytes. The store's settings are of kind "plasma_settings" (b"p"),
# by name. The kinds are the core's (quiver::IdKind): no other ID has them.
_PICKLED = b"QVPLPK05"  # the metadata of objects `put` wrote
_CAPACITY = _quiver.ObjectId.with_kind("plasma_settings", b"capacity".ljust(23, b"\0"))  # the requested capacity


# Each is also a pyarrow.lib.ArrowException, as Plasma's were, so existing
# `except pa.lib.ArrowException` handlers still catch them.
class PlasmaObjectExists(_quiver.AlreadyExists, pa.lib.ArrowException):
    """An object with this ID exists already."""


class PlasmaObjectNotFound(_quiver.NotFound, pa.lib.ArrowException):
    """No object with this ID (or not one this client is creating)."""


class PlasmaStoreFull(_quiver.StoreFull, pa.lib.ArrowException):
    """The store has no room for the object (after evicting what it could)."""


class PlasmaObjectCorrupt(_quiver.Corrupted, pa.lib.ArrowInvalid):
    """An object tagged as a pickled value whose bytes are not one."""


class ObjectNotAvailable:
    """What ``get`` returns (this class itself, as Plasma did) for an object
    that was not there in time."""

PlasmaBuffer = pa.Buffer


class ObjectID:
    """A 20-byte object ID, as Plasma's."""

    __slots__ = ("_bytes",)

    def __init__(self, object_id):
        if not isinstance(object_id, bytes) or len(object_id) != 20:
            raise ValueError(f"an ObjectID is 20 bytes, not {object_id!r}")
        self._bytes = object_id

    @staticmethod
    def from_random():
        """A random ID (from the OS's random source)."""
        return ObjectID(secrets.token_bytes(20))

    def binary(self):
        """The 20 bytes."""
        return self._bytes

    def __eq__(self, other):
        return isinstance(other, ObjectID) and other._bytes == self._bytes

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self._bytes)

    def __repr__(self):
        return f"ObjectID({self._bytes.hex()})"

    def __reduce__(self):
        return ObjectID, (self._bytes,)

    def _quiver(self):
        return _quiver.ObjectId.with_kind("plasma", self._bytes + b"\0\0\0")


def _of(quiver_id):
    """The Plasma ID of a quiver ID of kind "plasma" (else None)."""
    if quiver_id.kind != "plasma":
        return None
    raw = bytes(quiver_id)
    return ObjectID(raw[1:21]) if raw[21:] == b"\0\0\0" else None


def _timeout(timeout_ms):
    """Plasma's milliseconds (-1: for ever) as quiver's seconds (None: for ever)."""
    return None if timeout_ms is None or timeout_ms < 0 else timeout_ms / 1000.0


class PlasmaClient:
    """A connection to a store: objects by 20-byte ID, as Plasma's client."""

    def __init__(self, store):
        self._store = store
        self._building = {}  # ObjectID -> (ObjectBuilder, create time)
        self._constructed = {}  # ObjectID -> (create time, seal time), for list()

    # ---- creating ----

    def create(self, object_id, data_size, metadata=b""):
        """Creates an object of ``data_size`` bytes and returns a writable
        buffer into it (the shared memory itself); fill it, then ``seal``."""
        try:
            builder = self._store.create_object(object_id._quiver(), data_size, bytes(metadata))
        except _quiver.AlreadyExists as e:
            raise PlasmaObjectExists(str(e)) from None
        except _quiver.StoreFull as e:
            raise PlasmaStoreFull(str(e)) from None
        self._building[object_id] = (builder, time.time())
        return pa.py_buffer(builder)

    def create_and_seal(self, object_id, data, metadata=b""):
        """Creates, fills and seals an object in one call."""
        data = memoryview(data).cast("B")
        builder = self._create_builder(object_id, data.nbytes, bytes(metadata or b""))
        with builder:  # sealed at the end, or aborted if the copy fails
            with memoryview(builder) as target:
                target[:] = data

    def seal(self, object_id):
        """Makes the object immutable and visible to every client. Buffers
        from ``create`` may still be held; the object stays in memory until
        they are freed (do not write through them any more)."""
        entry = self._building.pop(object_id, None)
        if entry is None:
            raise PlasmaObjectNotFound(f"{object_id} is not being created by this client")
        builder, created = entry
        builder.seal_keeping_buffers()
        if len(self._constructed) >= 100_000:
            self._constructed.clear()  # bounded: only list()'s construct_duration uses it
        self._constructed[object_id] = (created, time.time())

    def abort(self, object_id):
        """Gives up an object being created: as if it never was. Buffers from
        ``create`` must be released first (``del buf``), since its memory is
        freed now."""
        entry = self._building.get(object_id)
        if entry is None:
            raise PlasmaObjectNotFound(f"{object_id} is not being created by this client")
        entry[0].abort()  # BufferError while a buffer of it is open
        del self._building[object_id]

    def put_raw_buffer(self, value, object_id=None, metadata=None, memcopy_threads=6):
        """Stores the bytes of ``value`` (anything with the buffer protocol)
        as an object; returns its ID."""
        object_id = object_id or ObjectID.from_random()
        data = memoryview(value).cast("B")
        builder = self._create_builder(object_id, data.nbytes, bytes(metadata or b""))
        with builder:
            with memoryview(builder) as target:
                target[:] = data
        return object_id

    def put(self, value, object_id=None, memcopy_threads=6, serialization_context=None):
        """Stores any picklable value (pickle protocol 5: NumPy arrays and
        other buffers go out of band, copied once into the store and read
        back without a copy); returns its ID."""
        if serialization_context is not None:
            raise NotImplementedError("serialization contexts went with pyarrow.serialize; values are pickled")
        object_id = object_id or ObjectID.from_random()
        buffers = []
        body = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        views = [b.raw() for b in buffers]
        # Layout: u32 count, then (u64 offset, u64 length) per part, then the
        # pickle and each buffer, each at a multiple of 64 bytes.
        parts = [memoryview(body)] + views
        header = 4 + 16 * len(parts)
        at, table = _round(header), []
        for part in parts:
            table.append((at, part.nbytes))
            at = _round(at + part.nbytes)
        builder = self._create_builder(object_id, at, _PICKLED)
        with builder:
            with memoryview(builder) as target:
                target[:header] = struct.pack(f"<I{2 * len(parts)}Q", len(parts), *[x for pair in table for x in pair])
                for (offset, length), part in zip(table, parts):
                    target[offset : offset + length] = part.cast("B")
        return object_id

    def _create_builder(self, object_id, size, metadata):
        try:
            return self._store.create_object(object_id._quiver(), size, metadata)
        except _quiver.AlreadyExists as e:
            raise PlasmaObjectExists(str(e)) from None
        except _quiver.StoreFull as e:
            raise PlasmaStoreFull(str(e)) from None

    # ---- reading ----

    def get_buffers(self, object_ids, timeout_ms=-1, with_meta=False):
        """The objects' data as read-only pyarrow buffers (the shared memory
        itself), waiting up to ``timeout_ms`` milliseconds in all (-1: for
        ever); ``None`` for each one not sealed in time. With ``with_meta``,
        a ``(metadata, data)`` pair each, the metadata as ``bytes`` (as
        Plasma gave it)."""
        views = self._store.get_many([o._quiver() for o in object_ids], _timeout(timeout_ms))
        if not with_meta:
            return [None if v is None else pa.py_buffer(v) for v in views]
        return [(None, None) if v is None else (v.metadata, pa.py_buffer(v)) for v in views]

    def get_metadata(self, object_ids, timeout_ms=-1):
        """The objects' metadata as pyarrow buffers (``None`` if not there in time)."""
        pairs = self.get_buffers(object_ids, timeout_ms, with_meta=True)
        return [None if meta is None else pa.py_buffer(meta) for meta, _ in pairs]

    def get(self, object_ids, timeout_ms=-1, serialization_context=None):
        """The values ``put`` stored (``ObjectNotAvailable`` for each one not
        there in time; other objects come back as their buffer). One ID gives
        one value, a list a list."""
        if serialization_context is not None:
            raise NotImplementedError("serialization contexts went with pyarrow.serialize; values are pickled")
        single = isinstance(object_ids, ObjectID)
        ids = [object_ids] if single else list(object_ids)
        values = []
        for meta, data in self.get_buffers(ids, timeout_ms, with_meta=True):
            if data is None:
                values.append(ObjectNotAvailable)  # the class, as Plasma returned
            elif meta == _PICKLED:
                values.append(_unpickle(data))
            else:
                values.append(data)
        return values[0] if single else values

    def contains(self, object_id):
        """Whether the object exists and is sealed."""
        return self._store.contains(object_id._quiver())

    def list(self):
        """Every Plasma object in the store: a dict of ID to its
        ``data_size``, ``metadata_size``, ``ref_count``, ``create_time``,
        ``construct_duration`` and ``state`` (``"created"`` or ``"sealed"``)."""
        now = time.time()
        out = {}
        listed = set()
        for info in self._store.list():
            object_id = _of(info["id"])
            if object_id is None:
                continue
            listed.add(object_id)
            age = info["age"]["secs"] + info["age"]["nanos"] / 1e9
            sealed = info["state"] == "sealed"
            created, sealed_at = self._constructed.get(object_id, (now - age, None))
            out[object_id] = {
                "data_size": info["data_size"],
                "metadata_size": info["metadata_size"],
                "ref_count": info["references"],
                "create_time": created,
                "construct_duration": (sealed_at - created) if (sealed and sealed_at) else -1,
                "state": "sealed" if sealed else "created",
            }
        # Forget the construction times of objects gone (deleted or evicted).
        for gone in set(self._constructed) - listed:
            del self._constructed[gone]
        return out

    # ---- removing ----

    def delete(self, object_ids):
        """Deletes sealed objects (missing ones are ignored, as Plasma did);
        each one's memory is freed once no buffer holds it."""
        for object_id in object_ids:
            self._constructed.pop(object_id, None)
        self._store.delete_many([object_id._quiver() for object_id in object_ids])

    def evict(self, num_bytes):
        """Evicts least recently used objects that nobody holds until
        ``num_bytes`` are freed (or none is left); returns the bytes freed."""
        return self._store.evict(num_bytes)

    def release(self, object_id):
        """Nothing to do: a buffer holds its object until it is freed."""

    def store_capacity(self):
        """The bytes the store was made to hold."""
        view = self._store.get(_CAPACITY)
        if view is not None:
            return struct.unpack("<Q", view.to_bytes())[0]
        return self._store.stats()["capacity"]

    def hash(self, object_id):
        raise NotImplementedError("object hashes are not kept: compare the buffers")

    def disconnect(self):
        """Closes this client (buffers it handed out stay valid)."""
        self._building.clear()
        self._store.close()

    # ---- what has no equivalent ----

    def subscribe(self):
        raise NotImplementedError("quiver has no notification socket: use a quiver stream (quiver.Stream) to hear of new data")

    def get_notification_socket(self):
        raise NotImplementedError("quiver has no notification socket: use a quiver stream (quiver.Stream)")

    def get_next_notification(self):
        raise NotImplementedError("quiver has no notification socket: use a quiver stream (quiver.Stream)")

    def decode_notifications(self, buf):
        raise NotImplementedError("quiver has no notification socket: use a quiver stream (quiver.Stream)")

    def to_capsule(self):
        raise NotImplementedError("there is no C++ client to hand over")

    def debug_string(self):
        return repr(self._store)


def _round(n):
    return (n + 63) // 64 * 64


def _unpickle(data):
    """The value `put` laid out in `data`, every length checked first."""
    size = data.size
    if size < 4:
        raise PlasmaObjectCorrupt("a pickled object shorter than its header")
    count = struct.unpack_from("<I", data, 0)[0]
    if not 1 <= count <= (size - 4) // 16:
        raise PlasmaObjectCorrupt(f"a pickled object claims {count} parts")
    table = struct.unpack_from(f"<{2 * count}Q", data, 4)
    parts = []
    for i in range(count):
        offset, length = table[2 * i], table[2 * i + 1]
        if offset > size or length > size - offset:
            raise PlasmaObjectCorrupt(f"part {i} of a pickled object lies outside it")
        parts.append(data.slice(offset, length))
    try:
        return pickle.loads(parts[0], buffers=parts[1:])
    except Exception as e:  # noqa: BLE001 (any unpickling failure is the same fault)
        raise PlasmaObjectCorrupt(f"a pickled object does not unpickle: {e}") from e


def connect(store_socket_name, manager_socket_name=None, release_delay=0, num_retries=-1):
    """Connects to the store ``store_socket_name``: a quiver store name (or
    a path to its file)."""
    try:
        if os.sep in store_socket_name:
            store = _quiver.Store.open(path=store_socket_name)
        else:
            store = _quiver.Store.open(store_socket_name)
    except (_quiver.NotFound, _quiver.NotAStore) as e:
        # What Plasma raised when nothing listened on the socket.
        raise OSError(f"could not connect to the store {store_socket_name!r}: {e}") from e
    return PlasmaClient(store)


class _StoreHandle:
    """What ``start_plasma_store`` yields where Plasma yielded the store's
    process: ``poll()`` is ``None`` while the store exists, and
    ``terminate()``/``kill()`` remove it."""

    def __init__(self, name):
        self._name = name

    def poll(self):
        return None if os.path.exists(f"/dev/shm/quiver-{self._name}") else 0

    def terminate(self):
        try:
            _quiver.Store.remove(self._name)
        except _quiver.NotFound:
            pass

    kill = terminate

    def wait(self, timeout=None):
        return self.poll()

    def send_signal(self, signal):
        self.terminate()


@contextmanager
def start_plasma_store(
    plasma_store_memory, use_valgrind=False, use_profiler=False, plasma_directory=None, use_hugepages=False,
    external_store=None,
):
    """Creates a store able to hold ``plasma_store_memory`` bytes and yields
    ``(name, handle)``: there is no daemon, so the handle stands for one
    (``poll()``, ``terminate()``). The store is removed at the end of the
    ``with`` block (a process killed inside it leaves the file: remove it
    with ``quiver rm``)."""
    if use_hugepages or external_store or plasma_directory or use_valgrind or use_profiler:
        raise NotImplementedError("huge pages, external stores, other directories and valgrind have no equivalent")
    name = f"plasma-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    store = _quiver.Store.create(name, capacity=plasma_store_memory)
    try:
        # What was asked for, for store_capacity() (the arena is rounded up).
        with store.create_object(_CAPACITY, 8, pinned=True) as record:
            record.write(struct.pack("<Q", plasma_store_memory))
        yield name, _StoreHandle(name)
    finally:
        store.close()
        try:
            _quiver.Store.remove(name)
        except _quiver.NotFound:
            pass
