"""quiver.torch: tensors over the store's memory, and the Loader that makes
the training process a member of a shard-managed group (real torch, CPU)."""

import gc
import os
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


# ---- ranks: every rank ends at the same step ----

DDP_RANK = """
import os, sys, time, torch, torch.distributed as dist
import quiver, quiver.torch as qt
dist.init_process_group("gloo")
rank = dist.get_rank()
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
rows, steps = [], 0
with qt.Loader(stream, "g", ["i64"], shard_size=int(sys.argv[2]), timeout=30) as loader:
    assert (loader.rank, loader.ranks) == (rank, dist.get_world_size())
    for tensors in loader:
        # The gradients' all-reduce: a rank missing from it hangs the others.
        total = torch.ones(1)
        dist.all_reduce(total)
        assert total.item() == dist.get_world_size()
        rows.extend(tensors["i64"].tolist())
        steps += 1
        if rank == 0 and steps % 3 == 0:
            time.sleep(0.01)  # ranks at different speeds
    dist.barrier()
# A file a rank: the ranks' stdout lines can interleave.
with open(os.path.join(sys.argv[3], f"rank{rank}"), "w") as f:
    f.write(f"rank {rank} steps {steps} rows {' '.join(map(str, rows))}")
dist.destroy_process_group()
"""


def torchrun(script, ranks, *args, timeout=120):
    """Runs `script` on `ranks` CPU ranks with torchrun (gloo), its last
    argument a directory where each rank writes its line; a hang fails the
    test at `timeout`. Returns each rank's line, by rank."""
    import subprocess
    import sys
    import tempfile as tf

    with tf.TemporaryDirectory() as out:
        script_path = os.path.join(out, "script.py")
        with open(script_path, "w") as f:
            f.write(script)
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", script_path]
            + [str(a) for a in args]
            + [out],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
        lines = {}
        for rank in range(ranks):
            with open(os.path.join(out, f"rank{rank}")) as f:
                lines[rank] = f.read()
    return lines


def parse_rank(line):
    words = line.split()
    return int(words[3]), [int(v) for v in words[5:]]


def leftover_rows(stream):
    """What a plain loader still finds in group g afterwards."""
    rows = []
    with qt.Loader(stream, "g", ["i64"], timeout=10, ranks=None) as loader:
        for tensors in loader:
            rows.extend(tensors["i64"].tolist())
    return rows


