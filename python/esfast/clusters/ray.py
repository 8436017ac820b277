"""``esfast ray``: the master in the driver, one worker host on every alive Ray node.

Ray only places and supervises processes here; tasks, results and θ travel over esfast's own
ZeroMQ transport (docs/protocol.md). The driver (``esfast ray CONFIG --address ADDRESS``) connects
to the cluster (:func:`connect`), runs the master as ``esfast-master`` does, bound to its own
node's address, and a :class:`NodeWatcher` thread keeps one :class:`NodeWorkerHost` actor on
every alive node that has at least one CPU (:mod:`esfast.clusters.ray_node`, the code that runs
there). The actor holds all of its node's CPUs (``num_cpus``), is pinned to the node
(``NodeAffinitySchedulingStrategy``, not soft) and runs ``esfast-worker --procs <the node's whole
CPUs>`` as its child. Every POLL_INTERVAL seconds the
watcher reads Ray's node table and its actors' news:

- a node that joins gets a worker host;
- a node that leaves loses its actor; the master re-issues the lost host's tasks, so θ is the one
  a local run computes (docs/determinism.md);
- a worker host that exits with an error (refused, a key not listed yet, its evaluators failing)
  is started again after RESTART_DELAY seconds, doubling up to RESTART_DELAY_MAX; one that exits
  with status 0 was stopped by the master at the end of the run and is left so.

Keys (``--keys DIR`` of ``esfast keys DIR``): the master takes ``DIR/master``; each worker host
takes one ``DIR/worker-K`` folder from a :class:`KeyPool`, the lowest-numbered one that no
other node's host holds, given back when its node leaves (the directory is listed again at every
placement, so folders added while the run goes on are used). The folder's three files go to the
node with the actor's arguments and are written to a private temporary folder there, removed
once the host has read them. The master accepts two hosts with one key, but counts them as one machine
(audits, failures) and evicts them together, so the pool never lends one folder twice.

A worker host ends with its actor (``esfast-worker --parent``: it exits when its parent is
gone), so a node's loss, ``ray.kill`` and the driver's end (Ray ends the actors a driver owns)
all stop it.

Ray is imported by :func:`connect` only: ``import esfast`` and the CLI never load it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esfast.clusters.ray_node import STOP_SECONDS, HostExited, HostStarted, KeyFiles, NodeWorkerHost
from esfast.distributed.keys import MASTER_DIR, MASTER_NAME, WORKER_NAME, worker_dirs
from esfast.errors import KeysError, RayClusterError

__all__ = [
    "KeyPool",
    "NodeInfo",
    "NodeWatcher",
    "RayCluster",
    "alive_nodes",
    "check_address",
    "check_keys_directory",
    "connect",
    "master_endpoint",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'esfast[ray]'"
POLL_INTERVAL = 1.0  # seconds between looks at the node table and the actors
RESTART_DELAY = 5.0  # seconds before a worker host that exited with an error starts again
RESTART_DELAY_MAX = 60.0  # the delay doubles with each such exit in a row on one node, up to this
STOP_GRACE = 5.0  # at the run's end, a worker host's time to exit on the master's STOP before SIGTERM
PENDING_LOG_SECONDS = 30.0  # an actor not placed after this long is logged (its node's CPUs are taken)
REACH_TIMEOUT = 5.0  # seconds to open a TCP connection to the cluster's address before ray.init


# What the driver decides, without Ray ------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """A Ray node as the driver sees it in ``ray.nodes()``."""

    node_id: str  # hex
    address: str  # NodeManagerAddress: where the node's processes are reached
    cpus: float  # the node's CPU resource, all of which its worker host's actor holds

    @property
    def procs(self) -> int:
        """The evaluator processes of the node's worker host: its whole CPUs."""
        return int(self.cpus)

    def __str__(self) -> str:
        return f"{self.address} ({self.node_id[:8]})"


def alive_nodes(table: Iterable[Mapping[str, Any]]) -> list[NodeInfo]:
    """The nodes of a ``ray.nodes()`` table that get a worker host: alive, with at least one CPU.

    Args:
        table: ``ray.nodes()``: one mapping per node, with ``NodeID``, ``Alive``,
            ``NodeManagerAddress`` and ``Resources`` (its total resources).

    Returns:
        Those nodes, ordered by node id.
    """
    nodes = []
    for entry in table:
        cpus = float(entry.get("Resources", {}).get("CPU", 0.0))
        if entry.get("Alive") and cpus >= 1.0:
            nodes.append(NodeInfo(str(entry["NodeID"]), str(entry["NodeManagerAddress"]), cpus))
    return sorted(nodes, key=lambda node: node.node_id)


