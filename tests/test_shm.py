"""A worker host's shared memory: the θ slots, its size, and cleaning up the segments of killed esfast processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esfast.config import PolicySettings
from esfast.distributed.shm import (
    HostMemory,
    ThetaSlots,
    creator_running,
    host_memory_bytes,
    process_start,
    remove_stale_segments,
    segment_name,
    segment_owner,
    shm_directory,
    table_bytes,
)
from esfast.tasks import GenerationSpec, WorkerSetup


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_segment_names() -> None:
    start = process_start(os.getpid())
    assert start is not None and start > 0
    assert segment_owner(segment_name(None)) == ("table", os.getpid(), start)
    assert segment_owner(segment_name("host")) == ("host", os.getpid(), start)
    assert segment_owner(segment_name("theta")) == ("theta", os.getpid(), start)
    assert segment_owner("esfast-12-34-ab") == ("table", 12, 34)
    assert segment_owner("esfast-12-0-ab") == ("table", 12, None)  # a start that could not be read
    assert segment_owner("esfast-host-12-ab") == ("host", 12, None)  # the names of earlier builds
    assert segment_owner("esfast-theta-3-x") == ("theta", 3, None)
    assert segment_owner("sem.mp-x") is None and segment_owner("esfast-x") is None and segment_owner("esfast-theta-x-1-2") is None


def test_a_creator_runs_while_its_id_and_start_time_are_those_of_a_live_process() -> None:
    dead, alive = _dead_pid(), os.getpid()
    start = process_start(alive)
    assert process_start(dead) is None and start is not None
    assert creator_running(alive, start) and creator_running(alive, None)
    assert not creator_running(alive, start - 1)  # the id was given again, to this process
    assert not creator_running(dead, None) and not creator_running(dead, start)


def test_files_of_dead_processes_go_and_of_live_ones_stay() -> None:
    dead, alive = _dead_pid(), os.getpid()
    start = process_start(alive)
    assert start is not None
    stale = shm_directory() / f"esfast-theta-{dead}-{start}-testfile"
    reused = shm_directory() / f"esfast-theta-{alive}-{start - 1}-testfile"  # an earlier process of this id
    live = shm_directory() / f"esfast-theta-{alive}-{start}-testfile"
    for path in (stale, reused, live):
        path.write_bytes(b"x" * 64)
    try:
        assert remove_stale_segments() >= 2
        assert not stale.exists() and not reused.exists() and live.exists()
    finally:
        for path in (stale, reused, live):
            path.unlink(missing_ok=True)


LEAVE = (  # makes a host's table and θ file, prints its pid and their names; exits as if killed, or holds them
    "import os, sys, time; from esfast import core; from esfast.distributed.shm import ThetaSlots, segment_name, shm_directory; "
    "table = core.NoiseTable.create_shared(segment_name('host'), 1000, 0); slots = ThetaSlots.create(shm_directory(), 10, 2); "
    "print(os.getpid(), table.name.lstrip('/'), slots.path.name, flush=True); os._exit(0) if sys.argv[1] == 'exit' else time.sleep(60)"
)
CLEAN = "import os; from esfast.distributed.shm import remove_stale_segments; print(os.getpid(), remove_stale_segments(), flush=True)"


def _container(shm: Path, code: str, *args: str) -> list[str]:
    """``python -c code args`` as pid 1 of a new PID namespace whose /dev/shm is ``shm`` (so that what
    it cleans up is this test's alone)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test makes PID and mount namespaces: it needs root and unshare (util-linux)")
    mount = 'mount --bind "$0" /dev/shm && exec "$@"'
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", mount, str(shm), sys.executable, "-c", code, *args]


def test_the_segments_of_a_container_restarted_with_its_dev_shm_go(tmp_path: Path) -> None:
    """A container's worker host gets the same pid each time the container restarts (here: pid 1 of
    a new PID namespace); the next one removes what a killed one left, though its pid is alive."""
    first = subprocess.run(_container(tmp_path, LEAVE, "exit"), capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert first[0] == "1" and all((tmp_path / name).exists() for name in first[1:]), first
    second = subprocess.run(_container(tmp_path, CLEAN), capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert second == ["1", "2"] and not list(tmp_path.iterdir()), (second, list(tmp_path.iterdir()))


def test_the_segments_of_a_live_host_in_another_pid_namespace_stay(tmp_path: Path) -> None:
    """A host cleaning up cannot see the pids of another PID namespace sharing its /dev/shm (a pod's
    containers, --ipc=host): the creator's lock keeps its segments."""
    holder = subprocess.Popen(_container(tmp_path, LEAVE, "hold"), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline().split()
        assert held[0] == "1" and all((tmp_path / name).exists() for name in held[1:]), held
        cleaner = subprocess.run(_container(tmp_path, CLEAN), capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert cleaner == ["1", "0"] and all((tmp_path / name).exists() for name in held[1:]), cleaner
    finally:
        holder.kill()
        holder.communicate()
    after = subprocess.run(_container(tmp_path, CLEAN), capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert after == ["1", "2"] and not list(tmp_path.iterdir()), after  # killed: the locks went with it


def test_the_table_of_a_killed_master_goes() -> None:
    script = (
        "import time; from esfast import core; "
        "from esfast.distributed.shm import segment_name; "
        "table = core.NoiseTable.create_shared(segment_name(None), 1000, 0); "
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


def test_theta_slots_hold_two_generations_with_their_settings(tmp_path: Path) -> None:
    slots = ThetaSlots.create(tmp_path, 5, 2)
    try:
        assert slots.latest == -1 and slots.read(0) is None
        for generation in (0, 1, 2):
            theta = np.arange(5, dtype=np.float32) + generation
            spec = GenerationSpec(
                generation,
                0.02 * (generation + 1),
                np.full(2, generation, np.float32),
                np.ones(2, np.float32),
                None if generation == 1 else 100 + generation,
            )
            slots.write(theta, spec)
        reader = ThetaSlots(slots.path, 5, 2, writable=False)
        assert reader.latest == 2 and reader.read(0) is None  # generation 2 took its slot
        for generation in (1, 2):
            found = reader.read(generation)
            assert found is not None
            theta, spec = found
            np.testing.assert_array_equal(theta, np.arange(5, dtype=np.float32) + generation)
            assert spec.generation == generation and spec.sigma == 0.02 * (generation + 1)
            assert spec.timestep_limit == (None if generation == 1 else 102)
            np.testing.assert_array_equal(spec.obs_mean, [generation, generation])
            assert not theta.flags.writeable
        slots.clear()
        assert reader.latest == -1 and reader.read(2) is None
        reader.close()
    finally:
        slots.remove()
    assert not slots.path.exists()


def test_theta_slots_refuse_arrays_of_other_shapes(tmp_path: Path) -> None:
    slots = ThetaSlots.create(tmp_path, 3, 1)
    try:
        with pytest.raises(ValueError, match="must have shapes"):
            slots.write(np.zeros(4, np.float32), GenerationSpec(0, 0.1, np.zeros(1, np.float32), np.ones(1, np.float32), None))
    finally:
        slots.remove()


def test_theta_slots_are_padded_to_64_bytes() -> None:
    assert ThetaSlots.size(3, 1) == 64 + 2 * (64 + 64)
    assert ThetaSlots.size(16, 0) == 64 + 2 * (64 + 64) and ThetaSlots.size(17, 0) == 64 + 2 * (64 + 128)


def test_host_memory_takes_the_bytes_host_memory_bytes_says() -> None:
    setup = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(8,)), 58, 4, 10_000, 3)
    memory = HostMemory(setup)
    try:
        name = memory.table.name
        assert name is not None
        table = (shm_directory() / name.lstrip("/")).stat().st_size
        slots = memory.slots.path.stat().st_size
        assert table == table_bytes(10_000) == 4096 + 4 * 10_000  # one header page, then float32 samples
        assert table + slots == host_memory_bytes(10_000, 58, 4)
    finally:
        memory.release()


def test_table_bytes_refuses_an_empty_table() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        table_bytes(0)