@pytest.mark.parametrize("ranks", [2, 3])
def test_ddp_ranks_on_uneven_data_end_at_the_same_step(store, name, ranks):
    # 47 batches of 2 rows in shards of 4: no even split across the ranks.
    stream = filled_stream(store, 47, rows=2)
    lines = torchrun(DDP_RANK, ranks, name, 4)
    steps = {rank: parse_rank(line)[0] for rank, line in lines.items()}
    assert len(set(steps.values())) == 1, f"ranks took different numbers of steps: {steps}"
    read = [row for line in lines.values() for row in parse_rank(line)[1]]
    assert len(read) == len(set(read)), "a row was read by two ranks"
    assert len(read) >= 2 * ranks * (47 // ranks - 4), f"the ranks stopped early: {steps}"
    # What did not fit the last common step is still there, uncommitted.
    rest = leftover_rows(stream)
    assert sorted(read + rest) == list(range(94))


RANK_PROCESS = """
import sys, quiver, quiver.torch as qt
rank, count, key = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
idle = float(sys.argv[8]) if len(sys.argv) > 8 else None
with qt.Loader(stream, sys.argv[5], ["i64"], shard_size=3, timeout=30, ranks=(rank, count, key),
               deterministic=sys.argv[6] == "1", idle=idle) as loader:
    for epoch in range(int(sys.argv[7])):
        seen = [t["i64"][0].item() for t in loader]
        print(f"rank {rank} epoch {epoch} " + " ".join(map(str, seen)), flush=True)
"""


def test_ranks_end_each_window_of_a_live_stream_at_a_common_step(store, name):
    # The producer pauses between two bursts: with `idle`, each pause ends
    # an epoch (a window), at the same step on both ranks, and the next
    # epoch goes on from there.
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    producer = stream.producer()
    for i in range(14):
        producer.append(numeric_batch(i, 1))
    procs = [start_python(RANK_PROCESS, name, rank, 2, "run", "g", 0, 2, 1.0) for rank in range(2)]
    first = [read_line(proc) for proc in procs]
    for i in range(14, 30):
        producer.append(numeric_batch(i, 1))
    producer.close()
    epochs = {0: [], 1: []}
    for rank, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, stderr
        for line in [first[rank]] + stdout.splitlines():
            epochs[int(line.split()[3])].append([int(v) for v in line.split()[4:]])
    for epoch, seen in epochs.items():
        assert len(seen[0]) == len(seen[1]), f"epoch {epoch}: {seen}"
    assert len(epochs[0][0]) >= 3 and len(epochs[1][0]) >= 3, epochs
    read = [v for seen in epochs.values() for rows in seen for v in rows]
    assert len(read) == len(set(read)), "a row was read twice"
    assert max(epochs[0][0] + epochs[0][1]) < 14, "the first window ends where the producer paused"
    assert sorted(read + leftover_rows(stream)) == list(range(30))


def test_deterministic_ranks_see_the_same_batches_in_the_same_order_every_run(store, name):
    # Two partitions written in a scrambled order while the ranks read.
    schema = SCHEMA
    stream = quiver.Stream.create(store, "s", schema, partitions=2, groups=["a", "b", "c"])
    producer = stream.producer()
    runs = []
    for group in ("a", "b", "c"):
        procs = [start_python(RANK_PROCESS, name, rank, 2, group, group, 1, 1) for rank in range(2)]
        if group == "a":
            order = [(i * 7) % 30 for i in range(30)]
            for i in order:
                producer.append_to(i % 2, numeric_batch(i, 1))
                time.sleep(0.002)
            stream.close()
        seen = {}
        for rank, proc in enumerate(procs):
            stdout, stderr = proc.communicate(timeout=DEADLINE)
            assert proc.returncode == 0, stderr
            seen[rank] = [int(v) for v in stdout.split()[4:]]
        runs.append(seen)
    assert runs[0] == runs[1] == runs[2], runs
    assert len(runs[0][0]) == len(runs[0][1]) > 0
    assert not set(runs[0][0]) & set(runs[0][1])


# ---- resuming where the model was saved ----


def rows_of(tensors):
    return tensors["i64"].tolist()


def test_state_dict_resumes_mid_shard_and_a_loaded_state_is_not_read_again(store, tmp_path):
    stream = filled_stream(store, 20, rows=2)
    loader = qt.Loader(stream, "g", ["i64"], shard_size=6, timeout=10)
    loader.hold_reports()
    seen = []
    for i, tensors in enumerate(loader):
        seen += rows_of(tensors)
        if i == 8:  # inside the second shard
            state = loader.state_dict()
            break
    assert state["consumed"] == [[0, 0, 9]] and state["stream"] == "s" and state["group"] == "g"
    assert state["namespace"] == stream.namespace
    # Nothing was committed: the loader held its reports.
    assert stream.consumer("g").committed(0) == 0
    loader.close()  # as a crash would: its shards go back unfinished
    resumed = qt.Loader(stream, "g", ["i64"], shard_size=6, timeout=10)
    resumed.load_state_dict(state)
    rest = [row for tensors in resumed for row in rows_of(tensors)]
    assert seen == list(range(18)) and rest == list(range(18, 40))
    # A state of another stream or group, or not a state, is refused.
    with pytest.raises(ValueError, match="group"):
        resumed.load_state_dict({**state, "group": "h"})
    with pytest.raises(ValueError, match="namespace"):
        resumed.load_state_dict({**state, "namespace": state["namespace"] + 1})
    with pytest.raises(ValueError, match="not a quiver.torch loader state"):
        resumed.load_state_dict({"consumed": []})
    with pytest.raises(ValueError, match="span"):
        resumed.load_state_dict({**state, "consumed": [[0, -1, 3]]})
    resumed.close()


def test_commit_reports_only_what_the_state_holds(store):
    stream = filled_stream(store, 20, rows=1)
    loader = qt.Loader(stream, "g", ["i64"], shard_size=6, timeout=10)
    loader.hold_reports()
    it = iter(loader)
    for _ in range(8):
        next(it)
    state = loader.state_dict()
    for _ in range(4):
        next(it)
    loader.commit(state)
    assert stream.consumer("g").committed(0) == 8
    loader.commit()
    assert stream.consumer("g").committed(0) == 12
    it.close()
    loader.close()


def new_model():
    torch.manual_seed(0)
    return torch.nn.Linear(1, 1)


def test_checkpoint_saves_model_and_position_and_three_resumes_read_every_row_once(store, tmp_path):
    stream = filled_stream(store, 30, rows=2)
    path = tmp_path / "train.ckpt"
    trained = []
    for run, stop_after in enumerate([5, 9, 13, None]):
        model = new_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with qt.Loader(stream, "g", ["i64"], shard_size=4, timeout=10) as loader:
            checkpoint = qt.Checkpoint(path, loader, model, optimizer)
            extra = checkpoint.load()
            trained = extra["trained"] if extra else []
            if run:
                # The model came back with the position: the weight saved.
                assert model.weight.item() == pytest.approx(extra["weight"])
            for step, tensors in enumerate(loader):
                x = tensors["i64"].float().unsqueeze(1)
                loss = (model(x) - x).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                trained += rows_of(tensors)
                if step % 3 == 2:
                    checkpoint.save(trained=trained, weight=model.weight.item())
                if step == stop_after:
                    # Rows after the last save are read again by the next run.
                    break
            else:
                checkpoint.save(trained=trained, weight=model.weight.item())
    final = qt.Checkpoint(path, qt.Loader(stream, "g", ["i64"], timeout=10)).load()
    assert final["trained"] == list(range(60))
    assert stream.consumer("g").committed(0) == 30


def test_a_crash_between_the_saved_file_and_the_commit_skips_the_saved_rows(store, tmp_path):
    stream = filled_stream(store, 12, rows=1)
    path = tmp_path / "train.ckpt"
    loader = qt.Loader(stream, "g", ["i64"], shard_size=5, timeout=10)
    checkpoint = qt.Checkpoint(path, loader)
    trained = []
    for step, tensors in enumerate(loader):
        trained += rows_of(tensors)
        if step == 6:
            loader.commit = lambda state=None: None  # the process dies here
            checkpoint.save(trained=trained)
            break
    assert stream.consumer("g").committed(0) == 0
    loader.close()
    resumed = qt.Loader(stream, "g", ["i64"], shard_size=5, timeout=10)
    trained = qt.Checkpoint(path, resumed).load()["trained"]
    trained += [row for tensors in resumed for row in rows_of(tensors)]
    assert trained == list(range(12))


def test_a_checkpoint_refuses_foreign_files_and_never_replaces_a_device_or_link(store, tmp_path):
    stream = filled_stream(store, 4, rows=1)
    loader = qt.Loader(stream, "g", ["i64"], timeout=10)
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        qt.Checkpoint(foreign, loader).load()
    torch.save({"format": "other"}, tmp_path / "other")
    with pytest.raises(ValueError, match="not a quiver.torch checkpoint"):
        qt.Checkpoint(tmp_path / "other", loader).load()
    assert qt.Checkpoint(tmp_path / "missing", loader).load() is None
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="not a regular file"):
        qt.Checkpoint(link, loader).save()
    assert target.read_bytes() == b"keep"
    with pytest.raises(ValueError, match="not a regular file"):
        qt.Checkpoint(tmp_path, loader).save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "link", "other", "target"]
    loader.close()


