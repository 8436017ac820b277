"""esfast's shared memory on a worker host: the noise table, the θ slots, and cleaning up after killed processes.

Every segment esfast makes is named ``esfast-[KIND-]<pid>-<start>-<id>`` (:func:`segment_name`):
noise tables of masters (``esfast-<pid>-...``) and of worker hosts (``esfast-host-<pid>-...``), and
θ files of worker hosts (``esfast-theta-<pid>-...``), with the id of the process that made it and
when that process started (clock ticks since boot, :func:`process_start`). A process killed with
SIGKILL cannot remove its segments; the next master or worker host started on the machine does,
once their creator no longer runs. A creator holds a shared ``flock`` on each of its segments for
as long as it uses them (the kernel lets go when the process dies, and the lock is seen from every
PID namespace that shares the /dev/shm); a segment is stale when nothing holds its lock and no
process has the recorded id and start time (the latter keeps the segments of builds that took no
lock; a container restarted with its /dev/shm kept gives its processes the same ids again, which
the start time tells apart).

:class:`ThetaSlots` is the θ file: the host writes each generation's θ and settings into it once,
and its evaluator processes map it read-only. :class:`HostMemory` is what a host holds for a run:
the table and the θ slots. :func:`table_bytes` and :func:`host_memory_bytes` say how much of
/dev/shm they take, so a cluster's memory-backed /dev/shm can be sized for a run.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.tasks import GenerationSpec, WorkerSetup

__all__ = [
    "HostMemory",
    "SegmentOwner",
    "ThetaSlots",
    "creator_running",
    "host_memory_bytes",
    "hostname",
    "process_start",
    "remove_stale_segments",
    "segment_name",
    "segment_owner",
    "shm_directory",
    "table_bytes",
]


def shm_directory() -> Path:
    """Where θ files live: /dev/shm, or the temporary directory where there is none."""
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))


class SegmentOwner(NamedTuple):
    """Who made a segment, read from its name."""

    kind: str  # "table" (a master's noise table), "host" (a worker host's) or "theta"
    pid: int
    start: int | None  # when the process started (process_start); None: unknown, or a name of an earlier build


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of ``/proc/PID/stat``);
    None when it cannot be read (no such process, no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': count from the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def segment_name(kind: str | None) -> str:
    """A new segment name ``esfast-[KIND-]<pid>-<start>-<id>`` for this process (kind None: a
    master's noise table)."""
    prefix = "esfast-" if kind is None else f"esfast-{kind}-"
    return f"{prefix}{os.getpid()}-{process_start(os.getpid()) or 0}-{uuid.uuid4().hex[:8]}"


def segment_owner(name: str) -> SegmentOwner | None:
    """Who made the segment ``name`` (see :func:`segment_name`), or None for a name esfast does not make."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != "esfast":
        return None
    kind, rest = ("table", parts[1:]) if parts[1].isdigit() else (parts[1], parts[2:])
    if len(rest) == 3 and rest[0].isdigit() and rest[1].isdigit():
        return SegmentOwner(kind, int(rest[0]), int(rest[1]) or None)
    if len(rest) == 2 and rest[0].isdigit():  # <pid>-<id>: the names of earlier versions
        return SegmentOwner(kind, int(rest[0]), None)
    return None


def creator_running(pid: int, start: int | None) -> bool:
    """Whether the process that made a segment still runs: a process ``pid`` exists (one of another
    user counts) and, where both start times are known, it started at ``start`` (it is not a later
    process given the same id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def remove_stale_segments() -> int:
    """Removes esfast's noise tables and θ files whose creator no longer runs: nothing holds their
    lock and no process has the id and start time their names record.

    Tables are removed only if their header says so too (:meth:`esfast.core.NoiseTable.remove_if_stale`);
    segments of live processes are never touched, whatever PID namespace they run in.

    Returns:
        How many were removed.
    """
    removed = 0
    for path in shm_directory().glob("esfast-*"):
        owner = segment_owner(path.name)
        if owner is None or creator_running(owner.pid, owner.start):
            continue
        try:
            if owner.kind == "theta":
                if _unlink_if_unlocked(path):
                    removed += 1
            elif core.NoiseTable.remove_if_stale(path.name):
                removed += 1
        except (OSError, ValueError):
            continue  # not an esfast table after all, or already gone
    return removed


def _unlink_if_unlocked(path: Path) -> bool:
    """Deletes the θ file ``path`` if no process holds its lock and it has its data (its creator
    locks it before it gives it a size); whether it did."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its creator holds it: running (perhaps in another PID namespace)
        if os.fstat(descriptor).st_size == 0:
            return False
        path.unlink()
        return True
    finally:
        os.close(descriptor)


def hostname() -> str:
    """This machine's name, as hosts and the master report it: the master's table is mapped, not
    generated again, by a host of the same name."""
    return socket.gethostname() or f"pid{os.getpid()}"


class ThetaSlots:
    """θ and the settings of the two latest generations, in one file in shared memory.

    Generation ``g`` lives in slot ``g % 2``, so the host can write the next generation while
    evaluators finish tasks of the current one. Layout (native byte order)::

        header   int64 latest         the generation last written (-1: none); 64 bytes
        slot k   int64 generation, int64 timestep_limit (-1: none), float64 sigma; 64 bytes,
                 float32 theta[num_params], obs_mean[obs_dim], obs_std[obs_dim], padded to 64 bytes

    Every part starts on a 64-byte boundary. One process writes (the host), any number read (its
    evaluators). A generation is written once, before the host hands out any of its tasks; an
    evaluator reads it for a job that came through a pipe after the writes (the pipe's system
    calls order them), and a slot is rewritten only two generations later, when its tasks are
    stale. The generation number is written last and cleared first, so a reader that finds the
    wrong one skips the job rather than read a slot being rewritten.

    Args:
        path: the file.
        num_params: length of θ.
        obs_dim: length of the observation statistics.
        writable: map read-write (the host) or read-only (evaluators).
    """

    HEADER_BYTES = 64
    SLOT_HEADER_BYTES = 64

    def __init__(self, path: Path, num_params: int, obs_dim: int, *, writable: bool) -> None:
        self.path = path
        self.num_params = num_params
        self.obs_dim = obs_dim
        self._lock: int | None = None  # the creator's descriptor, holding a shared flock (see create)
        data_bytes = 4 * (num_params + 2 * obs_dim)
        self.slot_bytes = self._slot_bytes(num_params, obs_dim)
        self._file = np.memmap(path, dtype=np.uint8, mode="r+" if writable else "r", shape=(self.size(num_params, obs_dim),))
        self._latest = self._file[:8].view(np.int64)
        self._headers = []
        self._data = []
        for slot in range(2):
            start = self.HEADER_BYTES + slot * self.slot_bytes
            self._headers.append(self._file[start : start + self.SLOT_HEADER_BYTES])
            self._data.append(self._file[start + self.SLOT_HEADER_BYTES : start + self.SLOT_HEADER_BYTES + data_bytes].view(np.float32))

    @classmethod
    def _slot_bytes(cls, num_params: int, obs_dim: int) -> int:
        """Bytes of one slot: its header and its float32 data, padded to 64 bytes."""
        return cls.SLOT_HEADER_BYTES + -(-4 * (num_params + 2 * obs_dim) // 64) * 64

    @classmethod
    def size(cls, num_params: int, obs_dim: int) -> int:
        """Bytes of the file for θ of ``num_params`` and statistics of ``obs_dim``."""
        return cls.HEADER_BYTES + 2 * cls._slot_bytes(num_params, obs_dim)

    @classmethod
    def create(cls, directory: Path, num_params: int, obs_dim: int) -> ThetaSlots:
        """A new file ``esfast-theta-<pid>-<start>-<id>`` (:func:`segment_name`) in ``directory``,
        allocated now and empty.

        Raises:
            OSError: no room (a full /dev/shm is an error here, not a SIGBUS later).
        """
        path = directory / segment_name("theta")
        lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Locked while still empty: a cleaner that gets the exclusive lock first finds no data
            # and leaves the file alone (remove_stale_segments).
            fcntl.flock(lock, fcntl.LOCK_SH)
            os.posix_fallocate(lock, 0, cls.size(num_params, obs_dim))
            slots = cls(path, num_params, obs_dim, writable=True)
        except OSError:
            path.unlink(missing_ok=True)
            os.close(lock)
            raise
        slots._lock = lock
        slots.clear()
        return slots

    @property
    def latest(self) -> int:
        """The generation last written (-1: none since :meth:`clear`)."""
        return int(self._latest[0])

    def clear(self) -> None:
        """Forgets every generation (a restarted master may count from an earlier checkpoint)."""
        for header in self._headers:
            header[:8].view(np.int64)[0] = -1
        self._latest[0] = -1

    def write(self, theta: NDArray[np.float32], spec: GenerationSpec) -> None:
        """Stores θ and ``spec`` as generation ``spec.generation``.

        Raises:
            ValueError: arrays of the wrong shapes.
        """
        n, d = self.num_params, self.obs_dim
        if theta.shape != (n,) or spec.obs_mean.shape != (d,) or spec.obs_std.shape != (d,):
            raise ValueError(f"θ and statistics must have shapes ({n},), ({d},), ({d},)")
        slot = spec.generation % 2
        header, data = self._headers[slot], self._data[slot]
        header[:8].view(np.int64)[0] = -1  # incomplete until the end
        data[:n] = theta
        data[n : n + d] = spec.obs_mean
        data[n + d :] = spec.obs_std
        header[8:16].view(np.int64)[0] = -1 if spec.timestep_limit is None else spec.timestep_limit
        header[16:24].view(np.float64)[0] = spec.sigma
        header[:8].view(np.int64)[0] = spec.generation
        self._latest[0] = spec.generation

    def read(self, generation: int) -> tuple[NDArray[np.float32], GenerationSpec] | None:
        """θ (a read-only view) and the settings of ``generation``, or None if its slot holds another one."""
        slot = generation % 2
        header, data = self._headers[slot], self._data[slot]
        if int(header[:8].view(np.int64)[0]) != generation:
            return None
        n, d = self.num_params, self.obs_dim
        limit = int(header[8:16].view(np.int64)[0])
        sigma = float(header[16:24].view(np.float64)[0])
        spec = GenerationSpec(generation, sigma, data[n : n + d], data[n + d :], None if limit < 0 else limit)
        return data[:n], spec

    def close(self) -> None:
        """Drops this object's mapping (it goes with the last view of it); the file stays."""
        self._headers, self._data = [], []
        del self._latest, self._file

    def remove(self) -> None:
        """Unmaps and deletes the file, and lets go of the creator's lock."""
        self.close()
        self.path.unlink(missing_ok=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def table_bytes(table_size: int) -> int:
    """Bytes of a shared noise table's segment: its header page and ``table_size`` float32 samples.

    A master holds one such segment in /dev/shm for its run (``run.noise_table_size`` samples).

    Raises:
        ValueError: ``table_size`` < 1.
    """
    if table_size < 1:
        raise ValueError(f"table_size must be at least 1, got {table_size}")
    return core.SHARED_HEADER_BYTES + 4 * table_size


def host_memory_bytes(table_size: int, num_params: int, obs_dim: int) -> int:
    """Bytes a worker host puts in /dev/shm for a run (:class:`HostMemory`): the noise table it
    generates and its θ slots.

    Args:
        table_size: the run's ``run.noise_table_size``.
        num_params: the policy's parameters.
        obs_dim: the length of its observation statistics.

    Raises:
        ValueError: ``table_size`` < 1.
    """
    return table_bytes(table_size) + ThetaSlots.size(num_params, obs_dim)


class HostMemory:
    """What a worker host holds in shared memory for one run: the noise table and the θ slots.

    The table is the master's when the master runs on this machine (same name of host, same
    seed and size), else one this host generates from the run's seed.

    Args:
        setup: the run, as the master described it.

    Raises:
        OSError: no room for the table or the θ slots (the message says which).
    """

    def __init__(self, setup: WorkerSetup) -> None:
        table = None
        if setup.table_name and setup.table_host == hostname():
            try:
                attached = core.NoiseTable.attach(setup.table_name)
                if (attached.seed, len(attached)) == (setup.table_seed, setup.table_size):
                    table = attached
                else:
                    attached.close()
            except (OSError, ValueError):
                table = None
        self.attached = table is not None  # the master's table, not one this host made
        if table is None:
            name = segment_name("host")
            try:
                table = core.NoiseTable.create_shared(name, setup.table_size, setup.table_seed)
            except (OSError, MemoryError) as error:
                raise OSError(f"cannot create the noise table of {setup.table_size:,} samples: {error}") from None
        self.table = table
        directory = shm_directory()
        try:
            self.slots = ThetaSlots.create(directory, setup.num_params, setup.obs_dim)
        except OSError as error:
            table.close()
            raise OSError(f"cannot allocate θ in {directory}: {error.strerror}") from None
        self.released = False

    def release(self) -> None:
        """Removes the θ file and closes the table (and removes the master's, if the master was
        killed and could not). Safe to call twice."""
        if self.released:
            return
        self.released = True
        self.slots.remove()
        name = self.table.name
        self.table.close()
        if name:
            core.NoiseTable.remove_if_stale(name)
