"""NumPy from streams: poll_numpy, iter_numpy and poll_many (read-only views
of the shared memory), Producer.reserve (writable views of a batch built in
place), the append of a batch refilled in place, and a commit with nothing
to commit."""

import gc

import pyarrow as pa
import pytest

import quiver

np = pytest.importorskip("numpy")

SCHEMA = pa.schema([("i", pa.int64()), ("f", pa.float32()), ("t", pa.timestamp("us"))])


def batch(first, rows=4):
    return pa.record_batch(
        [
            pa.array(range(first, first + rows), pa.int64()),
            pa.array([x / 2 for x in range(first, first + rows)], pa.float32()),
            pa.array(range(first, first + rows), pa.timestamp("us")),
        ],
        schema=SCHEMA,
    )


def test_poll_numpy_gives_read_only_views_of_the_batch(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    stream.producer().append(batch(10))
    consumer = stream.consumer("g")
    columns = consumer.poll_numpy(timeout=1)
    assert list(columns) == ["i", "f", "t"]
    assert columns["i"].dtype == np.int64 and columns["i"].tolist() == [10, 11, 12, 13]
    assert columns["f"].dtype == np.float32 and columns["f"].tolist() == [5.0, 5.5, 6.0, 6.5]
    assert columns["t"].dtype == np.dtype("datetime64[us]") and columns["t"][0] == np.datetime64(10, "us")
    with pytest.raises(ValueError):
        columns["i"][0] = 1
    view = columns["i"][1:]
    assert not view.flags.writeable, "a view of a read-only array is read-only"
    assert consumer.poll_numpy(timeout=0) is None


def test_a_numpy_view_keeps_its_batch_in_the_store(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    stream.producer().append(batch(0))
    consumer = stream.consumer("g")
    values = consumer.poll_numpy(timeout=1)["i"]
    consumer.commit()
    stream.enforce_retention()
    assert store.stats()["objects"] >= 1, "the view still references its object"
    assert values.tolist() == [0, 1, 2, 3]
    del values
    gc.collect()
    stream.enforce_retention()
    assert stream.stats()["bytes"] == 0


def test_poll_numpy_with_meta_and_at_the_end(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    producer = stream.producer()
    producer.append(batch(0))
    consumer = stream.consumer("g")
    got = consumer.poll_numpy(timeout=1, with_meta=True)
    assert (got.partition, got.offset) == (0, 0) and got.batch["i"].tolist() == [0, 1, 2, 3]
    stream.close()
    with pytest.raises(quiver.EndOfStream):
        consumer.poll_numpy(timeout=1)


def test_iter_numpy_reads_every_batch_and_stops_at_the_end(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    producer = stream.producer()
    for k in range(5):
        producer.append(batch(4 * k))
    stream.close()
    seen = [int(x) for columns in stream.consumer("g").iter_numpy() for x in columns["i"]]
    assert seen == list(range(20))


def test_nulls_are_masked_and_booleans_copied(store):
    schema = pa.schema([("x", pa.float64()), ("ok", pa.bool_())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    stream.producer().append(pa.record_batch([pa.array([1.0, None, 3.0]), pa.array([True, False, None])], schema=schema))
    columns = stream.consumer("g").poll_numpy(timeout=1)
    assert isinstance(columns["x"], np.ma.MaskedArray)
    assert columns["x"].mask.tolist() == [False, True, False] and columns["x"][2] == 3.0
    assert columns["ok"].dtype == np.bool_ and columns["ok"].mask.tolist() == [False, False, True]
    assert columns["ok"][:2].tolist() == [True, False]


def test_a_column_without_a_numpy_form_is_refused_and_not_passed(store):
    schema = pa.schema([("s", pa.string())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    stream.producer().append(pa.record_batch([pa.array(["a", "b"])], schema=schema))
    consumer = stream.consumer("g")
    with pytest.raises(quiver.Error, match='column "s"'):
        consumer.poll_numpy(timeout=1)
    assert consumer.poll(timeout=1).column(0).to_pylist() == ["a", "b"], "the batch was not passed over"


def test_poll_many_takes_what_is_ready(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=2, groups=["g", "h"])
    producer = stream.producer()
    for k in range(7):
        producer.append(batch(4 * k))
    consumer = stream.consumer("g")
    assert consumer.poll_many(0) == []
    first = consumer.poll_many(5, timeout=1)
    assert len(first) == 5 and all(isinstance(b, pa.RecordBatch) for b in first)
    rest = consumer.poll_many(5)
    assert len(rest) == 2
    assert consumer.poll_many(5, timeout=0.05) == []
    got = sorted(int(x) for b in first + rest for x in b.column(0).to_pylist())
    assert got == list(range(28))
    dicts = stream.consumer("h").poll_many(10, timeout=1, numpy=True)
    assert len(dicts) == 7 and sorted(int(x) for d in dicts for x in d["i"]) == list(range(28))
    stream.close()
    with pytest.raises(quiver.EndOfStream):
        consumer.poll_many(3, timeout=1)


def test_poll_many_as_numpy_refuses_a_schema_without_arrays_and_passes_nothing(store):
    schema = pa.schema([("x", pa.int64()), ("s", pa.string())])
    stream = quiver.Stream.create(store, "s", schema, partitions=3, groups=["g"])
    producer = stream.producer()
    for k in range(6):
        producer.append(pa.record_batch([pa.array([k]), pa.array([str(k)])], schema=schema))
    consumer = stream.consumer("g")
    with pytest.raises(quiver.InvalidArgument, match='column "s"'):
        consumer.poll_many(6, timeout=1, numpy=True)
    got = consumer.poll_many(6, timeout=1)
    assert sorted(b.column(0)[0].as_py() for b in got) == list(range(6)), "every partition kept its batches"


def test_poll_many_stops_before_a_batch_it_cannot_hand_over(store):
    schema = pa.schema([("x", pa.int64())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    for k in range(3):
        producer.append(pa.record_batch([pa.array([k])], schema=schema))
    consumer = stream.consumer("g")
    got = consumer.poll_many(3, timeout=1, numpy=True)
    assert [int(d["x"][0]) for d in got] == [0, 1, 2]


def test_reserve_builds_a_batch_in_place(store):
    schema = pa.schema([("i", pa.int64()), ("f", pa.float64())])
    stream = quiver.Stream.create(store, "s", schema, partitions=2, groups=["g"])
    producer = stream.producer()
    reservation = producer.reserve(1000)
    assert (reservation.partition, reservation.offset) == (0, 0)
    reservation["i"][:] = np.arange(1000)
    reservation.columns["f"][:] = np.arange(1000) * 0.5
    i_array = reservation["i"]
    assert reservation.commit() == (0, 0)
    assert not i_array.flags.writeable, "committed: its arrays are read-only"
    assert i_array[999] == 999, "and still show the batch"
    with pytest.raises(quiver.Error, match="already committed"):
        reservation.commit()
    with producer.reserve(2, partition=1) as r:
        r["i"][:] = [7, 8]
        r["f"][:] = [0.25, 0.5]
    b = stream.consumer("g").poll(timeout=1)
    assert b.num_rows == 1000 and b.column("i")[999].as_py() == 999 and b.column("f")[2].as_py() == 1.0
    b = stream.consumer("g", start="oldest", partitions=[1]).poll(timeout=1)
    assert b.column("i").to_pylist() == [7, 8] and b.column("f").to_pylist() == [0.25, 0.5]


def test_an_aborted_reservation_is_a_hole_consumers_pass(store):
    schema = pa.schema([("i", pa.int64())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    with pytest.raises(RuntimeError):
        with producer.reserve(3) as r:
            r["i"][:] = [1, 2, 3]
            raise RuntimeError("the batch could not be made")
    with pytest.raises(quiver.Error, match="aborted"):
        r["i"]
    producer.append(pa.record_batch([pa.array([9])], schema=schema))
    consumer = stream.consumer("g")
    assert consumer.poll(timeout=5).column(0).to_pylist() == [9], "no array was left: the hole is there at once"
    assert consumer.holes == 1


def test_an_aborted_reservation_keeps_its_memory_while_an_array_lives(store):
    schema = pa.schema([("i", pa.int64())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    r = producer.reserve(3)
    kept = r["i"]
    kept[:] = [1, 2, 3]
    r.abort()
    assert not kept.flags.writeable and kept.tolist() == [1, 2, 3]
    producer.append(pa.record_batch([pa.array([9])], schema=schema))
    consumer = stream.consumer("g")
    assert consumer.poll(timeout=0.2) is None, "the offset is not given up while an array shows it"
    del kept
    gc.collect()
    assert consumer.poll(timeout=5).column(0).to_pylist() == [9]


def test_a_reservation_freezes_only_its_own_arrays(store):
    schema = pa.schema([("i", pa.int64())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    r = producer.reserve(3)
    columns = r.columns
    columns["i"] = [7, 7, 7]  # a copy of the dict: the reservation is not changed
    mine = np.arange(3)
    columns["j"] = mine
    r["i"][:] = [1, 2, 3]
    r.commit()
    assert mine.flags.writeable
    assert stream.consumer("g").poll(timeout=5).column(0).to_pylist() == [1, 2, 3]


def test_reserve_refuses_columns_without_byte_values(store):
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    stream = quiver.Stream.create(store, "s", schema)
    with pytest.raises(quiver.Error, match='column "s"'):
        stream.producer().reserve(3)
    schema = pa.schema([("b", pa.bool_())])
    stream = quiver.Stream.create(store, "t", schema)
    with pytest.raises(quiver.Error, match="booleans are bits"):
        stream.producer().reserve(3)


def test_a_batch_refilled_in_place_is_appended_as_it_is_now(store):
    schema = pa.schema([("i", pa.int64())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    values = np.zeros(4, dtype=np.int64)
    b = pa.record_batch([pa.Array.from_buffers(pa.int64(), 4, [None, pa.py_buffer(values)])], schema=schema)
    for k in range(3):
        values[:] = k
        producer.append(b)
    consumer = stream.consumer("g")
    assert [consumer.poll(timeout=1).column(0).to_pylist() for _ in range(3)] == [[0] * 4, [1] * 4, [2] * 4]


def test_a_string_batch_appended_again_is_validated_again(store):
    schema = pa.schema([("s", pa.string())])
    stream = quiver.Stream.create(store, "s", schema, groups=["g"])
    producer = stream.producer()
    data = np.frombuffer(bytearray(b"abcd"), dtype=np.uint8)
    offsets = pa.py_buffer(np.array([0, 2, 4], dtype=np.int32))
    b = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(data)])
    b = pa.record_batch([b], schema=schema)
    producer.append(b)
    data[0] = 0xFF  # no longer UTF-8
    with pytest.raises(quiver.InvalidArgument, match="invalid batch"):
        producer.append(b)


def test_a_commit_with_nothing_new_changes_nothing(store):
    stream = quiver.Stream.create(store, "s", SCHEMA, groups=["g"])
    producer = stream.producer()
    producer.append(batch(0))
    consumer = stream.consumer("g")
    consumer.commit()
    assert consumer.committed(0) == 0
    consumer.poll(timeout=1)
    consumer.commit()
    consumer.commit()
    assert consumer.committed(0) == 1
    quiver.Stream.remove(store, "s")
    with pytest.raises(quiver.Error):
        consumer.commit()
