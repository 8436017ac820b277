"""esfast-master with real worker hosts on 127.0.0.1: learning, determinism, faults, hostile input."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
from cluster import CARTPOLE, SLOW_REACH, Cluster, Process, Relay, evaluators, final_theta, fingerprint, hello, patched_envs, records
from peers import Peer

from esfast.config import PolicySettings, load_config
from esfast.distributed.keys import make_keys
from esfast.distributed.master import Master, _Host
from esfast.distributed.protocol import PROTOCOL_VERSION, Message, decode, encode
from esfast.distributed.scheduling import GenerationScheduler
from esfast.distributed.versions import software_versions
from esfast.evaluators import SerialEvaluator
from esfast.tasks import GenerationSpec, PairTask, WorkerSetup
from esfast.training import Trainer


def test_master_and_two_workers_train_cartpole_to_475(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*CARTPOLE, "--generations", "40", out=out)
    cluster.worker()
    cluster.worker()
    assert master.wait() == 0, master.output
    log = records(out)
    assert len(log) == 40 and max(r["hosts"] for r in log) == 2
    best = max(r["eval_return_mean"] for r in log)
    assert best >= 475, f"best evaluation return {best}"


def test_one_and_three_workers_give_identical_theta(cluster: Cluster, tmp_path: Path) -> None:
    outs = []
    for workers in (1, 3):
        out = tmp_path / f"workers{workers}"
        master = cluster.master(*SLOW_REACH, "--generations", "5", out=out)
        hosts = [cluster.worker() for _ in range(workers)]
        assert master.wait() == 0, master.output
        for host in hosts:
            assert host.wait(30) == 0 and "the master stopped this worker: the run is over" in host.output
        outs.append(out)
    assert max(r["hosts"] for r in records(outs[1])) == 3
    np.testing.assert_array_equal(final_theta(outs[0]), final_theta(outs[1]))


def test_a_worker_killed_mid_generation_loses_no_generation(cluster: Cluster, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    master = cluster.master(*SLOW_REACH, "--generations", "6", out=straight)
    cluster.worker(procs=2)
    assert master.wait() == 0, master.output

    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "6", out=out)
    victim = cluster.worker()
    cluster.worker()
    master.wait_for("gen     2")
    time.sleep(0.3)  # inside generation 3
    victim.signal(signal.SIGKILL)
    assert master.wait() == 0, master.output
    assert "was silent for" in master.output
    log = records(out)
    assert [r["generation"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert sum(r["tasks_reissued"] + r["tasks_duplicated"] for r in log) > 0
    np.testing.assert_array_equal(final_theta(straight), final_theta(out))


def test_a_worker_joining_mid_run_is_used(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "8", out=out)
    cluster.worker()
    master.wait_for("gen     2")
    cluster.worker()
    assert master.wait() == 0, master.output
    log = records(out)
    assert log[0]["hosts"] == 1 and log[-1]["hosts"] == 2 and log[-1]["hosts_total"] == 2


def test_restarted_master_resumes_and_workers_reconnect(cluster: Cluster, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    master = cluster.master(*SLOW_REACH, "--generations", "5", out=straight)
    cluster.worker()
    assert master.wait() == 0, master.output

    out = tmp_path / "run"
    first = cluster.master(*SLOW_REACH, "--generations", "5", out=out)
    worker = cluster.worker()
    first.wait_for("gen     2")
    first.signal(signal.SIGKILL)  # no checkpoint beyond the last generation, no STOP to the worker
    first.wait()
    second = cluster.master("--resume", str(out), "--generations", "5", out=out)
    assert second.wait() == 0, second.output
    assert "reconnected to the master" in worker.output or worker.output.count("connected to the master") == 2
    assert worker.wait(30) == 0
    generations = [r["generation"] for r in records(out)]
    assert generations[-1] == 5 and sorted(set(generations)) == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(final_theta(straight), final_theta(out))


def test_garbage_is_dropped_and_training_continues(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "4", out=out)
    cluster.worker()
    master.wait_for("gen     1")
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(cluster.address)
    rng = np.random.default_rng(0)
    hoarder = context.socket(zmq.DEALER)
    try:
        for _ in range(50):
            dealer.send_multipart([rng.bytes(int(rng.integers(0, 200))) for _ in range(int(rng.integers(1, 4)))])
        dealer.send_multipart(
            [json.dumps({"v": PROTOCOL_VERSION, "type": "RESULT", "generation": 2, "results": [{"task": 10**9}]}).encode()]
        )
        dealer.send_multipart(encode(hello("evil", 1, procs=0)))
        with socket.create_connection(("127.0.0.1", cluster.port)) as raw:  # not even ZeroMQ
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + rng.bytes(1000))
        assert dealer.poll(10_000) and decode(dealer.recv_multipart()).type == "REFUSE"  # procs 0
        # A host that asks for the whole queue and then never answers (nor reads): clipped, then lost.
        hoarder.setsockopt(zmq.LINGER, 0)
        hoarder.connect(cluster.address)
        hoarder.send_multipart(encode(hello("hoarder", 2)))
        assert hoarder.poll(10_000) and decode(hoarder.recv_multipart()).type == "WELCOME"
        hoarder.send_multipart(encode(fingerprint("EsfastTest/SlowReach-v0", "custom_envs")))
        hoarder.send_multipart(encode(Message("READY", {"credit": 10**6})))
        assert master.wait() == 0, master.output
    finally:
        dealer.close()
        hoarder.close()
        context.term()
    log = records(out)
    assert [r["generation"] for r in log] == [1, 2, 3, 4]
    assert sum(r["messages_dropped"] for r in log) > 0 and "dropped a message" in master.output
    assert "credit beyond 4 for 1 evaluator processes, clipped" in master.output
    assert "hoarder:2 was silent for" in master.output  # its tasks were copied to the real host, or re-issued
    assert sum(r["tasks_reissued"] + r["tasks_duplicated"] for r in log) > 0
    assert "Traceback" not in master.output


def test_a_taken_port_is_one_line_and_exit_2(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.master(*SLOW_REACH, out=tmp_path / "a")
    first.wait_for("master listening at")
    second = cluster.master(*SLOW_REACH, out=tmp_path / "b")
    assert second.wait() == 2
    assert "esfast-master: error: cannot bind tcp://127.0.0.1" in second.output and "Address already in use" in second.output
    assert "Traceback" not in second.output


def _hello(address: str, header: dict[str, object]) -> Message:
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(address)
        dealer.send(json.dumps(header).encode())
        assert dealer.poll(10_000), "no answer to HELLO"
        return decode(dealer.recv_multipart())
    finally:
        dealer.close()
        context.term()


def test_workers_of_another_version_or_table_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    master = cluster.master(*SLOW_REACH, out=tmp_path / "run")
    master.wait_for("master listening at")
    answer = _hello(cluster.address, {"v": 99, "type": "HELLO", "host": "old", "pid": 1, "procs": 1})
    assert answer.type == "REFUSE" and "protocol version 99" in answer["reason"]
    header = {"v": PROTOCOL_VERSION, "type": "HELLO", **hello("other", 1).fields, "table": {"seed": 99, "size": 1000}}
    answer = _hello(cluster.address, header)
    assert answer.type == "REFUSE" and "noise table with seed 99" in answer["reason"]
    master.wait_for("refused a worker host: the worker holds a noise table with seed 99")
    assert "refused a worker host: the worker speaks protocol version 99" in master.output


def test_ctrl_c_on_the_master_checkpoints_and_stops_the_workers(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, out=out)
    worker = cluster.worker()
    master.wait_for("gen     2")
    master.signal(signal.SIGINT)
    assert master.wait() == 130
    assert f"continue with: esfast-master --resume {out}" in master.output and "Traceback" not in master.output
    assert (out / "checkpoints" / "latest.npz").exists()
    assert worker.wait(30) == 0 and "the master stopped this worker: the master was interrupted" in worker.output


def test_episodes_longer_than_the_liveness_do_not_lose_their_host(cluster: Cluster, tmp_path: Path) -> None:
    """A pair of 3 s episodes takes 6 s, longer than 5 s of silence: the host heart-beats meanwhile."""
    out = tmp_path / "run"
    master = cluster.master(
        "--env",
        "EsfastTest/LongEpisode-v0",
        "--env-module",
        "custom_envs",
        "--set",
        "episodes_per_batch=2",
        "--set",
        "run.eval_episodes=0",
        "--set",
        "hidden_dims=[2]",
        "--generations",
        "1",
        out=out,
    )
    worker = cluster.worker()
    assert master.wait() == 0, master.output
    assert worker.wait(30) == 0
    (record,) = records(out)
    assert record["hosts_lost"] == 0 and record["tasks_reissued"] == 0 and "silent" not in master.output


class _FakeHost:
    """A worker host played by the test: HELLO, READY, and results of 1.0 and 2.0 for every task."""

    def __init__(self, address: str, name: str, session: str | None = None) -> None:
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(address)
        self.dealer.send_multipart(encode(hello(name, 7, session=session)))
        self.dealer.send_multipart(encode(fingerprint("CartPole-v1")))  # read after HELLO, in order
        self.received: list[str] = []
        self.session: str | None = None  # from WELCOME

    def serve(self, tasks: int) -> threading.Thread:
        """Answers in a thread until ``tasks`` tasks are done."""

        def run() -> None:
            done = 0
            while done < tasks and self.dealer.poll(20_000):
                message = decode(self.dealer.recv_multipart())
                self.received.append(message.type)
                if message.type == "WELCOME":
                    self.session = message["session"]
                    self.dealer.send_multipart(encode(Message("READY", {"credit": 2})))
                elif message.type == "TASKS":
                    results = [
                        {"task": t["task"], "returns": [1.0, 2.0], "lengths": [3, 3], "obs_count": 0, "obs_arrays": None}
                        for t in message["tasks"]
                    ]
                    done += len(results)
                    self.dealer.send_multipart(
                        encode(Message("RESULT", {"generation": message["generation"], "results": results, "credit": len(results)}))
                    )

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def close(self) -> None:
        self.dealer.close()
        self.context.term()


def test_the_master_heart_beats_between_generations_and_replaces_reconnected_hosts(caplog: pytest.LogCaptureFixture) -> None:
    """While the trainer updates θ and checkpoints, the master still answers for itself; a host
    that says HELLO on a new connection replaces its old one at once."""
    setup = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(4,)), 30, 4, 1000, 0)
    spec = GenerationSpec(0, 0.1, np.zeros(4, np.float32), np.ones(4, np.float32), None)
    master = Master("tcp://127.0.0.1:0", setup)
    first = _FakeHost(master.endpoint, "fake")
    again: _FakeHost | None = None
    try:
        thread = first.serve(1)
        pairs, _ = master.evaluate(np.zeros(30, np.float32), spec, [PairTask(0, 5, 1, False)], [])
        thread.join(20)
        assert [kind for kind in first.received if kind != "HEARTBEAT"] == ["WELCOME", "THETA", "TASKS"]
        assert pairs[0].returns == (1.0, 2.0)
        time.sleep(3.5)  # the trainer's update and checkpoint: no generation runs
        types = []
        while first.dealer.poll(0):
            types.append(decode(first.dealer.recv_multipart()).type)
        assert types.count("HEARTBEAT") >= 3, types
        again = _FakeHost(master.endpoint, "fake", first.session)  # the same process (fake:7) on a new connection
        thread = again.serve(1)
        with caplog.at_level(logging.INFO, logger="esfast.distributed.master"):
            pairs, _ = master.evaluate(np.ones(30, np.float32), dataclasses.replace(spec, generation=1), [PairTask(0, 6, 2, False)], [])
        thread.join(20)
        assert pairs[0].returns == (1.0, 2.0) and len(master.hosts) == 1
        assert "worker host fake:7 reconnected" in caplog.text
    finally:
        master.close()
        first.close()
        if again is not None:
            again.close()


def test_a_later_round_of_a_generation_never_takes_a_late_result_of_an_earlier_one() -> None:
    """The trainer's variable batch evaluates a generation in rounds with one θ. A result of the
    first round that comes late (a tail copy) while the second runs must be dropped: the second
    round's task ids continue the first's, so task 0 of generation 0 stays the first round's."""
    setup = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(4,)), 30, 4, 1000, 0)
    spec = GenerationSpec(0, 0.1, np.zeros(4, np.float32), np.ones(4, np.float32), None)
    master = Master("tcp://127.0.0.1:0", setup)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(master.endpoint)
    dealer.send_multipart(encode(hello("fake", 7)))
    dealer.send_multipart(encode(fingerprint("CartPole-v1")))  # read after HELLO, in order
    received: list[tuple[str, list[int]]] = []

    def result(task: int, value: float) -> dict[str, object]:
        return {"task": task, "returns": [value, value], "lengths": [3, 3], "obs_count": 0, "obs_arrays": None}

    def serve() -> None:
        while len([kind for kind, _ in received if kind == "TASKS"]) < 3 and dealer.poll(20_000):
            message = decode(dealer.recv_multipart())
            received.append((message.type, [t["task"] for t in message["tasks"]] if message.type == "TASKS" else []))
            if message.type == "WELCOME":
                dealer.send_multipart(encode(Message("READY", {"credit": 2})))
            elif message.type == "TASKS":
                if len([kind for kind, _ in received if kind == "TASKS"]) == 2:  # first a late copy of round 1's task 0
                    dealer.send_multipart(encode(Message("RESULT", {"generation": 0, "results": [result(0, 9.0)], "credit": 0})))
                results = [result(t["task"], 1.0) for t in message["tasks"]]
                generation = message["generation"]
                dealer.send_multipart(encode(Message("RESULT", {"generation": generation, "results": results, "credit": len(results)})))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        theta = np.zeros(30, np.float32)
        first, _ = master.evaluate(theta, spec, [PairTask(0, 5, 1, False)], [])
        with pytest.raises(ValueError, match="generation 0 is evaluated again with another θ or other settings than its hosts hold"):
            master.evaluate(np.ones(30, np.float32), spec, [PairTask(1, 6, 2, False)], [])
        second, _ = master.evaluate(theta, spec, [PairTask(1, 6, 2, False)], [])
        assert [(r.pair, r.returns) for r in first + second] == [(0, (1.0, 1.0)), (1, (1.0, 1.0))]
        stats = master.generation_stats()
        assert (stats["results_stale"], stats["results_duplicate"], stats["hosts"]) == (1, 0, 1)
        third, _ = master.evaluate(np.ones(30, np.float32), dataclasses.replace(spec, generation=1), [PairTask(0, 7, 3, False)], [])
        assert third[0].returns == (1.0, 1.0) and master.generation_stats()["results_stale"] == 0
        thread.join(20)
        tasks = [ids for kind, ids in received if kind == "TASKS"]
        assert tasks == [[0], [1], [0]] and [kind for kind, _ in received].count("THETA") == 2  # θ once per generation
    finally:
        master.close()
        dealer.close()
        context.term()


