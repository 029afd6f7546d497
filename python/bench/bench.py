"""The `quiver bench` workload from Python, beside Plasma from Python.

    .venv/bin/python python/bench/bench.py [--seconds 3] [--sizes 1024,65536,1048576]

What it measures, each in one sitting:

1. Throughput, one producer process and one consumer process, both
   Python: batches of two 8-byte columns (rows = size / 16) appended to a
   stream (Block back-pressure, a 4 MiB window) and polled by a consumer
   group, which touches each batch's row count. The same workload through
   Plasma (pyarrow 11's plasma_store, started here): the producer writes
   each batch as an IPC message into a Plasma object with an ID both sides
   compute, the consumer `get_buffers` it, reads the batch zero-copy and
   deletes it; the producer stays within the same window.
2. At 1 MiB, the Python consumer beside the Rust one (`quiver bench
   --stream`, same workload, both Rust).
3. What the Python layer adds, in one process: `poll` against the same
   polls made from Rust (`Consumer._poll_native`), for 2 and 10 columns;
   `append` against `Producer._append_native`.

Plasma needs the pyarrow 11 environment (`.venv-pyarrow11`, made by
scripts/test); `--plasma-python` names its interpreter.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
WINDOW = 4 << 20


def make_batch(rows, columns=2):
    import pyarrow as pa

    arrays = [pa.array(range(rows), pa.int64()), pa.array([i * 0.5 for i in range(rows)], pa.float64())]
    for c in range(2, columns):
        arrays.append(pa.array(range(c, rows + c), pa.int64()))
    return pa.record_batch(arrays, names=[f"c{i}" for i in range(columns)])


def window_batches(size):
    return max(8, min(512, WINDOW // size))


def run_pair(python, consumer_args, producer_args, seconds):
    """Starts the consumer role, waits for it to be ready, runs the producer
    role for `seconds`, and returns the consumer's batches per second
    (checking it read every batch the producer sent)."""
    consumer = subprocess.Popen([python, HERE, *consumer_args], stdout=subprocess.PIPE, text=True)
    assert consumer.stdout.readline().strip() == "ready"
    producer = subprocess.run(
        [python, HERE, *producer_args, str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    )
    out, _ = consumer.communicate(timeout=120)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["batches"] == int(producer.stdout), (result, producer.stdout)
    return result["batches"] / result["seconds"]


# ---- quiver, Python to Python -------------------------------------------------

def quiver_producer(store, size, seconds):
    import quiver

    stream = quiver.Stream.open(quiver.Store.open(store), "bench")
    producer = stream.producer(timeout=60)
    batch = make_batch(max(1, size // 16))
    sent, deadline = 0, time.monotonic() + seconds
    while True:
        for _ in range(64):
            producer.append(batch)
        sent += 64
        if time.monotonic() >= deadline:
            break
    producer.close()
    print(sent, flush=True)


def quiver_consumer(store, size):
    import quiver

    stream = quiver.Stream.open(quiver.Store.open(store), "bench")
    consumer = stream.consumer("bench")
    step = max(1, window_batches(size) // 4)
    print("ready", flush=True)
    n = rows = 0
    first = None
    for batch in consumer:
        if first is None:
            first = time.monotonic()
        rows += batch.num_rows
        n += 1
        if n % step == 0:
            consumer.commit()
    consumer.commit()
    print(json.dumps({"batches": n, "rows": rows, "seconds": time.monotonic() - first}), flush=True)


def run_quiver(size, seconds):
    import pyarrow as pa
    import quiver

    name = f"pybench-{os.getpid()}-{size}"
    window = window_batches(size)
    capacity = max(8 << 20, 2 * window * (size + 4096))
    store = quiver.Store.create(name, capacity=capacity, max_objects=4 * window + 64)
    try:
        schema = make_batch(1).schema
        quiver.Stream.create(store, "bench", schema, groups=["bench"])
        return run_pair(sys.executable, ["quiver-consumer", name, str(size)], ["quiver-producer", name, str(size)], seconds)
    finally:
        store.close()
        quiver.Store.remove(name)


# ---- Plasma, Python to Python -------------------------------------------------

def plasma_id(seq):
    return seq.to_bytes(8, "little") + b"\0" * 12


def plasma_producer(socket, size, seconds):
    import pyarrow as pa
    import pyarrow.plasma as plasma

    client = plasma.connect(socket)
    batch = make_batch(max(1, size // 16))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    message = sink.getvalue()
    window = window_batches(size)
    seq, deadline = 0, time.monotonic() + seconds
    while True:
        # Stay within the window: the consumer deletes what it read.
        if seq >= window:
            old = plasma.ObjectID(plasma_id(seq - window))
            while client.contains(old):
                time.sleep(0)
        oid = plasma.ObjectID(plasma_id(seq))
        buf = client.create(oid, message.size)
        stream = pa.FixedSizeBufferWriter(buf)
        stream.write(message)
        client.seal(oid)
        del buf, stream
        seq += 1
        if seq % 64 == 0 and time.monotonic() >= deadline:
            break
    # The end: an empty object.
    client.create_and_seal(plasma.ObjectID(plasma_id(seq)), b"")
    print(seq, flush=True)


def plasma_consumer(socket):  # noqa: D103
    import pyarrow as pa
    import pyarrow.plasma as plasma

    client = plasma.connect(socket)
    print("ready", flush=True)
    seq = rows = 0
    first = None
    while True:
        oid = plasma.ObjectID(plasma_id(seq))
        [buf] = client.get_buffers([oid], timeout_ms=30000)
        if buf is None:
            raise SystemExit(f"no object {seq} within 30 s")
        if first is None:
            first = time.monotonic()
        if buf.size == 0:
            break
        batch = pa.ipc.open_stream(buf).read_next_batch()
        rows += batch.num_rows
        del batch, buf
        client.delete([oid])
        seq += 1
    print(json.dumps({"batches": seq, "rows": rows, "seconds": time.monotonic() - first}), flush=True)


def run_plasma(python, size, seconds):
    with tempfile.TemporaryDirectory() as tmp:
        socket = os.path.join(tmp, "plasma.sock")
        server = subprocess.Popen(
            [python, "-c", "import pyarrow.plasma as p, os, sys; os.execv(p.__file__.replace('plasma.py', 'plasma-store-server'), ['plasma-store-server', '-m', sys.argv[1], '-s', sys.argv[2]])",
             str(1 << 30), socket],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(socket):
                if time.monotonic() > deadline:
                    raise SystemExit("plasma_store did not start")
                time.sleep(0.01)
            return run_pair(python, ["plasma-consumer", socket], ["plasma-producer", socket, str(size)], seconds)
        finally:
            server.kill()
            server.wait()


# ---- the Rust consumer --------------------------------------------------------

def run_rust(quiver_bin, size, seconds):
    out = subprocess.run(
        [quiver_bin, "bench", "--stream", "--batch-bytes", str(size), "--seconds", str(seconds), "--json"],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    ).stdout
    result = json.loads(out)
    return result["batches_per_s"]


# ---- what the Python layer adds -----------------------------------------------

def overheads(n=20000):
    import quiver

    out = {}
    name = f"pybench-over-{os.getpid()}"
    store = quiver.Store.create(name, capacity=256 << 20, max_objects=4 * n + 64)
    try:
        for columns in (2, 10):
            batch = make_batch(64, columns)
            stream = quiver.Stream.create(store, f"s{columns}", batch.schema, groups=["py", "rust"])
            producer = stream.producer()
            t_native = producer._append_native(batch, n)
            started = time.perf_counter()
            for _ in range(n):
                producer.append(batch)
            t_python = time.perf_counter() - started
            out[f"append_{columns}_cols_us"] = (t_python - t_native) / n * 1e6
            out[f"append_{columns}_cols_rust_us"] = t_native / n * 1e6
            py, rust = stream.consumer("py"), stream.consumer("rust")
            read, t_rust = rust._poll_native(2 * n)
            assert read == 2 * n, read
            started = time.perf_counter()
            got = 0
            while py.poll(0) is not None:
                got += 1
            t_py = time.perf_counter() - started
            assert got == 2 * n
            out[f"poll_{columns}_cols_us"] = (t_py - t_rust) / (2 * n) * 1e6
            out[f"poll_{columns}_cols_rust_us"] = t_rust / (2 * n) * 1e6
            quiver.Stream.remove(store, f"s{columns}")
    finally:
        store.close()
        quiver.Store.remove(name)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="1024,65536,1048576")
    parser.add_argument("--plasma-python", default=os.path.join(REPO, ".venv-pyarrow11", "bin", "python"))
    parser.add_argument("--quiver-bin", default=os.path.join(REPO, "target", "release", "quiver"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import pyarrow

    results = {"pyarrow": pyarrow.__version__, "throughput": [], "overheads": overheads()}
    for size in map(int, args.sizes.split(",")):
        row = {"bytes": size, "quiver_py": run_quiver(size, args.seconds)}
        if os.path.exists(args.plasma_python):
            row["plasma_py"] = run_plasma(args.plasma_python, size, args.seconds)
        if os.path.exists(args.quiver_bin):
            row["quiver_rust"] = run_rust(args.quiver_bin, size, args.seconds)
        results["throughput"].append(row)
    if args.json:
        print(json.dumps(results))
        return
    print(f"pyarrow {results['pyarrow']}; batches per second, one producer and one consumer process")
    print(f"{'batch':>10} {'quiver py':>12} {'plasma py':>12} {'ratio':>7} {'quiver rust':>12} {'py/rust':>8}")
    for r in results["throughput"]:
        plasma = r.get("plasma_py")
        rust = r.get("quiver_rust")
        print(
            f"{r['bytes']:>10} {r['quiver_py']:>12,.0f} {plasma or float('nan'):>12,.0f} "
            f"{(r['quiver_py'] / plasma) if plasma else float('nan'):>7.1f} {rust or float('nan'):>12,.0f} "
            f"{(r['quiver_py'] / rust) if rust else float('nan'):>8.2f}"
        )
    o = results["overheads"]
    for what in ("poll_2_cols", "poll_10_cols", "append_2_cols", "append_10_cols"):
        print(f"{what:>16}: Python adds {o[what + '_us']:.2f} us to Rust's {o[what + '_rust_us']:.2f} us")


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "quiver-producer":
        quiver_producer(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif role == "quiver-consumer":
        quiver_consumer(sys.argv[2], int(sys.argv[3]))
    elif role == "plasma-producer":
        plasma_producer(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif role == "plasma-consumer":
        plasma_consumer(sys.argv[2])
    else:
        main()
