"""esfast.core.NoiseTable and noise_samples: values, determinism, views, shared memory."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import numpy_reference as ref
import pytest

from esfast import core

# Bit patterns of samples, pinned when the generator was written. A change here changes every
# run's noise: it must come with a new layout version and a note in docs/determinism.md.
GOLDEN = {
    (0, 0): [0x3F7DBB31, 0xBF6CB6AF, 0xBF1E1B9F, 0xBEF6D1AC, 0xBE1D5352, 0x3E392A69, 0x3F54EC98, 0x3E4A2DA2],
    (0, 249_999_996): [0xBD3880A7, 0x3E4130BF, 0xBE0D334F, 0x3EC6AE0A],
    (12345, 2**34 + 1): [0xBE139A6C, 0x3F73E205, 0xBF970C85, 0xBFE65455, 0xBF07F20A],
    (2**64 - 1, 2**40): [0xBF4A5220, 0x3ECB8514, 0x3F0C22D9],
}


def run_python(code: str, timeout: float = 60) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("key", "bits"), GOLDEN.items())
def test_golden_values(key: tuple[int, int], bits: list[int]) -> None:
    seed, start = key
    values = core.noise_samples(seed, start, len(bits))
    assert values.view(np.uint32).tolist() == bits


def test_table_holds_noise_samples() -> None:
    table = core.NoiseTable(10_003, 0, threads=2)
    assert table.array[:8].view(np.uint32).tolist() == GOLDEN[(0, 0)]
    np.testing.assert_array_equal(table.array, core.noise_samples(0, 0, 10_003))


@pytest.mark.parametrize(("seed", "start", "count"), [(0, 0, 4096), (3, 1, 13), (99, 2**33 - 2, 11), (2**64 - 1, 2**36 + 3, 17)])
def test_matches_numpy_reference_exactly(seed: int, start: int, count: int) -> None:
    expected = ref.noise_samples(seed, start, count)
    np.testing.assert_array_equal(core.noise_samples(seed, start, count).view(np.uint32), expected.view(np.uint32))


def test_any_slice_equals_the_whole() -> None:
    whole = core.noise_samples(5, 0, 64)
    for start in range(8):
        for count in range(9):
            np.testing.assert_array_equal(core.noise_samples(5, start, count), whole[start : start + count])


def test_distribution_is_standard_normal() -> None:
    x = core.NoiseTable(4_000_000, 11).array.astype(np.float64)
    n = x.size
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(x**4) - 3) < 5 * np.sqrt(96 / n)
    # Quantiles of N(0, 1).
    for q, z in ((0.5, 0.0), (0.8413447, 1.0), (0.9772499, 2.0), (0.0013499, -3.0)):
        assert abs(np.mean(x < z) - q) < 5 * np.sqrt(q * (1 - q) / n)
    # Neighbouring samples are uncorrelated.
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / np.sqrt(n)


def test_seeds_differ() -> None:
    a, b = core.noise_samples(1, 0, 1000), core.noise_samples(2, 0, 1000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_identical_for_any_thread_count(threads: int) -> None:
    size = 3 * (1 << 20) + 7  # several generation chunks and a ragged end
    expected = core.noise_samples(42, 0, size)
    table = core.NoiseTable(size, 42, threads=threads)
    assert table.threads == threads
    np.testing.assert_array_equal(table.array, expected)


def test_identical_in_another_process() -> None:
    size = 2_000_003
    digest = hashlib.sha256(core.NoiseTable(size, 77).array.tobytes()).hexdigest()
    other = run_python(
        f"""
        import hashlib
        from esfast import core
        print(hashlib.sha256(core.NoiseTable({size}, 77, threads=1).array.tobytes()).hexdigest())
        """
    )
    assert other == digest


def test_views_are_read_only_and_zero_copy() -> None:
    table = core.NoiseTable(1000, 3)
    view = table.get(10, 20)
    assert view.dtype == np.float32 and view.shape == (20,)
    assert not view.flags.writeable
    assert np.shares_memory(view, table.array)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1.0
    with pytest.raises(ValueError):
        view.setflags(write=True)
    with pytest.raises(ValueError):
        table.array.setflags(write=True)


def test_view_survives_close_and_collection() -> None:
    table = core.NoiseTable(1000, 3)
    view = table.get(100, 50)
    expected = view.copy()
    table.close()
    del table
    gc.collect()
    np.testing.assert_array_equal(view, expected)


def test_table_properties_and_close() -> None:
    table = core.NoiseTable(1234, 9, threads=1)
    assert len(table) == table.size == 1234
    assert table.seed == 9 and table.name is None and table.owner and not table.closed
    assert "private" in repr(table)
    with table:
        pass
    assert table.closed
    table.close()  # idempotent
    with pytest.raises(ValueError, match="table is closed"):
        table.get(0, 1)
    with pytest.raises(ValueError, match="table is closed"):
        core.weighted_noise_sum(table, np.zeros(1, np.int64), np.ones(1, np.float32), 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"size": 0, "seed": 0}, ValueError, "size must be in"),
        ({"size": -5, "seed": 0}, ValueError, "size must be in"),
        ({"size": 10, "seed": -1}, ValueError, "seed must be in"),
        ({"size": 10, "seed": 2**64}, ValueError, "seed must be in"),
        ({"size": 10.5, "seed": 0}, TypeError, "size must be an int"),
        ({"size": True, "seed": 0}, TypeError, "size must be an int"),
        ({"size": 10, "seed": "1"}, TypeError, "seed must be an int"),
        ({"size": 10, "seed": 0, "threads": 0}, ValueError, "threads must be in"),
        ({"size": 10, "seed": 0, "threads": 5000}, ValueError, "threads must be in"),
    ],
)
def test_bad_construction(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        core.NoiseTable(**kwargs)


def test_too_large_for_memory() -> None:
    with pytest.raises(OSError, match="larger than this machine's memory"):
        core.NoiseTable(2**40, 0)


@pytest.mark.parametrize(("offset", "dim"), [(-1, 5), (996, 5), (0, 1001), (0, 0), (10**20, 1)])
def test_bad_slices(offset: int, dim: int) -> None:
    table = core.NoiseTable(1000, 0)
    with pytest.raises(ValueError, match=r"offset|dim"):
        table.get(offset, dim)


def test_noise_samples_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count must be in"):
        core.noise_samples(0, 0, -1)
    with pytest.raises(ValueError, match="start must be in"):
        core.noise_samples(0, 2**64 - 2, 4)
    assert core.noise_samples(0, 5, 0).shape == (0,)


# Shared memory -------------------------------------------------------------------------------


def test_shared_table_attach_in_another_process(shm_name: str) -> None:
    size = 1_000_003
    with core.NoiseTable.create_shared(shm_name, size, 21) as table:
        assert table.name == "/" + shm_name and table.owner
        assert os.path.exists(f"/dev/shm/{shm_name}")
        np.testing.assert_array_equal(table.array, core.noise_samples(21, 0, size))
        digest = hashlib.sha256(table.array.tobytes()).hexdigest()
        out = run_python(
            f"""
            import hashlib, resource, time
            from esfast import core
            t = core.NoiseTable.attach({shm_name!r})
            assert not t.owner and t.size == {size} and t.seed == 21
            assert not t.array.flags.writeable
            print(hashlib.sha256(t.array.tobytes()).hexdigest())
            t.close()
            """
        )
        assert out == digest
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_attach_maps_without_copying(shm_name: str) -> None:
    """Two attachments in one process see the same physical pages as the creator."""
    with core.NoiseTable.create_shared(shm_name, 4096, 1) as table:
        attached = core.NoiseTable.attach(shm_name)
        assert attached.array.ctypes.data != table.array.ctypes.data  # a second mapping ...
        np.testing.assert_array_equal(attached.array, table.array)  # ... of the same pages
        with open(f"/dev/shm/{shm_name}", "rb") as raw:
            raw.seek(4096)
            assert raw.read(16) == table.array[:4].tobytes()
        attached.close()


def test_attach_missing_and_invalid(shm_name: str) -> None:
    with pytest.raises(FileNotFoundError, match="no shared noise table"):
        core.NoiseTable.attach(shm_name)
    path = f"/dev/shm/{shm_name}"
    with open(path, "wb") as f:
        f.write(b"not a table" + bytes(8192))
    try:
        with pytest.raises(OSError, match="not an esfast noise table"):
            core.NoiseTable.attach(shm_name)
    finally:
        os.unlink(path)


def test_attach_waits_for_the_creator(shm_name: str) -> None:
    tables: list[core.NoiseTable] = []
    creator = threading.Timer(0.3, lambda: tables.append(core.NoiseTable.create_shared(shm_name, 1000, 2)))
    creator.start()
    try:
        attached = core.NoiseTable.attach(shm_name, timeout=30)
        np.testing.assert_array_equal(attached.array, core.noise_samples(2, 0, 1000))
    finally:
        creator.join()
        for table in tables:
            table.close()


def test_name_in_use_by_a_live_process(shm_name: str) -> None:
    with core.NoiseTable.create_shared(shm_name, 100, 0):
        with pytest.raises(FileExistsError, match="already exists"):
            core.NoiseTable.create_shared(shm_name, 100, 0)
        assert not core.NoiseTable.remove_if_stale(shm_name)


@pytest.mark.parametrize("name", ["", "a/b", "x" * 201, "..", "sp ace"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        core.NoiseTable.create_shared(name, 10, 0)


def test_released_when_the_creator_exits(shm_name: str) -> None:
    run_python(
        f"""
        from esfast import core
        table = core.NoiseTable.create_shared({shm_name!r}, 1000, 0)
        keep = [table]  # still referenced at exit: the atexit hook must release it
        """
    )
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_segment_of_a_killed_creator_is_reclaimed(shm_name: str) -> None:
    creator = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from esfast import core; import time; t = core.NoiseTable.create_shared({shm_name!r}, 1000, 0); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert creator.stdout is not None and creator.stdout.readline().strip() == "ready"
        os.kill(creator.pid, signal.SIGKILL)
        creator.wait(timeout=10)
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait()
        if creator.stdout is not None:
            creator.stdout.close()
    assert os.path.exists(f"/dev/shm/{shm_name}")  # SIGKILL leaves it behind ...
    with core.NoiseTable.create_shared(shm_name, 500, 1) as table:  # ... and a new creator takes it over
        assert table.size == 500
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_remove_if_stale(shm_name: str) -> None:
    run_python(
        f"""
        import os
        from esfast import core
        table = core.NoiseTable.create_shared({shm_name!r}, 100, 0)
        os._exit(0)  # skips the atexit hook, like a crash
        """
    )
    assert os.path.exists(f"/dev/shm/{shm_name}")
    assert core.NoiseTable.remove_if_stale(shm_name)
    assert not os.path.exists(f"/dev/shm/{shm_name}")
    assert not core.NoiseTable.remove_if_stale(shm_name)


# The shared header's creator fields (cpp/src/noise_table.cpp, SharedHeader): pid at 32, start at 40.
CREATOR_PID_OFFSET, CREATOR_START_OFFSET = 32, 40


def _own_start() -> int:
    with open(f"/proc/{os.getpid()}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[19])


def _set_creator(name: str, pid: int, start: int) -> None:
    with open(f"/dev/shm/{name}", "r+b") as segment:
        segment.seek(CREATOR_PID_OFFSET)
        segment.write(pid.to_bytes(8, sys.byteorder) + start.to_bytes(8, sys.byteorder))


def test_the_header_records_the_creators_id_and_start_time(shm_name: str) -> None:
    with core.NoiseTable.create_shared(shm_name, 100, 0):
        with open(f"/dev/shm/{shm_name}", "rb") as segment:
            segment.seek(CREATOR_PID_OFFSET)
            recorded = segment.read(16)
        assert int.from_bytes(recorded[:8], sys.byteorder) == os.getpid()
        assert int.from_bytes(recorded[8:], sys.byteorder) == _own_start()


def test_a_live_creators_lock_keeps_its_segment_whatever_its_header_says(shm_name: str) -> None:
    with core.NoiseTable.create_shared(shm_name, 100, 0):
        _set_creator(shm_name, 2**31, 1)  # no such process: only the lock says it runs
        assert not core.NoiseTable.remove_if_stale(shm_name)
        assert os.path.exists(f"/dev/shm/{shm_name}")


def test_an_unlocked_segment_goes_unless_a_process_has_its_creators_id_and_start_time(shm_name: str) -> None:
    run_python(
        f"""
        import os
        from esfast import core
        table = core.NoiseTable.create_shared({shm_name!r}, 100, 0)
        os._exit(0)  # skips the atexit hook, like a crash: the lock goes, the segment stays
        """
    )
    _set_creator(shm_name, os.getpid(), _own_start())  # as if this process made it with a build that took no lock
    assert not core.NoiseTable.remove_if_stale(shm_name)
    _set_creator(shm_name, os.getpid(), _own_start() - 1)  # an earlier process of this id (a restarted container)
    assert core.NoiseTable.remove_if_stale(shm_name)
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_kernels_release_the_gil() -> None:
    """A long weighted sum in one thread leaves the interpreter free for another."""
    table = core.NoiseTable(4_000_000, 0, threads=1)
    offsets = core.sample_offsets(0, 400, 1_000_000, len(table))
    weights = np.ones(400, np.float32)
    ticks = 0
    done = threading.Event()

    def work() -> None:
        core.weighted_noise_sum(table, offsets, weights, 1_000_000)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert ticks > 5