def test_a_stalled_host_does_not_stall_the_generation(cluster: Cluster, tmp_path: Path) -> None:
    """A host that keeps heart-beating but whose evaluator hangs: its tasks are copied to an idle
    host once outstanding long enough, the first result wins, the late one is dropped."""
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "5", out=out)
    stalled = cluster.worker()
    cluster.worker()
    master.wait_for("gen     1")
    (evaluator,) = evaluators(stalled.popen.pid)
    os.kill(evaluator, signal.SIGSTOP)
    try:
        master.wait_for("gen     3")
    finally:
        os.kill(evaluator, signal.SIGCONT)
    assert master.wait() == 0, master.output
    log = records(out)
    assert [r["generation"] for r in log] == [1, 2, 3, 4, 5]
    assert sum(r["tasks_duplicated"] for r in log) > 0 and sum(r["hosts_lost"] for r in log) == 0
    assert "silent" not in master.output


def test_a_hello_whose_connection_is_gone_adds_no_host(caplog: pytest.LogCaptureFixture) -> None:
    """A host that gave up on its first connection (no WELCOME in time) may have left its HELLO
    queued at the master: the WELCOME cannot be sent, and no host is added for it."""
    setup = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(4,)), 30, 4, 1000, 0)
    master = Master("tcp://127.0.0.1:0", setup)
    try:
        with caplog.at_level(logging.INFO, logger="esfast.distributed.master"):
            master._hello(b"gone", hello("fake", 7), time.monotonic(), zmq.Frame(b""))
        assert not master.hosts and master.host_counter == 0 and master.stats.hosts_lost == 0
        assert "worker host fake:7 left before its WELCOME could be sent" in caplog.text and "joined" not in caplog.text
    finally:
        master.close()


