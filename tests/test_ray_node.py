"""esfast.clusters.ray_node without Ray: the key files a node is sent, and the actor's class
starting and stopping a real worker host (the same class as a Ray actor: tests/test_ray.py)."""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

from cluster import free_port

from esfast.clusters.ray_node import HostExited, KeyFiles, NodeWorkerHost
from esfast.distributed.keys import load_worker_keys, make_keys


def test_key_files_arrive_private_and_loadable(tmp_path: Path) -> None:
    make_keys(tmp_path, 1)
    files = KeyFiles.read(tmp_path / "worker-1")
    folder = files.write()
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in folder.iterdir())
        assert load_worker_keys(folder).public == load_worker_keys(tmp_path / "worker-1").public
    finally:
        shutil.rmtree(folder)


def test_the_actor_class_runs_and_stops_a_worker_host(tmp_path: Path) -> None:
    """NodeWorkerHost outside Ray: a worker host waiting for a master that is not there, stopped by SIGTERM."""
    make_keys(tmp_path, 1)
    host = NodeWorkerHost(f"tcp://127.0.0.1:{free_port()}", 1, KeyFiles.read(tmp_path / "worker-1"))
    started = host.start()
    try:
        assert host.start() == started  # once
        folder = host.key_folder
        assert folder is not None and folder.name.startswith("esfast-worker-1-")
        time.sleep(2.0)  # past its imports, into its loop: it has said it waits for the master
        assert host.poll(0.1) is None
        assert not folder.exists()  # the host read its keys at its start: their files are gone
        exited = host.stop(0.5)  # no master told it to stop: SIGTERM after half a second
        assert exited is not None and exited.status == 130, exited
        assert any("interrupted" in line for line in exited.tail), exited
        assert host.poll(0.1) == HostExited(130, exited.tail)
    finally:
        if host.process is not None and host.process.poll() is None:
            host.process.kill()
