"""Stores and objects: lifecycle, buffers into shared memory, timeouts,
errors."""

import threading
import time

import pyarrow as pa
import pytest

import quiver
from conftest import DEADLINE, start_python


def in_mapping(store, address):
    lo, hi = store.mapped_range()
    return lo <= address < hi


def test_create_open_remove_and_context_manager(name):
    with quiver.Store.create(name, capacity=1 << 20) as store:
        assert store.path.name == f"quiver-{name}"
        with pytest.raises(quiver.AlreadyExists):
            quiver.Store.create(name, capacity=1 << 20)
        other = quiver.Store.open(name)
        store.put(quiver.ObjectId.sequential(1, 0, 0), b"hello")
        assert other.contains(quiver.ObjectId.sequential(1, 0, 0))
    with pytest.raises(quiver.Error, match="closed"):
        store.stats()
    quiver.Store.remove(name)
    with pytest.raises(quiver.NotFound):
        quiver.Store.open(name)


def test_errors_form_a_hierarchy():
    for exc in (quiver.InvalidArgument, quiver.NotFound, quiver.StoreFull, quiver.NotAStore, quiver.CorruptBatch,
                quiver.StreamClosed, quiver.EndOfStream, quiver.LockTimeout, quiver.StoreGone):
        assert issubclass(exc, quiver.Error)
    assert issubclass(quiver.InvalidArgument, ValueError)
    with pytest.raises(ValueError):
        quiver.Store.create("../escape", capacity=1 << 20)
    with pytest.raises(quiver.NotAStore):
        quiver.Store.open(path="/dev/null")


def test_object_ids():
    a = quiver.ObjectId.sequential(7, 2, 99)
    assert a == quiver.ObjectId.sequential(7, 2, 99) and hash(a) == hash(quiver.ObjectId.sequential(7, 2, 99))
    assert a.sequential_parts() == (7, 2, 99)
    assert len(bytes(a)) == 24 and quiver.ObjectId(bytes(a)) == a
    assert quiver.ObjectId.parse(str(a)) == a
    assert quiver.ObjectId.random() != quiver.ObjectId.random()
    assert quiver.ObjectId.random().sequential_parts() is None
    with pytest.raises(ValueError):
        quiver.ObjectId(b"short")


def test_id_kinds():
    """`with_kind` puts the kind's byte (the core's IdKind) before 23 bytes
    given, and `kind` names it back."""
    rest = bytes(range(23))
    kinds = {
        "sequential": b"S", "random": b"R", "schema": b"F", "shared_model": b"M",
        "kafka_status": b"K", "plasma": b"P", "plasma_settings": b"p",
    }  # fmt: skip
    for kind, byte in kinds.items():
        made = quiver.ObjectId.with_kind(kind, rest)
        assert bytes(made) == byte + rest and made.kind == kind
    assert quiver.ObjectId.sequential(1, 2, 3).kind == "sequential"
    assert quiver.ObjectId.random().kind == "random"
    assert quiver.ObjectId(b"x" * 24).kind is None
    for kind, rest in [("Plasma", bytes(23)), ("nope", bytes(23)), ("", bytes(23)), ("plasma", bytes(22)), ("plasma", bytes(24))]:
        with pytest.raises(ValueError):
            quiver.ObjectId.with_kind(kind, rest)
    with pytest.raises(quiver.InvalidArgument, match="plasma_settings"):
        quiver.ObjectId.with_kind("bad", bytes(23))  # the message lists the kinds


def test_objects_are_written_and_read_in_place(store):
    oid = quiver.ObjectId.random()
    builder = store.create_object(oid, 16, b"meta")
    assert len(builder) == 16 and builder.metadata == b"meta"
    view = memoryview(builder)
    assert not view.readonly and in_mapping(store, pa.py_buffer(builder).address)
    view[:] = bytes(range(16))
    # A writable view must not outlive the seal.
    with pytest.raises(BufferError):
        builder.seal()
    del view
    assert not store.contains(oid)
    builder.seal()
    assert store.contains(oid)
    got = store.get(oid)
    assert bytes(memoryview(got)) == bytes(range(16)) and got.metadata == b"meta"
    buf = pa.py_buffer(got)
    assert in_mapping(store, buf.address), "a view is the shared memory itself"
    assert memoryview(got).readonly
    with pytest.raises(TypeError):
        memoryview(got)[0:1] = b"x"  # read-only
    assert [o["id"] for o in store.list()] == [oid]