def test_sends_the_socket_refuses_are_seen_not_lost() -> None:
    """ROUTER_MANDATORY: θ refused is sent again later, tasks refused go back to the queue."""
    setup = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(4,)), 30, 4, 1000, 0)
    master = Master("tcp://127.0.0.1:0", setup)
    try:
        assert master._send(b"nobody", [b"x"]) is False  # an unknown peer: refused, not dropped in silence
        host = _Host(b"peer", "w1", "peer:1", procs=2, last_seen=0.0, credit=3, admitted=True)
        master.hosts[host.identity] = host
        master.scheduler = GenerationScheduler(4, [PairTask(i, i, i, False) for i in range(5)])
        master.theta_frames = [b"theta"]
        refuse: set[bytes] = {b"theta"}
        sent: list[bytes] = []

        def send(identity: bytes, frames: list[bytes]) -> bool:
            kind = b"theta" if frames is master.theta_frames else b"tasks"
            if kind in refuse:
                return False
            sent.append(kind)
            return True

        master._send = send  # type: ignore[method-assign]
        master._dispatch(1.0)
        assert host.theta_generation == -1 and host.credit == 3 and list(master.scheduler.pending) == [0, 1, 2, 3, 4]
        refuse = {b"tasks"}
        master._dispatch(2.0)
        assert sent == [b"theta"] and host.theta_generation == 4
        assert host.credit == 3 and list(master.scheduler.pending) == [0, 1, 2, 3, 4] and not master.scheduler.holders
        refuse = set()
        master._dispatch(3.0)
        assert sent == [b"theta", b"tasks"] and host.credit == 0 and list(master.scheduler.pending) == [3, 4]
    finally:
        master.scheduler = None
        master.close()