KILLED_TRAINER = """
import random, sys, time, torch, quiver, quiver.torch as qt
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
with qt.Loader(stream, "g", ["i64"], shard_size=3, timeout=30) as loader:
    checkpoint = qt.Checkpoint(sys.argv[2], loader)
    extra = checkpoint.load() or {"trained": []}
    trained = extra["trained"]
    print("started", len(trained), flush=True)
    for step, tensors in enumerate(loader):
        trained += tensors["i64"].tolist()
        time.sleep(random.random() * 0.004)
        if step % 4 == 3:
            checkpoint.save(trained=trained)
    checkpoint.save(trained=trained)
print("finished", flush=True)
"""


def test_a_trainer_killed_at_random_moments_resumes_with_the_first_row_after_its_save(store, name, tmp_path):
    import random

    stream = filled_stream(store, 400, rows=1)
    path = tmp_path / "train.ckpt"
    rng = random.Random(7)
    for _ in range(3):
        proc = start_python(KILLED_TRAINER, name, path)
        assert read_line(proc).startswith("started")
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL, "the trainer finished before it was killed"
    proc = start_python(KILLED_TRAINER, name, path)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1] == "finished"
    trained = torch.load(path, weights_only=True)["extra"]["trained"]
    assert trained == list(range(400)), "a row skipped or trained twice across the resumes"


