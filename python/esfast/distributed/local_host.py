"""The worker host ``esfast train`` starts on this machine: a subprocess running
:mod:`esfast.distributed.host`, connected to the run's master over loopback."""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["start_local_worker", "stop_local_worker"]


def start_local_worker(endpoint: str, procs: int) -> subprocess.Popen[bytes]:
    """Starts ``esfast.distributed.host`` on this machine, connected to ``endpoint``, with ``procs``
    evaluator processes; it exits when this process does (``--parent``)."""
    command = [
        sys.executable,
        "-m",
        "esfast.distributed.host",
        "--master",
        endpoint,
        "--procs",
        str(procs),
        "--quiet",
        "--parent",
        str(os.getpid()),
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def stop_local_worker(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Waits up to ``timeout`` seconds for a local worker host that was told to stop; terminates
    it if it does not, and kills it if it does not terminate either."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
