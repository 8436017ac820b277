"""A worker host (``esfast-worker``): one process per machine that runs a master's tasks on N evaluators.

The host talks to the master (``DEALER`` socket, protocol in ``docs/protocol.md``) and to its
evaluator processes (:mod:`esfast.distributed.pool`, :mod:`esfast.distributed.evaluator`), and
never runs an episode itself, so its heartbeats go out on time however long an episode takes. Per
machine it holds one noise table in shared memory (generated from the seed the master announces,
or the master's own table when both run on one machine) and one copy of θ, in
:class:`~esfast.distributed.shm.ThetaSlots` written once per generation and mapped read-only by
every evaluator. So θ crosses the network once per host per generation and memory does not grow
with N beyond each evaluator's own perturbation buffers.

Which task goes to which evaluator, and how much credit to ask for, is
:class:`~esfast.distributed.host_queue.HostQueue`'s; this module connects, handles messages and
holds the run's resources. Evaluators that die are restarted and their task goes back to the
queue; a host that loses the master reconnects by itself with backoff and says ``HELLO`` again.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from esfast.cores import available_cores
from esfast.distributed.evaluator import Broken, Done, Failed, Ready
from esfast.distributed.host_queue import HostQueue, batches
from esfast.distributed.keys import WorkerKeys, load_worker_keys
from esfast.distributed.pool import Died, EvaluatorPool
from esfast.distributed.protocol import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    HEARTBEAT_INTERVAL,
    LIVENESS,
    MAX_RESULTS_PER_MESSAGE,
    PROTOCOL_VERSION,
    THETA_REQUEST_INTERVAL,
    Message,
    check_endpoint,
    decode,
    encode,
    peek,
    result_message,
    setup_from_wire,
    task_from_wire,
    theta_from_message,
)
from esfast.distributed.shm import HostMemory, hostname, remove_stale_segments
from esfast.distributed.versions import check_versions, differences, software_versions
from esfast.errors import ConfigError, EvaluatorsFailing, HostExit, KeysError, ProtocolError
from esfast.interrupts import uninterrupted
from esfast.tasks import Result, Task, WorkerSetup

__all__ = ["WorkerHost", "main"]

logger = logging.getLogger(__name__)

# Socket events the host watches: the handshake's (ZeroMQ retries a refused handshake forever,
# in silence), and the connection's end (a reset or a master that closed: ZeroMQ would connect
# again by itself, but as a peer the master does not know, so the host starts over at once
# rather than wait out the liveness).
SOCKET_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)
# A master without the secret half of the master key this worker holds only closes the
# connection, as a network that breaks during the handshake would: the host gives up after this
# many such failures in a row.
HANDSHAKE_FAILURE_LIMIT = 5


class WorkerHost:
    """Serves tasks of whichever master is at ``master``; see the module docstring.

    Args:
        master: the master's endpoint, e.g. ``tcp://10.0.0.1:5555``.
        procs: evaluator processes.
        parent: exit when the process with this pid is no longer this process's parent (used by
            ``esfast train`` for the worker host it starts itself).
        keys: this worker's CURVE keys (:func:`~esfast.distributed.keys.load_worker_keys`): the
            connection is encrypted, and made only to a master holding the secret half of
            ``keys.master_public``; None: plain text, to whoever answers at ``master``.
    """

    def __init__(self, master: str, procs: int, *, parent: int | None = None, keys: WorkerKeys | None = None) -> None:
        self.master = master
        self.procs = procs
        self.parent = parent
        self.keys = keys
        self.context = zmq.Context()
        self.socket: zmq.Socket[bytes] | None = None
        self.monitor: zmq.Socket[bytes] | None = None  # the socket's events (SOCKET_EVENTS)
        self.handshake_failures = 0  # in a row, of the kind a wrong master key gives
        self.disconnected = False  # the socket's connection ended since it was made
        self.poller = zmq.Poller()
        self.queue = HostQueue(procs)
        self.setup: WorkerSetup | None = None
        self.memory: HostMemory | None = None
        self.pool: EvaluatorPool | None = None
        self.theta_requested = (-1, 0.0)  # (generation, when) of the last WANT_THETA
        # RESULT and FAILED messages the socket refused (its queue was full), sent first when it
        # takes messages again: a result is never dropped while the connection lasts.
        self.outbox: deque[list[bytes | memoryview]] = deque()
        self.dropped = 0
        self.versions = software_versions()
        self.fingerprint: str | None = None  # of the run's environment, from the first evaluator
        self.fingerprint_sent = False  # on this connection
        self.session: str | None = None  # from the last WELCOME: shows the master a reconnection is this process

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
                if self._session():
                    logger.warning("the connection to the master at %s ended; reconnecting", self.master)
                else:
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
            uninterrupted(self.close)

    def close(self) -> None:
        """Releases the θ slots and the noise table, stops the evaluators, closes the socket.

        Files first: the evaluators keep their mappings, and a second signal during the slower
        steps cannot leave anything in /dev/shm.
        """
        self._release_run()
        self._stop_evaluators()
        self._close_monitor()
        if self.socket is not None:
            self.socket.close(linger=500)
            self.socket = None
        self.context.term()

    # Connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        self._close_monitor()
        if self.socket is not None:
            self.poller.unregister(self.socket)
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.DEALER)
        self.disconnected = False
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, 1 << 31)
        if self.keys is not None:
            self.socket.curve_secretkey = self.keys.secret
            self.socket.curve_publickey = self.keys.public
            self.socket.curve_serverkey = self.keys.master_public
        self.monitor = self.socket.get_monitor_socket(SOCKET_EVENTS)
        self.poller.register(self.monitor, zmq.POLLIN)
        try:
            self.socket.connect(self.master)
        except zmq.ZMQError as error:
            raise HostExit(2, f"cannot connect to {self.master!r}: {error.strerror} (expected e.g. tcp://HOST:5555)") from None
        self.poller.register(self.socket, zmq.POLLIN)
        self.queue.reconnected()  # results of tasks from earlier connections are not reported
        self.outbox.clear()
        if self.memory is not None:
            self.memory.slots.clear()  # a restarted master may count generations from an earlier checkpoint
        self.fingerprint_sent = False
        table = {"seed": self.memory.table.seed, "size": len(self.memory.table)} if self.memory is not None else None
        hello = {
            "host": hostname(),
            "pid": os.getpid(),
            "procs": self.procs,
            "table": table,
            "versions": self.versions,
            "session": self.session,
        }
        self._send(Message("HELLO", hello))

    def _close_monitor(self) -> None:
        if self.monitor is not None and self.socket is not None:
            self.poller.unregister(self.monitor)
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None

    def _check_events(self) -> None:
        """Notes a connection that ended; ends the host on a handshake the master refused: a key it
        does not list, keys on one side only, or a master without the secret half of the master key
        this worker holds."""
        assert self.monitor is not None
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            kind, value = event["event"], event["value"]
            keys = self.keys
            if kind == zmq.EVENT_DISCONNECTED:
                self.disconnected = True
                continue
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_failures = 0
                continue
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                where = f" ({keys.directory / 'worker.key'})" if keys is not None else ""
                raise HostExit(
                    2, f"the master at {self.master} does not accept this worker's key{where}: list it in the master's authorized folder"
                )
            if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                if keys is None:
                    raise HostExit(
                        2, f"the master at {self.master} requires keys: start this worker with --keys DIR (its folder made by esfast keys)"
                    )
                raise HostExit(2, f"the master at {self.master} uses no keys (esfast-master --keys), but this worker was given --keys")
            if keys is not None and (
                kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                or (kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
            ):
                self.handshake_failures += 1
                if self.handshake_failures < HANDSHAKE_FAILURE_LIMIT:
                    continue
                raise HostExit(
                    2,
                    f"the master at {self.master} does not hold the key of {keys.directory / 'master.key'} "
                    f"(another master, or keys from another esfast keys folder): {self.handshake_failures} handshakes failed",
                )
            logger.warning("the handshake with the master at %s failed (ZeroMQ event %d, value %d); trying again", self.master, kind, value)

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
        """Waits up to ``timeout`` seconds; handles evaluator replies and returns the master's messages."""
        self._check_parent()
        events = dict(self.poller.poll(max(0, int(timeout * 1000))))
        if self.monitor is not None and self.monitor in events:
            self._check_events()
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
                        raise HostExit(
                            2, f"the master at {self.master} speaks protocol version {version!r}, this worker speaks {PROTOCOL_VERSION}"
                        ) from None
                    self.dropped += 1
                    logger.warning("dropped a message from the master: %s", error)
        if self.pool is not None:
            self._collect(events)
        return messages

    def _send(self, message: Message) -> bool:
        """Sends to the master; False (and a warning) if the socket's queue is full."""
        if self._send_frames(encode(message)):
            return True
        logger.warning("a %s message to the master was not sent: its queue is full", message.type)
        return False

    def _send_frames(self, frames: list[bytes | memoryview]) -> bool:
        if self.socket is None:
            return False
        try:
            self.socket.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _deliver(self, frames: list[bytes | memoryview]) -> None:
        """Sends a RESULT or FAILED now, or after those the socket refused before it, in order."""
        if self.outbox or not self._send_frames(frames):
            self.outbox.append(frames)

    def _flush_outbox(self) -> None:
        while self.outbox and self._send_frames(self.outbox[0]):
            self.outbox.popleft()

    def _check_parent(self) -> None:
        if self.parent is not None and os.getppid() != self.parent:
            raise HostExit(1, "the process that started this worker host is gone")

    # The run ------------------------------------------------------------------------------

    def _welcome(self, message: Message) -> None:
        try:
            setup = setup_from_wire(message["run"], message.arrays)
            master_versions = check_versions(message["versions"])
        except ValueError as error:  # ProtocolError is a ValueError too
            raise HostExit(2, f"the master at {self.master} sent a run this worker cannot use: {error}") from None
        self.session = message["session"]
        if differ := differences(master_versions, self.versions):
            logger.warning("the master admits this worker with other versions (--allow-mixed-versions): %s", "; ".join(differ))
        if not self._can_keep(setup):
            self._stop_evaluators()
            self._release_run()
            self._prepare_run(setup)
            logger.info(
                "connected to the master at %s as %s: %s, %d parameters, %d evaluator process%s",
                self.master,
                message["worker"],
                setup.env_id,
                setup.num_params,
                self.procs,
                "" if self.procs == 1 else "es",
            )
        else:
            logger.info("reconnected to the master at %s as %s", self.master, message["worker"])
        self._send_fingerprint()
        self._advertise()

    def _send_fingerprint(self) -> None:
        """Tells the master the environment's fingerprint, once per connection, once it is known."""
        if self.fingerprint is not None and self.setup is not None and not self.fingerprint_sent:
            self.fingerprint_sent = self._send(Message("FINGERPRINT", {"fingerprint": self.fingerprint}))

    def _fingerprinted(self, found: str) -> None:
        """The first evaluator fingerprinted the environment (again, if it was restarted)."""
        if self.fingerprint is not None and found != self.fingerprint:
            raise HostExit(
                1,
                f"the environment's fingerprint changed on this machine ({self.fingerprint}, then {found}): "
                "it does not simulate reproducibly",
            )
        self.fingerprint = found
        self._send_fingerprint()

    def _can_keep(self, setup: WorkerSetup) -> bool:
        """Whether the evaluators and the table of the current run serve ``setup`` as they are.

        A restarted master names a new table of its own; a host that generated its own table
        keeps it (same seed and size: same samples), one that mapped the old master's maps anew.
        """
        if self.setup is None or self.memory is None:
            return False
        anonymous = dataclasses.replace(setup, table_name=None, table_host=None)
        same = anonymous == dataclasses.replace(self.setup, table_name=None, table_host=None)
        return same and (not self.memory.attached or setup.table_name == self.setup.table_name)

    def _prepare_run(self, setup: WorkerSetup) -> None:
        try:
            self.memory = HostMemory(setup)
        except OSError as error:
            raise HostExit(1, str(error)) from None
        self.setup = setup  # as the master described it, so an unchanged run is recognized on reconnection
        self.fingerprint = None  # the new evaluators take it
        local_setup = dataclasses.replace(setup, table_name=self.memory.table.name)  # the table this host holds
        self.queue = HostQueue(self.procs)
        self.pool = EvaluatorPool(local_setup, str(self.memory.slots.path), self.procs, self.poller)

    def _release_run(self) -> None:
        if self.memory is not None:
            self.memory.release()
            self.memory = None
        self.setup = None

    def _stop_evaluators(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None

    # Serving ------------------------------------------------------------------------------

    def _session(self) -> bool:
        """Serves the connected master; returns when the connection ends (True) or the master
        falls silent (False)."""
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
            self._flush_outbox()
            self._send_fingerprint()
            self._dispatch()
            self._advertise()
            self._ask_for_theta(now)
            if now - last_heartbeat >= HEARTBEAT_INTERVAL:
                self._send(Message("HEARTBEAT"))
                last_heartbeat = now
            if self.disconnected:
                return True
            if now - last_master > LIVENESS * HEARTBEAT_INTERVAL:
                return False

    def _handle(self, message: Message) -> None:
        kind = message.type
        if kind == "THETA":
            self._theta(message)
        elif kind == "TASKS":
            self._tasks(message)
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
        assert self.setup is not None and self.memory is not None
        try:
            theta, spec = theta_from_message(message, self.setup.num_params, self.setup.obs_dim)
        except ProtocolError as error:
            self.dropped += 1
            logger.warning("dropped THETA of generation %d: %s", message["generation"], error)
            return
        if spec.generation <= self.queue.generation:
            return  # a copy of θ held already (sent again on WANT_THETA), or a late one of a past generation
        self.memory.slots.write(theta, spec)
        self.queue.theta_arrived(spec.generation)

    def _tasks(self, message: Message) -> None:
        parsed: list[tuple[int, Task]] = []
        for obj in message["tasks"]:
            try:
                parsed.append(task_from_wire(obj))
            except ProtocolError as error:
                self.dropped += 1
                logger.warning("dropped a malformed task: %s", error)
        self.queue.tasks_arrived(message["generation"], parsed, len(message["tasks"]))

    def _ask_for_theta(self, now: float) -> None:
        """Asks the master for θ of a generation whose tasks wait here without it (THETA was lost)."""
        generation = self.queue.missing_theta()
        if generation is None:
            return
        last, when = self.theta_requested
        if generation != last or now - when >= THETA_REQUEST_INTERVAL:
            self.theta_requested = (generation, now)
            logger.info("tasks of generation %d arrived without its θ; asking the master for it", generation)
            self._send(Message("WANT_THETA", {"generation": generation}))

    def _dispatch(self) -> None:
        """Sends queued tasks to evaluators (see :meth:`HostQueue.assign`)."""
        if self.pool is None:
            return
        for index, job in self.queue.assign():
            self.pool.send(index, job)

    def _advertise(self) -> None:
        """Asks for as many tasks as this host can hold beyond what it holds and has asked for."""
        if self.setup is None:
            return
        free = self.queue.take_credit()
        if free > 0 and not self._send(Message("READY", {"credit": free})):
            self.queue.credit_not_sent(free)

    def _collect(self, events: dict[object, int]) -> None:
        """Reads what evaluators sent; sends results (one RESULT per generation and chunk) and failures."""
        assert self.pool is not None
        results: dict[int, list[tuple[int, Result]]] = {}
        try:
            for index, reply in self.pool.replies(events):
                if isinstance(reply, Died):
                    requeued = self.queue.evaluator_lost(index)
                    logger.warning(
                        "an evaluator process died (exit code %s); its %d task%s go back to the queue and a new one starts",
                        reply.exit_code,
                        requeued,
                        "" if requeued == 1 else "s",
                    )
                elif isinstance(reply, Ready):
                    self.queue.evaluator_ready(index)
                    if reply.fingerprint is not None:
                        self._fingerprinted(reply.fingerprint)
                elif isinstance(reply, Broken):
                    raise HostExit(1, f"an evaluator process cannot serve this run: {reply.error}")
                elif (job := self.queue.job_replied(index)) is not None:
                    if isinstance(reply, Done):
                        results.setdefault(reply.generation, []).append((reply.task_id, reply.result))
                    elif isinstance(reply, Failed):
                        failure = {"generation": reply.generation, "task": reply.task_id, "error": reply.error}
                        self._deliver(encode(Message("FAILED", failure)))
                    else:  # skipped: a task of the current generation is run again, one of a past one is stale
                        self.queue.requeue(job)
        except EvaluatorsFailing as error:
            raise HostExit(1, str(error)) from None
        chunks = [(generation, chunk) for generation, batch in results.items() for chunk in batches(batch, MAX_RESULTS_PER_MESSAGE)]
        for number, (generation, chunk) in enumerate(chunks):
            credit = self.queue.take_credit() if number == len(chunks) - 1 else 0  # the freed slots travel with the results
            try:
                frames = encode(result_message(generation, chunk, credit=credit))
            except ValueError as error:  # a non-finite return cannot travel as JSON
                self.queue.credit_not_sent(credit)
                failure = {"generation": generation, "task": chunk[0][0], "error": f"unsendable result: {error}"}
                frames = encode(Message("FAILED", failure))
            self._deliver(frames)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esfast-worker",
        description="Run a master's episodes on this machine: one worker host with N evaluator processes.",
    )
    parser.add_argument("--master", required=True, help="the master's address, e.g. tcp://10.0.0.1:5555")
    parser.add_argument("--procs", type=int, help="evaluator processes (default: the cores it may use, within a container's CPU limit)")
    parser.add_argument(
        "--keys", metavar="DIR", help="this worker's key folder (DIR/worker-N of esfast keys DIR): encrypted, authenticated connection"
    )
    parser.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    parser.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # esfast train: exit with the master
    return parser


def main(argv: list[str] | None = None) -> int:
    """``esfast-worker``."""
    args = build_parser().parse_args(argv)
    procs = args.procs if args.procs is not None else available_cores()
    if procs < 1:
        print(f"esfast-worker: error: --procs must be at least 1, got {procs}", file=sys.stderr)
        return 2
    try:
        check_endpoint(args.master, bind=False)
        keys = load_worker_keys(args.keys) if args.keys is not None else None
    except (ConfigError, KeysError) as error:
        print(f"esfast-worker: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="esfast-worker: %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # terminate like Ctrl-C: say BYE, clean up
    return WorkerHost(args.master, procs, parent=args.parent, keys=keys).run()


if __name__ == "__main__":
    sys.exit(main())
