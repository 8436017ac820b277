"""Shared fixtures: unique shared-memory names and a check that no test leaks a segment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

# Before numpy is imported: the tests run small matrix products (policies evaluated in this
# process), for which BLAS threads cost far more than they give, as in esfast's evaluators.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import signal  # noqa: E402

# A shell starts a background job with SIGINT ignored, and children inherit that: the tests that
# press Ctrl-C on a process they start need Python's own handler there, however pytest was started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402
from cluster import Cluster  # noqa: E402 - imports numpy

from esfast.distributed.shm import creator_running, segment_owner  # noqa: E402

SHM_DIR = Path("/dev/shm")
PREFIX = "esfast-test-"


def _segments() -> set[str]:
    """esfast's segments (tables, θ buffers) and multiprocessing's semaphores in /dev/shm."""
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for pattern in ("esfast-*", "sem.mp-*") for p in SHM_DIR.glob(pattern)}


def _ours(name: str) -> bool:
    """Whether a new segment is this session's: made by this process or by one that has exited.

    A segment of a live process other than this one belongs to a process still running (another
    session's master or worker), not to a test.
    """
    owner = segment_owner(name)
    return owner is None or owner.pid == os.getpid() or not creator_running(owner.pid, owner.start)


@pytest.fixture
def shm_name() -> Iterator[str]:
    """A fresh segment name; whatever a test leaves under it is removed, and reported."""
    name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    yield name
    leftover = SHM_DIR / name
    if leftover.exists():
        leftover.unlink()
        pytest.fail(f"shared-memory segment {name} was left behind")


@pytest.fixture(autouse=True, scope="session")
def no_leaked_segments() -> Iterator[None]:
    before = _segments()
    yield
    leaked = {name for name in _segments() - before if _ours(name)}
    for name in leaked:
        (SHM_DIR / name).unlink(missing_ok=True)
    assert not leaked, f"tests left shared-memory segments behind: {sorted(leaked)}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Starts esfast-master and esfast-worker processes; stops every one at the end of the test."""
    running = Cluster(tmp_path)
    try:
        yield running
    finally:
        running.stop()
