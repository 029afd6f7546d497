"""quiver.torch: tensors over the store's memory, and the Loader that makes
the training process a member of a shard-managed group (real torch, CPU)."""

import gc
import signal
import time

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

import quiver  # noqa: E402
import quiver.torch as qt  # noqa: E402
from conftest import DEADLINE, read_line, start_python  # noqa: E402

NUMERIC = [
    ("i8", pa.int8(), torch.int8),
    ("i16", pa.int16(), torch.int16),
    ("i32", pa.int32(), torch.int32),
    ("i64", pa.int64(), torch.int64),
    ("u8", pa.uint8(), torch.uint8),
    ("f16", pa.float16(), torch.float16),
    ("f32", pa.float32(), torch.float32),
    ("f64", pa.float64(), torch.float64),
]
SCHEMA = pa.schema([(name, kind) for name, kind, _ in NUMERIC])


# What each type holds exactly, for the values the tests write.
WRAP = {pa.int8(): 100, pa.uint8(): 100, pa.float16(): 1000, pa.int16(): 30000}


def numeric_batch(first, rows):
    """`rows` rows of every numeric type, the value of row r being first + r
    (modulo what the narrow types hold)."""
    columns = []
    for _, kind, _ in NUMERIC:
        values = [(first + r) % WRAP.get(kind, 1 << 62) for r in range(rows)]
        if kind == pa.float16():
            columns.append(pa.array(values, pa.float32()).cast(kind))
        else:
            columns.append(pa.array(values, type=kind))
    return pa.record_batch(columns, schema=SCHEMA)


def filled_stream(store, batches, rows=64, partitions=1):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=partitions, groups=["g"])
    producer = stream.producer()
    for b in range(batches):
        producer.append(numeric_batch(b * rows, rows))
    producer.close()
    return stream


def inside(store, tensor):
    start, end = store.mapped_range()
    return start <= tensor.data_ptr() and tensor.data_ptr() + tensor.numel() * tensor.element_size() <= end


def test_every_numeric_column_is_a_tensor_over_the_store_object(store):
    stream = filled_stream(store, 1)
    with qt.Loader(stream, "g", timeout=10) as loader:
        (tensors,) = list(loader)
    assert list(tensors) == [name for name, _, _ in NUMERIC]
    for name, _, dtype in NUMERIC:
        t = tensors[name]
        assert t.dtype == dtype and t.shape == (64,), name
        assert inside(store, t), f"{name} was copied out of the store"
        assert t[:5].tolist() == [0, 1, 2, 3, 4], name


def test_a_tensor_keeps_its_object_alive(store):
    stream = filled_stream(store, 1)
    consumer = stream.consumer("g")
    batch = next(iter(consumer))
    tensor = qt.to_tensors(batch, ["f64"])["f64"]
    pointer = tensor.data_ptr()
    consumer.commit()
    del batch, consumer
    gc.collect()
    stream.enforce_retention()
    # The batch object is referenced through the tensor alone: retention
    # may not free it, and its bytes are still the batch's.
    held = [o for o in store.list() if o["references"] > 0]
    assert held, "the object behind a live tensor was released"
    assert tensor.data_ptr() == pointer and tensor[:3].tolist() == [0.0, 1.0, 2.0]
    del tensor
    gc.collect()
    stream.enforce_retention()
    assert not [o for o in store.list() if o["references"] > 0], "the tensor's reference outlived it"


def test_what_is_copied_and_what_is_refused(store):
    schema = pa.schema([("x", pa.float32()), ("n", pa.float64()), ("b", pa.bool_()), ("s", pa.string())])
    batch = pa.record_batch(
        [
            pa.array([1.0, 2.0, 3.0], pa.float32()),
            pa.array([1.0, None, 3.0]),
            pa.array([True, False, True]),
            pa.array(["a", "b", "c"]),
        ],
        schema=schema,
    )
    stream = quiver.Stream.create(store, "mixed", schema, groups=["g"])
    stream.producer().append(batch)
    batch = next(iter(stream.consumer("g")))
    with pytest.raises(ValueError, match="'n' has 1 nulls"):
        qt.to_tensors(batch, ["n"])
    with pytest.raises(TypeError, match="'s' is string"):
        qt.to_tensors(batch, ["s"])
    filled = qt.to_tensors(batch, ["x", "n"], fill_null=-1.0)
    assert filled["n"].tolist() == [1.0, -1.0, 3.0] and not inside(store, filled["n"]), "nulls filled: a copy"
    assert inside(store, filled["x"]), "a column without nulls stays in place"
    assert qt.to_tensors(batch, ["b"])["b"].tolist() == [True, False, True]
    converted = qt.to_tensors(batch, ["x"], dtypes={"x": torch.float64})["x"]
    assert converted.dtype == torch.float64 and not inside(store, converted), "a conversion is a copy"
    x, b = qt.to_tensors(batch, ["x", "b"], as_tuple=True)
    assert x.dtype == torch.float32 and b.dtype == torch.bool
    with pytest.raises(KeyError, match="no column 'zz'"):
        qt.to_tensors(batch, ["zz"])


