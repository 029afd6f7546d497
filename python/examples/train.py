"""quiver's demo job in Python: a producer process appends batches of
y = 4 + 3x + noise to a stream; consumer processes train online linear
regression on them with `partial_fit`, each in a consumer group of its own
(`--mode broadcast`: every consumer sees every batch) or all as members of
one shard-managed group (`--mode shared`: the stream is split among them).

    python examples/python/train.py [--mode broadcast|shared] [--consumers 3] [--rows 30000]

Consumers train quiver's `SgdRegressor`, or scikit-learn's `SGDRegressor`
with `--sklearn` (when scikit-learn is installed). This file is the whole
program: the coordinator starts itself again as the producer and the
consumers, and removes the store at the end, however it ends.
"""

import argparse
import os
import random
import subprocess
import sys
import time

import pyarrow as pa

import quiver

SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64())])
STREAM = "samples"


def produce(store_name, rows, seed):
    """Appends `rows` rows in batches of 1 to 40, then closes the stream."""
    rng = random.Random(seed)
    store = quiver.Store.open(store_name)
    producer = quiver.Stream.open(store, STREAM).producer()
    left = rows
    while left > 0:
        n = min(left, rng.randint(1, 40))
        xs = [rng.uniform(0, 10) for _ in range(n)]
        ys = [4 + 3 * x + rng.gauss(0, 1) for x in xs]
        producer.append(pa.record_batch([pa.array(xs), pa.array(ys)], schema=SCHEMA))
        left -= n
    producer.close()


def model(use_sklearn):
    if not use_sklearn:
        return quiver.SgdRegressor()
    from sklearn.linear_model import SGDRegressor  # noqa: PLC0415 (optional dependency)

    return SGDRegressor()


def fit(m, batch):
    if isinstance(m, quiver.SgdRegressor):
        m.partial_fit(batch, ["x"], "y")
    else:
        import numpy as np  # noqa: PLC0415

        m.partial_fit(np.asarray(batch.column("x")).reshape(-1, 1), np.asarray(batch.column("y")))


def consume(store_name, mode, index, use_sklearn):
    """Trains on what this consumer reads; prints `rows intercept slope`."""
    store = quiver.Store.open(store_name)
    stream = quiver.Stream.open(store, STREAM)
    m, rows = model(use_sklearn), 0
    if mode == "broadcast":
        consumer = stream.consumer(f"consumer-{index}")
        for batch in consumer:  # ends at the end of the stream
            fit(m, batch)
            rows += batch.num_rows
            consumer.commit()
    else:
        with quiver.ShardManager.join(stream, "trainers", shard_size=8) as member:
            while True:
                try:
                    task = member.next_task(timeout=60)
                except quiver.EndOfStream:
                    break
                if task is None:
                    raise SystemExit("no shard for 60 s")
                for batch in member.read_task(task):
                    fit(m, batch)
                    rows += batch.num_rows
                member.report(task)
    if rows == 0:  # a member that joined after every shard was taken
        print(0, 0.0, 0.0, flush=True)
        return
    intercept = float(m.intercept_ if isinstance(m, quiver.SgdRegressor) else m.intercept_[0])
    print(rows, intercept, float(m.coef_[0]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["broadcast", "shared"], default="broadcast")
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--rows", type=int, default=None, help="default: 10,000 (30,000 shared)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sklearn", action="store_true", help="train scikit-learn's SGDRegressor")
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.mode == "broadcast" else 10_000 * args.consumers)
    store_name = f"example-{os.getpid()}"
    me = [sys.executable, os.path.abspath(__file__)]
    started = time.monotonic()
    with quiver.Store.create(store_name, capacity=64 << 20) as store:
        try:
            groups = [f"consumer-{i}" for i in range(args.consumers)] if args.mode == "broadcast" else ["trainers"]
            quiver.Stream.create(store, STREAM, SCHEMA, partitions=2, groups=groups)
            consumers = [
                subprocess.Popen(
                    [*me, "consume", store_name, args.mode, str(i), str(int(args.sklearn))],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(args.consumers)
            ]
            subprocess.run([*me, "produce", store_name, str(rows), str(args.seed)], check=True)
            results = []
            for i, proc in enumerate(consumers):
                out, _ = proc.communicate(timeout=300)
                if proc.returncode != 0:
                    raise SystemExit(f"consumer {i} failed ({proc.returncode})")
                n, intercept, slope = out.split()
                results.append((int(n), float(intercept), float(slope)))
        finally:
            quiver.Store.remove(store_name)
    seconds = time.monotonic() - started
    print(f"{args.mode}: {rows} rows, {args.consumers} consumers, {seconds:.2f} s")
    for i, (n, intercept, slope) in enumerate(results):
        print(f"  consumer {i}: {n:>6} rows  intercept {intercept:6.3f}  slope {slope:6.3f}")
    if args.mode == "broadcast":
        ok = all(n == rows and abs(b - 4) < 0.3 and abs(w - 3) < 0.3 for n, b, w in results)
    else:
        total = sum(n for n, _, _ in results)
        b = sum(n * b for n, b, _ in results) / total
        w = sum(n * w for n, _, w in results) / total
        print(f"  average (by rows): intercept {b:.3f} slope {w:.3f}")
        ok = total == rows and abs(b - 4) < 0.3 and abs(w - 3) < 0.3
    print("ok: every row seen, models within 0.3 of intercept 4 and slope 3" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "consume":
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
