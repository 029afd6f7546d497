"""quiver.plasma against the behaviours of Plasma's own test suite
(pyarrow 11's test_plasma.py), written anew: create, seal, get with
timeouts, metadata, buffer lifetime, store full, eviction order, contains,
list, client death during get, many clients."""

import pickle
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import quiver
import quiver.plasma as plasma
from conftest import DEADLINE, read_line, start_python

MEMORY = 10 << 20


@pytest.fixture
def store():
    with plasma.start_plasma_store(plasma_store_memory=MEMORY) as (name, handle):
        assert handle.poll() is None
        yield name


@pytest.fixture
def client(store):
    c = plasma.connect(store)
    yield c
    c.disconnect()


def oid():
    return plasma.ObjectID.from_random()


def test_object_ids():
    a = oid()
    assert len(a.binary()) == 20 and a == plasma.ObjectID(a.binary()) and a != oid()
    assert hash(a) == hash(plasma.ObjectID(a.binary()))
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(ValueError):
        plasma.ObjectID(b"short")
    cmd = "import quiver.plasma as p; print(p.ObjectID.from_random())"
    first, second = (subprocess.check_output([sys.executable, "-c", cmd]) for _ in range(2))
    assert first != second


def test_ids_in_the_store_keep_their_bytes(store, client):
    """Plasma's IDs are quiver IDs of kind "plasma" and the capacity record
    one of kind "plasma_settings": the bytes stores were written with
    before the kinds had names, so those stores still read."""
    object_id = oid()
    client.create_and_seal(object_id, b"data")
    old = b"P" + object_id.binary() + b"\0\0\0"
    with quiver.Store.open(store) as raw:
        assert raw.contains(quiver.ObjectId(old))
        assert quiver.ObjectId(old).kind == "plasma"
        capacity = raw.get(quiver.ObjectId(b"p" + b"capacity".ljust(23, b"\0")))
        assert capacity is not None and capacity.to_bytes() == MEMORY.to_bytes(8, "little")
        # An object stored under the old bytes directly is a Plasma object.
        written = oid()
        raw.put(quiver.ObjectId(b"P" + written.binary() + b"\0\0\0"), b"old")
        raw.put(quiver.ObjectId(b"P" + bytes(20) + b"\0\0\1"), b"not plasma's")  # not 3 zero bytes
        raw.put(quiver.ObjectId(b"Q" + bytes(23)), b"not plasma's")
    assert client.get_buffers([written])[0].to_pybytes() == b"old"
    assert set(client.list()) == {object_id, written}
    assert client.store_capacity() == MEMORY


def test_create_seal_get_with_metadata(client):
    for length in (0, 1, 50, 999):
        object_id, metadata = oid(), bytes(range(length % 256))[: length % 7]
        buf = client.create(object_id, length, metadata)
        assert buf.is_mutable and buf.size == length
        view = memoryview(buf).cast("B")
        for i in range(length):
            view[i] = i % 256
        del view
        client.seal(object_id)
        [data] = client.get_buffers([object_id])
        assert data.to_pybytes() == bytes(i % 256 for i in range(length))
        assert client.get_metadata([object_id])[0].to_pybytes() == metadata
        [(meta, data)] = client.get_buffers([object_id], with_meta=True)
        assert meta == metadata and data.size == length


def test_errors_are_what_plasma_code_catches(client):
    object_id = oid()
    client.create_and_seal(object_id, b"x")
    with pytest.raises(pa.lib.ArrowException):
        client.create(object_id, 1)
    with pytest.raises(pa.lib.ArrowException):
        client.create(oid(), MEMORY * 2)
    with pytest.raises(OSError):
        plasma.connect("no-such-plasma-store")
    # A failed copy leaves nothing behind: the ID is free again.
    other = oid()
    with pytest.raises(Exception):
        client.create_and_seal(other, object())
    assert other not in client.list()
    client.create_and_seal(other, __import__("array").array("i", [1, 2, 3]))
    assert client.get_buffers([other])[0].size == 12
    # delete passes over unsealed and missing IDs and deletes the rest.
    unsealed, last = oid(), oid()
    client.create(unsealed, 4)
    client.create_and_seal(last, b"z")
    client.delete([object_id, unsealed, oid(), last])
    assert not client.contains(object_id) and not client.contains(last)
    # A corrupt pickled object is one clear error, never a crash.
    bad = oid()
    client.create_and_seal(bad, b"\xff" * 64, b"QVPLPK05")
    with pytest.raises(plasma.PlasmaObjectCorrupt):
        client.get(bad)
    assert client.get([oid()], timeout_ms=0) == [plasma.ObjectNotAvailable]


