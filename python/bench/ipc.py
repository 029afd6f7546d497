#!/usr/bin/env python3
"""Handing batches between Python processes: quiver beside its peers, in one sitting.

    .venv/bin/python python/bench/ipc.py [--seconds 3] [--rounds 3]
        [--sizes 1024,65536,1048576] [--consumers 1,3] [--peers quiver,quiver_np,...]
        [--latency-rate 10000] [--out FILE.jsonl]

The workload (the same for every peer): one producer process hands batches
of two 8-byte columns (rows = size / 16; column 0 int64, column 1 float64)
to 1 or 3 consumer processes, and every consumer receives every batch. The
producer stays within a window of clamp(4 MiB / size, 8, 512) batches of the
slowest consumer. Per batch the producer writes the sequence number into
column 0 row 0, a CLOCK_MONOTONIC stamp into row 1 and the sequence number
into column 1's last row, then hands the batch off. Each consumer reads the
row count, rows 0 and 1 of column 0 and the last row of column 1, checks the
sequence (gaps = lost, going back = out of order, last != first = torn) and
records receipt - stamp.

Peers:
  quiver     Producer.append(the batch, refilled in place) / a consumer group
             per consumer, `for batch in consumer` (pyarrow RecordBatches),
             values read as pyarrow scalars, commit every window/4
  quiver_np  the same, but `for columns in consumer.iter_numpy()`: a dict of
             read-only NumPy views of the shared memory per batch
  iceoryx2   iceoryx2's Python binding, publish-subscribe of Slice[c_uint8]:
             one memmove into a loaned sample, send, notify on an event
             service; consumers receive zero-copy and park on a listener
  shm_ring   a multiprocessing.shared_memory ring of `window` slots written
             by hand (one NumPy copy into a slot), counters in the segment,
             two multiprocessing.Condition for the wake-ups
  zmq        pyzmq XPUB (XPUB_NODROP) -> SUB over ipc://, HWM = window/2
  mp_queue   multiprocessing.Queue(maxsize=window) per consumer, put(bytes)
  ray        (if installed) ray.put + an actor call per consumer

Timing: the producer starts its clock once every consumer is ready, sends
for `--seconds`, then an end marker; batches/s = batches sent / (the last
consumer's receipt of the last batch - start). Within a cell the peers
alternate and their order rotates each round; the table shows medians.
Then the latency runs: 1 consumer, 1 KiB, paced at `--latency-rate`.
Peers that are not installed are left out (pip install iceoryx2==0.10.0
pyzmq). OpenBLAS threads are pinned to 1: NumPy's idle BLAS threads
would otherwise spin on the 2 cores the processes share.

Internal entry point: `ipc.py run --peer P ...` is one measured run (one
JSON line).
"""

import os

# Before NumPy is imported, in this process and (inherited) in its children.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from array import array  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.abspath(__file__)
WINDOW_BYTES = 4 << 20
PEERS = ["quiver", "quiver_np", "iceoryx2", "ray", "shm_ring", "mp_queue", "zmq"]
SCRATCH = os.environ.get("PYIPC_SCRATCH") or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"quiver-ipc-{os.getuid()}")
READY_TIMEOUT = 60.0
IDLE_TIMEOUT = 60.0


