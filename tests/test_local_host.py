"""The worker host esfast train starts on this machine: stopping it, also when it does not stop by itself."""

from __future__ import annotations

import subprocess
import sys

from esfast.distributed.local_host import stop_local_worker


def test_a_host_that_exits_is_waited_for() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    stop_local_worker(process, timeout=10.0)
    assert process.returncode == 0


def test_a_host_that_does_not_exit_is_terminated_then_killed() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    stop_local_worker(process, timeout=0.5)
    assert process.returncode == -9  # SIGTERM ignored: killed
    process.stdout.close()
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_local_worker(polite, timeout=0.5)
    assert polite.returncode == -15