# ---- behind a Kafka source: Kafka's committed offset follows the saved model ----

KAFKA_TRAINER = """
import sys, time, quiver, quiver.torch as qt
store = quiver.Store.open(sys.argv[1])
deadline = time.monotonic() + 30
while True:
    try:
        stream = quiver.Stream.open(store, "features")
        break
    except quiver.NotFound:
        assert time.monotonic() < deadline, "the Kafka source made no stream"
        time.sleep(0.05)
with qt.Loader(stream, "trainers", ["row"], shard_size=2, timeout=30) as loader:
    checkpoint = qt.Checkpoint(sys.argv[2], loader)
    batches = iter(loader)
    saved = sum(len(next(batches)["row"]) for _ in range(7))
    checkpoint.save()
    print("saved", saved, flush=True)
    more = sum(len(next(batches)["row"]) for _ in range(5))
    print("more", saved + more, flush=True)
    time.sleep(60)  # until killed, the rows after the save not saved
"""


def kafka_committed(quiver_bin, name):
    """Kafka's committed offset of partition 0, as the source reports it."""
    import json
    import subprocess

    out = subprocess.run([quiver_bin, "stat", name, "--json"], capture_output=True, text=True, timeout=DEADLINE)
    sources = json.loads(out.stdout)["kafka_sources"] if out.returncode == 0 else []
    return sources[0]["partitions"][0]["committed"] if sources else None


