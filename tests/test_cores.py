from __future__ import annotations

import os
from pathlib import Path

import pytest

from esfast.cores import available_cores, cgroup_cpu_limit


def _write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text + "\n")


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "400000 100000"}, 4),
        ({"cpu.max": "150000 100000"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"}, 2),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_in_whole_cpus(tmp_path: Path, files: dict[str, str], limit: int | None) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    assert cgroup_cpu_limit(tmp_path) == limit


def test_the_default_is_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(tmp_path) == affinity  # no cgroup files: the affinity
    _write(tmp_path, "cpu.max", "100000 100000")
    assert available_cores(tmp_path) == 1
    _write(tmp_path, "cpu.max", f"{(affinity + 8) * 100000} 100000")
    assert available_cores(tmp_path) == affinity  # a quota above the cores does not add any