def test_columns_stack_into_one_2d_tensor(store):
    stream = filled_stream(store, 1, rows=8)
    batch = next(iter(stream.consumer("g")))
    out = qt.to_tensors(batch, ["i64"], stack={"features": ["f32", "f64", "i32"]})
    assert list(out) == ["i64", "features"]
    features = out["features"]
    assert features.shape == (8, 3) and features.dtype == torch.float64
    assert features[2].tolist() == [2.0, 2.0, 2.0]
    assert inside(store, out["i64"]) and not inside(store, features)


def test_the_loader_reads_every_row_once_and_reports_every_shard(store):
    stream = filled_stream(store, 40, rows=16, partitions=2)
    seen = []
    with qt.Loader(stream, "g", ["i64"], shard_size=4, timeout=10) as loader:
        for tensors in loader:
            seen.extend(tensors["i64"].tolist())
        stats = loader.manager.stats()
    assert sorted(seen) == list(range(40 * 16))
    assert stats["committed"] == [20, 20]


def test_leaving_the_loop_mid_shard_gives_the_shard_back(store):
    stream = filled_stream(store, 8, rows=4)
    first = qt.Loader(stream, "g", ["i64"], shard_size=4, timeout=10)
    taken = []
    for tensors in first:
        taken.extend(tensors["i64"].tolist())
        break  # mid-shard: the generator closes and releases its shard
    second = qt.Loader(stream, "g", ["i64"], shard_size=4, timeout=10)
    rest = [v for tensors in second for v in tensors["i64"].tolist()]
    first.close()
    second.close()
    assert sorted(rest) == list(range(32)), "the released shard was read again, whole"
    assert taken == [0, 1, 2, 3]


def test_a_loader_times_out_when_no_shard_comes(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    with qt.Loader(stream, "g", timeout=0.2) as loader:
        with pytest.raises(TimeoutError):
            next(iter(loader))


MEMBER = """
import sys, quiver, quiver.torch as qt
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
with qt.Loader(stream, "g", ["i64"], shard_size=2, timeout=30) as loader:
    rows = [v for t in loader for v in t["i64"].tolist()]
print(" ".join(map(str, rows)), flush=True)
"""


def test_training_processes_share_the_stream_through_their_loaders(store, name):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=2, groups=["g"])
    members = [start_python(MEMBER, name) for _ in range(2)]
    producer = stream.producer()
    for b in range(60):
        producer.append(numeric_batch(b * 10, 10))
    producer.close()
    rows = []
    for proc in members:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        rows.extend(int(v) for v in out.split())
    assert sorted(rows) == list(range(600)), "every row exactly once, among the two"


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_a_dataloader_over_the_stream_reads_every_row_once(store, name, workers):
    filled_stream(store, 48, rows=8, partitions=2)
    dataset = qt.StreamDataset(name, "s", "g", ["i64"], shard_size=2, timeout=30)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    rows = [v for tensors in loader for v in tensors["i64"].tolist()]
    assert sorted(rows) == list(range(48 * 8)), f"with {workers} workers"


KILLED_WORKER = """
import os, signal, sys, torch, quiver.torch as qt

def children():
    # This process's children, from /proc: the DataLoader's workers.
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid():
                found.append(int(entry))
    return sorted(found)

# A short lease, so the dead worker's shard comes back soon.
dataset = qt.StreamDataset(sys.argv[1], "s", "g", ["i64"], shard_size=3, lease=1.0, timeout=30)
rows, died = [], ""
try:
    for i, tensors in enumerate(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=3)):
        rows.extend(tensors["i64"].tolist())
        if i == 5:
            os.kill(children()[0], signal.SIGKILL)
except (RuntimeError, OSError, EOFError) as e:
    # torch says so (a RuntimeError), or its hand-over from the dying
    # worker breaks (the fd passing's connection reset).
    died = f"{type(e).__name__}: {e}"
print("died:", died, flush=True)
# Run again: what the dead worker held, and what nobody reached, is read.
for tensors in torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2):
    rows.extend(tensors["i64"].tolist())
print(" ".join(map(str, rows)), flush=True)
"""


def test_a_dataloader_worker_killed_mid_shard_loses_no_row(store, name):
    # In a process of its own: the DataLoader's handler of its workers'
    # deaths stays installed after the error, which is no place for pytest.
    filled_stream(store, 60, rows=4, partitions=1)
    proc = start_python(KILLED_WORKER, name)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    died, rows = out.splitlines()
    assert died.startswith("died: ") and len(died) > len("died: "), "the DataLoader saw its worker die"
    rows = [int(v) for v in rows.split()]
    assert set(rows) == set(range(240)), f"rows lost: {sorted(set(range(240)) - set(rows))}"


CTRL_C = """
import sys, quiver, quiver.torch as qt
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
loader = qt.Loader(stream, "g")
print("waiting", flush=True)
try:
    next(iter(loader))
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_waiting_loader(store, name):
    quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    proc = start_python(CTRL_C, name)
    assert read_line(proc) == "waiting"
    time.sleep(0.3)  # into the wait
    proc.send_signal(signal.SIGINT)
    assert read_line(proc) == "interrupted"
    assert proc.wait(timeout=DEADLINE) == 0
