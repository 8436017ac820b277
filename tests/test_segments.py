"""Cleaning up the shared-memory segments of killed esfast processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from esfast.segments import process_alive, remove_stale_segments, segment_owner, shm_directory


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_segment_names() -> None:
    assert segment_owner("esfast-12-ab") == ("table", 12)
    assert segment_owner("esfast-host-12-ab") == ("host", 12)
    assert segment_owner("esfast-theta-3-x") == ("theta", 3)
    assert segment_owner("sem.mp-x") is None and segment_owner("esfast-x") is None


def test_files_of_dead_processes_go_and_of_live_ones_stay() -> None:
    dead, alive = _dead_pid(), os.getpid()
    assert not process_alive(dead) and process_alive(alive)
    stale = shm_directory() / f"esfast-theta-{dead}-testfile"
    live = shm_directory() / f"esfast-theta-{alive}-testfile"
    for path in (stale, live):
        path.write_bytes(b"x" * 64)
    try:
        assert remove_stale_segments() >= 1
        assert not stale.exists() and live.exists()
    finally:
        stale.unlink(missing_ok=True)
        live.unlink(missing_ok=True)


def test_the_table_of_a_killed_master_goes() -> None:
    script = (
        "import os, sys, time; from esfast import core; "
        "table = core.NoiseTable.create_shared(f'esfast-{os.getpid()}-killedtest', 1000, 0); "
        "print(table.name, flush=True); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        name = process.stdout.readline().strip().lstrip("/")
        assert (shm_directory() / name).exists()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert (shm_directory() / name).exists()  # SIGKILL: nothing could remove it
        remove_stale_segments()
        assert not (shm_directory() / name).exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