def test_only_workers_with_listed_keys_join(cluster: Cluster, tmp_path: Path) -> None:
    """Under --keys, a worker without keys, with a key the master does not list, or expecting
    another master's key never joins: nothing it says reaches the master; a listed worker trains."""
    keys, other = tmp_path / "keys", tmp_path / "other"
    make_keys(keys, 1)
    make_keys(other, 1)
    unlisted = tmp_path / "unlisted"  # another pair, with the right master key
    shutil.copytree(other / "worker-1", unlisted)
    shutil.copy(keys / "worker-1" / "master.key", unlisted / "master.key")
    wrong_master = tmp_path / "wrong-master"  # a listed pair that expects another master's key
    shutil.copytree(keys / "worker-1", wrong_master)
    shutil.copy(other / "worker-1" / "master.key", wrong_master / "master.key")
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "3", "--keys", str(keys / "master"), out=out)
    master.wait_for("master listening at")
    assert "CURVE keys" in master.output and "warning" not in master.output
    plain = cluster.worker()
    stranger = cluster.worker(args=("--keys", str(unlisted)))
    misled = cluster.worker(args=("--keys", str(wrong_master)))
    assert plain.wait(30) == 2 and "requires keys: start this worker with --keys DIR" in plain.output
    assert stranger.wait(30) == 2 and "does not accept this worker's key" in stranger.output
    assert misled.wait(30) == 2 and "does not hold the key of" in misled.output
    listed = cluster.worker(args=("--keys", str(keys / "worker-1")))
    assert master.wait() == 0, master.output
    assert listed.wait(30) == 0
    log = records(out)
    assert [r["generation"] for r in log] == [1, 2, 3]
    assert all(r["hosts_total"] == 1 and r["messages_dropped"] == 0 and r["hosts_refused"] == 0 for r in log)
    assert master.output.count("joined") == 1 and "(key worker-1) joined" in master.output
    assert "refused 1 connection with a key not listed" in master.output
    assert "Traceback" not in master.output + plain.output + stranger.output + misled.output