def test_context_manager_seals_or_aborts(store):
    ok, bad = quiver.ObjectId.random(), quiver.ObjectId.random()
    with store.create_object(ok, 3) as b:
        b.write(b"abc")
    assert store.get(ok).to_bytes() == b"abc"
    with pytest.raises(RuntimeError):
        with store.create_object(bad, 3) as b:
            raise RuntimeError("failed while filling")
    assert not store.contains(bad)
    # Aborted: the ID is free again.
    store.put(bad, b"xyz")
    assert store.get(bad).to_bytes() == b"xyz"
    with pytest.raises(quiver.AlreadyExists):
        store.create_object(ok, 1)


def test_get_waits_for_the_seal_and_times_out(store):
    oid = quiver.ObjectId.random()
    started = time.monotonic()
    assert store.get(oid, timeout=0.2) is None
    assert 0.15 < time.monotonic() - started < 5
    assert store.get(oid) is None  # timeout 0: a look
    builder = store.create_object(oid, 4)

    def seal_later():
        time.sleep(0.2)
        builder.write(b"late")
        builder.seal()

    t = threading.Thread(target=seal_later)
    t.start()
    got = store.get(oid, timeout=30)
    t.join()
    assert got.to_bytes() == b"late"
    many = store.get_many([oid, quiver.ObjectId.random()], timeout=0.1)
    assert many[0].to_bytes() == b"late" and many[1] is None


def test_a_view_keeps_a_deleted_object(store):
    oid = quiver.ObjectId.random()
    store.put(oid, b"kept")
    view = store.get(oid)
    buf = pa.py_buffer(view)
    store.delete(oid)
    assert not store.contains(oid)
    del view
    # The buffer still holds the object: its bytes are intact.
    assert buf.to_pybytes() == b"kept"
    before = store.stats()["payload"]
    del buf
    assert store.stats()["payload"] < before, "the last buffer gave the object up"


def test_a_full_store_says_so(name):
    with quiver.Store.create(name, capacity=1 << 20) as store:
        with pytest.raises(quiver.StoreFull):
            store.create_object(quiver.ObjectId.random(), 2 << 20)


def test_stats_and_list_stores(store, name):
    stats = store.stats()
    assert stats["capacity"] >= 16 << 20 and stats["objects"] == 0
    listed = [s for s in quiver.Store.list_stores() if s["name"] == name]
    assert listed and listed[0]["live_clients"] == 1


def test_cells_are_shared_between_processes_and_atomic(store, name):
    cells_id = quiver.ObjectId.named("torch_steps", "s/g", 2, b"token\0\0\0")
    assert cells_id.kind == "torch_steps" and cells_id.is_named("torch_steps", "s/g")
    assert not cells_id.is_named("torch_steps", "s/h")
    cells = store.create_cells(cells_id, 3, b"meta")
    assert len(cells) == 3 and cells.load_all() == [0, 0, 0] and cells.metadata == b"meta"
    with pytest.raises(quiver.AlreadyExists):
        store.create_cells(cells_id, 3)
    with pytest.raises(IndexError, match="cell 3 of 3"):
        cells.load(3)
    # Two processes add 1000 each to cell 0: no update is lost.
    code = (
        "import sys, quiver\n"
        "s = quiver.Store.open(sys.argv[1])\n"
        "c = s.get_cells(quiver.ObjectId.parse(sys.argv[2]))\n"
        "for _ in range(1000): c.fetch_add(0, 1)\n"
        "c.fetch_max(1, 7)\n"
    )
    children = [start_python(code, name, str(cells_id)) for _ in range(2)]
    for child in children:
        child.wait(timeout=DEADLINE)
        assert child.returncode == 0, child.stderr.read()
    assert cells.load(0) == 2000 and cells.load(1) == 7
    assert cells.compare_exchange(2, 1, 5) == (False, 0)
    assert cells.compare_exchange(2, 0, 5) == (True, 0) and store.get_cells(cells_id).load(2) == 5
    # Never read as bytes; gone once deleted and every handle dropped.
    with pytest.raises(quiver.Error, match="shared cells"):
        store.get(cells_id)
    store.delete(cells_id)
    del cells
    assert store.get_cells(cells_id) is None
    assert store.get_cells(quiver.ObjectId.random()) is None
