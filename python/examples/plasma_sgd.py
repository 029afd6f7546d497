"""The Plasma streaming example, written against the Plasma API, running on
quiver: the only change from pyarrow.plasma is the import.

A producer process writes batches of y = 4 + 3x + noise as Arrow IPC
messages into objects whose IDs both sides compute (batch i has ID i); each
consumer process reads every batch with `get_buffers` and a timeout, zero
copy, and trains online linear regression on it with `partial_fit`.

    python examples/python/plasma_sgd.py [--consumers 3] [--batches 500]

Compare examples/python/train.py, the same job on quiver's streams: there
the end of the data is explicit (here: an object tagged "end"), groups
track what each consumer read, and nothing is evicted unread (here the
store must be big enough to keep every batch, or LRU eviction may drop one
before a slow consumer gets to it).
"""

import argparse
import random
import subprocess
import sys
import time

import pyarrow as pa

import quiver.plasma as plasma  # was: import pyarrow.plasma as plasma

SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64())])
END = b"end"


def object_id(i):
    return plasma.ObjectID(i.to_bytes(20, "little"))


def produce(store, batches, seed):
    client = plasma.connect(store)
    rng = random.Random(seed)
    for i in range(batches):
        n = rng.randint(1, 40)
        xs = [rng.uniform(0, 10) for _ in range(n)]
        batch = pa.record_batch([pa.array(xs), pa.array([4 + 3 * x + rng.gauss(0, 1) for x in xs])], schema=SCHEMA)
        sink = pa.MockOutputStream()
        with pa.ipc.new_stream(sink, SCHEMA) as writer:
            writer.write_batch(batch)
        buf = client.create(object_id(i), sink.size())
        with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buf), SCHEMA) as writer:
            writer.write_batch(batch)
        client.seal(object_id(i))
    client.create_and_seal(object_id(batches), b"", END)


def consume(store, timeout_ms):
    import quiver

    client = plasma.connect(store)
    model, rows, i = quiver.SgdRegressor(), 0, 0
    while True:
        [(meta, data)] = client.get_buffers([object_id(i)], timeout_ms=timeout_ms, with_meta=True)
        if data is None:
            raise SystemExit(f"batch {i} did not come within {timeout_ms} ms")
        if meta == END:
            break
        batch = pa.ipc.open_stream(data).read_next_batch()
        model.partial_fit(batch, ["x"], "y")
        rows += batch.num_rows
        i += 1
    print(rows, model.intercept_, model.coef_[0], flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.monotonic()
    with plasma.start_plasma_store(plasma_store_memory=64 << 20) as (store, _):
        me = [sys.executable, __file__]
        consumers = [subprocess.Popen([*me, "consume", store], stdout=subprocess.PIPE, text=True) for _ in range(args.consumers)]
        subprocess.run([*me, "produce", store, str(args.batches), str(args.seed)], check=True)
        results = []
        for i, proc in enumerate(consumers):
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise SystemExit(f"consumer {i} failed")
            n, intercept, slope = out.split()
            results.append((int(n), float(intercept), float(slope)))
    print(f"{plasma.__name__}: {args.batches} batches, {args.consumers} consumers, {time.monotonic() - started:.2f} s")
    for i, (n, b, w) in enumerate(results):
        print(f"  consumer {i}: {n:>6} rows  intercept {b:6.3f}  slope {w:6.3f}")
    ok = len({n for n, _, _ in results}) == 1 and all(abs(b - 4) < 0.3 and abs(w - 3) < 0.3 for _, b, w in results)
    print("ok: every consumer saw every row; models within 0.3 of intercept 4 and slope 3" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "consume":
        consume(sys.argv[2], 60_000)
    else:
        main()
