"""The Python example users start from runs, in both modes."""

import pathlib
import subprocess
import sys

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
