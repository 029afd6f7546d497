"""The shard manager and the trainer from Python."""

import random

import pyarrow as pa
import pytest

import quiver
from conftest import DEADLINE, start_python

SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64())])


def linear(rows, rng):
    xs = [rng.uniform(0, 10) for _ in range(rows)]
    return pa.record_batch([pa.array(xs), pa.array([4 + 3 * x + rng.gauss(0, 1) for x in xs])], schema=SCHEMA)


def test_shards_are_handed_out_read_reported_and_checkpointed(store, tmp_path):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=2, groups=["g"])
    producer = stream.producer()
    rng = random.Random(1)
    for _ in range(10):
        producer.append(linear(10, rng))
    producer.close()
    seen = 0
    with quiver.ShardManager.join(stream, "g", shard_size=2) as member:
        failed_once = False
        while True:
            try:
                task = member.next_task(timeout=10)
            except quiver.EndOfStream:
                break
            assert task is not None
            batches = member.read_task(task)
            assert len(batches) == task.end - task.start
            if not failed_once:
                failed_once = True
                member.report(task, done=False)  # handed out again
                continue
            seen += sum(b.num_rows for b in batches)
            member.report(task)
            member.checkpoint(tmp_path / "g.qvck")
        stats = member.stats()
    assert seen == 100
    assert stats["committed"] == [5, 5]
    assert (tmp_path / "g.qvck").stat().st_size > 0
    with pytest.raises(quiver.CheckpointInvalid):
        (tmp_path / "bad.qvck").write_bytes(b"not a checkpoint")
        quiver.ShardManager.restore(stream, "g2", tmp_path / "bad.qvck")


MEMBER = """
import sys, quiver
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
model = quiver.SgdRegressor()
with quiver.ShardManager.join(stream, "g", shard_size=4) as member:
    while True:
        try:
            task = member.next_task(timeout=30)
        except quiver.EndOfStream:
            break
        for batch in member.read_task(task):
            model.partial_fit(batch, ["x"], "y")
        member.report(task)
# A member that joined after every shard was taken trained on nothing.
print(model.rows_seen, model.intercept_, model.coef_[0] if model.coef_ else 0.0, flush=True)
"""


def test_members_in_processes_train_on_their_shares(store, name):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=2, groups=["g"])
    members = [start_python(MEMBER, name) for _ in range(2)]
    producer = stream.producer()
    rng = random.Random(42)
    for _ in range(500):
        producer.append(linear(40, rng))
    producer.close()
    rows, weighted = 0, [0.0, 0.0]
    for proc in members:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        n, intercept, slope = out.split()
        rows += int(n)
        weighted[0] += int(n) * float(intercept)
        weighted[1] += int(n) * float(slope)
    assert rows == 20000, "every row trained on once"
    assert abs(weighted[0] / rows - 4) < 0.3 and abs(weighted[1] / rows - 3) < 0.3, weighted


def test_sgd_regressor_learns_a_line_like_scikit_learn():
    rng = random.Random(7)
    model = quiver.SgdRegressor()
    for _ in range(400):
        assert model.partial_fit(linear(50, rng), ["x"], "y") is model
    assert model.rows_seen == 20000
    assert abs(model.intercept_ - 4) < 0.3 and abs(model.coef_[0] - 3) < 0.3
    predicted = model.predict(pa.record_batch([pa.array([0.0, 10.0]), pa.array([0.0, 0.0])], schema=SCHEMA), ["x"])
    assert abs(predicted[1] - predicted[0] - 30) < 3
    with pytest.raises(ValueError):
        model.partial_fit(linear(5, rng), ["nope"], "y")


def test_sgd_regressor_settings_score_save_and_load(tmp_path):
    rng = random.Random(3)
    batches = [linear(50, rng) for _ in range(200)]
    model = quiver.SgdRegressor(loss="huber", epsilon=1.0, learning_rate="adaptive", eta0=0.01, epoch_rows=1000)
    for b in batches[:100]:
        model.partial_fit(b, ["x"], "y")
    model.save(tmp_path / "m.json", ["x"], "y")
    loaded = quiver.SgdRegressor.load(tmp_path / "m.json")
    assert loaded.feature_names_in_ == ["x"] and loaded.target_ == "y"
    assert (loaded.coef_, loaded.intercept_, loaded.rows_seen) == (model.coef_, model.intercept_, model.rows_seen)
    # Resumed from the file, training goes on exactly as in memory.
    for b in batches[100:]:
        model.partial_fit(b, ["x"], "y")
        loaded.partial_fit(b, ["x"], "y")
    assert (loaded.coef_, loaded.intercept_, loaded.learning_rate_) == (model.coef_, model.intercept_, model.learning_rate_)
    assert model.score(batches[0], ["x"], "y") > 0.9
    with pytest.raises(ValueError):
        quiver.SgdRegressor(loss="hinge")
    with pytest.raises(ValueError):
        quiver.SgdRegressor(eta0=0.0)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a quiver model"):
        quiver.SgdRegressor.load(tmp_path / "bad.json")


SHARED_MEMBER = """
import sys, quiver
store = quiver.Store.open(sys.argv[1])
stream = quiver.Stream.open(store, "s")
trainer = quiver.SharedModel.open(store, "m").trainer()
rows = 0
with quiver.ShardManager.join(stream, "g", shard_size=4) as member:
    while True:
        try:
            task = member.next_task(timeout=30)
        except quiver.EndOfStream:
            break
        for batch in member.read_task(task):
            rows += trainer.partial_fit(batch)
        trainer.sync()
        member.report(task)
print(rows, flush=True)
"""


def test_processes_train_one_shared_model(store, name):
    stream = quiver.Stream.create(store, "s", SCHEMA, partitions=2, groups=["g"])
    shared = quiver.SharedModel.create(store, "m", ["x"], "y")
    members = [start_python(SHARED_MEMBER, name) for _ in range(2)]
    producer = stream.producer()
    rng = random.Random(42)
    for _ in range(750):
        producer.append(linear(40, rng))
    producer.close()
    rows = 0
    for proc in members:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err
        rows += int(out)
    assert rows == 30000
    model = shared.snapshot()
    assert shared.rows_seen == 30000 and model.rows_seen == 30000
    # One model that learned from every row: near the truth, unlike the
    # average of two models trained on half each.
    assert abs(model.intercept_ - 4) < 0.1 and abs(model.coef_[0] - 3) < 0.1, model
    quiver.SharedModel.remove(store, "m")
    with pytest.raises(ValueError, match="no shared model"):
        quiver.SharedModel.open(store, "m", timeout=0.1)