class KeyPool:
    """The ``worker-K`` folders of a keys directory, lent one per node.

    Args:
        directory: the keys directory of ``esfast keys DIR`` (read again at every :meth:`take`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.held: dict[str, Path] = {}  # node id -> its folder

    def take(self, node_id: str) -> Path | None:
        """The folder of ``node_id``'s host: the one it holds, else the lowest-numbered free one;
        None when every folder is held."""
        if node_id in self.held:
            return self.held[node_id]
        taken = set(self.held.values())
        for folder in worker_dirs(self.directory):
            if folder not in taken:
                self.held[node_id] = folder
                return folder
        return None

    def release(self, node_id: str) -> Path | None:
        """Gives ``node_id``'s folder back (None if it held none)."""
        return self.held.pop(node_id, None)

    def size(self) -> int:
        """How many worker folders the directory holds now."""
        return len(worker_dirs(self.directory))


def check_address(address: str) -> str:
    """Checks ``--address``: ``auto`` or the cluster's ``HOST:PORT`` (what ``ray start --head`` prints).

    Raises:
        RayClusterError: anything else, Ray Client's ``ray://`` included (one line).
    """
    if address == "auto":
        return address
    if "://" in address:
        raise RayClusterError(
            f"--address {address}: Ray Client (ray://) is not supported: run esfast ray on a node of the cluster, where the "
            "other nodes reach its master, with --address auto or the cluster's HOST:PORT (ray start --head prints it)"
        )
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise RayClusterError(
            f"--address must be auto or the cluster's HOST:PORT (ray start --head prints it, e.g. 10.0.0.1:6379), got {address!r}"
        )
    return address


def check_keys_directory(directory: Path) -> Path:
    """The master's folder of a keys directory made by ``esfast keys DIR`` (``DIR/master``).

    Raises:
        KeysError: not such a directory, or one without worker folders (one line).
    """
    if (directory / f"{MASTER_NAME}.key_secret").exists() or (directory / f"{WORKER_NAME}.key_secret").exists():
        raise KeysError(f"--keys {directory}: esfast ray takes the whole folder esfast keys made (DIR, with master/ and worker-K/ in it)")
    master = directory / MASTER_DIR
    if not master.is_dir():
        raise KeysError(f"--keys {directory}: no {MASTER_DIR}/ folder in it (make one with: esfast keys {directory} --workers N)")
    if not worker_dirs(directory):
        raise KeysError(f"--keys {directory}: no worker-K folders in it (add some with: esfast keys {directory} --workers N)")
    return master


def master_endpoint(host: str, port: int) -> str:
    """The master's ``tcp://`` endpoint at ``host`` (an IPv6 address in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


# The driver's side ---------------------------------------------------------------------------


@dataclass
class _Placement:
    """A node's actor, as the watcher tracks it."""

    node: NodeInfo
    actor: Any  # ray.actor.ActorHandle
    keys: str | None  # worker-K
    pending: Any  # the ObjectRef of the actor's call in flight (start, then poll), or None
    since: float
    started: bool = False
    done: bool = False  # stopped by the master: the run is over
    pending_logged: bool = False


