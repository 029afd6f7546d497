"""The Python example users start from runs, in both modes."""

import pathlib
import subprocess
import sys
import time

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train.py"


@pytest.mark.parametrize("mode", ["broadcast", "shared"])
def test_the_example_trains_every_consumer(mode):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--mode", mode, "--consumers", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: every row seen" in done.stdout


def test_the_plasma_example_runs_on_quiver_plasma():
    example = EXAMPLE.parent / "plasma_sgd.py"
    source = example.read_text()
    assert "import quiver.plasma as plasma  # was: import pyarrow.plasma as plasma" in source
    done = subprocess.run(
        [sys.executable, str(example), "--consumers", "2", "--batches", "500"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: every consumer saw every row" in done.stdout


def test_the_torch_example_killed_three_times_trains_every_row_once(name, tmp_path):
    pytest.importorskip("torch")
    import json
    import os
    import random
    import signal

    import quiver
    import quiver.torch as qt

    example = EXAMPLE.parent / "torch_train.py"
    ckpt, record = tmp_path / "model.ckpt", tmp_path / "rows.json"
    command = [sys.executable, "-u", str(example), "--store", name, "--rows", "12000", "--every", "5",
               "--checkpoint", str(ckpt), "--record", str(record), "--step-pause", "0.03"]  # fmt: skip
    rng = random.Random(3)
    for _ in range(3):
        job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)  # fmt: skip
        try:
            while not (line := job.stdout.readline()).startswith("step "):
                assert line, "the job ended before its first checkpoint"
            time.sleep(rng.uniform(0.0, 1.0))
        finally:
            os.killpg(job.pid, signal.SIGKILL)  # the launcher, torchrun, the ranks, the producers
            job.wait(timeout=60)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed at step" in done.stdout and ", 0 of them twice" in done.stdout, done.stdout
    trained = json.loads(record.read_text())
    assert len(trained) == len(set(trained)), "a row trained twice across the kills"
    # What did not fit the ranks' last common step is still in the group.
    with quiver.Store.open(name) as store:
        stream = quiver.Stream.open(store, "features")
        with qt.Loader(stream, "trainers", ["row"], timeout=10, ranks=None) as loader:
            try:
                rest = [row for tensors in loader for row in tensors["row"].tolist()]
            except TimeoutError:
                raise AssertionError(f"{loader.manager.stats()}\n{stream.stats()}\n{done.stdout}")
    assert sorted(trained + rest) == list(range(12000))