def test_create_existing_and_create_and_seal(client):
    object_id = oid()
    client.create(object_id, 10)
    with pytest.raises(plasma.PlasmaObjectExists):
        client.create(object_id, 10)
    other = oid()
    client.create_and_seal(other, b"data", b"meta")
    with pytest.raises(plasma.PlasmaObjectExists):
        client.create_and_seal(other, b"a", b"b")
    [(meta, data)] = client.get_buffers([other], with_meta=True)
    assert (meta, data.to_pybytes()) == (b"meta", b"data")


def test_get_times_out_and_an_unsealed_object_is_not_there(client):
    missing = [oid() for _ in range(20)]
    for timeout in (0, 10, 100):
        started = time.monotonic()
        assert client.get_buffers(missing, timeout_ms=timeout) == [None] * 20
        assert time.monotonic() - started >= timeout / 1000 * 0.9
    present = missing[::2]
    for object_id in present:
        client.create_and_seal(object_id, b"x" * 100)
    got = client.get_buffers(missing, timeout_ms=10)
    assert [g is not None for g in got] == [i % 2 == 0 for i in range(20)]
    unsealed = oid()
    client.create(unsealed, 10, b"metadata")
    assert client.get_buffers([unsealed], timeout_ms=0, with_meta=True)[0][1] is None
    assert client.get_buffers([unsealed], timeout_ms=1, with_meta=True)[0][1] is None
    client.seal(unsealed)
    assert client.get_buffers([unsealed], timeout_ms=0, with_meta=True)[0][1] is not None


def test_buffer_lifetime(client, store):
    batch = pa.record_batch([pa.array([1, 12, 23, 3, 34], pa.int32())], names=["f"])
    sink = pa.MockOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    object_id = oid()
    buf = client.create(object_id, sink.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buf), batch.schema) as w:
        w.write_batch(batch)
    client.seal(object_id)
    del buf
    other = plasma.connect(store)
    [data] = other.get_buffers([object_id])
    read = pa.ipc.open_stream(data).read_next_batch()
    del data
    client.delete([object_id])
    assert read.equals(batch), "the batch still holds its object's memory"


def test_put_and_get(client):
    for value in (["hello", "world", 3, 1.0], None, "hello", {"a": b"bytes"}):
        object_id = client.put(value)
        assert client.get([object_id]) == [value]
        assert client.get(object_id) == value
    assert client.get([oid()], timeout_ms=0) == [plasma.ObjectNotAvailable]
    array = pa.array(range(1000), pa.int64())
    object_id = client.put(array)
    back = client.get(object_id)
    assert back.equals(array)
    np = pytest.importorskip("numpy")
    object_id = client.put(np.arange(10.0))
    got = client.get(object_id)
    assert (got == np.arange(10.0)).all() and not got.flags.writeable, "read back in place, read-only"


def test_put_and_get_raw_buffer(client):
    for value in (b"Bytes Test", 10 * b"\x00"):
        object_id = client.put_raw_buffer(value, metadata=b"RAW")
        [(meta, data)] = client.get_buffers([object_id], with_meta=True)
        assert meta == b"RAW" and data.to_pybytes() == value
    [(meta, data)] = client.get_buffers([oid()], timeout_ms=0, with_meta=True)
    assert meta is None and data is None


def test_store_full(store):
    client = plasma.connect(store)
    percent = MEMORY // 100
    held = [client.create(oid(), 50 * percent)]
    with pytest.raises(plasma.PlasmaStoreFull):
        client.create(oid(), 50 * percent + 9000)
    client.create(oid(), 20 * percent)  # dropped at once: aborted, freed
    held.append(client.create(oid(), 20 * percent))
    with pytest.raises(plasma.PlasmaStoreFull):
        client.create(oid(), 30 * percent + 9000)
    assert isinstance(plasma.PlasmaStoreFull("x"), quiver.StoreFull)


def test_contains_delete_and_illegal_access(client):
    real = [oid() for _ in range(20)]
    for object_id in real:
        assert not client.contains(object_id)
        client.create(object_id, 100)
        client.seal(object_id)
        assert client.contains(object_id)
    assert not any(client.contains(oid()) for _ in range(20))
    buf = client.create(oid(), 1000)
    with pytest.raises(IndexError):
        buf[1000]
    del buf
    [data] = client.get_buffers([real[0]])
    with pytest.raises(TypeError):
        memoryview(data)[0] = 1
    client.delete(real + [oid()])
    assert not any(client.contains(o) for o in real)