class NodeWatcher:
    """Keeps one worker host per alive node while the run lasts (see the module docstring).

    Args:
        ray: the ``ray`` module, connected.
        master: the master's endpoint, reachable from every node.
        keys: the keys directory (``DIR`` of ``esfast keys DIR``), or None for a run without keys.
        interval: seconds between looks at the nodes.
    """

    def __init__(self, ray: Any, master: str, keys: Path | None = None, interval: float = POLL_INTERVAL) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        self.master = master
        self.keys = keys
        self.interval = interval
        self.pool = KeyPool(keys) if keys is not None else None
        self.placements: dict[str, _Placement] = {}
        self.retry_at: dict[str, float] = {}  # node id -> when its host may start again
        self.failures: dict[str, int] = {}  # node id -> exits with an error in a row
        self.unreachable = False  # the last look at the node table failed
        self.keyless: set[str] = set()  # nodes already told that no key folder is free
        self.actor_class = ray.remote(NodeWorkerHost)
        self.affinity = NodeAffinitySchedulingStrategy
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="esfast-ray-nodes", daemon=True)

    def start(self) -> None:
        """Starts watching (a thread), placing hosts at once."""
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step(time.monotonic())
            except Exception:  # a bug here must not end the watching silently, nor the run
                logger.exception("esfast ray: watching the nodes failed; trying again")
            self.stopping.wait(self.interval)

    def step(self, now: float) -> None:
        """One look: drops the hosts of nodes that left, reads the actors' news, places hosts on
        nodes without one."""
        try:
            table = self.ray.nodes()
        except Exception as error:  # the GCS is gone or unreachable: Ray raises several kinds
            if not self.unreachable:
                logger.warning("cannot read the Ray cluster's nodes (%s); trying again", " ".join(str(error).split())[:300])
            self.unreachable = True
            return
        self.unreachable = False
        nodes = {node.node_id: node for node in alive_nodes(table)}
        for node_id in [known for known in self.placements if known not in nodes]:
            placement = self.placements[node_id]
            if not placement.done:
                logger.warning("Ray node %s left the cluster: its worker host is gone, and the master re-issues its tasks", placement.node)
            self._drop(node_id)
        self._news(now)
        for node_id, node in nodes.items():
            if node_id not in self.placements and self.retry_at.get(node_id, 0.0) <= now:
                self._place(node, now)

    def _place(self, node: NodeInfo, now: float) -> None:
        keys = None
        if self.pool is not None:
            folder = self.pool.take(node.node_id)
            if folder is None:
                if node.node_id not in self.keyless:
                    self.keyless.add(node.node_id)
                    logger.warning(
                        "Ray node %s gets no worker host: all %d worker folders of %s are in use (add: esfast keys %s --workers N)",
                        node,
                        self.pool.size(),
                        self.keys,
                        self.keys,
                    )
                return
            try:
                keys = KeyFiles.read(folder)
            except KeysError as error:
                self.pool.release(node.node_id)
                logger.warning("Ray node %s: %s; trying again in %.0f s", node, error, RESTART_DELAY)
                self.retry_at[node.node_id] = now + RESTART_DELAY
                return
        self.keyless.discard(node.node_id)
        actor = self.actor_class.options(
            num_cpus=node.cpus,
            scheduling_strategy=self.affinity(node_id=node.node_id, soft=False),
            max_restarts=0,
        ).remote(self.master, node.procs, keys)
        self.placements[node.node_id] = _Placement(node, actor, keys.name if keys else None, actor.start.remote(), now)
        logger.info(
            "Ray node %s: starting a worker host with %d evaluator process%s%s",
            node,
            node.procs,
            "" if node.procs == 1 else "es",
            f" and the keys of {keys.name}" if keys else "",
        )

    def _news(self, now: float) -> None:
        """Handles the actors' calls that have returned."""
        waiting = {placement.pending: node_id for node_id, placement in self.placements.items() if placement.pending is not None}
        if not waiting:
            return
        ready, _ = self.ray.wait(list(waiting), num_returns=len(waiting), timeout=0)
        for ref in ready:
            node_id = waiting[ref]
            placement = self.placements[node_id]
            placement.pending = None
            try:
                news = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:  # the actor died (its node, an OOM kill), or could not be placed
                if not placement.done:
                    logger.warning("Ray node %s: its worker host's actor failed or is gone (%s)", placement.node, _first_line(error))
                self._exited(node_id, now)
                continue
            if isinstance(news, HostStarted):
                placement.started = True
                logger.info("Ray node %s: worker host %s:%d started", placement.node, news.hostname, news.pid)
            elif isinstance(news, HostExited):
                if news.status == 0:
                    placement.done = True
                    logger.info("Ray node %s: its worker host ended with the run", placement.node)
                    continue
                tail = f": {news.tail[-1]}" if news.tail else ""
                logger.warning("Ray node %s: its worker host exited with status %d%s", placement.node, news.status, tail)
                self._exited(node_id, now)
                continue
            placement.pending = placement.actor.poll.remote(self.interval)
        for placement in self.placements.values():
            if not placement.started and not placement.pending_logged and now - placement.since >= PENDING_LOG_SECONDS:
                placement.pending_logged = True
                logger.warning(
                    "Ray node %s: its worker host's actor is not placed after %.0f s (it waits for the node's %g CPUs, held elsewhere)",
                    placement.node,
                    now - placement.since,
                    placement.node.cpus,
                )

    def _exited(self, node_id: str, now: float) -> None:
        """A host that ended with an error starts again later, after a longer delay each time in a row."""
        placement = self.placements.get(node_id)
        if placement is None or placement.done:
            return
        # Exits in a row: a host that ran for RESTART_DELAY_MAX seconds or more starts the count again.
        failures = self.failures.get(node_id, 0) if now - placement.since < RESTART_DELAY_MAX else 0
        self.failures[node_id] = failures + 1
        delay = min(RESTART_DELAY * 2**failures, RESTART_DELAY_MAX)
        self.retry_at[node_id] = now + delay
        self._drop(node_id)
        logger.info("Ray node %s: a new worker host starts in %.0f s if the node is still there", placement.node, delay)

    def _drop(self, node_id: str) -> None:
        placement = self.placements.pop(node_id)
        if self.pool is not None:
            self.pool.release(node_id)
        with contextlib.suppress(Exception):  # gone already
            self.ray.kill(placement.actor, no_restart=True)

    def close(self) -> None:
        """Stops watching, then every worker host (after STOP_GRACE seconds to exit on the master's
        STOP, SIGTERM: each says BYE) and its actor."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
        stops = []
        for placement in self.placements.values():
            with contextlib.suppress(Exception):
                stops.append(placement.actor.stop.remote(STOP_GRACE))
        if stops:
            with contextlib.suppress(Exception):
                self.ray.wait(stops, num_returns=len(stops), timeout=STOP_GRACE + STOP_SECONDS + 5.0)
        for node_id in list(self.placements):
            self._drop(node_id)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


class RayCluster:
    """The driver's connection to a Ray cluster (:func:`connect`); closing it ends the worker
    hosts, their actors and the connection."""

    def __init__(self, ray: Any, address: str) -> None:
        self.ray = ray
        self.address = address
        self.watcher: NodeWatcher | None = None

    def nodes(self) -> list[NodeInfo]:
        """The nodes that get a worker host now."""
        return alive_nodes(self.ray.nodes())

    def driver_address(self) -> str:
        """The address of the node this driver runs on, as the cluster knows it."""
        node_id = self.ray.get_runtime_context().get_node_id()
        for entry in self.ray.nodes():
            if entry.get("NodeID") == node_id:
                return str(entry["NodeManagerAddress"])
        return str(self.ray.util.get_node_ip_address())

    def watch(self, master: str, keys: Path | None) -> NodeWatcher:
        """Starts keeping a worker host on every node, connected to ``master``."""
        self.watcher = NodeWatcher(self.ray, master, keys)
        self.watcher.start()
        return self.watcher

    def close(self) -> None:
        """Stops the worker hosts and their actors, then disconnects."""
        try:
            if self.watcher is not None:
                self.watcher.close()
        finally:
            self.ray.shutdown()

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _import_ray() -> Any:
    try:
        import ray
        import ray.util.scheduling_strategies  # what NodeWatcher places actors with
    except ImportError as error:
        raise RayClusterError(f"esfast ray needs Ray, which cannot be imported here ({error}): {INSTALL_HINT}") from None
    return ray


def connect(address: str) -> RayCluster:
    """Connects this process to the Ray cluster at ``address`` as its driver.

    Args:
        address: ``auto`` (the cluster this machine is a node of) or the cluster's ``HOST:PORT``.

    Returns:
        The connection; it holds no worker host until :meth:`RayCluster.watch`.

    Raises:
        RayClusterError: Ray is not installed, the address is malformed or unreachable, Ray
            refuses the connection (another Ray version), or no alive node has a CPU (one line).
    """
    check_address(address)
    ray = _import_ray()
    if address != "auto":
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT).close()
        except OSError as error:
            raise RayClusterError(
                f"cannot reach the Ray cluster at {address}: {error.strerror or error} (start one with: ray start --head)"
            ) from None
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayClusterError(f"cannot connect to the Ray cluster at {address}: {' '.join(str(error).split())[:400]}") from None
    cluster = RayCluster(ray, address)
    try:
        table = ray.nodes()
        if not alive_nodes(table):
            alive = [entry for entry in table if entry.get("Alive")]
            raise RayClusterError(
                f"the Ray cluster at {address} has no alive node with a CPU ({len(alive)} alive node{'s' if len(alive) != 1 else ''}); "
                "add nodes with: ray start --address HOST:PORT --num-cpus N"
            )
    except BaseException:
        ray.shutdown()
        raise
    return cluster
