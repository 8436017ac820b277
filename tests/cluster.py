"""Real esfast-master and esfast-worker processes on 127.0.0.1 for the distributed tests.

:class:`Cluster` starts them with their output in files, waits for lines in those files, and stops
every process it started (SIGTERM, then SIGKILL) when the test ends, also when it fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from esfast.distributed.protocol import Message
from esfast.distributed.versions import software_versions
from esfast.envs.probe import FINGERPRINT_SEED, probe_environment

TESTS = Path(__file__).resolve().parent
# A quick task (Reach: 10 steps an episode) with a step of 20 ms, so generations last long enough
# to stop a process in the middle of one: 6 pairs and 1 evaluation episode, 13 x 0.2 s of episodes.
SLOW_REACH = [
    "--env",
    "EsfastTest/SlowReach-v0",
    "--env-module",
    "custom_envs",
    "--set",
    "episodes_per_batch=12",
    "--set",
    "hidden_dims=[4]",
    "--set",
    "run.eval_episodes=1",
    "--set",
    "calc_obstat_prob=0.5",
    "--set",
    "snapshot_freq=0",
]
CARTPOLE = [
    "--env",
    "CartPole-v1",
    "--set",
    "episodes_per_batch=40",
    "--set",
    "noise_stdev=0.1",
    "--set",
    "hidden_dims=[16]",
    "--set",
    "optimizer.args.stepsize=0.03",
    "--set",
    "run.eval_episodes=4",
    "--set",
    "snapshot_freq=0",
]
MASTER = "import sys; from esfast.cli import master_main; sys.exit(master_main())"


@functools.cache
def _versions() -> dict[str, str | None]:
    return software_versions()


def hello(name: str, pid: int, procs: int = 1, session: str | None = None) -> Message:
    """The HELLO of a worker host played by a test, with this machine's versions."""
    fields = {"host": name, "pid": pid, "procs": procs, "table": None, "versions": _versions(), "session": session}
    return Message("HELLO", fields)


def fingerprint(env_id: str, env_module: str | None = None) -> Message:
    """The FINGERPRINT an honest host of ``env_id`` sends (its environment probed here)."""
    return Message("FINGERPRINT", {"fingerprint": probe_environment(env_id, env_module).fingerprint})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs on which process ``pid`` holds listening TCP sockets, read from
    ``/proc`` (its descriptors' socket inodes against its network namespace's tables)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word of the address in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, words), int(port, 16)))
    return found


class Process:
    """A started command with its output in a file."""

    def __init__(self, args: list[str], log: Path, pythonpath: tuple[Path, ...] = (), descriptors: int | None = None) -> None:
        self.log = log
        self.file: IO[bytes] = open(log, "wb")
        path = [*map(str, pythonpath), str(TESTS), os.environ.get("PYTHONPATH")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}

        def limit() -> None:  # in the child, before it runs: soft and hard limit, so it cannot raise them
            if descriptors is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

        self.popen = subprocess.Popen(args, stdout=self.file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=limit)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Waits until ``text`` appears in the output."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.popen.poll() is not None and text not in self.output:
                raise AssertionError(f"process exited ({self.popen.returncode}) before printing {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.output}") from None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.file.close()


class Cluster:
    """Masters and workers of one test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"

    def start(self, name: str, args: list[str], pythonpath: tuple[Path, ...] = (), descriptors: int | None = None) -> Process:
        process = Process(args, self.directory / f"{name}-{len(self.processes)}.log", pythonpath, descriptors)
        self.processes.append(process)
        return process

    def master(self, *args: str, out: Path, descriptors: int | None = None) -> Process:
        """An esfast-master on this cluster's address; ``descriptors`` limits its open files."""
        return self.start(
            "master", [sys.executable, "-c", MASTER, *args, "--bind", self.address, "--out", str(out)], descriptors=descriptors
        )

    def worker(self, procs: int = 1, address: str | None = None, args: tuple[str, ...] = (), pythonpath: tuple[Path, ...] = ()) -> Process:
        """An esfast-worker; ``pythonpath`` comes first on its (and its evaluators') module path."""
        return self.start(
            "worker",
            [sys.executable, "-m", "esfast.distributed.host", "--master", address or self.address, "--procs", str(procs), *args],
            pythonpath,
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class Relay:
    """A TCP relay on 127.0.0.1 between workers and a master that records every byte it passes.

    Workers connect to :attr:`address`; the relay opens one connection to ``port`` per worker
    connection and copies bytes both ways, keeping a copy in :attr:`captured`.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.captured = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.peers: dict[socket.socket, socket.socket] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    inner, _ = self.listener.accept()
                    outer = self._reach_master()
                    if outer is None:
                        inner.close()
                        continue
                    self.peers[inner], self.peers[outer] = outer, inner
                    self.selector.register(inner, selectors.EVENT_READ)
                    self.selector.register(outer, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                other = self.peers.get(sock)
                if not data or other is None:
                    self._close(sock)
                    continue
                self.captured += data
                try:
                    other.sendall(data)
                except OSError:
                    self._close(sock)

    def _reach_master(self) -> socket.socket | None:
        """A connection to the master, waiting for it to listen (as a worker would) while the relay runs."""
        while self.running:
            try:
                return socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                time.sleep(0.05)
        return None

    def _close(self, sock: socket.socket) -> None:
        for end in (sock, self.peers.pop(sock, None)):
            if end is not None:
                self.peers.pop(end, None)
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(end)
                end.close()

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        for sock in list(self.peers):
            self._close(sock)
        self.selector.close()
        self.listener.close()


def patched_envs(directory: Path, *, fingerprint_too: bool) -> Path:
    """A folder with a ``custom_envs`` module whose Reach environments give rewards 0.001 higher:
    in every episode (``fingerprint_too``), or in all but the episodes of the fingerprint's reset
    seed (a host that lies where it is not probed). Put it first on a worker's module path."""
    directory.mkdir(parents=True, exist_ok=True)
    patch = f"""

_reset, _step = ReachEnv.reset, ReachEnv.step


def _patched_reset(self, *, seed=None, options=None):
    self.probed = seed == {FINGERPRINT_SEED} and not {fingerprint_too}
    return _reset(self, seed=seed, options=options)


def _patched_step(self, action):
    observation, reward, terminated, truncated, info = _step(self, action)
    return observation, reward + (0.0 if getattr(self, "probed", False) else 0.001), terminated, truncated, info


ReachEnv.reset, ReachEnv.step = _patched_reset, _patched_step
"""
    (directory / "custom_envs.py").write_text((TESTS / "custom_envs.py").read_text() + patch)
    return directory


def records(out: Path) -> list[dict[str, Any]]:
    """The run's log.jsonl records."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def final_theta(out: Path) -> np.ndarray:
    with np.load(out / "checkpoints" / "latest.npz") as data:
        return data["theta"].copy()


def descendants(pid: int) -> list[int]:
    """All processes below ``pid``, from /proc."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # the process has exited
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that has just exited
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def evaluators(pid: int) -> list[int]:
    """The evaluator processes below ``pid`` (a worker host, or ``esfast train`` and its worker host)."""
    found = []
    for child in descendants(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except FileNotFoundError:  # exited meanwhile
            continue
    return found