def test_evict_takes_least_recently_released_first(client):
    a = oid()
    b1 = client.create(a, 1000)
    client.seal(a)
    del b1
    assert client.evict(1) == 1000
    b, c = oid(), oid()
    b2 = client.create(b, 999)
    b3 = client.create(c, 998)
    client.seal(c)
    del b3
    assert client.evict(1000) == 998, "the unsealed one cannot go"
    d = oid()
    b4 = client.create(d, 997)
    client.seal(d)
    del b4
    client.seal(b)
    del b2
    assert client.evict(1) == 997
    assert client.evict(1) == 999
    ids = [oid(), oid(), oid()]
    bufs = [client.create(i, n) for i, n in zip(ids, (996, 995, 994))]
    for i in ids:
        client.seal(i)
    del bufs
    assert client.evict(2000) == 996 + 995 + 994


def test_lru_eviction_makes_room(store):
    client = plasma.connect(store)
    ids = [oid() for _ in range(20)]
    data = b"x" * (MEMORY // 10)
    for object_id in ids:
        client.create_and_seal(object_id, data)
        assert client.contains(object_id)
    assert not any(client.contains(i) for i in ids[:10]), "the oldest went to make room"
    assert all(client.get_buffers([i], timeout_ms=0)[0].to_pybytes() == data for i in ids[-8:])


def test_list_and_capacity(client):
    u = oid()
    client.create(u, 11, b"x" * 7)
    listed = client.list()
    assert (listed[u]["data_size"], listed[u]["metadata_size"], listed[u]["state"]) == (11, 7, "created")
    v = client.put(12345)
    held = client.get_buffers([v])
    assert client.list()[v]["ref_count"] == 1
    del held
    w, t1 = oid(), time.time()
    client.create(w, 3)
    time.sleep(0.2)
    client.seal(w)
    entry = client.list()[w]
    assert entry["state"] == "sealed" and abs(entry["create_time"] - t1) < 1.5
    assert 0.15 <= entry["construct_duration"] < 5
    assert client.store_capacity() == MEMORY
    with plasma.start_plasma_store(plasma_store_memory=10000) as (name, _):
        assert plasma.connect(name).store_capacity() == 10000


def test_what_has_no_equivalent_says_so(client):
    for call in (client.subscribe, client.get_notification_socket):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(NotImplementedError):
        with plasma.start_plasma_store(1 << 20, external_store="hashtable://test"):
            pass


WAITER = """
import sys, quiver.plasma as plasma
client = plasma.connect(sys.argv[1])
ids = [plasma.ObjectID(bytes.fromhex(h)) for h in sys.argv[2:]]
print("waiting", flush=True)
values = client.get(ids)
print(sum(values), flush=True)
"""


def test_client_death_during_get_and_a_blocked_get_of_many(store, client):
    object_id = oid()
    proc = start_python(WAITER, store, object_id.binary().hex())
    try:
        assert read_line(proc) == "waiting"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
    finally:
        proc.kill()
    client.put(1, object_id=object_id)
    assert client.contains(object_id) and not client.contains(oid())
    ids = [oid() for _ in range(10)]
    proc = start_python(WAITER, store, *[i.binary().hex() for i in ids])
    try:
        assert read_line(proc) == "waiting"
        for i in ids:
            client.put(1, object_id=i)
        assert read_line(proc) == "10"
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        proc.kill()


HOLDER = """
import sys, quiver.plasma as plasma
client = plasma.connect(sys.argv[1])
[buf] = client.get_buffers([plasma.ObjectID(bytes.fromhex(sys.argv[2]))])
made = client.create(plasma.ObjectID(bytes.fromhex(sys.argv[3])), 1000)
print("holding", buf.size, flush=True)
sys.stdin.read()
"""


def test_a_client_killed_while_holding_buffers_gives_them_up(store, client):
    held, unsealed = oid(), oid()
    client.create_and_seal(held, b"y" * 5000)
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", HOLDER, store, held.binary().hex(), unsealed.binary().hex()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert read_line(proc) == "holding 5000"
        assert client.list()[held]["ref_count"] == 1
        assert client.evict(1 << 30) == 0, "held: nothing can be evicted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
    finally:
        proc.kill()
    client._store.recover_dead_clients()
    assert unsealed not in client.list(), "its unsealed object was aborted"
    assert client.evict(1 << 30) == 5000, "its reference was released"


def test_two_clients_in_two_processes(store, client):
    code = """
import sys, quiver.plasma as plasma
client = plasma.connect(sys.argv[1])
for i in range(50):
    client.put(i * i, object_id=plasma.ObjectID(i.to_bytes(20, "little")))
"""
    proc = start_python(code, store)
    got = client.get([plasma.ObjectID(i.to_bytes(20, "little")) for i in range(50)], timeout_ms=60000)
    assert got == [i * i for i in range(50)]
    assert proc.wait(timeout=DEADLINE) == 0
