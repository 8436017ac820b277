"""esfast's shared-memory segments: where they live, whose they are, and cleaning up after killed processes.

Every segment esfast makes is named ``esfast-[KIND-]<pid>-<id>``: noise tables of masters
(``esfast-<pid>-...``) and of worker hosts (``esfast-host-<pid>-...``), and θ files of worker hosts
(``esfast-theta-<pid>-...``), with the id of the process that made it. A process killed with
SIGKILL cannot remove its segments; the next master or worker host started on the machine does.
"""

from __future__ import annotations

import os
from pathlib import Path

from esfast import core


def shm_directory() -> Path:
    """Where θ files live: /dev/shm, or the temporary directory where there is none."""
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))


def segment_owner(name: str) -> tuple[str, int] | None:
    """(kind, pid) of an esfast segment name (kind ``table`` for a master's table), or None."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] != "esfast":
        return None
    kind, pid = ("table", parts[1]) if parts[1].isdigit() else (parts[1], parts[2])
    return (kind, int(pid)) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments() -> int:
    """Removes esfast's noise tables and θ files whose creating process is gone.

    Tables are removed only if their header says they are esfast tables of a dead process
    (:meth:`esfast.core.NoiseTable.remove_if_stale`); segments of live processes are never touched.

    Returns:
        How many were removed.
    """
    removed = 0
    for path in shm_directory().glob("esfast-*"):
        owner = segment_owner(path.name)
        if owner is None or process_alive(owner[1]):
            continue
        try:
            if owner[0] == "theta":
                path.unlink()
                removed += 1
            elif core.NoiseTable.remove_if_stale(path.name):
                removed += 1
        except (OSError, ValueError):
            continue  # not an esfast table after all, or already gone
    return removed