def test_the_traffic_under_keys_shows_no_message_header(cluster: Cluster, tmp_path: Path) -> None:
    """Bytes captured between a worker and the master: JSON headers in plain text without keys,
    none under --keys."""
    keys = tmp_path / "keys"
    make_keys(keys, 1)
    captures = []
    for name, master_args, worker_args in (
        ("plain", (), ()),
        ("keys", ("--keys", str(keys / "master")), ("--keys", str(keys / "worker-1"))),
    ):
        relay = Relay(cluster.port)
        try:
            master = cluster.master(*SLOW_REACH, "--generations", "1", *master_args, out=tmp_path / name)
            worker = cluster.worker(address=relay.address, args=worker_args)
            assert master.wait() == 0, master.output
            assert worker.wait(30) == 0, worker.output
        finally:
            relay.stop()
        captures.append(bytes(relay.captured))
    plain, encrypted = captures
    assert b'"type":"HELLO"' in plain and b'"type":"THETA"' in plain and b'"type":"RESULT"' in plain
    assert len(encrypted) > 1000  # θ, tasks and results went through the relay
    # (CURVE's own handshake commands are named HELLO, WELCOME, INITIATE and READY in clear text.)
    for text in (b'"type"', b'"v":', b'"host"', b'"generation"', b"THETA", b"TASKS", b"RESULT", b"EsfastTest", b"SlowReach"):
        assert text not in encrypted, text


# A worker host that reports another gymnasium than the one installed.
OTHER_GYMNASIUM = """
import sys
from esfast.distributed import host
real = host.software_versions
host.software_versions = lambda: {**real(), "gymnasium": "0.29.1"}
sys.exit(host.main())
"""


def test_hosts_of_other_versions_or_environments_are_refused_on_both_sides(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "2", out=out)
    older = cluster.start("worker", [sys.executable, "-c", OTHER_GYMNASIUM, "--master", cluster.address, "--procs", "1"])
    patched = cluster.worker(pythonpath=(patched_envs(tmp_path / "patched", fingerprint_too=True),))
    assert older.wait(60) == 2 and patched.wait(60) == 2
    installed = software_versions()["gymnasium"]
    assert (
        f"refused this worker: the worker runs other versions than the master: gymnasium {installed} on the master, 0.29.1 on the worker"
        in (older.output)
    )
    assert "refused this worker: the environment EsfastTest/SlowReach-v0 simulates differently on the worker" in patched.output
    assert f"refused a worker host: the worker runs other versions than the master: gymnasium {installed} on the master" in master.output
    assert "refused a worker host: the environment EsfastTest/SlowReach-v0 simulates differently" in master.output
    honest = cluster.worker()
    assert master.wait() == 0, master.output
    assert honest.wait(30) == 0
    log = records(out)
    assert all(r["hosts_total"] <= 2 for r in log) and max(r["hosts"] for r in log) == 1


