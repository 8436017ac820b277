"""A worker host: one process per machine that runs a master's tasks on N evaluator processes.

The host talks to the master (``DEALER`` socket, protocol in ``docs/protocol.md``) and to its
evaluator processes (pipes), and never runs an episode itself, so its heartbeats go out on time
however long an episode takes. Per machine it holds one noise table in shared memory (generated
from the seed the master announces, or the master's own table when both run on one machine) and
one copy of θ: a shared-memory file with two slots, the generation's parity choosing the slot,
written once per generation and mapped read-only by every evaluator. So θ crosses the network
once per host per generation and memory does not grow with N beyond each evaluator's own
perturbation buffers.

Evaluators that die are restarted and their task goes back to the host's queue; a host that loses
the master reconnects by itself with backoff and says ``HELLO`` again.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from esfast import core
from esfast.evaluation import EpisodeRunner, GenerationSpec, PairTask, WorkerSetup
from esfast.master import hostname
from esfast.segments import remove_stale_segments, shm_directory
from esfast.protocol import (
    BACKOFF_INITIAL,
    MAX_RESULTS_PER_MESSAGE,
    BACKOFF_MAX,
    HEARTBEAT_INTERVAL,
    LIVENESS,
    PROTOCOL_VERSION,
    Message,
    ProtocolError,
    Result,
    Task,
    decode,
    encode,
    peek,
    result_message,
    task_from_wire,
)

logger = logging.getLogger("esfast.worker")

PREFETCH = 2  # tasks a host holds per evaluator process: one running, one waiting in its pipe
RESPAWN_LIMIT = 5  # evaluator deaths a host survives within RESPAWN_WINDOW seconds
RESPAWN_WINDOW = 60.0
# Each evaluator is one core's worth of work: BLAS thread pools in N evaluators would fight over
# the same cores (a 12x slowdown of the Atari network's forward pass was measured with them).
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class HostExit(Exception):
    """Ends the host with an exit status (and a message, logged by the caller)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Evaluator processes ----------------------------------------------------------------------------

# A job for an evaluator: (epoch, generation, θ slot, sigma, timestep limit, task id, task).
Job = tuple[int, int, int, float, "int | None", int, Task]


