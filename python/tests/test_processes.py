"""Python and Rust processes on one store: a Python producer read by
`quiver consume`, `quiver produce` read by a Python consumer, consumer
processes in groups, and a process killed while it holds a batch."""

import signal
import subprocess

import pyarrow as pa
import pyarrow.ipc
import pytest

import quiver
from conftest import DEADLINE, read_line, run_python, start_python

PRODUCER = """
import sys, quiver, pyarrow as pa
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
producer = stream.producer()
for i in range(int(sys.argv[2])):
    producer.append(pa.record_batch([pa.array([i] * (i % 5 + 1), pa.int64())], names=["n"]))
producer.close()
"""

CONSUMER = """
import sys, quiver
store = quiver.Store.open(sys.argv[1])
consumer = quiver.Stream.open(store, "s").consumer(sys.argv[2])
total = rows = 0
for batch in consumer:
    rows += batch.num_rows
    total += sum(batch.column("n").to_pylist())
consumer.commit()
print(rows, total)
"""


def expected(n):
    return sum(i % 5 + 1 for i in range(n)), sum(i * (i % 5 + 1) for i in range(n))


def test_groups_in_other_processes_each_read_everything(store, name):
    quiver.Stream.create(store, "s", pa.schema([("n", pa.int64())]), partitions=3, groups=["a", "b"])
    consumers = [start_python(CONSUMER, name, g) for g in ("a", "b")]
    run_python(PRODUCER, name, 500)
    for proc in consumers:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        assert tuple(map(int, out.split())) == expected(500)


def test_a_python_producer_and_quiver_consume(store, name, quiver_bin, tmp_path):
    quiver.Stream.create(store, "s", pa.schema([("n", pa.int64())]), groups=["g"])
    run_python(PRODUCER, name, 200)
    out = tmp_path / "out.arrow"
    done = subprocess.run(
        [quiver_bin, "consume", "--store", name, "--stream", "s", "--group", "g", "--to", str(out)],
        capture_output=True, text=True, timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    table = pa.ipc.open_file(out).read_all()
    assert (table.num_rows, sum(table.column("n").to_pylist())) == expected(200)


def test_quiver_produce_and_a_python_consumer(name, quiver_bin, tmp_path):
    source = tmp_path / "in.arrow"
    schema = pa.schema([("n", pa.int64())])
    with pa.ipc.new_file(source, schema) as writer:
        for i in range(50):
            writer.write_batch(pa.record_batch([pa.array([i] * (i % 5 + 1), pa.int64())], schema=schema))
    done = subprocess.run(
        [quiver_bin, "produce", "--store", name, "--stream", "s", "--from", str(source), "--groups", "g", "--close"],
        capture_output=True, text=True, timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    out = run_python(CONSUMER, name, "g").stdout
    assert tuple(map(int, out.split())) == expected(50)
    assert quiver.read_file(source)[0] == schema


HOLDER = """
import sys, quiver
store = quiver.Store.open(sys.argv[1])
consumer = quiver.Stream.open(store, "s").consumer("g")
held = consumer.poll(timeout=30)
consumer.commit()
print("holding", held.num_rows, flush=True)
sys.stdin.read()
"""


def test_a_process_killed_while_holding_a_batch_gives_it_up(store, name):
    stream = quiver.Stream.create(store, "s", pa.schema([("n", pa.int64())]), groups=["g"])
    stream.producer().append(pa.record_batch([pa.array(range(10000), pa.int64())], names=["n"]))
    proc = subprocess.Popen(
        [__import__("sys").executable, "-u", "-c", HOLDER, name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert read_line(proc) == "holding 10000"
        # Committed, so the stream let the batch go; the holder's buffers keep it.
        stats = store.stats()
        assert stats["objects"] == 2 and stream.stats()["bytes"] == 0  # the schema and the held batch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
    finally:
        proc.kill()
    # The dead client's reference is released; the batch's memory is freed.
    assert store.recover_dead_clients() == 1
    stats = store.stats()
    assert (stats["objects"], stats["dead_clients"]) == (1, 1), stats