def window_for(size):
    return max(8, min(512, WINDOW_BYTES // size))


def step_for(window):
    return max(1, window // 4)


# ---- the batch and its check ----------------------------------------------------


class Payload:
    """The producer's batch: `size` bytes, column 0 (int64) then column 1
    (float64), rows = size / 16, filled once."""

    def __init__(self, size):
        self.size = size
        self.rows = size // 16
        self.arr = np.empty(size // 8, dtype=np.int64)
        self.c0 = self.arr[: self.rows]
        self.c1 = self.arr[self.rows:].view(np.float64)
        self.c0[:] = np.arange(self.rows)
        self.c1[:] = np.arange(self.rows) * 0.5
        self.addr = self.arr.ctypes.data

    def stamp(self, seq):
        self.c0[0] = seq
        self.c0[1] = time.monotonic_ns()
        self.c1[-1] = seq


def raw_views(buf, size):
    """Zero-copy column views of a raw batch of `size` bytes in `buf`."""
    rows = size // 16
    return rows, np.frombuffer(buf, np.int64, rows, 0), np.frombuffer(buf, np.float64, rows, rows * 8)


class Tally:
    """A consumer's count: every batch in order, none torn, row counts right,
    and receipt - stamp for each."""

    def __init__(self, rows):
        self.rows = rows
        self.expected = 0
        self.received = 0
        self.gaps = 0
        self.out_of_order = 0
        self.torn = 0
        self.bad_rows = 0
        self.lat = array("q")
        self.t_first = 0
        self.t_last = 0

    def see(self, rows, c0, c1):
        now = time.monotonic_ns()
        seq = int(c0[0])
        self.lat.append(now - int(c0[1]))
        if c1[-1] != seq:
            self.torn += 1
        if rows != self.rows:
            self.bad_rows += 1
        if seq != self.expected:
            if seq > self.expected:
                self.gaps += seq - self.expected
            else:
                self.out_of_order += 1
        self.expected = seq + 1
        self.received += 1
        if self.received == 1:
            self.t_first = now
        self.t_last = now

    def see_values(self, rows, seq, stamp, tail):
        """`see` for values already read (quiver's pyarrow scalars)."""
        now = time.monotonic_ns()
        self.lat.append(now - stamp)
        if tail != seq:
            self.torn += 1
        if rows != self.rows:
            self.bad_rows += 1
        if seq != self.expected:
            if seq > self.expected:
                self.gaps += seq - self.expected
            else:
                self.out_of_order += 1
        self.expected = seq + 1
        self.received += 1
        if self.received == 1:
            self.t_first = now
        self.t_last = now

    def report(self):
        lat = np.frombuffer(self.lat, dtype=np.int64) if len(self.lat) else np.zeros(1, np.int64)
        return {
            "received": self.received, "gaps": self.gaps, "out_of_order": self.out_of_order,
            "torn": self.torn, "bad_rows": self.bad_rows, "t_first_ns": self.t_first, "t_last_ns": self.t_last,
            "lat_p50_us": float(np.percentile(lat, 50)) / 1e3, "lat_p99_us": float(np.percentile(lat, 99)) / 1e3,
            "lat_max_us": float(lat.max()) / 1e3,
        }


def drive(send, seconds, rate):
    """The producer loop: send(i) until `seconds` have passed (paced at `rate`
    batches/s when rate > 0). Returns (batches sent, start ns)."""
    t0 = time.monotonic_ns()
    start = t0 / 1e9
    deadline = start + seconds
    i = 0
    if rate > 0:
        period = 1.0 / rate
        while True:
            due = start + i * period
            now = time.monotonic()
            if now >= deadline:
                break
            if due > now:
                time.sleep(due - now)
            send(i)
            i += 1
    else:
        while True:
            send(i)
            i += 1
            if (i & 7) == 0 and time.monotonic() >= deadline:
                break
    return i, t0


# ---- plumbing for multiprocessing consumers ----------------------------------------


def spawn_consumers(ctx, role, n, args, per=None):
    """Starts n consumer processes running CONSUMERS[role](k, ctl, *args, *per(k))."""
    ctl = ctx.Queue()
    procs = []
    for k in range(n):
        extra = per(k) if per else ()
        p = ctx.Process(target=consumer_entry, args=(role, k, ctl, *args, *extra), daemon=True)
        p.start()
        procs.append(p)
    return ctl, procs


def wait_ready(ctl, procs):
    seen = 0
    deadline = time.monotonic() + READY_TIMEOUT
    while seen < len(procs):
        try:
            msg = ctl.get(timeout=1.0)
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError(f"a consumer died before it was ready: {[p.exitcode for p in procs]}")
            if time.monotonic() > deadline:
                raise RuntimeError("consumers not ready in time")
            continue
        if msg[0] == "ready":
            seen += 1
        elif msg[0] == "error":
            raise RuntimeError(f"consumer {msg[1]}: {msg[2]}")


def collect(ctl, procs, timeout=120.0):
    reports = {}
    deadline = time.monotonic() + timeout
    while len(reports) < len(procs):
        try:
            msg = ctl.get(timeout=1.0)
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError("consumers did not report in time")
            if all(p.exitcode is not None for p in procs) and ctl.empty():
                raise RuntimeError(f"consumers exited without reporting: {[p.exitcode for p in procs]}")
            continue
        if msg[0] == "report":
            reports[msg[1]] = msg[2]
        elif msg[0] == "error":
            raise RuntimeError(f"consumer {msg[1]}: {msg[2]}")
    for p in procs:
        p.join(timeout=30)
        if p.exitcode is None:
            p.kill()
            p.join()
    return [reports[k] for k in sorted(reports)]


def consumer_entry(role, k, ctl, *args):
    """A consumer process: errors go back to the producer over `ctl`."""
    try:
        CONSUMERS[role](k, ctl, *args)
    except BaseException as e:  # noqa: BLE001
        import traceback

        ctl.put(("error", k, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise


# ---- quiver ---------------------------------------------------------------------------


def quiver_batch(src):
    import pyarrow as pa

    a0 = pa.Array.from_buffers(pa.int64(), src.rows, [None, pa.py_buffer(src.c0)])
    a1 = pa.Array.from_buffers(pa.float64(), src.rows, [None, pa.py_buffer(src.c1)])
    return pa.RecordBatch.from_arrays([a0, a1], names=["seq", "value"])


def _quiver_consumer(k, ctl, store_name, size, step, touch):
    import quiver

    store = quiver.Store.open(store_name)
    consumer = quiver.Stream.open(store, "bench").consumer(f"c{k}")
    tally = Tally(size // 16)
    ctl.put(("ready", k))
    if touch == "numpy":  # read-only NumPy views of the shared memory, made by quiver
        for columns in consumer.iter_numpy():
            c0 = columns["seq"]
            tally.see(len(c0), c0, columns["value"])
            if tally.received % step == 0:
                consumer.commit()
    else:  # "scalars": the three values read as pyarrow scalars
        for batch in consumer:
            c0 = batch.column(0)
            tally.see_values(batch.num_rows, c0[0].as_py(), c0[1].as_py(), batch.column(1)[-1].as_py())
            if tally.received % step == 0:
                consumer.commit()
    consumer.commit()
    ctl.put(("report", k, tally.report()))


def run_quiver(ctx, n, size, seconds, rate, touch="scalars"):
    import quiver

    window = window_for(size)
    step = step_for(window)
    src = Payload(size)
    batch = quiver_batch(src)
    name = f"pyipc-{os.getpid()}"
    # Room for window + step batches, the bound quiver bench --stream means
    # (src/cli/bench.rs run_stream); a batch takes its bytes + about 330 in the
    # store (measured), where that formula counts 4096 and so holds ~3,200 1 KiB
    # batches. Consumers commit every step; appends block when the store is full.
    capacity = (batch.get_total_buffer_size() + 336) * (window + step) + (4 << 10)
    store = quiver.Store.create(name, capacity=capacity, max_objects=4096)
    try:
        stream = quiver.Stream.create(store, "bench", batch.schema, groups=[f"c{k}" for k in range(n)])
        producer = stream.producer(timeout=60)
        ctl, procs = spawn_consumers(ctx, "quiver", n, (name, size, step, touch))
        wait_ready(ctl, procs)
        append = producer.append
        stamp = src.stamp

        def send(i):
            stamp(i)
            append(batch)

        sent, t0 = drive(send, seconds, rate)
        producer.close()
        reports = collect(ctl, procs)
    finally:
        store.close()
        quiver.Store.remove(name)
    return sent, t0, reports, {"window": window, "store_capacity": capacity, "touch": touch}


# ---- iceoryx2 -------------------------------------------------------------------------


def iox_node():
    import iceoryx2 as iox2

    iox2.set_log_level_from_env_or(iox2.LogLevel.Warn)
    cfg = iox2.config.default()
    cfg.global_cfg.prefix = iox2.FileName.new("pyipc_")
    cfg.global_cfg.root_path = iox2.Path.new(os.path.join(SCRATCH, "iox2") + "/")
    return iox2, iox2.NodeBuilder.new().config(cfg).create(iox2.ServiceType.Ipc)


def _iox_consumer(k, ctl, service, size, window, step):
    iox2, node = iox_node()
    pubsub = node.service_builder(iox2.ServiceName.new(service + "/data")).publish_subscribe(
        iox2.Slice[ctypes.c_uint8]).open()
    wake = node.service_builder(iox2.ServiceName.new(service + "/wake")).event().open()
    ack = node.service_builder(iox2.ServiceName.new(service + "/ack")).event().open()
    sub = pubsub.subscriber_builder().buffer_size(window).create()
    listener = wake.listener_builder().create()
    acker = ack.notifier_builder().create()
    park = iox2.Duration.from_millis(100)
    arr_t = ctypes.c_char * size
    tally = Tally(size // 16)
    ctl.put(("ready", k))
    idle = 0
    while True:
        s = sub.receive()
        if s is None:
            if not listener.timed_wait(park):
                idle += 1
                if idle > IDLE_TIMEOUT * 10:  # parks of up to 100 ms
                    raise RuntimeError("no sample for about 60 s")
            continue
        idle = 0
        nbytes = s.header.number_of_elements
        rows, c0, c1 = raw_views(arr_t.from_address(s.payload_ptr), size)
        if c0[0] == -1:
            s.delete()
            break
        tally.see(nbytes // 16, c0, c1)
        del c0, c1
        s.delete()
        if tally.received % step == 0:
            acker.notify()
    acker.notify()
    ctl.put(("report", k, tally.report()))


def run_iceoryx2(ctx, n, size, seconds, rate):
    iox2, node = iox_node()
    window = window_for(size)
    step = step_for(window)
    service = f"pyipc-{os.getpid()}"
    pubsub = (
        node.service_builder(iox2.ServiceName.new(service + "/data"))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .payload_alignment(iox2.Alignment.new(64))
        .enable_safe_overflow(False)
        .history_size(0)
        .subscriber_max_buffer_size(window)
        .subscriber_max_borrowed_samples(1)
        .max_subscribers(n)
        .max_publishers(1)
        .max_nodes(n + 1)
        .create()
    )
    wake = (node.service_builder(iox2.ServiceName.new(service + "/wake")).event()
            .max_listeners(n).max_notifiers(1).max_nodes(n + 1).create())
    ack = (node.service_builder(iox2.ServiceName.new(service + "/ack")).event()
           .max_listeners(1).max_notifiers(n).max_nodes(n + 1).create())
    # The data segment is the window: `window` samples (loaned + in flight), so a
    # loan fails (OutOfMemory) when the producer is a window ahead; it then parks
    # on the ack event, which consumers notify every `step` samples.
    publisher = (
        pubsub.publisher_builder()
        .initial_max_slice_len(size)
        .allocation_strategy(iox2.AllocationStrategy.Static)
        .max_loaned_samples(1)
        .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
        .override_sample_preallocation(window)
        .create()
    )
    notifier = wake.notifier_builder().create()
    ack_listener = ack.listener_builder().create()
    ctl, procs = spawn_consumers(ctx, "iceoryx2", n, (service, size, window, step))
    wait_ready(ctl, procs)
    deadline = time.monotonic() + READY_TIMEOUT
    while pubsub.dynamic_config.number_of_subscribers < n:
        if time.monotonic() > deadline:
            raise RuntimeError("subscribers did not attach")
        time.sleep(0.001)
    publisher.update_connections()
    src = Payload(size)
    park = iox2.Duration.from_millis(10)
    stats = {"failed_loans": 0}
    loan = publisher.loan_slice_uninit
    memmove = ctypes.memmove

    def get_loan():
        while True:
            try:
                return loan(size)
            except iox2.LoanError as e:
                if "OutOfMemory" not in str(e) and "ExceedsMaxLoans" not in str(e):
                    raise
                stats["failed_loans"] += 1
                ack_listener.timed_wait(park)

    def send(i):
        src.stamp(i)
        s = get_loan()
        memmove(s.payload_ptr, src.addr, size)
        s.assume_init().send()
        notifier.notify()

    sent, t0 = drive(send, seconds, rate)
    src.c0[0] = -1
    s = get_loan()
    memmove(s.payload_ptr, src.addr, size)
    s.assume_init().send()
    notifier.notify()
    reports = collect(ctl, procs)
    del publisher, notifier, ack_listener, pubsub, wake, ack, node
    return sent, t0, reports, {"window": window, **stats}


# ---- Ray --------------------------------------------------------------------------------


class RayConsumer:
    def __init__(self, size):
        self.tally = Tally(size // 16)

    def ready(self):
        return os.getpid()

    def recv(self, arr):
        rows = arr.nbytes // 16
        self.tally.see(rows, arr[:rows], arr[rows:].view(np.float64))

    def report(self):
        return self.tally.report()


def run_ray(ctx, n, size, seconds, rate):
    from collections import deque

    import ray

    window = window_for(size)
    t_init = time.monotonic()
    ray.init(
        num_cpus=4, include_dashboard=False, object_store_memory=512 << 20, logging_level="ERROR",
        log_to_driver=False, _temp_dir=os.path.join(SCRATCH, "ray"),
    )
    try:
        init_s = time.monotonic() - t_init
        actor = ray.remote(num_cpus=0)(RayConsumer)
        actors = [actor.remote(size) for _ in range(n)]
        ray.get([a.ready.remote() for a in actors], timeout=READY_TIMEOUT)
        src = Payload(size)
        pending = deque()
        limit = window * n
        put, get = ray.put, ray.get
        recvs = [a.recv.remote for a in actors]

        def send(i):
            src.stamp(i)
            ref = put(src.arr)  # one copy, into the object store
            for r in recvs:
                pending.append(r(ref))
            while len(pending) > limit:
                get(pending.popleft())

        sent, t0 = drive(send, seconds, rate)
        get(list(pending))
        reports = get([a.report.remote() for a in actors])
    finally:
        ray.shutdown()
    return sent, t0, reports, {"window": window, "ray_init_s": init_s}


# ---- multiprocessing.shared_memory ring + Condition ------------------------------------


HDR = 64  # one cache line per counter: head, closed, data sleepers, space sleepers, tails[n]


def _ring_consumer(k, ctl, shm_name, n, size, window, step, data_cond, space_cond):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        words = np.frombuffer(shm.buf, np.int64, (4 + n) * HDR // 8, 0)[:: HDR // 8]
        head, closed, data_sleepers, space_sleepers, tail_at = 0, 1, 2, 3, 4 + k
        base = (4 + n) * HDR
        tally = Tally(size // 16)
        ctl.put(("ready", k))
        t = 0
        while True:
            if t == words[head]:
                with data_cond:
                    while t == words[head] and not words[closed]:
                        words[data_sleepers] += 1
                        data_cond.wait(0.05)
                        words[data_sleepers] -= 1
                    if t == words[head]:
                        break
            off = base + (t % window) * size
            rows, c0, c1 = raw_views(shm.buf[off:off + size], size)
            tally.see(rows, c0, c1)
            del c0, c1
            t += 1
            words[tail_at] = t
            if t % step == 0:
                with space_cond:
                    if words[space_sleepers]:
                        space_cond.notify_all()
        with space_cond:
            space_cond.notify_all()
        del words
        ctl.put(("report", k, tally.report()))
    finally:
        shm.close()


def run_shm_ring(ctx, n, size, seconds, rate):
    from multiprocessing import shared_memory

    window = window_for(size)
    step = step_for(window)
    base = (4 + n) * HDR
    shm = shared_memory.SharedMemory(name=f"pyipc_ring_{os.getpid()}", create=True, size=base + window * size)
    try:
        words = np.frombuffer(shm.buf, np.int64, (4 + n) * HDR // 8, 0)[:: HDR // 8]
        words[:] = 0
        tails = words[4:]
        head, closed, data_sleepers, space_sleepers = 0, 1, 2, 3
        ring = np.frombuffer(shm.buf, np.int64, window * size // 8, base).reshape(window, size // 8)
        data_cond, space_cond = ctx.Condition(), ctx.Condition()
        ctl, procs = spawn_consumers(ctx, "shm_ring", n, (shm.name, n, size, window, step, data_cond, space_cond))
        wait_ready(ctl, procs)
        src = Payload(size)
        stats = {"producer_waits": 0}

        slowest = [0]  # the slowest consumer's tail, re-read only when the window looks full

        def send(i):
            src.stamp(i)
            if i - slowest[0] >= window:
                slowest[0] = int(tails.min())
                if i - slowest[0] >= window:
                    stats["producer_waits"] += 1
                    with space_cond:
                        while i - tails.min() >= window:
                            words[space_sleepers] += 1
                            space_cond.wait(0.05)
                            words[space_sleepers] -= 1
                    slowest[0] = int(tails.min())
            ring[i % window] = src.arr  # the one copy, into shared memory
            words[head] = i + 1
            with data_cond:
                if words[data_sleepers]:
                    data_cond.notify_all()

        sent, t0 = drive(send, seconds, rate)
        with data_cond:
            words[closed] = 1
            data_cond.notify_all()
        reports = collect(ctl, procs)
        del words, tails, ring
    finally:
        shm.close()
        shm.unlink()
    return sent, t0, reports, {"window": window, **stats}


# ---- multiprocessing.Queue, pickled bytes ----------------------------------------------


def _queue_consumer(k, ctl, q, size):
    tally = Tally(size // 16)
    ctl.put(("ready", k))
    get = q.get
    while True:
        b = get()
        if b is None:
            break
        rows, c0, c1 = raw_views(b, len(b))
        tally.see(rows, c0, c1)
    ctl.put(("report", k, tally.report()))


def run_mp_queue(ctx, n, size, seconds, rate):
    window = window_for(size)
    queues = [ctx.Queue(maxsize=window) for _ in range(n)]
    ctl, procs = spawn_consumers(ctx, "mp_queue", n, (), per=lambda k: (queues[k], size))
    wait_ready(ctl, procs)
    src = Payload(size)
    puts = [q.put for q in queues]

    def send(i):
        src.stamp(i)
        b = src.arr.tobytes()
        for put in puts:
            put(b)

    sent, t0 = drive(send, seconds, rate)
    for put in puts:
        put(None)
    reports = collect(ctl, procs)
    return sent, t0, reports, {"window": window}


# ---- pyzmq ------------------------------------------------------------------------------


def _zmq_consumer(k, ctl, endpoint, size, hwm):
    import zmq

    zctx = zmq.Context()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.connect(endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    tally = Tally(size // 16)
    ctl.put(("ready", k))
    recv = sub.recv
    while True:
        f = recv(copy=False)
        buf = f.buffer
        if buf.nbytes == 0:
            break
        rows, c0, c1 = raw_views(buf, buf.nbytes)
        tally.see(rows, c0, c1)
        del c0, c1, buf, f
    sub.close(linger=0)
    zctx.term()
    ctl.put(("report", k, tally.report()))


def run_zmq(ctx, n, size, seconds, rate):
    import zmq

    window = window_for(size)
    hwm = max(1, window // 2)
    path = os.path.join(SCRATCH, f"zmq-{os.getpid()}.sock")
    endpoint = "ipc://" + path
    zctx = zmq.Context()
    pub = zctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    pub.setsockopt(zmq.XPUB_NODROP, 1)  # block at the HWM instead of dropping
    pub.setsockopt(zmq.SNDHWM, hwm)
    pub.bind(endpoint)
    try:
        ctl, procs = spawn_consumers(ctx, "zmq", n, (endpoint, size, hwm))
        wait_ready(ctl, procs)
        pub.setsockopt(zmq.RCVTIMEO, int(READY_TIMEOUT * 1000))
        for _ in range(n):  # one subscription message per subscriber (XPUB_VERBOSE)
            pub.recv()
        src = Payload(size)
        send_ = pub.send

        def send(i):
            src.stamp(i)
            send_(src.arr.copy(), copy=False)  # a fresh buffer: zmq keeps it until sent

        sent, t0 = drive(send, seconds, rate)
        send_(b"")
        reports = collect(ctl, procs)
    finally:
        pub.close(linger=1000)
        zctx.term()
        if os.path.exists(path):
            os.unlink(path)
    return sent, t0, reports, {"window": window, "hwm": hwm, "copy_threshold": zmq.COPY_THRESHOLD}


CONSUMERS = {
    "quiver": _quiver_consumer, "iceoryx2": _iox_consumer, "shm_ring": _ring_consumer,
    "mp_queue": _queue_consumer, "zmq": _zmq_consumer,
}
RUNNERS = {
    "quiver": run_quiver,
    "quiver_np": lambda *a: run_quiver(*a, touch="numpy"), "iceoryx2": run_iceoryx2, "ray": run_ray,
    "shm_ring": run_shm_ring, "mp_queue": run_mp_queue, "zmq": run_zmq,
}


def one_run(args):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    load = os.getloadavg()[0]
    sent, t0, reports, extra = RUNNERS[args.peer](ctx, args.consumers, args.size, args.seconds, args.rate)
    t_end = max(r["t_last_ns"] for r in reports)
    seconds = (t_end - t0) / 1e9 if t_end > t0 else float("nan")
    lost = sum(max(r["gaps"], sent - r["received"]) for r in reports)
    out = {
        "peer": args.peer, "consumers": args.consumers, "batch_bytes": args.size, "rate": args.rate,
        "sent": sent, "seconds": seconds, "batches_per_s": sent / seconds, "gb_per_s": sent * args.size / seconds / 1e9,
        "lost": lost, "out_of_order": sum(r["out_of_order"] for r in reports),
        "torn": sum(r["torn"] for r in reports), "bad_rows": sum(r["bad_rows"] for r in reports),
        "received": [r["received"] for r in reports],
        "lat_p50_us": max(r["lat_p50_us"] for r in reports), "lat_p99_us": max(r["lat_p99_us"] for r in reports),
        "lat_max_us": max(r["lat_max_us"] for r in reports),
        "load_before": load, "load_after": os.getloadavg()[0], **extra,
    }
    print(json.dumps(out), flush=True)


# ---- the orchestrator --------------------------------------------------------------------


def installed(peer):
    """Whether the peer's module imports; a missing one is left out, said once."""
    import importlib.util

    module = {"quiver_np": "quiver", "shm_ring": "numpy", "mp_queue": "numpy"}.get(peer, peer)
    if importlib.util.find_spec(module) is None:
        print(f"# {peer}: {module} is not installed, left out", file=sys.stderr)
        return False
    return True


def versions():
    out = {"python": platform.python_version(), "nproc": os.cpu_count()}
    for mod in ("numpy", "pyarrow", "quiver", "iceoryx2", "ray", "zmq"):
        try:
            from importlib.metadata import version
            out[mod] = version({"zmq": "pyzmq"}.get(mod, mod))
        except Exception as e:  # noqa: BLE001
            out[mod] = f"missing ({type(e).__name__})"
    return out


def measure(peer, consumers, size, seconds, rate, round_, out, timeout):
    cmd = [sys.executable, HERE, "run", "--peer", peer, "--consumers", str(consumers), "--size", str(size),
           "--seconds", str(seconds), "--rate", str(rate)]
    started = time.monotonic()
    try:
        # Its own session, so that a timeout ends the run and every process it started.
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.communicate()
            raise RuntimeError(f"timed out after {timeout} s")
        lines = [l for l in stdout.splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"exit {p.returncode}: {(stderr or stdout)[-1500:]}")
        result = json.loads(lines[-1])
    except Exception as e:  # noqa: BLE001
        result = {"peer": peer, "consumers": consumers, "batch_bytes": size, "rate": rate,
                  "error": f"{type(e).__name__}: {e}"[-2000:]}
    result.update({"round": round_, "seconds_target": seconds, "wall_s": time.monotonic() - started,
                   "kind": "latency" if rate else "throughput", "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")
    if "error" in result:
        print(f"  {peer:9} c={consumers} {size:>8}: ERROR {result['error'][:300]}", file=sys.stderr, flush=True)
    else:
        print(f"  {peer:9} c={consumers} {size:>8} r{round_}: {result['batches_per_s']:>11,.0f}/s "
              f"lost {result['lost']} p50 {result['lat_p50_us']:.0f}us p99 {result['lat_p99_us']:.0f}us "
              f"load {result['load_before']:.2f}", file=sys.stderr, flush=True)
    return result


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def table(results, peers):
    ok = [r for r in results if "error" not in r]
    lines = ["| peer | consumers | batch bytes | batches/s | GB/s | quiver/peer | lost | rounds |",
             "|---|---|---|---|---|---|---|---|"]
    cells = sorted({(r["consumers"], r["batch_bytes"]) for r in results if r["kind"] == "throughput"})
    for consumers, size in cells:
        def rows_of(peer):
            return [r for r in ok if r["kind"] == "throughput" and r["peer"] == peer
                    and r["consumers"] == consumers and r["batch_bytes"] == size]
        q = med([r["batches_per_s"] for r in rows_of("quiver")])
        for peer in peers:
            rs = rows_of(peer)
            errors = sum(1 for r in results if "error" in r and r["peer"] == peer and r["kind"] == "throughput"
                         and r["consumers"] == consumers and r["batch_bytes"] == size)
            if not rs:
                lines.append(f"| {peer} | {consumers} | {size} | failed | | | | 0 ({errors} failed) |")
                continue
            bps = med([r["batches_per_s"] for r in rs])
            gbs = med([r["gb_per_s"] for r in rs])
            lost = sum(r["lost"] + r["out_of_order"] + r["torn"] for r in rs)
            ratio = q / bps if bps else float("nan")
            lines.append(f"| {peer} | {consumers} | {size} | {bps:,.0f} | {gbs:.3f} | {ratio:.2f} | {lost} | "
                         f"{len(rs)}{f' ({errors} failed)' if errors else ''} |")
    lat = [r for r in ok if r["kind"] == "latency"]
    if lat or any(r["kind"] == "latency" for r in results):
        rate = next((r["rate"] for r in results if r["kind"] == "latency"), 0)
        lines += ["", f"Hand-off latency, 1 consumer, 1024-byte batches paced at {rate:,.0f}/s "
                      "(median over rounds of each round's p50 / p99):", "",
                  "| peer | achieved batches/s | p50 µs | p99 µs | lost | rounds |", "|---|---|---|---|---|---|"]
        for peer in peers:
            rs = [r for r in lat if r["peer"] == peer]
            if not rs:
                lines.append(f"| {peer} | failed | | | | 0 |")
                continue
            lines.append(f"| {peer} | {med([r['batches_per_s'] for r in rs]):,.0f} | "
                         f"{med([r['lat_p50_us'] for r in rs]):.1f} | {med([r['lat_p99_us'] for r in rs]):.1f} | "
                         f"{sum(r['lost'] + r['out_of_order'] + r['torn'] for r in rs)} | {len(rs)} |")
    return "\n".join(lines)


def ceilings(sizes, seconds=1.0):
    """What a consumer's own reading costs, with no transport at all: in one
    process, the quiver consumer's reads (`quiver`: three pyarrow scalars;
    `quiver_np`: the arrays of a dict) and the raw peers' (two
    `np.frombuffer` views), with the same tally, of one batch made once.
    No transport can hand a consumer more batches per second than this."""
    out = []
    for size in sizes:
        src = Payload(size)
        batch = quiver_batch(src)
        columns = {"seq": src.c0, "value": src.c1}
        buf = memoryview(src.arr).cast("B")

        def pyarrow_reads(tally):
            c0 = batch.column(0)
            tally.see_values(batch.num_rows, c0[0].as_py(), c0[1].as_py(), batch.column(1)[-1].as_py())

        def dict_reads(tally):
            c0 = columns["seq"]
            tally.see(len(c0), c0, columns["value"])

        def raw_reads(tally):
            rows, c0, c1 = raw_views(buf, size)
            tally.see(rows, c0, c1)

        for name, read in (("pyarrow scalars", pyarrow_reads), ("dict of arrays", dict_reads),
                           ("np.frombuffer views", raw_reads)):
            tally, n = Tally(size // 16), 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for _ in range(1000):
                    read(tally)
                n += 1000
            out.append((size, name, n / (time.perf_counter() - started)))
    return out


def cleanup():
    """Removes what this benchmark's peers may leave behind (its names only)."""
    import glob
    import shutil

    for f in glob.glob("/dev/shm/pyipc_*") + glob.glob("/dev/shm/quiver-pyipc-*") + glob.glob(os.path.join(SCRATCH, "zmq-*.sock")):
        try:
            os.unlink(f)
        except OSError:
            pass
    shutil.rmtree(os.path.join(SCRATCH, "iox2"), ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1024,65536,1048576")
    parser.add_argument("--consumers", default="1,3")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--latency-rate", type=float, default=10000.0)
    parser.add_argument("--latency-seconds", type=float, default=3.0)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=180.0, help="per run")
    parser.add_argument("--out", default=os.path.join(SCRATCH, time.strftime("%Y-%m-%d") + ".jsonl"))
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if installed(p)]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    os.makedirs(SCRATCH, exist_ok=True)
    cleanup()
    meta = {"kind": "meta", "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load": os.getloadavg(),
            "args": vars(args), **versions()}
    with open(args.out, "a") as f:
        f.write(json.dumps(meta) + "\n")
    print(f"# {json.dumps(meta)}", file=sys.stderr, flush=True)
    results = []
    try:
        for consumers in map(int, args.consumers.split(",")):
            for size in map(int, args.sizes.split(",")):
                for r in range(args.rounds):
                    order = peers[r % len(peers):] + peers[: r % len(peers)]
                    for peer in order:
                        results.append(measure(peer, consumers, size, args.seconds, 0, r, args.out, args.timeout))
        if not args.no_latency:
            for r in range(args.rounds):
                order = peers[r % len(peers):] + peers[: r % len(peers)]
                for peer in order:
                    results.append(measure(peer, 1, 1024, args.latency_seconds, args.latency_rate, r, args.out,
                                           args.timeout))
    finally:
        cleanup()
    print(f"\n{len(results)} runs, load {os.getloadavg()[0]:.2f} at the end; raw results in {args.out}\n")
    print(table(results, peers))
    print("\nA consumer's reads alone, no transport (one process, one batch made once):\n")
    print("| batch bytes | reads | batches/s |\n|---|---|---|")
    for size, name, rate in ceilings([s for s in map(int, args.sizes.split(",")) if s < (1 << 20)]):
        print(f"| {size} | {name} | {rate:,.0f} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        p = argparse.ArgumentParser()
        p.add_argument("run")
        p.add_argument("--peer", required=True, choices=PEERS)
        p.add_argument("--consumers", type=int, default=1)
        p.add_argument("--size", type=int, default=1024)
        p.add_argument("--seconds", type=float, default=3.0)
        p.add_argument("--rate", type=float, default=0.0)
        one_run(p.parse_args())
    else:
        main()