def _evaluator_main(conn: multiprocessing.connection.Connection, setup: WorkerSetup, theta_path: str, parent: int, current: ctypes.c_longlong) -> None:
    """An evaluator process: runs jobs from the host until told to stop or the host is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the host's to handle
    try:
        _serve_jobs(conn, setup, theta_path, current)
    except (EOFError, OSError):  # the pipe broke: the host is gone
        if os.getppid() != parent:  # killed, so it could not clean up: do it for it
            Path(theta_path).unlink(missing_ok=True)
            if setup.table_name:
                core.NoiseTable.remove_if_stale(setup.table_name)


def _serve_jobs(conn: multiprocessing.connection.Connection, setup: WorkerSetup, theta_path: str, current: ctypes.c_longlong) -> None:
    """Runs jobs in order; one of a generation older than the host's current one is skipped (its
    result would be stale), so a task queued in the pipe never delays the next generation."""
    try:
        runner = EpisodeRunner(setup)
    except Exception as error:  # reported to the host, which cannot serve this run
        conn.send(("broken", f"{type(error).__name__}: {error}"))
        return
    try:
        num_params, obs_dim = setup.num_params, setup.obs_dim
        slots = np.memmap(theta_path, dtype=np.float32, mode="r", shape=(2, num_params + 2 * obs_dim))
        conn.send(("ready",))
        while (job := conn.recv()) is not None:
            epoch, generation, slot, sigma, limit, task_id, task = job
            if generation < current.value:
                conn.send(("skipped", epoch, generation, task_id, None))
                continue
            row = np.asarray(slots[slot])
            theta = row[:num_params]
            spec = GenerationSpec(generation, sigma, row[num_params:num_params + obs_dim], row[num_params + obs_dim:], limit)
            try:
                result = runner.run_pair(theta, spec, task) if isinstance(task, PairTask) else runner.run_eval(theta, spec, task)
            except Exception as error:
                conn.send(("failed", epoch, generation, task_id, f"{type(error).__name__}: {error}"))
            else:
                conn.send(("result", epoch, generation, task_id, result))
    finally:
        runner.close()


@dataclass
class _Evaluator:
    """An evaluator process and the jobs sent to it, in order: the first runs, the next waits in the pipe."""

    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    ready: bool = False
    jobs: deque[Job] = field(default_factory=deque)


# The host ---------------------------------------------------------------------------------------


class WorkerHost:
    """Serves tasks of whichever master is at ``master``; see the module docstring.

    Args:
        master: the master's endpoint, e.g. ``tcp://10.0.0.1:5555``.
        procs: evaluator processes.
        parent: exit when the process with this pid is no longer this process's parent (used by
            ``esfast train`` for the worker host it starts itself).
    """

    def __init__(self, master: str, procs: int, *, parent: int | None = None) -> None:
        self.master = master
        self.procs = procs
        self.parent = parent
        self.context = zmq.Context()
        self.socket: zmq.Socket[bytes] | None = None
        self.poller = zmq.Poller()
        self.mp = multiprocessing.get_context("spawn")
        # The generation of the θ last received, read by evaluators to skip jobs gone stale.
        self.current: ctypes.c_longlong = self.mp.Value("q", -1, lock=False)
        self.epoch = 0
        self.setup: WorkerSetup | None = None
        self.table: core.NoiseTable | None = None
        self.table_attached = False  # the master's table (same machine), not one this host made
        self.theta_path: Path | None = None
        self.slots: np.memmap | None = None
        self.slot_specs: dict[int, tuple[int, float, int | None]] = {}  # slot -> (generation, sigma, limit)
        self.generation = -1
        self.queue: deque[tuple[int, int, Task]] = deque()  # (generation, task id, task)
        self.evaluators: list[_Evaluator] = []
        self.deaths: deque[float] = deque()
        self.advertised = 0
        self.dropped = 0

    # Lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Serves masters until told to stop; returns the process exit status."""
        backoff = BACKOFF_INITIAL
        if removed := remove_stale_segments():
            logger.info("removed %d shared-memory segment%s of killed esfast processes", removed, "" if removed == 1 else "s")
        try:
            while True:
                self._connect()
                answer = self._await_welcome(backoff)
                if answer is None:
                    logger.info("waiting for the master at %s: no answer within %.1f s, asking again", self.master, backoff)
                    backoff = min(2 * backoff, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_INITIAL
                self._welcome(answer)
                self._session()
                logger.warning("the master at %s was silent for %.0f s; reconnecting", self.master, LIVENESS * HEARTBEAT_INTERVAL)
        except HostExit as stop:
            if stop.status != 0:
                self._send(Message("BYE"))  # the master re-issues this host's tasks at once
            (logger.info if stop.status == 0 else logger.error)("%s", stop)
            return stop.status
        except KeyboardInterrupt:
            self._send(Message("BYE"))
            logger.info("interrupted; the master keeps running and re-issues this host's tasks")
            return 130
        finally:
            self.close()

    def close(self) -> None:
        """Releases the θ buffer and the noise table, stops the evaluators, closes the socket.

        Files first: the evaluators keep their mappings, and a second signal during the slower
        steps cannot leave anything in /dev/shm.
        """
        self._release_run()
        self._stop_evaluators()
        if self.socket is not None:
            self.socket.close(linger=500)
            self.socket = None
        self.context.term()

    # Connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        if self.socket is not None:
            self.poller.unregister(self.socket)
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, 1 << 31)
        try:
            self.socket.connect(self.master)
        except zmq.ZMQError as error:
            raise HostExit(2, f"cannot connect to {self.master!r}: {error.strerror} (expected e.g. tcp://HOST:5555)") from None
        self.poller.register(self.socket, zmq.POLLIN)
        self.epoch += 1  # results of tasks from earlier connections are dropped
        self.current.value = -1  # a restarted master may count generations from an earlier checkpoint
        self.queue.clear()
        self.advertised = 0
        table = {"seed": self.table.seed, "size": len(self.table)} if self.table is not None else None
        self._send(Message("HELLO", {"host": hostname(), "pid": os.getpid(), "procs": self.procs, "table": table}))

    def _await_welcome(self, timeout: float) -> Message | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for message in self._poll(left):
                if message.type == "WELCOME":
                    return message
                if message.type == "REFUSE":
                    raise HostExit(2, f"the master at {self.master} refused this worker: {message['reason']}")
        return None

    def _poll(self, timeout: float) -> list[Message]:
        """Waits up to ``timeout`` seconds; handles evaluator messages and returns the master's."""
        self._check_parent()
        events = dict(self.poller.poll(max(0, int(timeout * 1000))))
        messages: list[Message] = []
        if self.socket is not None and self.socket in events:
            while True:
                try:
                    frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                buffers = [f.buffer for f in frames]
                try:
                    messages.append(decode(buffers))
                except ProtocolError as error:
                    version, _ = peek(buffers)
                    if version is not None and version != PROTOCOL_VERSION:
                        raise HostExit(2, f"the master at {self.master} speaks protocol version {version!r}, this worker speaks {PROTOCOL_VERSION}") from None
                    self.dropped += 1
                    logger.warning("dropped a message from the master: %s", error)
        ready = [e for e in self.evaluators if e.conn.fileno() in events]
        if ready:
            self._collect(ready)
        return messages

    def _send(self, message: Message) -> None:
        if self.socket is not None:
            try:
                self.socket.send_multipart(encode(message), copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                logger.warning("a %s message to the master was dropped: its queue is full", message.type)

    def _check_parent(self) -> None:
        if self.parent is not None and os.getppid() != self.parent:
            raise HostExit(1, "the process that started this worker host is gone")

    # The run ------------------------------------------------------------------------------

    def _welcome(self, message: Message) -> None:
        try:
            setup = WorkerSetup.from_wire(message["run"], message.arrays)
        except ValueError as error:
            raise HostExit(2, f"the master at {self.master} sent a run this worker cannot use: {error}") from None
        if not self._can_keep(setup):
            self._stop_evaluators()
            self._release_run()
            self._prepare_run(setup)
            logger.info("connected to the master at %s as %s: %s, %d parameters, %d evaluator process%s", self.master,
                        message["worker"], setup.env_id, setup.num_params, self.procs, "" if self.procs == 1 else "es")
        else:
            logger.info("reconnected to the master at %s as %s", self.master, message["worker"])
        self._advertise()

    def _can_keep(self, setup: WorkerSetup) -> bool:
        """Whether the evaluators and the table of the current run serve ``setup`` as they are.

        A restarted master names a new table of its own; a host that generated its own table
        keeps it (same seed and size: same samples), one that mapped the old master's maps anew.
        """
        if self.setup is None or self.table is None:
            return False
        anonymous = {"table_name": None, "table_host": None}
        same = dataclasses.replace(setup, **anonymous) == dataclasses.replace(self.setup, **anonymous)
        return same and (not self.table_attached or setup.table_name == self.setup.table_name)

    def _prepare_run(self, setup: WorkerSetup) -> None:
        table = None
        if setup.table_name and setup.table_host == hostname():
            try:
                attached = core.NoiseTable.attach(setup.table_name)
                if (attached.seed, len(attached)) == (setup.table_seed, setup.table_size):
                    table = attached
                else:
                    attached.close()
            except (OSError, ValueError):
                table = None
        self.table_attached = table is not None
        if table is None:
            name = f"esfast-host-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                table = core.NoiseTable.create_shared(name, setup.table_size, setup.table_seed)
            except (OSError, MemoryError) as error:
                raise HostExit(1, f"cannot create the noise table of {setup.table_size:,} samples: {error}") from None
        self.table = table
        directory = shm_directory()
        self.theta_path = directory / f"esfast-theta-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        shape = (2, setup.num_params + 2 * setup.obs_dim)
        try:
            with open(self.theta_path, "wb") as file:  # allocated now: a full /dev/shm is an error here, not a SIGBUS later
                os.posix_fallocate(file.fileno(), 0, 4 * shape[0] * shape[1])
        except OSError as error:
            raise HostExit(1, f"cannot allocate θ in {directory}: {error.strerror}") from None
        self.slots = np.memmap(self.theta_path, dtype=np.float32, mode="r+", shape=shape)
        self.slot_specs.clear()
        self.generation = -1
        self.setup = setup  # as the master described it, so an unchanged run is recognized on reconnection
        self.evaluators = [self._spawn() for _ in range(self.procs)]

    def _release_run(self) -> None:
        if self.slots is not None:
            del self.slots
            self.slots = None
        if self.theta_path is not None:
            self.theta_path.unlink(missing_ok=True)
            self.theta_path = None
        if self.table is not None:
            name = self.table.name
            self.table.close()
            self.table = None
            if name:  # the master's table, if the master was killed and could not remove it
                core.NoiseTable.remove_if_stale(name)
        self.setup = None

    def _spawn(self) -> _Evaluator:
        assert self.setup is not None and self.theta_path is not None and self.table is not None
        local_setup = dataclasses.replace(self.setup, table_name=self.table.name)  # the table this host holds
        for variable in SINGLE_THREADED:  # read by numpy's BLAS when the evaluator imports it
            os.environ.setdefault(variable, "1")
        parent_end, child_end = self.mp.Pipe()
        process = self.mp.Process(target=_evaluator_main, args=(child_end, local_setup, str(self.theta_path), os.getpid(), self.current),
                                  daemon=True)
        process.start()
        child_end.close()
        evaluator = _Evaluator(process, parent_end)
        self.poller.register(parent_end.fileno(), zmq.POLLIN)
        return evaluator

    def _stop_evaluators(self) -> None:
        for evaluator in self.evaluators:
            try:
                evaluator.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for evaluator in self.evaluators:
            evaluator.process.join(max(0.0, deadline - time.monotonic()))
            if evaluator.process.is_alive():  # mid-episode: stop it now
                evaluator.process.terminate()
                evaluator.process.join()
            self.poller.unregister(evaluator.conn.fileno())
            evaluator.conn.close()
        self.evaluators = []

    # Serving ------------------------------------------------------------------------------

    def _session(self) -> None:
        """Serves the connected master; returns when it falls silent."""
        last_master = last_heartbeat = time.monotonic()
        while True:
            now = time.monotonic()
            timeout = max(0.0, min(last_heartbeat + HEARTBEAT_INTERVAL, last_master + LIVENESS * HEARTBEAT_INTERVAL) - now)
            messages = self._poll(timeout)
            now = time.monotonic()
            if messages:
                last_master = now
            for message in messages:
                self._handle(message)
            self._dispatch()
            self._advertise()
            if now - last_heartbeat >= HEARTBEAT_INTERVAL:
                self._send(Message("HEARTBEAT"))
                last_heartbeat = now
            if now - last_master > LIVENESS * HEARTBEAT_INTERVAL:
                return

    def _handle(self, message: Message) -> None:
        kind = message.type
        if kind == "THETA":
            self._theta(message)
        elif kind == "TASKS":
            self.advertised = max(0, self.advertised - len(message["tasks"]))
            if message["generation"] != self.generation:
                return  # for a generation whose θ we do not hold: the credit comes back below
            for obj in message["tasks"]:
                try:
                    task_id, task = task_from_wire(obj)
                except ProtocolError as error:
                    self.dropped += 1
                    logger.warning("dropped a malformed task: %s", error)
                    continue
                self.queue.append((message["generation"], task_id, task))
        elif kind == "STOP":
            self._send(Message("BYE"))
            raise HostExit(0, f"the master stopped this worker: {message['reason']}")
        elif kind == "REFUSE":
            raise HostExit(2, f"the master at {self.master} refused this worker: {message['reason']}")
        elif kind == "WELCOME":
            self._welcome(message)
        elif kind != "HEARTBEAT":
            self.dropped += 1
            logger.warning("dropped a %s message: not one a worker expects", kind)

    def _theta(self, message: Message) -> None:
        assert self.setup is not None and self.slots is not None
        generation = message["generation"]
        shapes = [a.shape for a in message.arrays]
        expected = [(self.setup.num_params,), (self.setup.obs_dim,), (self.setup.obs_dim,)]
        if shapes != expected or any(a.dtype != np.float32 for a in message.arrays):
            self.dropped += 1
            logger.warning("dropped THETA of generation %d: arrays %s, expected float32 %s", generation, shapes, expected)
            return
        slot = generation % 2
        row = self.slots[slot]
        n, d = self.setup.num_params, self.setup.obs_dim
        row[:n] = message.arrays[0]
        row[n:n + d] = message.arrays[1]
        row[n + d:] = message.arrays[2]
        self.slot_specs[slot] = (generation, message["sigma"], message["timestep_limit"])
        self.generation = generation
        self.current.value = generation
        # Tasks still waiting here belong to finished generations: their results would be stale.
        self.queue = deque(item for item in self.queue if item[0] == generation)

    def _dispatch(self) -> None:
        """Sends queued tasks to evaluators, up to PREFETCH each, so none waits for the host between tasks."""
        for depth in range(1, PREFETCH + 1):  # first every idle evaluator, then one waiting job each
            for evaluator in self.evaluators:
                if not self.queue:
                    return
                if evaluator.ready and len(evaluator.jobs) < depth:
                    generation, task_id, task = self.queue.popleft()
                    slot = generation % 2
                    _, sigma, limit = self.slot_specs[slot]
                    job: Job = (self.epoch, generation, slot, sigma, limit, task_id, task)
                    evaluator.jobs.append(job)
                    try:
                        evaluator.conn.send(job)
                    except OSError:
                        pass  # it died: _collect sees the closed pipe and re-queues its jobs

    def _free_credit(self) -> int:
        """Tasks this host can take beyond what it holds and has asked for; counted as asked for."""
        if self.setup is None:
            return 0
        held = sum(len(e.jobs) for e in self.evaluators) + len(self.queue)
        free = max(0, PREFETCH * self.procs - held - self.advertised)
        self.advertised += free
        return free

    def _advertise(self) -> None:
        """Asks for as many tasks as this host can hold beyond what it holds and has asked for."""
        free = self._free_credit()
        if free > 0:
            self._send(Message("READY", {"credit": free}))

    def _collect(self, ready: list[_Evaluator]) -> None:
        """Reads what evaluators sent; sends results (one RESULT per generation) and failures."""
        results: dict[int, list[tuple[int, Result]]] = {}
        for evaluator in ready:
            try:
                while evaluator.conn.poll():
                    reply = evaluator.conn.recv()
                    self._reply(evaluator, reply, results)
            except (EOFError, OSError):
                self._died(evaluator)
        chunks = [(generation, batch[i:i + MAX_RESULTS_PER_MESSAGE])
                  for generation, batch in results.items() for i in range(0, len(batch), MAX_RESULTS_PER_MESSAGE)]
        for index, (generation, chunk) in enumerate(chunks):
            credit = self._free_credit() if index == len(chunks) - 1 else 0  # the freed slots travel with the results
            try:
                self._send(result_message(generation, chunk, credit=credit))
            except (ProtocolError, ValueError) as error:  # a non-finite return cannot travel as JSON
                self.advertised -= credit
                self._send(Message("FAILED", {"generation": generation, "task": chunk[0][0], "error": f"unsendable result: {error}"}))

    def _reply(self, evaluator: _Evaluator, reply: tuple[Any, ...], results: dict[int, list[tuple[int, Result]]]) -> None:
        kind = reply[0]
        if kind == "ready":
            evaluator.ready = True
        elif kind == "broken":
            raise HostExit(1, f"an evaluator process cannot serve this run: {reply[1]}")
        else:
            _, epoch, generation, task_id, payload = reply
            evaluator.jobs.popleft()
            if epoch != self.epoch or kind == "skipped":
                return
            if kind == "result":
                results.setdefault(generation, []).append((task_id, payload))
            else:
                self._send(Message("FAILED", {"generation": generation, "task": task_id, "error": payload}))

    def _died(self, evaluator: _Evaluator) -> None:
        evaluator.process.join(1.0)
        code = evaluator.process.exitcode
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESPAWN_WINDOW:
            self.deaths.popleft()
        self.poller.unregister(evaluator.conn.fileno())
        evaluator.conn.close()
        index = self.evaluators.index(evaluator)
        if len(self.deaths) > RESPAWN_LIMIT:
            self.evaluators.pop(index)
            raise HostExit(1, f"{len(self.deaths)} evaluator processes died within {RESPAWN_WINDOW:.0f} s (last exit code {code}); giving up")
        for job in reversed(evaluator.jobs):  # unfinished, in their order, at the front of the queue
            if job[0] == self.epoch and job[1] == self.generation:
                self.queue.appendleft((job[1], job[5], job[6]))
        logger.warning("an evaluator process died (exit code %s); its tasks go back to the queue and a new one starts", code)
        self.evaluators[index] = self._spawn()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esfast-worker",
        description="Run a master's episodes on this machine: one worker host with N evaluator processes.",
    )
    parser.add_argument("--master", required=True, help="the master's address, e.g. tcp://10.0.0.1:5555")
    parser.add_argument("--procs", type=int, help="evaluator processes (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # esfast train: exit with the master
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    procs = args.procs if args.procs is not None else len(os.sched_getaffinity(0))
    if procs < 1:
        print(f"esfast-worker: error: --procs must be at least 1, got {procs}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="esfast-worker: %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate like Ctrl-C: say BYE, clean up
    return WorkerHost(args.master, procs, parent=args.parent).run()


if __name__ == "__main__":
    sys.exit(main())
