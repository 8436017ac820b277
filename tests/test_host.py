"""esfast-worker on 127.0.0.1: waiting for a master, refusals, Ctrl-C, bad arguments."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq
from cluster import SLOW_REACH, Cluster, records

from esfast.distributed.host import WorkerHost
from esfast.distributed.keys import make_keys
from esfast.distributed.protocol import PROTOCOL_VERSION
from esfast.errors import HostExit


def test_a_worker_started_first_waits_with_backoff_then_serves(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.worker()
    worker.wait_for("no answer within 1.0 s, asking again")
    assert f"waiting for the master at {cluster.address}" in worker.output
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "2", out=out)
    assert master.wait() == 0, master.output
    assert worker.wait(30) == 0
    assert "connected to the master" in worker.output and len(records(out)) == 2


def test_ctrl_c_on_a_worker_leaves_the_master_running(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "6", out=out)
    quitter = cluster.worker()
    stayer = cluster.worker()
    master.wait_for("gen     2")
    quitter.signal(signal.SIGINT)
    assert quitter.wait(30) == 130
    assert "interrupted; the master keeps running" in quitter.output and "Traceback" not in quitter.output
    assert master.wait() == 0, master.output
    assert "said goodbye" in master.output and [r["generation"] for r in records(out)][-1] == 6
    assert stayer.wait(30) == 0


def _fake_master(router: zmq.Socket[bytes], reply: bytes) -> None:
    """Answers the first message (a HELLO) with ``reply``."""
    if router.poll(30_000):
        identity, *_ = router.recv_multipart()
        router.send_multipart([identity, reply])


def test_a_master_of_another_version_is_refused(cluster: Cluster) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(cluster.address)
    answer = threading.Thread(target=_fake_master, args=(router, json.dumps({"v": 9, "type": "WELCOME"}).encode()))
    answer.start()
    try:
        worker = cluster.worker()
        assert worker.wait(30) == 2
        assert f"speaks protocol version 9, this worker speaks {PROTOCOL_VERSION}" in worker.output and "Traceback" not in worker.output
    finally:
        answer.join()
        router.close()
        context.term()


def test_bad_arguments_are_one_line() -> None:
    for args, message in (
        (["--master", "not-an-address"], "--master must be tcp://HOST:PORT, got 'not-an-address'"),
        (["--master", "tcp://127.0.0.1:99999"], "the port must be 1 to 65535"),
        (["--master", "tcp://127.0.0.1:1", "--procs", "0"], "--procs must be at least 1"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "esfast.distributed.host", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_a_host_whose_fingerprint_changes_stops() -> None:
    """A restarted first evaluator that fingerprints the environment differently: the machine does not reproduce."""
    host = WorkerHost("tcp://127.0.0.1:1", 1)
    try:
        host._fingerprinted("a" * 32)
        host._fingerprinted("a" * 32)
        with pytest.raises(HostExit, match=r"fingerprint changed on this machine .* does not simulate reproducibly"):
            host._fingerprinted("b" * 32)
    finally:
        host.close()


def test_worker_keys_that_cannot_be_used_are_one_line(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", 1)
    (tmp_path / "keys" / "worker-1" / "master.key").write_text("not a key\n")
    for keys, message in (
        (tmp_path / "none", "no such folder"),
        (tmp_path / "keys" / "master", "that is the master's folder"),
        (tmp_path / "keys" / "worker-1", "is not a key file made by esfast keys"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "esfast.distributed.host", "--master", "tcp://127.0.0.1:1", "--keys", str(keys)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "esfast-worker: error: --keys" in result.stderr and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_worker_holding_another_runs_table_is_refused_on_both_sides(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.master(*SLOW_REACH, "--generations", "50", out=tmp_path / "a")
    worker = cluster.worker()
    first.wait_for("gen     1")
    first.signal(signal.SIGKILL)
    first.wait()
    second = cluster.master(*SLOW_REACH, "--seed", "5", out=tmp_path / "b")  # the same address, another run
    assert worker.wait(60) == 2
    assert "refused this worker: the worker holds a noise table with seed 0" in worker.output
    assert "Traceback" not in worker.output
    second.wait_for("refused a worker host: the worker holds a noise table with seed 0")


# A worker host that discards the first THETA of generation 1, as a full queue on the master's
# side did before the master's sends were checked: before hosts asked for a missing θ, the run
# stalled there (one host holds every task of the generation and drops them).
LOSSY_HOST = """
import sys
from esfast.distributed import host
original = host.WorkerHost._theta
lost = []
def theta(self, message):
    if message["generation"] == 1 and not lost:
        lost.append(1)
        return
    original(self, message)
host.WorkerHost._theta = theta
sys.exit(host.main())
"""


def test_a_host_that_missed_theta_asks_for_it_and_the_run_goes_on(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "3", out=out)
    worker = cluster.start("worker", [sys.executable, "-c", LOSSY_HOST, "--master", cluster.address, "--procs", "1"])
    assert master.wait(60) == 0, master.output
    assert [r["generation"] for r in records(out)] == [1, 2, 3]
    assert "tasks of generation 1 arrived without its θ; asking the master for it" in worker.output
    assert "lacks θ of generation 1; sending it again" in master.output
