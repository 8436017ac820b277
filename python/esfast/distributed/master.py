"""The master: hands each generation's tasks to worker hosts over ZeroMQ and collects the results.

:class:`Master` is an :class:`~esfast.evaluators.Evaluator`, so the trainer runs the same algorithm
whether episodes run here or on a cluster. It owns one ``ROUTER`` socket; worker hosts
(:mod:`esfast.distributed.host`) connect with ``DEALER`` sockets, say ``HELLO``, and pull tasks with credit
(``READY``). The bookkeeping of a generation (re-issue on loss, tail copies, first result wins)
is :class:`~esfast.distributed.scheduling.GenerationScheduler`'s; this module puts it on the wire, watches
liveness and keeps the counters that each generation's log record carries. The protocol is
specified in ``docs/protocol.md``.

The socket, with its keys and limits, is :class:`~esfast.distributed.router.Router`'s. During
:meth:`Master.evaluate` the caller's thread serves it; between generations (while the trainer
updates θ and writes checkpoints) :class:`~esfast.distributed.between_generations.BetweenGenerations`
does, sending heartbeats and queueing what arrives for the next generation, so hosts never see a
silent master.

No peer is trusted with more than its own tasks: a result or failure counts only from a host that
was given that task, every number in it is bounded by what the task can give
(:mod:`~esfast.distributed.bounds`), a failure sends the task to another host and ends the run
only when hosts of two machines (or every host) report it, and what peers can make the master
hold is bounded (connections, hosts, host names, θ copies, queued messages, log lines).

The trainer may evaluate a generation in rounds (its variable batch: several calls of
:meth:`Master.evaluate` with the same generation and θ). Hosts then keep the θ they hold, and the
task ids of a round continue those of the generation's earlier rounds, so a late result of an
earlier round (a tail copy, a task still queued on a host) is stale, never a result of this one.
Audits, evictions and counters belong to the generation; an eviction runs again only the evicted
host's results of the current round (``docs/protocol.md``, "Audits").
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zmq
from numpy.typing import NDArray

from esfast.config import MAX_COUNT
from esfast.distributed.admission import judge_hello
from esfast.distributed.audit import AuditBook, Opinion, describe
from esfast.distributed.between_generations import BetweenGenerations
from esfast.distributed.bounds import length_limit, violation
from esfast.distributed.keys import MasterKeys
from esfast.distributed.local_host import start_local_worker, stop_local_worker
from esfast.distributed.log_limit import LogLimiter
from esfast.distributed.protocol import (
    HEARTBEAT_INTERVAL,
    LIVENESS,
    MAX_CREDIT_PER_PROC,
    MAX_TASKS_PER_MESSAGE,
    PROTOCOL_VERSION,
    THETA_REQUEST_INTERVAL,
    Message,
    decode,
    encode,
    peek,
    results_from_message,
    setup_to_wire,
    task_to_wire,
    theta_message,
)
from esfast.distributed.router import Router, largest_message
from esfast.distributed.scheduling import GenerationScheduler, Outcome, SchedulerStats
from esfast.distributed.versions import software_versions
from esfast.envs.probe import probe_environment
from esfast.errors import ConfigError, ProtocolError, WorkerError
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, Result, Task, WorkerSetup

if TYPE_CHECKING:
    import subprocess

logger = logging.getLogger(__name__)

# A task is copied to an idle host once it has been outstanding this many times longer than the
# generation's mean task time so far (and at least TAIL_COPY_MIN_SECONDS).
TAIL_COPY_FACTOR = 2.0
TAIL_COPY_MIN_SECONDS = 0.5
WAITING_LOG_INTERVAL = 10.0  # seconds between "waiting for worker hosts" lines
DRAIN_BATCH = 1000  # messages handled before the loop dispatches and heart-beats again

# What peers can make the master hold (docs/protocol.md, "What a peer may say").
MAX_HOSTS = 1024  # hosts connected at once, admitted or not
MAX_REMEMBERED_HOSTS = 4096  # distinct host names remembered for hosts_total; later ones are only counted
THETA_UNREAD_LIMIT = 3  # θ copies sent to a host without a result of their generation back: then it is dropped
FAILURE_PEERS = 2  # a task ends the run when it fails on hosts of this many machines (or keys), or on every host
MAX_ERROR_CHARACTERS = 500  # of a host's error text, logged or raised


@dataclass
class _Host:
    """A connected worker host, as the master sees it.

    ``key`` names the connection (``w1``, ``w2``, ...: the scheduler's host id); ``name`` the
    process (``hostname:pid``), which keeps its name when it reconnects.
    """

    identity: bytes
    key: str
    name: str
    procs: int
    last_seen: float
    worker_key: str | None = None  # the CURVE public key (Z85) it authenticated with, under --keys
    peer: str = ""  # the machine it speaks for: its key's name under --keys, else its IP address
    source: str = ""  # who vouches for its results in audits: its key's name under --keys, else the connection
    session: str = ""  # given in WELCOME: a HELLO that shows it is this process reconnecting
    admitted: bool = False  # its environment's fingerprint matched: it may take tasks
    credit: int = 0
    theta_generation: int = -1
    theta_sent: float = -float("inf")  # when θ last went to this host
    theta_unread: int = 0  # θ copies sent since its last result of the generation of the latest


@dataclass
class _Issued:
    """What the master has handed out for the generation it evaluated last: every round's tasks
    (ids are indices into ``tasks``), the ``THETA`` frames they ran with, the generation's counters."""

    generation: int
    tasks: list[Task]
    theta: list[bytes]
    stats: SchedulerStats


@dataclass
class MasterStats:
    """Counters of one generation (reset by the first :meth:`Master.evaluate` of each generation)."""

    messages_dropped: int = 0  # malformed, hostile or out-of-place messages
    hosts_lost: int = 0
    hosts_refused: int = 0
    results_refused: int = 0  # results beyond what their task can give (the task failed on that host)
    hosts_evicted: int = 0  # contradicted by two other sources in an audit


class Master:
    """Serves a run's tasks to worker hosts.

    Args:
        bind: ZeroMQ endpoint to bind, e.g. ``tcp://127.0.0.1:5555`` (port 0: any free port).
        setup: the run description sent to every host in ``WELCOME``.
        local_procs: if given, also start one worker host on this machine (a subprocess running
            ``esfast.distributed.host`` with this many evaluator processes) and treat its exit as an error;
            this is what ``esfast train`` uses.
        keys: the master's CURVE keys (:func:`~esfast.distributed.keys.load_master_keys`): only
            workers whose public keys are listed connect, over encrypted connections; None: any
            peer that reaches ``bind`` may connect, in plain text.
        allow_mixed_versions: admit, with a warning, hosts whose package versions
            (:mod:`~esfast.distributed.versions`) or environment fingerprint
            (:mod:`esfast.envs.probe`) differ from this machine's; by default they are refused.
        audit: the fraction of accepted results a host of another source repeats, compared bit
            for bit (:mod:`~esfast.distributed.audit`); copies that come back anyway are compared
            whatever it is.
        audit_action: ``"log"``: count and log mismatches; ``"evict"``: let a third source
            decide, evict the host it contradicts and run its results of the generation again.

    Raises:
        OSError: the endpoint cannot be bound (address in use, bad address).
        ConfigError: the run description cannot be encoded.
    """

    def __init__(
        self,
        bind: str,
        setup: WorkerSetup,
        *,
        local_procs: int | None = None,
        keys: MasterKeys | None = None,
        allow_mixed_versions: bool = False,
        audit: float = 0.0,
        audit_action: str = "log",
    ) -> None:
        AuditBook(audit, audit_action)  # refuses a fraction outside [0, 1] or an unknown action, before anything starts
        self.audit, self.audit_action = audit, audit_action
        self.book = AuditBook(audit, audit_action)
        self.generation_hosts: dict[str, _Host] = {}  # this generation's hosts given work, lost ones too
        self.evicted: set[str] = set()  # hosts evicted in this generation
        self.last_audit_wait_log = -float("inf")
        self.setup = setup
        self.allow_mixed_versions = allow_mixed_versions
        self.versions = software_versions()
        self.probe = probe_environment(setup.env_id, setup.env_module, atari=setup.atari, env_kwargs=setup.env_kwargs)
        self.run, self.run_arrays = setup_to_wire(setup)
        try:  # refused here, not in silence at every HELLO (a value JSON cannot carry, such as Infinity)
            encode(Message("WELCOME", {"worker": "w0", "run": self.run, "versions": self.versions, "session": ""}, self.run_arrays))
        except (ProtocolError, ValueError) as error:
            raise ConfigError(f"the run description cannot be sent to worker hosts: {error}") from None
        self.router = Router(bind, keys=keys, max_message_bytes=largest_message(setup.obs_dim))
        self.endpoint = self.router.endpoint
        self.key_check = self.router.key_check  # under --keys: who may connect, and under which name
        self.poller = zmq.Poller()
        self.poller.register(self.router.socket, zmq.POLLIN)
        self.hosts: dict[bytes, _Host] = {}
        self.hosts_seen: set[str] = set()
        self.hosts_unremembered = 0  # new names after MAX_REMEMBERED_HOSTS: counted, not kept
        self.host_counter = 0
        self.log = LogLimiter(logger)
        self.limit = MAX_COUNT  # the longest episode a task of this generation can report
        self.stats = MasterStats()
        self.last_stats: dict[str, Any] = {}
        self.scheduler: GenerationScheduler[Task, Result] | None = None
        self.issued: _Issued | None = None
        self.theta_frames: list[Any] = []
        self.task_seconds = (0.0, 0)  # this generation's accepted results: total time from assignment, count
        self.last_heartbeat = 0.0
        try:
            self.between = BetweenGenerations(self.router, self._heartbeat, self._timeout_ms)
        except BaseException:  # its pipe (out of file descriptors): nothing stays open
            self.router.close()
            raise
        self.local: subprocess.Popen[bytes] | None = None
        if local_procs is not None:
            try:
                self.local = start_local_worker(self.endpoint, local_procs)
            except BaseException:
                self.close()
                raise

    # Evaluator ------------------------------------------------------------------------------

    def evaluate(
        self, theta: NDArray[np.float32], spec: GenerationSpec, pairs: list[PairTask], evals: list[EvalTask]
    ) -> tuple[list[PairResult], list[EvalResult]]:
        """Runs a generation's tasks on the connected hosts; returns when every task has a result.

        A further call for the generation of the previous one is a further round of it: it must
        bring the same θ and settings (hosts keep the θ they hold), and its counters add to the
        earlier rounds'.

        Raises:
            WorkerError: a task failed on a host, or the local worker host exited.
            ValueError: a further round of a generation with another θ or other settings.
        """
        # θ is copied once: queued frames then never see the trainer's in-place update.
        theta_frames = encode(theta_message(theta.copy(), spec))
        theta_bytes = [bytes(frame) for frame in theta_frames]
        issued = self.issued
        if issued is not None and issued.generation == spec.generation and issued.theta != theta_bytes:
            raise ValueError(f"generation {spec.generation} is evaluated again with another θ or other settings than its hosts hold")
        self.between.stop()
        if issued is None or issued.generation != spec.generation:
            issued = _Issued(spec.generation, [], theta_bytes, SchedulerStats())
            self.stats = MasterStats()
            self.task_seconds = (0.0, 0)
            # Audits, evictions and the hosts given work are the generation's, whatever its number of rounds.
            self.book = AuditBook(self.audit, self.audit_action)
            self.generation_hosts = {}
            self.evicted = set()
        self.limit = length_limit(spec.timestep_limit, self.probe.step_limit)
        first_id = len(issued.tasks)  # ids are never reused within a generation, not even after an interrupted call
        issued.tasks.extend([*pairs, *evals])
        self.issued = issued
        scheduler: GenerationScheduler[Task, Result] = GenerationScheduler(spec.generation, issued.tasks, first_id=first_id)
        scheduler.stats = issued.stats  # one generation's counters, whatever its number of rounds
        self.scheduler = scheduler
        self.theta_frames = theta_frames
        try:
            self._serve_generation(scheduler)
        finally:  # also on Ctrl-C or a failed task: hosts are heart-beaten until close()
            self.scheduler = None
            self.between.start()
        results = scheduler.ordered_results()
        s = scheduler.stats
        self.last_stats = {
            "hosts": len(s.hosts),
            "hosts_total": len(self.hosts_seen) + self.hosts_unremembered,
            "procs": sum(h.procs for h in self.hosts.values()),
            "tasks_reissued": s.reissued,
            "tasks_duplicated": s.duplicated,
            "tasks_failed": s.failed,
            "results_stale": s.stale_dropped,
            "results_duplicate": s.duplicates_dropped,
            "results_unassigned": s.unassigned_dropped,
            "results_refused": self.stats.results_refused,
            "messages_dropped": self.stats.messages_dropped + s.unknown_dropped,
            "hosts_lost": self.stats.hosts_lost,
            "hosts_refused": self.stats.hosts_refused,
            "audits": self.book.audits,
            "audit_mismatches": self.book.mismatches,
            "hosts_evicted": self.stats.hosts_evicted,
        }
        return cast("list[PairResult]", results[: len(pairs)]), cast("list[EvalResult]", results[len(pairs) :])

    def _serve_generation(self, scheduler: GenerationScheduler[Task, Result]) -> None:
        """Dispatches, receives and keeps hosts alive until every task of ``scheduler`` has a result."""
        waiting_since = time.monotonic()
        last_waiting_log = waiting_since
        self._drain()  # credit and hosts that arrived during the update count from the first dispatch
        while True:
            now = time.monotonic()
            self._dispatch(now)
            if scheduler.done:
                return
            if self.poller.poll(timeout=self._timeout_ms(now)):
                self._drain()
            now = time.monotonic()
            self._housekeeping(now)
            self._skip_unservable_checks(now)
            if self.hosts:
                waiting_since = now
            elif now - waiting_since > 2 * HEARTBEAT_INTERVAL and now - last_waiting_log > WAITING_LOG_INTERVAL:
                last_waiting_log = now
                logger.info(
                    "waiting for worker hosts at %s (none connected; start one with: esfast-worker --master %s%s)",
                    self.endpoint,
                    self.endpoint,
                    " --keys DIR/worker-N" if self.key_check is not None else "",
                )

    def generation_stats(self) -> dict[str, Any]:
        return dict(self.last_stats)

    def close(self, *, interrupted: bool = False) -> None:
        """Tells every host to stop, closes the socket and waits for the local worker host."""
        self.between.close()
        reason = "the master was interrupted" if interrupted else "the run is over"
        stop = encode(Message("STOP", {"reason": reason}))
        for identity in list(self.hosts):
            self._send(identity, stop)
        self.router.close()
        if self.local is not None:
            stop_local_worker(self.local)
            self.local = None

    # Messages -------------------------------------------------------------------------------

    def _timeout_ms(self, now: float) -> int:
        return max(1, int(1000 * min(HEARTBEAT_INTERVAL, self.last_heartbeat + HEARTBEAT_INTERVAL - now + 0.001)))

    def _send(self, identity: bytes, frames: list[Any]) -> bool:
        """Sends to one host; False if the socket refused (its queue is full, or it is gone).

        The caller decides what a refused message means: θ is sent again at the next dispatch,
        tasks go back to the queue, a heartbeat or STOP is only logged.
        """
        return self.router.send(identity, frames)

    def _heartbeat(self, now: float) -> None:
        """Sends every host a heartbeat, if one is due."""
        if now - self.last_heartbeat >= HEARTBEAT_INTERVAL:
            self.last_heartbeat = now
            heartbeat = encode(Message("HEARTBEAT"))
            for identity in list(self.hosts):
                self._send(identity, heartbeat)

    def _drain(self) -> None:
        """Handles what waits: messages queued between generations, then up to DRAIN_BATCH more."""
        for frames in self.between.take():
            self._handle_safely(frames)
        for _ in range(DRAIN_BATCH):
            received = self.router.receive()
            if received is None:
                return
            self._handle_safely(received)

    def _handle_safely(self, frames: list[zmq.Frame]) -> None:
        """Handles a message; whatever a peer sent, only WorkerError (a failed task) ends the run."""
        try:
            self._handle(frames)
        except WorkerError:
            raise
        except Exception as error:  # a message the checks did not foresee: the master keeps running
            self._drop(f"unexpected {type(error).__name__} while handling it: {error}")

    def _drop(self, reason: str, identity: bytes | None = None, *, kind: str = "malformed") -> None:
        """Counts a dropped message and logs it (at a bounded rate per ``kind`` of drop)."""
        self.stats.messages_dropped += 1
        host = self.hosts.get(identity) if identity is not None else None
        self.log.warning(kind, "dropped a message from %s: %s", host.name if host else "an unknown peer", reason)

    def _handle(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            self._drop("no header frame")
            return
        identity, body = frames[0].bytes, [f.buffer for f in frames[1:]]
        try:
            message = decode(body)
        except ProtocolError as error:
            version, kind = peek(body)
            if kind == "HELLO" and version != PROTOCOL_VERSION:
                self._refuse(identity, f"the worker speaks protocol version {version!r}, this master speaks {PROTOCOL_VERSION}")
            else:
                self._drop(str(error), identity)
            return
        now = time.monotonic()
        host = self.hosts.get(identity)
        if message.type == "HELLO":
            self._hello(identity, message, now, frames[1])
            return
        if host is None:
            if message.type not in ("HEARTBEAT", "BYE", "RESULT", "READY", "WANT_THETA"):
                self._drop(f"{message.type} from a host that has not said HELLO", identity)
            return  # a host from before a restart: it will notice our silence and say HELLO again
        host.last_seen = now
        if message.type == "READY":
            if message["credit"] < 1:
                self._drop("READY with credit < 1", identity)
            else:
                self._credit(host, message["credit"])
        elif message.type == "RESULT":
            self._results(host, message, now)
            if message["credit"] > 0:
                self._credit(host, message["credit"])
        elif message.type == "FAILED":
            self._failed(host, message)
        elif message.type == "WANT_THETA":
            scheduler = self.scheduler
            # Answered for the current generation only, to a host that holds tasks of it, and at
            # most once per THETA_REQUEST_INTERVAL (a host asks again as long as its tasks wait;
            # θ may still be on its way).
            if (
                scheduler is not None
                and message["generation"] == scheduler.generation
                and host.key in scheduler.stats.hosts
                and now - host.theta_sent >= THETA_REQUEST_INTERVAL
            ):
                logger.info("worker host %s lacks θ of generation %d; sending it again", host.name, scheduler.generation)
                self._send_theta(host, scheduler.generation, now)
        elif message.type == "FINGERPRINT":
            self._fingerprint(host, message["fingerprint"])
        elif message.type == "BYE":
            self._lose(identity, "said goodbye")
        elif message.type != "HEARTBEAT":
            self._drop(f"{message.type} is not a message for the master", identity)

    def _credit(self, host: _Host, credit: int) -> None:
        """Adds credit, clipped to what the host's evaluators can hold (a hostile host cannot hoard tasks)."""
        limit = MAX_CREDIT_PER_PROC * host.procs
        if host.credit + credit > limit:
            self._drop(f"credit beyond {limit} for {host.procs} evaluator processes, clipped", host.identity, kind="credit")
        host.credit = min(host.credit + credit, limit)

    def _hello(self, identity: bytes, message: Message, now: float, frame: zmq.Frame) -> None:
        worker_key = _property(frame, "User-Id") if self.key_check is not None else None
        if self.key_check is not None and not self.key_check.accepts(worker_key):
            # The handshake accepted the key, which has since been withdrawn (or banned): no.
            self._refuse(identity, "this worker's key is no longer accepted by the master")
            return
        table = {"seed": self.setup.table_seed, "size": self.setup.table_size}
        verdict = judge_hello(message, table=table, versions=self.versions, allow_mixed_versions=self.allow_mixed_versions)
        if verdict.refusal is not None:
            self._refuse(identity, verdict.refusal)
            return
        name = f"{message['host']}:{message['pid']}"
        session = message["session"]
        reconnected = [
            old
            for old, known in self.hosts.items()
            if old == identity
            or (session is not None and secrets.compare_digest(known.session, session) and known.worker_key == worker_key)
        ]
        for old in reconnected:  # the same process on a new connection (it holds the session its WELCOME gave it)
            self._lose(old, "reconnected")
        if len(self.hosts) >= MAX_HOSTS:
            self._refuse(identity, f"the master has {MAX_HOSTS} worker hosts connected, the most it takes")
            return
        if verdict.version_differences:
            self.log.warning(
                "mixed",
                "worker host %s runs other versions, admitted (--allow-mixed-versions): %s",
                name,
                "; ".join(verdict.version_differences),
            )
        key_name = self.key_check.name(worker_key) if self.key_check is not None else None
        peer = key_name or _property(frame, "Peer-Address") or "an unknown address"
        key = f"w{self.host_counter + 1}"
        host = _Host(identity, key, name, message["procs"], now, worker_key, peer, key_name or key, secrets.token_hex(16))
        welcome = {"worker": host.key, "run": self.run, "versions": self.versions, "session": host.session}
        if not self._send(identity, encode(Message("WELCOME", welcome, self.run_arrays))):
            # Its connection is gone already: a HELLO the host gave up on for a new connection
            # (it asks again there), which would otherwise sit here as a host until the liveness.
            logger.info("worker host %s left before its WELCOME could be sent; not counted", name)
            return
        self.host_counter += 1
        self.hosts[identity] = host
        if name in self.hosts_seen or len(self.hosts_seen) < MAX_REMEMBERED_HOSTS:
            self.hosts_seen.add(name)
        else:
            self.hosts_unremembered += 1
        self.log.info(
            "join",
            "worker host %s%s joined with %d evaluator process%s (%d host%s connected)",
            name,
            f" (key {key_name})" if key_name else "",
            host.procs,
            "" if host.procs == 1 else "es",
            len(self.hosts),
            "" if len(self.hosts) == 1 else "s",
        )

    def _fingerprint(self, host: _Host, found: str) -> None:
        """Admits a host whose environment gave this machine's fingerprint (or any, when mixed versions are allowed)."""
        if host.admitted:
            return
        mine = self.probe.fingerprint
        if found != mine:
            what = (
                f"the environment {self.setup.env_id} simulates differently on the worker: fingerprint {found[:40]!r} there, "
                f"{mine} on the master (other versions, another build or platform, or a changed environment)"
            )
            if not self.allow_mixed_versions:
                self._lose(host.identity, "was refused")
                self._refuse(host.identity, f"{what}; start the master with --allow-mixed-versions to admit it anyway")
                return
            logger.warning("worker host %s admitted (--allow-mixed-versions) although %s", host.name, what)
        host.admitted = True

    def _refuse(self, identity: bytes, reason: str) -> None:
        self.stats.hosts_refused += 1
        self.log.warning("refuse", "refused a worker host: %s", reason)
        self._send(identity, encode(Message("REFUSE", {"reason": reason})))

    def _lose(self, identity: bytes, why: str) -> None:
        host = self.hosts.pop(identity)
        self.stats.hosts_lost += 1
        requeued = self.scheduler.host_lost(host.key) if self.scheduler is not None else 0
        self.log.warning(
            "lose",
            "worker host %s %s; %d of its tasks go back to the queue (%d host%s connected)",
            host.name,
            why,
            requeued,
            len(self.hosts),
            "" if len(self.hosts) == 1 else "s",
        )

    def _results(self, host: _Host, message: Message, now: float) -> None:
        scheduler = self.scheduler
        generation = message["generation"]
        if scheduler is None or generation != scheduler.generation:
            if scheduler is not None:
                scheduler.stats.stale_dropped += len(message["results"])
            return
        try:
            results = results_from_message(message, scheduler.tasks, self.setup.obs_dim)
        except ProtocolError as error:
            self._drop(str(error), host.identity)
            return
        # One pass over the message: late results of an earlier round of this generation are
        # stale (checked before unassigned, as in complete); one result of a task the host was
        # never given and nothing of the message counts (an honest host reports only its own tasks).
        first_id, given, key = scheduler.first_id, scheduler.given, host.key
        current: list[tuple[int, Result]] = []
        unassigned: list[int] = []
        for task_id, result in results:
            if task_id < first_id:
                scheduler.stats.stale_dropped += 1
            elif key in given.get(task_id, ()):
                current.append((task_id, result))
            else:
                unassigned.append(task_id)
        results = current
        if unassigned:
            scheduler.stats.unassigned_dropped += len(results) + len(unassigned)
            self._drop(
                f"results for {len(unassigned)} tasks it was never given (task {unassigned[0]}, ...)", host.identity, kind="unassigned"
            )
            return
        if results and generation == host.theta_generation:
            host.theta_unread = 0  # it read that θ: it reports on tasks of this round it was given
        tasks, limit, holders = scheduler.tasks, self.limit, scheduler.holders
        for task_id, result in results:
            if host.identity not in self.hosts:
                return  # evicted by an earlier result of this message
            problem = violation(tasks[task_id], result, limit)
            if problem is not None:
                self.stats.results_refused += 1
                if task_id in scheduler.results:
                    self._opinion(host, task_id, None)  # a copy of a finished task: an audit it fails
                else:
                    self._task_failed(host, task_id, f"it reported {problem}")
                continue
            assigned = task_holders.get(key) if (task_holders := holders.get(task_id)) is not None else None
            outcome = scheduler.record(key, task_id, result)  # checked above: this round's, given to this host
            if outcome is Outcome.ACCEPTED:
                if assigned is not None:
                    total, count = self.task_seconds
                    self.task_seconds = (total + now - assigned, count + 1)
                if self.audit and self.book.sample():
                    scheduler.request_check(task_id, frozenset({host.source}))
            elif outcome is Outcome.DUPLICATE:
                self._opinion(host, task_id, result)

    def _failed(self, host: _Host, message: Message) -> None:
        """A host's FAILED: the task goes to another host, and the run ends only as _task_failed says."""
        scheduler = self.scheduler
        task, generation = message["task"], message["generation"]
        error = _printable(message["error"])
        if scheduler is None or generation != scheduler.generation or task >= len(scheduler.tasks) or task < scheduler.first_id:
            # Another generation's task, or an earlier round's of this one (that round is over).
            self.log.warning(
                "failed", "task %d of generation %d failed on worker host %s, but is stale: %s", task, generation, host.name, error
            )
            return
        if not scheduler.was_given(host.key, task):
            self._drop(f"FAILED for task {task}, which it was never given", host.identity, kind="unassigned")
            return
        if task in scheduler.results:  # a copy of a task another host finished: it disagrees
            self._opinion(host, task, None)
            return
        self._task_failed(host, task, error)

    def _task_failed(self, host: _Host, task: int, error: str) -> None:
        """Task ``task`` failed on ``host`` (it said so, or reported what the task cannot give).

        One peer's word does not end the run: the task goes to another host. The run ends
        (WorkerError) once the task has failed on hosts of FAILURE_PEERS machines (keys, under
        --keys), or on every host connected (also those not admitted yet).

        Raises:
            WorkerError: the task failed on enough hosts to be the task's fault, not a host's.
        """
        scheduler = self.scheduler
        assert scheduler is not None
        if not scheduler.fail(host.key, task, host.peer):
            return  # it has a result already, or this host failed it before
        failed = scheduler.failed[task]
        peers = set(failed.values())
        everyone = all(h.key in failed for h in self.hosts.values())  # admitted or not yet: it may still take the task
        where = f"worker host {host.name}" + (
            f" and {len(failed) - 1} other host{'s' if len(failed) > 2 else ''}" if len(failed) > 1 else ""
        )
        if len(peers) >= FAILURE_PEERS or everyone:
            raise WorkerError(f"task {task} of generation {scheduler.generation} failed on {where}: {error}")
        self.log.warning(
            "failed",
            "task %d of generation %d failed on %s: %s; it goes to another host (the run ends if it fails on another machine too)",
            task,
            scheduler.generation,
            where,
            error,
        )

    # Audits -----------------------------------------------------------------------------------

    def _opinion(self, host: _Host, task: int, result: Result | None) -> None:
        """Another host's opinion of a finished task (a check copy, a tail copy, or its failure):
        compared with the task's result, and acted on as the audit book rules."""
        scheduler = self.scheduler
        assert scheduler is not None
        producer = self.generation_hosts[scheduler.producers[task]]
        accepted = Opinion(producer.key, producer.source, scheduler.results[task])
        ruling = self.book.opinion(task, accepted, Opinion(host.key, host.source, result))
        if not ruling.compared:
            return
        if ruling.third:
            scheduler.request_check(task, ruling.third)
        else:
            scheduler.close_check(task)
        if ruling.mismatch:
            self.log.warning(
                "audit",
                "audit mismatch on task %d of generation %d: worker host %s gave %s, worker host %s %s%s",
                task,
                scheduler.generation,
                producer.name,
                describe(accepted.result),
                host.name,
                describe(result) if result is not None else "failed it",
                "; a third host decides" if ruling.third else "",
            )
        if ruling.undecided:
            self.log.warning(
                "audit",
                "no two hosts agree on task %d of generation %d (is the environment deterministic?); nobody is evicted",
                task,
                scheduler.generation,
            )
        if ruling.evict is not None:
            if ruling.replace is not None and ruling.replace.result is not None:  # the task's first result was the wrong one
                scheduler.replace(task, ruling.replace.host, ruling.replace.result)
            self._evict(self.generation_hosts[ruling.evict.host], task)

    def _evict(self, host: _Host, task: int) -> None:
        """Evicts ``host``, contradicted on ``task`` by two other sources: its results of this
        round that no other source confirmed run again elsewhere, it is told so and (under
        --keys) its key is refused from now on, with every connection that uses it.

        Its results of the generation's earlier rounds (the variable batch) stay: the trainer holds
        them already, as it holds those of earlier generations (``docs/protocol.md``, "Audits")."""
        scheduler = self.scheduler
        assert scheduler is not None
        if host.key in self.evicted:
            return  # a second dispute it lost: it is gone already
        if self.key_check is not None and host.worker_key is not None:
            self.key_check.ban(host.worker_key)
        same = [h for h in self.hosts.values() if h is host or (host.worker_key is not None and h.worker_key == host.worker_key)]
        if host not in same:
            same.append(host)  # gone already: its results still go
        rerun = 0
        for evicted in same:
            self.evicted.add(evicted.key)
            discarded = scheduler.discard(evicted.key, self.book.verified)
            for discarded_task in discarded:
                self.book.forget(discarded_task)
            for disputed in self.book.drop_host(evicted.key):
                scheduler.close_check(disputed)
            rerun += len(discarded)
            if self.hosts.pop(evicted.identity, None) is not None:
                reason = f"evicted: its result of task {task} of generation {scheduler.generation} disagrees with two other hosts'"
                self._send(evicted.identity, encode(Message("REFUSE", {"reason": reason})))
            self.stats.hosts_evicted += 1
        logger.warning(
            "evicted worker host %s: two other hosts disagree with its result of task %d of generation %d; "
            "%d of its results of this round run again elsewhere (%d host%s connected)",
            host.name,
            task,
            scheduler.generation,
            rerun,
            len(self.hosts),
            "" if len(self.hosts) == 1 else "s",
        )

    def _skip_unservable_checks(self, now: float) -> None:
        """Once every task has a result, the checks no connected host may take (all of their
        sources are excluded): under ``--audit-action evict`` the generation waits for a host that
        may take them (its θ must be an honest cluster's), and says so; under ``log`` they are
        given up."""
        scheduler = self.scheduler
        if scheduler is None or not scheduler.complete_results or not scheduler.checks:
            return
        takers = {h.key: h.source for h in self.hosts.values() if h.admitted}
        waiting = [task for task in scheduler.checks if not scheduler.check_takers(task, takers)]
        if self.audit_action == "evict":
            if waiting and now - self.last_audit_wait_log > WAITING_LOG_INTERVAL:
                self.last_audit_wait_log = now
                logger.info(
                    "generation %d waits for a worker host of another source to audit %d task%s "
                    "(audits need two hosts, deciding a mismatch three; with --keys, hosts of other keys)",
                    scheduler.generation,
                    len(waiting),
                    "" if len(waiting) == 1 else "s",
                )
            return
        for task in waiting:
            scheduler.close_check(task)
            self.log.warning(
                "audit",
                "the audit of task %d of generation %d given up: no connected host of another source may take it",
                task,
                scheduler.generation,
            )

    # Dispatch and liveness ------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        total, count = self.task_seconds
        mean = total / count if count else 0.0
        copy_after = max(TAIL_COPY_MIN_SECONDS, TAIL_COPY_FACTOR * mean)
        for host in list(self.hosts.values()):
            if host.credit <= 0 or not host.admitted or scheduler.done:
                continue
            given = scheduler.assign(host.key, host.credit, now, copy_after=copy_after, source=host.source)
            if not given:
                continue
            self.generation_hosts[host.key] = host
            if host.theta_generation != scheduler.generation and not self._send_theta(host, scheduler.generation, now):
                # Its queue is full (or it reads nothing: it was dropped): θ and tasks wait.
                scheduler.release(host.key, [task_id for task_id, _ in given])
                continue
            for start in range(0, len(given), MAX_TASKS_PER_MESSAGE):
                chunk = given[start : start + MAX_TASKS_PER_MESSAGE]
                tasks = [task_to_wire(task_id, task) for task_id, task in chunk]
                if self._send(host.identity, encode(Message("TASKS", {"generation": scheduler.generation, "tasks": tasks}))):
                    host.credit -= len(chunk)
                else:  # not sent: the tasks go to whoever asks next, this host included
                    scheduler.release(host.key, [task_id for task_id, _ in given[start:]])
                    break

    def _send_theta(self, host: _Host, generation: int, now: float) -> bool:
        """Sends this generation's θ to ``host``; whether the socket took it.

        A host that has been sent THETA_UNREAD_LIMIT copies of θ without answering one with a
        result of its generation reads nothing: it is dropped instead, so a peer that never reads
        cannot make the master queue one θ per generation for it.
        """
        if host.theta_unread >= THETA_UNREAD_LIMIT:
            self._lose(host.identity, f"answered none of the last {THETA_UNREAD_LIMIT} θ it was sent")
            return False
        if not self._send(host.identity, self.theta_frames):
            return False
        host.theta_generation, host.theta_sent = generation, now
        host.theta_unread += 1
        return True

    def _housekeeping(self, now: float) -> None:
        if self.key_check is not None:
            self.key_check.reload(now)
            for identity, host in list(self.hosts.items()):
                if not self.key_check.accepts(host.worker_key):
                    self._lose(identity, "had its key withdrawn from the authorized folder")
                    self._send(identity, encode(Message("REFUSE", {"reason": "this worker's key was withdrawn by the master"})))
        for identity, host in list(self.hosts.items()):
            if now - host.last_seen > LIVENESS * HEARTBEAT_INTERVAL:
                self._lose(identity, f"was silent for {now - host.last_seen:.1f} s")
        self._heartbeat(now)
        if self.local is not None and self.local.poll() is not None:
            code = self.local.returncode
            self.local = None
            raise WorkerError(f"the local worker host exited with status {code}")


def _property(frame: zmq.Frame, name: str) -> str | None:
    """A ZeroMQ message property (``User-Id``, ``Peer-Address``), or None if it has none."""
    try:
        value = frame.get(name)
    except zmq.ZMQError:
        return None
    return value if isinstance(value, str) else None


def _printable(text: str) -> str:
    """A peer's text made safe to log: printable characters only, at most MAX_ERROR_CHARACTERS."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:MAX_ERROR_CHARACTERS])
    return clean + ("..." if len(text) > MAX_ERROR_CHARACTERS else "")


def local_cluster(procs: int, bind: str = "tcp://127.0.0.1:0") -> Callable[[WorkerSetup, Any], Master]:
    """An evaluator factory for :class:`~esfast.training.Trainer`: a master on ``bind`` (any free
    loopback port by default) with one worker host of ``procs`` evaluator processes on this machine."""
    return lambda setup, table: Master(bind, setup, local_procs=procs)
