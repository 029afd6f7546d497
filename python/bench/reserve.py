"""Publishing from Python: `Producer.reserve` (the batch built in place in
shared memory) beside `Producer.append` (a pyarrow batch, copied once into
the store), in one process and one sitting.

    .venv/bin/python python/bench/reserve.py [--seconds 2] [--rounds 3] [--sizes 1024,65536,1048576]

A batch is two 8-byte columns (int64, float64; rows = size / 16). Each
publish makes the batch's values and hands the batch over, in one of two
ways of making them:

  copy     the values exist already in other arrays (decoded, received):
           `column[:] = source`
  compute  the values are computed: `np.multiply(base, k, out=column)`

With `append` the values go into the NumPy buffers under one pyarrow batch
(refilled in place), which `append` then copies into the store; with
`reserve` they go straight into the store's arrays, and `commit` publishes
them. The stream has no group and drops its oldest batches when full, so
the producer never waits for a consumer; the store holds the window of
`python/bench/ipc.py` (clamp(4 MiB / size, 8, 512) batches and a quarter
more), so its memory is reused as it would be under a consumer group.
Publishes per second, medians of the rounds; `reserve/append` > 1 means
reserve is faster.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

import quiver  # noqa: E402

SCHEMA = pa.schema([("seq", pa.int64()), ("value", pa.float64())])


def run(stream, way, fill, size, seconds):
    rows = size // 16
    source_i = np.arange(rows, dtype=np.int64)
    source_f = np.arange(rows, dtype=np.float64) * 0.5
    producer = stream.producer()
    if way == "append":
        ci, cf = np.empty(rows, np.int64), np.empty(rows, np.float64)
        batch = pa.record_batch(
            [pa.Array.from_buffers(pa.int64(), rows, [None, pa.py_buffer(ci)]),
             pa.Array.from_buffers(pa.float64(), rows, [None, pa.py_buffer(cf)])],
            schema=SCHEMA,
        )  # fmt: skip

        def publish(k):
            make(ci, cf, k)
            producer.append(batch)
    else:

        def publish(k):
            r = producer.reserve(rows)
            make(r["seq"], r["value"], k)
            r.commit()

    if fill == "copy":

        def make(ci, cf, k):
            ci[:] = source_i
            cf[:] = source_f
    else:

        def make(ci, cf, k):
            np.add(source_i, k, out=ci)
            np.multiply(source_f, k, out=cf)

    n, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while True:
        for _ in range(8):
            publish(n)
            n += 1
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1024,65536,1048576")
    args = parser.parse_args()
    name = f"quiver-bench-reserve-{os.getpid()}"
    results = {}
    for size in map(int, args.sizes.split(",")):
        window = max(8, min(512, (4 << 20) // size))
        capacity = (size + 512) * (window + window // 4) + (64 << 10)
        with quiver.Store.create(name, capacity=capacity, max_objects=4096) as store:
            try:
                for fill in ("copy", "compute"):
                    for r in range(args.rounds):
                        for way in (("append", "reserve") if r % 2 == 0 else ("reserve", "append")):
                            stream = quiver.Stream.create(store, "s", SCHEMA, back_pressure="drop_oldest")
                            results.setdefault((size, fill, way), []).append(run(stream, way, fill, size, args.seconds))
                            quiver.Stream.remove(store, "s")
            finally:
                quiver.Store.remove(name)
    print("| batch | values | append /s | reserve /s | reserve / append |")
    print("|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        for fill in ("copy", "compute"):
            a = statistics.median(results[(size, fill, "append")])
            r = statistics.median(results[(size, fill, "reserve")])
            print(f"| {size:,} B | {fill} | {a:,.0f} | {r:,.0f} | {r / a:.2f}x |")


if __name__ == "__main__":
    main()
