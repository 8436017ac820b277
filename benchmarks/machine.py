"""What machine a benchmark ran on, for the first line of its output: CPU model, vector extensions, cores.

Every figure esfast publishes states the CPU it was measured on; the benchmarks print this line
so that a copied result carries it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from esfast import core

# The vector extensions that decide which code paths esfast's kernels run (docs/determinism.md).
EXTENSIONS = ("sse2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vbmi")


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (from /proc/cpuinfo on Linux; a
    virtual machine may report only the vendor's brand), or what the platform module knows."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields and "model" in fields else ""
    return fields["model name"] + numbers


def cpu_extensions() -> list[str]:
    """Which of EXTENSIONS the CPU reports (Linux's /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [name for name in EXTENSIONS if name in flags]
    return []


def describe() -> str:
    """One line: CPU model, extensions, cores available, and the kernels' code path."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    extensions = " ".join(cpu_extensions()) or "unknown"
    return f"cpu: {cpu_model()} ({extensions}); {cores} cores available; esfast code path {core.code_path()}"
