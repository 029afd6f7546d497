"""quiver as PyTorch's data plane: a small MLP trained with DDP on CPU ranks
from a stream that preprocessing producers fill, checkpointed so that a
kill -9 at any moment loses nothing.

    python python/examples/torch_train.py                      # 2 producers, 2 ranks
    python python/examples/torch_train.py --ranks 3 --rows 60000
    python python/examples/torch_train.py --source kafka --brokers 127.0.0.1:9092 --topic raw

What runs:

- two preprocessing producer processes turn raw rows (four sensor
  readings, in their own units) into standardized features and append them
  to the stream `features` of store `--store`, one partition each. Each
  makes a fixed slice of rows, numbered, and a restarted one goes on from
  its partition's end: kill everything and start again, and the rows that
  were appended stay, the rest come. With `--source kafka` a `quiver kafka
  source` reads the raw rows from a Kafka topic instead (JSON records with
  the same fields), its Kafka commits following the trainers' group;
- `torchrun` starts `--ranks` training processes (gloo, CPU). Each is a
  member of the group `trainers` through `quiver.torch.Loader`: the ranks
  read different shards, zero-copy, and all take the same number of steps.
  The model is `DistributedDataParallel` over an MLP;
- every `--every` steps the ranks save one checkpoint (`quiver.torch.
  Checkpoint`: model, optimizer, the ranks' data position), and the group
  commits only once that file is durable. Started again, the training
  continues from the checkpoint with the first batch after it: `kill -9`
  the whole thing at any moment and run the same command again.

Rank 0 prints the loss curve (`step N loss L rows R`) and, at the end, how
many rows the saved model trained on and how many twice (none: a test kills
the job three times and checks every row was trained on once, or is still
in the group for a next run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import pyarrow as pa

import quiver

FEATURES = ["f0", "f1", "f2", "f3"]
SCHEMA = pa.schema([("row", pa.int64())] + [(f, pa.float32()) for f in FEATURES] + [("y", pa.float32())])
RAW_SCHEMA = pa.schema([("row", pa.int64()), ("temp", pa.float64()), ("load", pa.float64()),
                        ("rpm", pa.float64()), ("volt", pa.float64())])  # fmt: skip
BATCH_ROWS = 64
GROUP = "trainers"


def die_with_parent() -> None:
    """This process is killed when its parent dies (Linux): torchrun starts
    each rank in a session of its own, so a `kill -9` of the job would leave
    ranks behind, holding their shards until their leases run out."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the call
            os._exit(1)


# ---- the raw data and its preprocessing ----


def raw_row(n: int) -> dict:
    """Raw row `n`, the same on every run: readings in their own units."""
    a, b, c = math.sin(n * 0.37), math.cos(n * 0.11), math.sin(n * 0.05 + 1.0)
    return {"row": n, "temp": 60 + 15 * a, "load": 0.5 + 0.4 * b, "rpm": 1500 + 900 * c, "volt": 230 + 8 * a * b}


def preprocess(raw: pa.RecordBatch) -> pa.RecordBatch:
    """Raw readings to standardized features and the target the model learns."""
    columns = raw.to_pydict()
    f = [
        [(t - 60) / 15 for t in columns["temp"]],
        [(v - 0.5) / 0.4 for v in columns["load"]],
        [(r - 1500) / 900 for r in columns["rpm"]],
        [(v - 230) / 8 for v in columns["volt"]],
    ]
    y = [math.tanh(a * b) + 0.5 * c - 0.25 * d for a, b, c, d in zip(*f)]
    arrays = [pa.array(columns["row"], pa.int64())] + [pa.array(col, pa.float32()) for col in f]
    return pa.record_batch(arrays + [pa.array(y, pa.float32())], schema=SCHEMA)


def produce(store_name: str, partition: int, first: int, count: int) -> None:
    """A preprocessing producer: rows [first, first + count) into `partition`,
    going on from what the partition already holds."""
    with quiver.Store.open(store_name) as store:
        stream = quiver.Stream.open(store, "features")
        done = stream.stats()["partitions"][partition]["appended_rows"]
        producer = stream.producer()
        for start in range(first + done, first + count, BATCH_ROWS):
            rows = [raw_row(n) for n in range(start, min(start + BATCH_ROWS, first + count))]
            raw = pa.RecordBatch.from_pylist(rows, schema=RAW_SCHEMA)
            producer.append_to(partition, preprocess(raw))


# ---- training (one rank) ----


def train(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    import quiver.torch as qt

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=0.01)
    with quiver.Store.open(args.store) as store:
        stream = quiver.Stream.open(store, "features")
        # float32 whatever the source made (a Kafka source's JSON numbers are float64).
        dtypes = {name: torch.float32 for name in FEATURES + ["y"]}
        loader = qt.Loader(stream, GROUP, ["row", "y"], stack={"x": FEATURES}, dtypes=dtypes, shard_size=8, timeout=120)
        with loader:
            checkpoint = qt.Checkpoint(args.checkpoint, loader, model, optimizer)
            saved = checkpoint.load() or {"step": 0, "rows": []}
            step, mine = saved["step"], []
            trained = saved["rows"]  # rank 0's record of every rank's rows
            if rank == 0:
                print(f"resumed at step {step}" if step else "started", flush=True)
            for tensors in loader:
                loss = torch.nn.functional.mse_loss(ddp(tensors["x"]).squeeze(1), tensors["y"])
                optimizer.zero_grad()
                loss.backward()  # the all-reduce: every rank takes every step
                optimizer.step()
                step += 1
                mine += tensors["row"].tolist()
                if step % args.every == 0:
                    trained = save(checkpoint, step, trained, mine, loss.item(), rank)
                    mine = []
                if args.step_pause:
                    time.sleep(args.step_pause)
            trained = save(checkpoint, step, trained, mine, None, rank)
    if rank == 0:
        twice = len(trained) - len(set(trained))
        print(f"done at step {step}: the saved model trained on {len(trained)} rows, {twice} of them twice", flush=True)
        if args.record:
            pathlib.Path(args.record).write_text(json.dumps(trained))
    dist.destroy_process_group()


