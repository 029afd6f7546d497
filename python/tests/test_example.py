"""The Python example users start from runs, in both modes."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python" / "train.py"


@pytest.mark.parametrize("mode", ["broadcast", "shared"])
def test_the_example_trains_every_consumer(mode):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--mode", mode, "--consumers", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: every row seen" in done.stdout
