"""Batches reaching a PyTorch training loop, per second, from one producer
process, in one sitting:

1. `loader`: `quiver.torch.Loader` in the training process, a producer
   process appending to the stream;
2. `dataloader`: `torch.utils.data.DataLoader(num_workers=2)` over an
   `IterableDataset` whose workers make the same batches (the standard
   way: torch pickles each batch's tensors into shared memory of its own
   and hands them over);
3. `queue`: a `torch.multiprocessing.Queue` of tensors from a producer
   process;
4. `streamdataset`: `quiver.torch.StreamDataset` in a `DataLoader` with 2
   workers, a producer process appending to the stream.

A batch is 4 float32 columns of about 1 KiB, 64 KiB or 1 MiB; the loop
touches every tensor (reads its last value). Each path runs `--seconds`
after a warm-up second, and the producers make batches as fast as the path
takes them. Then, in one process, what the Loader adds to a batch on top of
the shard manager's own read (`read_task`) and of a consumer's `poll`.

    .venv/bin/python python/bench/torch_bench.py [--seconds 3] [--sizes 1024,65536,1048576] [--rounds 3]

With `--memory`, instead: the peak memory of the training process (RSS)
and of all the processes of the path (PSS, which splits shared pages among
their users), the Loader against a `DataLoader` with 3 workers.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
COLUMNS = 4
SHARD = 16  # batches a shard


def rows_for(size):
    return max(1, size // (4 * COLUMNS))


def arrow_batch(rows):
    import pyarrow as pa

    arrays = [pa.array([float(c + i) for i in range(rows)], pa.float32()) for c in range(COLUMNS)]
    return pa.record_batch(arrays, names=[f"c{c}" for c in range(COLUMNS)])


def tensor_batch(rows):
    import torch

    return {f"c{c}": torch.arange(c, c + rows, dtype=torch.float32) for c in range(COLUMNS)}


def touch(tensors):
    return sum(float(t[-1]) for t in tensors.values())


def timed(items, seconds):
    """Batches per second the loop takes from `items`, after a warm-up second."""
    it = iter(items)
    warm = time.monotonic() + 1.0
    while time.monotonic() < warm:
        touch(next(it))
    n, start = 0, time.monotonic()
    end = start + seconds
    while True:
        touch(next(it))
        n += 1
        if n % 16 == 0 and time.monotonic() >= end:
            break
    return n / (time.monotonic() - start)


# ---- quiver: a producer process appending to a stream -------------------------

def producer(store, rows):
    """Appends the same batch until killed."""
    import quiver

    stream = quiver.Stream.open(quiver.Store.open(store), "bench")
    out = stream.producer(timeout=60)
    batch = arrow_batch(rows)
    print("ready", flush=True)
    while True:
        out.append(batch)


class Stream:
    """A store with stream "bench" (group "train") and a producer process."""

    def __init__(self, size):
        import quiver

        self.rows = rows_for(size)
        self.name = f"torchbench-{os.getpid()}-{size}"
        # Room for every shard the members hold or have yet to report (two
        # DataLoader workers, each with a shard in hand and one waiting for
        # its report) beside the producer's window: 16 shards of 16.
        window = 16 * SHARD
        capacity = window * (size + 4096)
        self.store = quiver.Store.create(self.name, capacity=capacity, max_objects=window + 64)
        quiver.Stream.create(self.store, "bench", arrow_batch(1).schema, groups=["train"])
        self.proc = subprocess.Popen([sys.executable, HERE, "producer", self.name, str(self.rows)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self):
        import quiver

        self.proc.kill()
        self.proc.wait()
        self.store.close()
        quiver.Store.remove(self.name)


def run_loader(size, seconds):
    import quiver
    import quiver.torch as qt

    s = Stream(size)
    try:
        stream = quiver.Stream.open(s.store, "bench")
        with qt.Loader(stream, "train", shard_size=SHARD, timeout=30) as loader:
            return timed(loader, seconds)
    finally:
        s.close()


def run_streamdataset(size, seconds):
    import torch
    import quiver.torch as qt

    s = Stream(size)
    try:
        dataset = qt.StreamDataset(s.name, "bench", "train", shard_size=SHARD, timeout=30)
        return timed(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2), seconds)
    finally:
        s.close()


# ---- torch's own ways ---------------------------------------------------------

class Made:
    """An IterableDataset whose workers make the batches themselves."""

    def __init__(self, rows):
        import torch

        class Dataset(torch.utils.data.IterableDataset):
            def __iter__(inner):
                while True:
                    yield tensor_batch(rows)

        self.dataset = Dataset()


def run_dataloader(size, seconds):
    import torch

    loader = torch.utils.data.DataLoader(Made(rows_for(size)).dataset, batch_size=None, num_workers=2)
    return timed(loader, seconds)


def queue_producer(queue, rows):
    while True:
        queue.put(tensor_batch(rows))


def run_queue(size, seconds):
    import torch.multiprocessing as mp

    queue = mp.Queue(maxsize=64)
    proc = mp.Process(target=queue_producer, args=(queue, rows_for(size)), daemon=True)
    proc.start()
    try:

        def items():
            while True:
                yield queue.get()

        return timed(items(), seconds)
    finally:
        proc.kill()
        proc.join()


# ---- what the Loader adds, in one process -------------------------------------

def per_batch_costs(size, batches=2000):
    """µs per batch: a consumer's poll, the shard manager's read, the Loader."""
    import quiver
    import quiver.torch as qt

    name = f"torchbench-cost-{os.getpid()}"
    rows = rows_for(size)
    store = quiver.Store.create(name, capacity=max(64 << 20, 2 * batches * (size + 4096)), max_objects=2 * batches + 64)
    try:
        out = {}
        for what in ("poll", "read_task", "loader"):
            stream = quiver.Stream.create(store, what, arrow_batch(1).schema, groups=["g"])
            producer = stream.producer()
            batch = arrow_batch(rows)
            for _ in range(batches):
                producer.append(batch)
            producer.close()
            start = time.perf_counter()
            n = 0
            if what == "poll":
                for b in stream.consumer("g"):
                    b.column(COLUMNS - 1)
                    n += 1
            elif what == "read_task":
                with quiver.ShardManager.join(stream, "g", shard_size=SHARD) as member:
                    while True:
                        try:
                            task = member.next_task(timeout=10)
                        except quiver.EndOfStream:
                            break
                        for b in member.read_task(task):
                            b.column(COLUMNS - 1)
                            n += 1
                        member.report(task)
            else:
                with qt.Loader(stream, "g", shard_size=SHARD, timeout=10) as loader:
                    for tensors in loader:
                        n += 1
            assert n == batches, (what, n)
            out[what] = (time.perf_counter() - start) / n * 1e6
        return out
    finally:
        store.close()
        quiver.Store.remove(name)


# ---- peak memory ---------------------------------------------------------------

def run_dataloader3(size, seconds):
    import torch

    loader = torch.utils.data.DataLoader(Made(rows_for(size)).dataset, batch_size=None, num_workers=3)
    return timed(loader, seconds)


# A dataset held in the training process as Python objects, as most are:
# `DataLoader` workers are forked with it, and reading it touches every
# object's reference count, which copies the pages they lie in into each
# worker (pytorch/pytorch#13246). With quiver the same rows lie in the
# store once, and the training process reads them there.
HELD_ROWS = 1_000_000


def run_held_dataloader3(size, seconds):
    import torch

    rows = rows_for(size)

    class Held(torch.utils.data.IterableDataset):
        def __init__(self):
            self.samples = [(float(i), float(i + 1), float(i + 2), float(i + 3)) for i in range(HELD_ROWS)]

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            step, first = (info.num_workers, info.id) if info else (1, 0)
            for start in range(first * rows, len(self.samples), step * rows):
                chunk = self.samples[start : start + rows]
                columns = list(zip(*chunk))
                yield {f"c{c}": torch.tensor(columns[c], dtype=torch.float32) for c in range(COLUMNS)}

    # One epoch: the loop touches every batch.
    for tensors in torch.utils.data.DataLoader(Held(), batch_size=None, num_workers=3):
        touch(tensors)


def held_producer(name, rows):
    import pyarrow as pa

    import quiver

    with quiver.Store.open(name) as store:
        producer = quiver.Stream.open(store, "held").producer()
        for start in range(0, HELD_ROWS, rows):
            n = min(rows, HELD_ROWS - start)
            producer.append(pa.record_batch(
                [pa.array([float(start + i + c) for i in range(n)], pa.float32()) for c in range(COLUMNS)],
                names=[f"c{c}" for c in range(COLUMNS)],
            ))  # fmt: skip
        producer.close()


def run_held_loader(size, seconds):
    """The same rows, appended to a stream by a producer process, read by a
    Loader in the training process: one epoch."""
    import quiver
    import quiver.torch as qt

    rows = rows_for(size)
    name = f"torchbench-held-{os.getpid()}"
    store = quiver.Store.create(name, capacity=HELD_ROWS * 16 * 2 + (64 << 20), max_objects=HELD_ROWS // rows + 64)
    try:
        stream = quiver.Stream.create(store, "held", arrow_batch(1).schema, groups=["train"])
        # A producer process appends the rows, as preprocessing would.
        subprocess.run([sys.executable, HERE, "held-producer", name, str(rows)], check=True)
        # One epoch: the loop touches every batch.
        with qt.Loader(stream, "train", shard_size=SHARD, timeout=30) as loader:
            for tensors in loader:
                touch(tensors)
    finally:
        store.close()
        quiver.Store.remove(name)


MEMORY_PATHS = {
    "loader": run_loader,
    "dataloader3": run_dataloader3,
    "held-loader": run_held_loader,
    "held-dataloader3": run_held_dataloader3,
}


def tree(pid):
    """`pid` and its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rollup(pid):
    """(Rss, Pss) of `pid` in bytes (0, 0 once it is gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        return 0, 0
    return values.get("Rss", 0), values.get("Pss", 0)


def peak_memory(path, size, seconds):
    """Peak RSS of the training process, and peak PSS summed over it and
    every process it started (workers; the Loader's producer), sampled
    every 20 ms while `path` runs for `seconds`."""
    child = subprocess.Popen([sys.executable, HERE, "memory-child", path, str(size), str(seconds)])
    rss_peak = pss_peak = 0
    while child.poll() is None:
        pids = tree(child.pid)
        rss_peak = max(rss_peak, rollup(child.pid)[0])
        pss_peak = max(pss_peak, sum(rollup(p)[1] for p in pids))
        time.sleep(0.02)
    assert child.returncode == 0, f"{path} failed"
    return rss_peak, pss_peak


PATHS = {"loader": run_loader, "dataloader": run_dataloader, "queue": run_queue, "streamdataset": run_streamdataset}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "producer":
        producer(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "held-producer":
        held_producer(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "memory-child":
        MEMORY_PATHS[sys.argv[2]](int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes", default="1024,65536,1048576")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    parser.add_argument("--memory", action="store_true", help="only the peak memory: Loader against a 3-worker DataLoader")
    args = parser.parse_args()
    if args.memory:
        print("peak memory, MiB (training process RSS; PSS of it and every process it started)\n")
        print("| batch | Loader: RSS | Loader: PSS, with its producer | DataLoader, 3 workers: RSS | DataLoader, 3 workers: PSS, with the workers |")
        print("|---|---|---|---|---|")
        mib = 1 << 20
        for size in [int(s) for s in args.sizes.split(",")]:
            (lr, lp), (dr, dp) = (peak_memory(p, size, args.seconds) for p in ("loader", "dataloader3"))
            print(f"| {size} B | {lr / mib:.0f} | {lp / mib:.0f} | {dr / mib:.0f} | {dp / mib:.0f} |")
        print(f"\none epoch over {HELD_ROWS:,} rows of 4 floats, 1 KiB batches: held in the training process "
              "as Python objects and read by 3 DataLoader workers, against the same rows in a stream\n")
        print("| | Loader | DataLoader, 3 workers |")
        print("|---|---|---|")
        (lr, lp), (dr, dp) = (peak_memory(p, 1024, args.seconds) for p in ("held-loader", "held-dataloader3"))
        print(f"| training process RSS | {lr / mib:.0f} | {dr / mib:.0f} |")
        print(f"| PSS of every process | {lp / mib:.0f} | {dp / mib:.0f} |")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = {(size, path): [] for size in sizes for path in PATHS}
    for _ in range(args.rounds):
        for size in sizes:
            for path, run in PATHS.items():
                runs[(size, path)].append(run(size, args.seconds))
    costs = {size: per_batch_costs(size) for size in sizes}
    if args.json:
        print(json.dumps({"rates": {f"{s}/{p}": v for (s, p), v in runs.items()}, "costs_us": costs}))
        return
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"batches/s reaching the loop (medians of {args.rounds} rounds of {args.seconds} s)\n")
    print("| batch | Loader | DataLoader, 2 workers | mp.Queue | StreamDataset, 2 workers | Loader / DataLoader |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        m = {p: med[(size, p)] for p in PATHS}
        print(
            f"| {size} B | {m['loader']:,.0f} | {m['dataloader']:,.0f} | {m['queue']:,.0f} | "
            f"{m['streamdataset']:,.0f} | {m['loader'] / m['dataloader']:.1f}x |"
        )
    print("\nµs per batch in one process (4 columns)\n")
    print("| batch | consumer poll | shard manager read | Loader | Loader - read |")
    print("|---|---|---|---|---|")
    for size in sizes:
        c = costs[size]
        print(f"| {size} B | {c['poll']:.1f} | {c['read_task']:.1f} | {c['loader']:.1f} | {c['loader'] - c['read_task']:.1f} |")


if __name__ == "__main__":
    main()