def save(checkpoint, step: int, trained: list, mine: list, loss, rank: int) -> list:
    """Every rank's rows since the last save into rank 0's record, then the
    checkpoint (model, optimizer, position, record) on every rank."""
    from quiver.torch import _all_gather_bytes

    for part in _all_gather_bytes(json.dumps(mine).encode()):
        trained = trained + json.loads(part)
    checkpoint.save(step=step, rows=trained)
    if rank == 0 and loss is not None:
        print(f"step {step} loss {loss:.4f} rows {len(trained)}", flush=True)
    return trained


# ---- the whole job ----


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="torch-train")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--every", type=int, default=20, help="steps between checkpoints")
    parser.add_argument("--checkpoint", default=None, help="default: ./<store>.ckpt")
    parser.add_argument("--source", choices=["producers", "kafka"], default="producers")
    parser.add_argument("--brokers", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="raw")
    parser.add_argument("--quiver", default="quiver", help="the quiver binary (for --source kafka)")
    parser.add_argument("--step-pause", type=float, default=0.0, help="seconds of sleep a step (to watch it)")
    parser.add_argument("--record", help="write the rows the saved model trained on (JSON) here")
    parser.add_argument("--train", action="store_true", help=argparse.SUPPRESS)  # a rank, under torchrun
    parser.add_argument("--produce", nargs=3, type=int, help=argparse.SUPPRESS)  # partition first count
    args = parser.parse_args()
    args.checkpoint = args.checkpoint or f"{args.store}.ckpt"
    if args.train:
        die_with_parent()
        return train(args)
    if args.produce:
        die_with_parent()
        return produce(args.store, *args.produce)

    # The store and stream outlive a killed run: the next one goes on with them.
    try:
        store = quiver.Store.open(args.store)
    except quiver.NotFound:
        store = quiver.Store.create(args.store, capacity=256 << 20, max_objects=8192)
    with store:
        if args.source == "producers":
            try:
                stream = quiver.Stream.open(store, "features")
            except quiver.NotFound:
                stream = quiver.Stream.create(store, "features", SCHEMA, partitions=2, groups=[GROUP])
        me = [sys.executable, os.path.abspath(__file__), "--store", args.store, "--checkpoint", args.checkpoint]
        feeders = []
        if args.source == "kafka":
            # The source makes the stream (the topic's partitions, the
            # records' schema) and the trainers' group, and goes on from
            # Kafka's committed offsets after a kill.
            feeders.append(kafka_source(args))
            stream = wait_for_stream(store, feeders[0])
        elif not stream.closed:
            half = args.rows // 2
            for p, (first, count) in enumerate([(0, half), (half, args.rows - half)]):
                feeders.append(subprocess.Popen(me + ["--produce", str(p), str(first), str(count)]))
        trainers = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}"]
            + me[1:]
            + ["--train", "--every", str(args.every), "--step-pause", str(args.step_pause)]
            + (["--record", args.record] if args.record else []),
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            if args.source == "producers" and feeders:
                if any(f.wait() != 0 for f in feeders):
                    sys.exit("a producer failed")
                stream.close()  # every row is in: the trainers end at its end
            elif feeders:
                wait_for_rows(stream, args.rows, trainers)
                stream.close()
            if trainers.wait() != 0:
                sys.exit("the training failed")
        finally:
            for process in feeders + [trainers]:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
    print(f"ok: model in {args.checkpoint}")


def kafka_source(args: argparse.Namespace) -> subprocess.Popen:
    """`quiver kafka source` from the topic into the stream. The topic holds
    feature records (JSON: row, f0..f3, y), preprocessed upstream. The
    source's Kafka commits follow the trainers' group (`--require-group`),
    which commits only what a saved checkpoint holds: Kafka's committed
    offsets follow the saved model."""
    return subprocess.Popen(
        [args.quiver, "kafka", "source", "--brokers", args.brokers, "--topic", args.topic,
         "--group", "torch-train", "--store", args.store, "--stream", "features", "--format", "json",
         "--require-group", GROUP]  # fmt: skip
    )


def wait_for_stream(store, source: subprocess.Popen):
    """The stream the Kafka source makes on its first records."""
    while True:
        try:
            return quiver.Stream.open(store, "features")
        except quiver.NotFound:
            if source.poll() is not None:
                sys.exit("the Kafka source stopped")
            time.sleep(0.1)


def wait_for_rows(stream, rows: int, trainers: subprocess.Popen) -> None:
    """Until the Kafka source has appended `rows` rows (or the trainers end)."""
    while sum(p["appended_rows"] for p in stream.stats()["partitions"]) < rows:
        if trainers.poll() is not None:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
