"""Shared fixtures: unique store names removed however a test ends, the
`quiver` binary for the tests that cross between Python and Rust, and a
helper to run Python code in a child process with a deadline."""

import os
import pathlib
import subprocess
import sys
import uuid

import pytest

import quiver

REPO = pathlib.Path(__file__).resolve().parents[2]
DEADLINE = 60  # seconds any child process may take


@pytest.fixture
def name():
    """A unique store name; its file is removed at the end of the test."""
    name = f"test-py-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        quiver.Store.remove(name)
    except quiver.NotFound:
        pass


@pytest.fixture
def store(name):
    with quiver.Store.create(name, capacity=16 << 20, max_objects=1024) as store:
        yield store


@pytest.fixture(scope="session")
def quiver_bin():
    """The `quiver` binary `cargo test` built (or $QUIVER_BIN)."""
    path = pathlib.Path(os.environ.get("QUIVER_BIN", REPO / "target" / "debug" / "quiver"))
    if not path.exists():
        pytest.skip(f"no quiver binary at {path}: run `cargo build` (scripts/test does)")
    return str(path)


def run_python(code, *args, timeout=DEADLINE, check=True):
    """Runs `code` in a new Python process (argv[1:] = args) and returns it
    finished; kills it if it runs past `timeout`."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_python(code, *args):
    """Starts `code` in a new Python process with piped stdout/stderr."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc, timeout=DEADLINE):
    """The child's next line of output, within `timeout` seconds."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise AssertionError(f"no line from the child within {timeout} s")
    return proc.stdout.readline().strip()
