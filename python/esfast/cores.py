"""How many cores this process may use: the default number of evaluator processes.

The cores the scheduler lets the process run on (its affinity), and no more than a container's
CPU limit, which Linux enforces as a cgroup CPU quota rather than through the affinity: a pod
limited to 4 CPUs on a 64-core node sees 64 cores in ``os.sched_getaffinity`` but gets the time
of 4. The quota is read from cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``) and rounded up, so a limit of 1.5 CPUs gives 2 processes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cores", "cgroup_cpu_limit"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: its affinity, capped by its cgroup's CPU quota (at least 1)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(affinity, limit) if limit is not None else affinity)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The CPU quota of this process's cgroup in whole CPUs (rounded up), or None if it has none.

    Args:
        cgroup_root: where the cgroup file system is mounted (a test's own folder, in tests).
    """
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _cpus(parts[0], parts[1])
        return None
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota, period = _read(cgroup_root / folder / "cpu.cfs_quota_us"), _read(cgroup_root / folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _cpus(quota, period)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpus(quota: str, period: str) -> int | None:
    """ceil(quota / period), or None for no quota (-1) or numbers that make none."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return math.ceil(q / p) if q > 0 and p > 0 else None