def test_behind_a_kafka_source_kafkas_committed_offset_follows_the_saved_model(name, quiver_bin, tmp_path):
    import subprocess
    import uuid

    brokers = os.environ.get("QUIVER_KAFKA_BROKERS")
    if not brokers:
        pytest.skip("no Kafka broker (QUIVER_KAFKA_BROKERS; scripts/test starts one)")
    if subprocess.run([quiver_bin, "kafka", "--help"], capture_output=True).returncode != 0:
        pytest.skip("this quiver binary has no kafka feature")
    topic = f"torch-{uuid.uuid4().hex[:8]}"
    run = lambda *args: subprocess.run([quiver_bin, *args], capture_output=True, text=True, timeout=DEADLINE)  # noqa: E731
    created = run("kafka", "topic", "--brokers", brokers, "--topic", topic, "--partitions", "1")
    assert created.returncode == 0, created.stderr
    # 100 rows into the topic as JSON records, through a sink from a seed store.
    seed = f"{name}-seed"
    with quiver.Store.create(seed, capacity=16 << 20) as store:
        try:
            rows = quiver.Stream.create(store, "rows", pa.schema([("row", pa.int64())]), groups=["sink"])
            producer = rows.producer()
            for first in range(0, 100, 10):
                producer.append(pa.record_batch([pa.array(range(first, first + 10), pa.int64())], names=["row"]))
            producer.close()
            sunk = run("kafka", "sink", "--brokers", brokers, "--topic", topic, "--store", seed, "--stream", "rows",
                       "--group", "sink", "--format", "json")  # fmt: skip
            assert sunk.returncode == 0, sunk.stderr
        finally:
            quiver.Store.remove(seed)
    source = subprocess.Popen(
        [quiver_bin, "kafka", "source", "--brokers", brokers, "--topic", topic, "--group", f"{topic}-g",
         "--store", name, "--stream", "features", "--format", "json", "--batch-records", "5",
         "--require-group", "trainers"],  # fmt: skip
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    trainer = start_python(KAFKA_TRAINER, name, tmp_path / "model.ckpt")
    try:
        saved_line = read_line(trainer)
        assert saved_line.startswith("saved "), saved_line + trainer.stderr.read()
        saved = int(saved_line.split()[1])
        # Kafka commits what the saved model holds...
        deadline = time.monotonic() + DEADLINE
        while kafka_committed(quiver_bin, name) != saved:
            assert time.monotonic() < deadline, f"Kafka committed {kafka_committed(quiver_bin, name)}, not {saved}"
            time.sleep(0.1)
        # ...and nothing the loop read after it.
        more = int(read_line(trainer).split()[1])
        assert more > saved
        time.sleep(1.5)
        assert kafka_committed(quiver_bin, name) == saved
    finally:
        trainer.kill()
        trainer.wait(timeout=DEADLINE)
        source.terminate()
        source.wait(timeout=DEADLINE)


# ---- what an attack on the loader found ----


def test_bad_numbers_and_states_are_refused_with_value_errors(store, tmp_path):
    stream = filled_stream(store, 6, rows=1)
    for bad in (dict(timeout=float("nan")), dict(idle=float("nan")), dict(timeout=-1), dict(lease=0),
                dict(lease=float("inf"))):  # fmt: skip
        with pytest.raises(ValueError):
            qt.Loader(stream, "g", ranks=None, **bad)
    loader = qt.Loader(stream, "g", ["i64"], timeout=10, ranks=None)
    state = loader.state_dict()
    for consumed in ([[0, True, 5]], [[0, 0, 2**70]], [[1, 0, 5]], [[0, 5, 2]], [b"\0\0\5"], None, [[0, 0.0, 1]]):
        with pytest.raises(ValueError):
            loader.load_state_dict({**state, "consumed": consumed})
    with pytest.raises(ValueError):
        loader.load_state_dict({k: v for k, v in state.items() if k != "consumed"})
    # A checkpoint missing a part, or a link to one, is refused before
    # anything is taken in.
    torch.save({"format": qt.CHECKPOINT_FORMAT, "loader": state}, tmp_path / "partial")
    with pytest.raises(ValueError, match="damaged"):
        qt.Checkpoint(tmp_path / "partial", loader).load()
    qt.Checkpoint(tmp_path / "good", loader).save(step=1)
    (tmp_path / "link").symlink_to(tmp_path / "good")
    with pytest.raises(ValueError, match="not a regular file"):
        qt.Checkpoint(tmp_path / "link", loader).load()
    assert qt.Checkpoint(tmp_path / "good", loader).load() == {"step": 1}
    loader.close()


def test_a_rank_taken_twice_or_a_key_reused_is_refused(store):
    stream = filled_stream(store, 6, rows=1)
    # Rank 1 without its rank 0 waits for the cells, then gives up.
    with pytest.raises(TimeoutError):
        qt.Loader(stream, "g", ranks=(1, 2, "job-8"), timeout=0.2)
    zero = qt.Loader(stream, "g", ranks=(0, 2, "job-9"), timeout=5)
    one = qt.Loader(stream, "g", ranks=(1, 2, "job-9"), timeout=5)
    with pytest.raises(quiver.Error, match="rank 1 .* is taken"):
        qt.Loader(stream, "g", ranks=(1, 2, "job-9"), timeout=5)
    # A second rank 0 with the same key: the run's cells exist already.
    with pytest.raises(quiver.AlreadyExists, match="each run a key of its own"):
        qt.Loader(stream, "g", ranks=(0, 2, "job-9"), timeout=5)
    zero.close()
    one.close()


def test_a_step_longer_than_the_lease_with_a_checkpoint_trains_no_row_twice(store, tmp_path):
    stream = filled_stream(store, 24, rows=1)
    with qt.Loader(stream, "g", ["i64"], shard_size=8, lease=0.5, timeout=10, ranks=None) as loader:
        checkpoint = qt.Checkpoint(tmp_path / "c", loader)
        trained = []
        for step, tensors in enumerate(loader):
            trained += rows_of(tensors)
            if step == 4:
                time.sleep(0.8)  # the lease runs out during the step
                checkpoint.save(trained=trained)
        checkpoint.save(trained=trained)
    assert sorted(trained) == list(range(24)) and len(trained) == 24
