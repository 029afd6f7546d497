"""put + get of raw objects through the Plasma API, from Python: quiver.plasma
beside pyarrow 11's real Plasma (its plasma_store started here), in one run.

    .venv/bin/python python/bench/plasma_bench.py [--seconds 2]

Each call pair: `put_raw_buffer` of an object of the given size, then
`get_buffers` of it (touching its first byte), then `delete`. Calls per
second are pairs per second. The real Plasma runs in the pyarrow 11
environment (`.venv-pyarrow11`, made by scripts/test).
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SIZES = (1024, 64 << 10, 1 << 20)


def measure(plasma, name, seconds):
    client = plasma.connect(name)
    out = {}
    for size in SIZES:
        data = os.urandom(size)
        ids = [plasma.ObjectID(i.to_bytes(20, "little")) for i in range(4096)]
        n, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while True:
            for object_id in ids[:64]:
                client.put_raw_buffer(data, object_id=object_id)
                [buf] = client.get_buffers([object_id])
                assert buf[0] == data[0]
                del buf
                client.delete([object_id])
            n += 64
            if time.perf_counter() >= deadline:
                break
        out[size] = n / (time.perf_counter() - started)
    return out


def run(kind, seconds):
    if kind == "quiver":
        import quiver.plasma as plasma
    else:
        import warnings

        warnings.simplefilter("ignore")
        import pyarrow.plasma as plasma
    with plasma.start_plasma_store(plasma_store_memory=256 << 20) as (name, _):
        print(json.dumps(measure(plasma, name, seconds)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--plasma-python", default=os.path.join(REPO, ".venv-pyarrow11", "bin", "python"))
    args = parser.parse_args()
    results = {}
    for kind, python in (("quiver", sys.executable), ("plasma", args.plasma_python)):
        out = subprocess.run([python, HERE, "--run", kind, str(args.seconds)], capture_output=True, text=True, check=True)
        results[kind] = {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    print("put_raw_buffer + get_buffers + delete, calls per second (pairs), one client")
    print(f"{'object':>10} {'quiver.plasma':>14} {'plasma':>10} {'ratio':>7}")
    for size in SIZES:
        q, p = results["quiver"][size], results["plasma"][size]
        print(f"{size:>10} {q:>14,.0f} {p:>10,.0f} {q / p:>7.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--run":
        run(sys.argv[2], float(sys.argv[3]))
    else:
        main()