def test_allow_mixed_versions_admits_them_with_a_warning_on_both_sides(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", "2", "--allow-mixed-versions", out=out)
    older = cluster.start("worker", [sys.executable, "-c", OTHER_GYMNASIUM, "--master", cluster.address, "--procs", "1"])
    assert master.wait() == 0, master.output
    assert older.wait(30) == 0
    assert "runs other versions, admitted (--allow-mixed-versions): gymnasium" in master.output
    assert "the master admits this worker with other versions (--allow-mixed-versions): gymnasium" in older.output
    assert [r["generation"] for r in records(out)] == [1, 2]


# What a peer may say: each attack of issue 15 against a live master with one honest worker, whose
# θ must end as in a run without the attacker. ------------------------------------------------------

ATTACKED_GENERATIONS = "4"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of SlowReach with one honest worker and nobody else."""
    directory = tmp_path_factory.mktemp("straight")
    cluster = Cluster(directory)
    try:
        out = directory / "run"
        master = cluster.master(*SLOW_REACH, "--generations", ATTACKED_GENERATIONS, out=out)
        cluster.worker()
        assert master.wait() == 0, master.output
        return out
    finally:
        cluster.stop()


def _honest_run(cluster: Cluster, tmp_path: Path, *, descriptors: int | None = None) -> tuple[Path, Process, Process, str]:
    """A master and one honest worker, once the worker has joined: (run directory, master, worker, its name)."""
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", ATTACKED_GENERATIONS, out=out, descriptors=descriptors)
    worker = cluster.worker()
    master.wait_for(" joined with 1 evaluator process")
    found = re.search(r"worker host (\S+) joined", master.output)
    assert found is not None
    return out, master, worker, found.group(1)


def _same_as_straight(out: Path, straight: Path) -> None:
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))
    with np.load(out / "checkpoints" / "latest.npz") as attacked, np.load(straight / "checkpoints" / "latest.npz") as honest:
        for name in ("obstat_sum", "obstat_sumsq", "obstat_count"):
            np.testing.assert_array_equal(attacked[name], honest[name])
    ours, theirs = records(out), records(straight)
    assert [r["eval_return_mean"] for r in ours] == [r["eval_return_mean"] for r in theirs]
    assert [r["return_mean"] for r in ours] == [r["return_mean"] for r in theirs]


def _forged(task: int) -> dict[str, object]:
    return {"task": task, "returns": [50.0, -50.0], "lengths": [10, 10], "obs_count": 0, "obs_arrays": None}


class _Guesser(Peer):
    """Sends results for every task id of the first generations, none of which it was given."""

    def on_tick(self) -> None:
        for generation in range(6):
            results = [*map(_forged, range(6)), {"task": 6, "return": 0.0, "length": 10}]
            self.send(Message("RESULT", {"generation": generation, "results": results, "credit": 0}))


def _beside_an_honest_run(cluster: Cluster, tmp_path: Path, straight: Path, make_peer: Callable[[], Peer]) -> tuple[Path, Process]:
    """An honest run with a peer started beside it: the run ends well, with the θ and statistics of
    the run without the peer (``straight``); returns its run directory and master process."""
    out, master, _, _ = _honest_run(cluster, tmp_path)
    peer = make_peer().start()
    try:
        assert master.wait() == 0, master.output
    finally:
        peer.stop()
    _same_as_straight(out, straight)
    return out, master


def test_results_for_tasks_never_given_count_for_nothing(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out, master = _beside_an_honest_run(cluster, tmp_path, straight, lambda: _Guesser(cluster.address, "guesser"))
    assert sum(r["results_unassigned"] for r in records(out)) > 0
    assert "tasks it was never given" in master.output


class _Failer(Peer):
    """Takes tasks and says FAILED for each (and for tasks it was not given)."""

    def on_message(self, message: Message) -> None:
        super().on_message(message)
        if message.type == "TASKS":
            for task in [*message["tasks"], {"task": 6}]:
                self.send(Message("FAILED", {"generation": message["generation"], "task": task["task"], "error": "forged\x1b[2J" * 100}))
            self.send(Message("READY", {"credit": len(message["tasks"])}))


def test_a_forged_failed_does_not_end_the_run(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out, master = _beside_an_honest_run(cluster, tmp_path, straight, lambda: _Failer(cluster.address, "failer", credit=2))
    assert sum(r["tasks_failed"] for r in records(out)) > 0
    assert "failed on worker host failer:9: forged?[2Jforged" in master.output and "it goes to another host" in master.output
    assert "\x1b" not in master.output and max(map(len, master.output.splitlines())) < 1000


def test_a_hello_reusing_a_hosts_name_does_not_replace_it(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out, master, worker, name = _honest_run(cluster, tmp_path)
    host, pid = name.rsplit(":", 1)
    context = zmq.Context()
    try:
        while master.popen.poll() is None:  # a new connection every 0.3 s, in the honest host's name
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(cluster.address)
            dealer.send_multipart(encode(hello(host, int(pid), session="0" * 32)))
            time.sleep(0.3)
            dealer.close()
        assert master.wait() == 0, master.output
    finally:
        context.term()
    _same_as_straight(out, straight)
    assert worker.wait(30) == 0
    assert "reconnect" not in worker.output and "silent" not in worker.output


class _Inventor(Peer):
    """Answers its tasks with numbers no episode gives: observation sums of 1e300, lengths beyond
    the limit, counts that do not match the lengths, an episode of no step."""

    def on_message(self, message: Message) -> None:
        super().on_message(message)
        if message.type != "TASKS":
            return
        for number, task in enumerate(message["tasks"]):
            if task["kind"] == "eval":
                results, arrays = [{"task": task["task"], "return": 0.0, "length": 0}], ()
            elif task["record_obs"]:
                total = np.full(2, 1e300)
                results = [{"task": task["task"], "returns": [5.0, 5.0], "lengths": [10, 10], "obs_count": 20, "obs_arrays": 0}]
                arrays = (total, np.full(2, 1e300) if number % 2 else total * 0)
            else:
                lengths = [10**6, 10] if number % 2 else [10, 10]
                results = [{"task": task["task"], "returns": [5.0, 5.0], "lengths": lengths, "obs_count": 3, "obs_arrays": None}]
                arrays = ()
            self.send(Message("RESULT", {"generation": message["generation"], "results": results, "credit": 1}, arrays))


def test_numbers_no_task_can_give_are_refused(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out, master = _beside_an_honest_run(cluster, tmp_path, straight, lambda: _Inventor(cluster.address, "inventor", credit=2))
    assert sum(r["results_refused"] for r in records(out)) > 0
    assert "beyond what float32 observations can add up to" in master.output or "observations counted" in master.output


def test_a_peer_that_never_reads_is_dropped(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    _out, master = _beside_an_honest_run(cluster, tmp_path, straight, lambda: Peer(cluster.address, "deaf", reads=False, credit=4))
    assert "worker host deaf:9 answered none of the last 3 θ it was sent" in master.output


def test_idle_connections_leave_the_master_its_descriptors(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    """300 idle TCP connections to a master of 256 file descriptors: it refuses those beyond its
    cap and still writes every checkpoint."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
    out, master, _, _ = _honest_run(cluster, tmp_path, descriptors=256)
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", cluster.port)))
        assert master.wait() == 0, master.output
    finally:
        for connection in idle:
            connection.close()
    _same_as_straight(out, straight)
    assert "refused a connection:" in master.output and "the most this master keeps" in master.output


def test_floods_of_hellos_are_bounded(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    """3,000 HELLOs with 30 KB host names, then 3,000 with distinct short names: refused or
    forgotten, in a log of bounded size."""
    out, master, _, _ = _honest_run(cluster, tmp_path)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(cluster.address)
    names = ["x" * 30_000] * 3000 + [f"flood{number}" for number in range(3000)]
    try:
        sent = 0
        while sent < len(names) and master.popen.poll() is None:
            try:
                dealer.send_multipart(encode(hello(names[sent], sent)), flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:  # the master's queue for this peer is full: it reads at its pace
                time.sleep(0.01)
        assert sent == len(names), f"{len(names) - sent} HELLOs not sent before the run ended"
        assert master.wait() == 0, master.output
    finally:
        dealer.close()
        context.term()
    _same_as_straight(out, straight)
    assert master.output.count("refused a worker host: the host name must be 1 to 255 printable characters") == 20  # then held back
    assert master.output.count("joined") <= 21 and len(master.output) < 20_000
    assert max(r["hosts_total"] for r in records(out)) <= 3001


# Audits ---------------------------------------------------------------------------------------


def test_audits_of_honest_hosts_never_mismatch(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", ATTACKED_GENERATIONS, "--audit", "1", "--audit-action", "evict", out=out)
    cluster.worker()
    cluster.worker()
    assert master.wait() == 0, master.output
    _same_as_straight(out, straight)
    log = records(out)
    assert sum(r["audits"] for r in log) >= 7 and all(r["audit_mismatches"] == 0 and r["hosts_evicted"] == 0 for r in log)
    assert "mismatch" not in master.output and "given up" not in master.output


def test_audits_no_other_host_can_take_are_given_up_under_log(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", ATTACKED_GENERATIONS, "--audit", "0.5", out=out)
    cluster.worker()
    assert master.wait() == 0, master.output
    _same_as_straight(out, straight)
    assert "given up: no connected host of another source may take it" in master.output
    assert all(r["audits"] == 0 and r["audit_mismatches"] == 0 for r in records(out))


def test_a_host_with_a_patched_environment_is_caught_and_evicted(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    """A listed worker whose environment gives other rewards everywhere but in the fingerprint's
    episode: admitted, caught by the audits, evicted with its key, and θ is the honest run's."""
    keys = tmp_path / "keys"
    make_keys(keys, 3)
    out = tmp_path / "run"
    master = cluster.master(
        *SLOW_REACH,
        "--generations",
        ATTACKED_GENERATIONS,
        "--keys",
        str(keys / "master"),
        "--audit",
        "1",
        "--audit-action",
        "evict",
        out=out,
    )
    patched = (patched_envs(tmp_path / "patched", fingerprint_too=False),)
    liar = cluster.worker(args=("--keys", str(keys / "worker-3")), pythonpath=patched)
    master.wait_for("(key worker-3) joined")
    cluster.worker(args=("--keys", str(keys / "worker-1")))
    cluster.worker(args=("--keys", str(keys / "worker-2")))
    assert liar.wait(60) == 2
    assert "refused this worker: evicted: its result of task" in liar.output
    again = cluster.worker(args=("--keys", str(keys / "worker-3")), pythonpath=patched)
    assert again.wait(60) == 2 and "does not accept this worker's key" in again.output
    assert master.wait() == 0, master.output
    _same_as_straight(out, straight)
    log = records(out)
    assert sum(r["audit_mismatches"] for r in log) >= 1 and sum(r["hosts_evicted"] for r in log) == 1
    assert "audit mismatch on task" in master.output and "evicted worker host" in master.output


class _Hoarder(Peer):
    """Announces 4,096 evaluators, takes all it can and answers with returns of its choosing."""

    def on_message(self, message: Message) -> None:
        super().on_message(message)
        if message.type != "TASKS":
            return
        results: list[dict[str, object]] = []
        arrays: list[np.ndarray] = []
        for task in message["tasks"]:
            if task["kind"] == "eval":
                results.append({"task": task["task"], "return": 0.0, "length": 10})
                continue
            index = None
            if task["record_obs"]:  # sums of 20 observations of 0.5: within every bound
                index = len(arrays)
                arrays += [np.full(2, 10.0), np.full(2, 5.0)]
            chosen = float(task["pair"] % 2)
            results.append(
                {
                    "task": task["task"],
                    "returns": [chosen, -chosen],
                    "lengths": [10, 10],
                    "obs_count": 20 if index is not None else 0,
                    "obs_arrays": index,
                }
            )
        self.send(Message("RESULT", {"generation": message["generation"], "results": results, "credit": len(results)}, tuple(arrays)))


def test_a_hoarder_answering_with_chosen_returns_is_evicted(cluster: Cluster, tmp_path: Path, straight: Path) -> None:
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", ATTACKED_GENERATIONS, "--audit", "1", "--audit-action", "evict", out=out)
    hoarder = _Hoarder(cluster.address, "hoarder", procs=4096, credit=4096).start()
    try:
        master.wait_for("worker host hoarder:9 joined")
        cluster.worker()
        cluster.worker()
        assert master.wait() == 0, master.output
    finally:
        hoarder.stop()
    _same_as_straight(out, straight)
    assert any(m.type == "REFUSE" and m["reason"].startswith("evicted") for m in hoarder.received)
    assert sum(r["hosts_evicted"] for r in records(out)) == 1


# The variable batch through a master: rounds, audits and a serial run agree ----------------------

# VariableReach: episodes of 2 to 30 steps, so a generation of 6 pairs takes 2 or more rounds to
# reach 600 steps (tests/test_training.py, "The variable batch").
VARIABLE_REACH = [
    "--env",
    "EsfastTest/VariableReach-v0",
    "--env-module",
    "custom_envs",
    *("--set", "episodes_per_batch=12"),
    *("--set", "noise_stdev=0.1"),
    *("--set", "hidden_dims=[8]"),
    *("--set", "calc_obstat_prob=0.5"),
    *("--set", "run.eval_episodes=2"),
    *("--set", "snapshot_freq=0"),
    *("--set", "timesteps_per_batch=600"),
    *("--set", "optimizer.args.stepsize=0.03"),
]


def test_a_variable_batch_under_audits_gives_the_serial_theta(cluster: Cluster, tmp_path: Path) -> None:
    """Generations of 2+ rounds through a master with --audit 1 and two hosts: every round's
    results are audited (task ids continue across rounds, checks are of the round's own tasks),
    nothing mismatches, and θ and the statistics are those of SerialEvaluator in this process."""
    out = tmp_path / "run"
    master = cluster.master(*VARIABLE_REACH, "--generations", "3", "--audit", "1", "--audit-action", "evict", out=out)
    cluster.worker()
    cluster.worker()
    assert master.wait() == 0, master.output
    log = records(out)
    assert len(log) == 3 and max(r["rounds"] for r in log) >= 2
    assert all(r["audit_mismatches"] == 0 and r["hosts_evicted"] == 0 and r["results_unassigned"] == 0 for r in log)
    assert all(r["audits"] >= r["pairs"] for r in log)  # every result, of every round, checked by the other host
    assert "audit mismatch" not in master.output and "given up" not in master.output
    with Trainer(load_config(out / "config.json"), tmp_path / "serial", evaluator=SerialEvaluator) as serial:
        serial.train()
    assert [(r["pairs"], r["rounds"]) for r in records(tmp_path / "serial")] == [(r["pairs"], r["rounds"]) for r in log]
    np.testing.assert_array_equal(final_theta(out), serial.theta)
    with np.load(out / "checkpoints" / "latest.npz") as data:
        np.testing.assert_array_equal(data["obstat_sum"], serial.obstat.sum)
        np.testing.assert_array_equal(data["obstat_sumsq"], serial.obstat.sumsq)
