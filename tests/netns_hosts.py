"""Worker hosts on one machine, each in its own network namespace, behind a shaped and delayed link.

A :class:`HostNetwork` gives each worker host what a machine of its own would give it:

- a network namespace (``esf-<pid>-<n>``) with a veth pair: one end in the root namespace
  (``10.213.x.y+1/30``), the other in the host's namespace (``+2/30``), and loopback up inside;
- ``tbf`` on the egress of both ends (``bandwidth``, 100 Mbit/s by default), so both directions
  are shaped and θ's broadcast costs what it would on such a network (this kernel has no
  ``netem``; delay comes from the relay);
- a :class:`~delay_relay.DelayRelay` in the root namespace, listening on the root end's address
  and forwarding to the master on 127.0.0.1: the host connects to ``tcp://10.213.x.y+1:PORT``,
  so its traffic crosses the link and the relay (``delay`` ± ``jitter`` each way);
- its own ``/dev/shm`` and host name: the host runs as
  ``ip netns exec NS unshare --mount --uts --propagation private sh -c 'mount -t tmpfs ...
  /dev/shm && hostname NS && exec "$@"' sh python -m esfast.distributed.host ...``, so it cannot
  map the master's noise table and generates its own, as a host on another machine does.

Every command execs the next (``ip netns exec`` and ``unshare`` without ``--fork`` do), so the
pid of the started process is the host's own. :meth:`HostNetwork.close` stops everything it made,
also after a failure: the hosts (SIGTERM, then SIGKILL), anything else left in their namespaces
(``ip netns pids``), the relays, then the namespaces (their veth pairs and qdiscs go with them).

It needs root and iproute2 (``ip``, ``tc``) and util-linux's ``unshare``; without them
:func:`require_namespaces` raises :class:`NamespacesUnavailable` naming what is missing.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster import Process
from delay_relay import DelayRelay

TESTS = Path(__file__).resolve().parent
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")  # carved into /30 links
DEFAULT_BANDWIDTH = "100mbit"
DEFAULT_DELAY = 0.020
DEFAULT_JITTER = 0.005
TBF_BURST = "32kb"  # bytes sent at line rate after an idle spell (tc's kb: kilobytes)
TBF_LATENCY = "100ms"  # the longest a packet may wait in the shaper's queue
SHM_SIZE = "1g"  # the limit of each host's /dev/shm (tmpfs takes memory only as it is used)
_numbers = itertools.count()


class NamespacesUnavailable(RuntimeError):
    """This machine (or user) cannot make network namespaces, links and shapers."""


def require_namespaces() -> None:
    """Checks that this process can run namespace hosts.

    Raises:
        NamespacesUnavailable: not root, or ``ip``, ``tc``, ``unshare`` or ``hostname`` missing,
            or ``ip netns`` not working; the message says which and what to do.
    """
    if os.geteuid() != 0:
        raise NamespacesUnavailable("the namespace-host tests need root (they make network namespaces, veth links and qdiscs)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux"), ("hostname", "hostname")):
        if shutil.which(tool) is None:
            raise NamespacesUnavailable(f"the namespace-host tests need {tool!r}: apt-get install {package}")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if listed.returncode != 0:
        raise NamespacesUnavailable(f"'ip netns list' failed: {listed.stderr.strip()}")


def run(*command: str) -> str:
    """Runs a setup command; its output.

    Raises:
        NamespacesUnavailable: the command failed (its output is in the message).
    """
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespacesUnavailable(f"{' '.join(command)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _used_addresses() -> set[ipaddress.IPv4Address]:
    found = set()
    for line in run("ip", "-o", "-4", "addr", "show").splitlines():
        match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if match:
            found.add(ipaddress.IPv4Address(match.group(1)))
    return found


def _free_link() -> ipaddress.IPv4Network:
    """A /30 of SUBNET whose addresses no interface of the root namespace holds."""
    used = _used_addresses()
    links = list(SUBNET.subnets(new_prefix=30))
    start = (os.getpid() * 16) % len(links)  # sessions running at once start apart
    for link in links[start:] + links[:start]:
        if not used.intersection(link):
            return link
    raise NamespacesUnavailable(f"no free /30 left in {SUBNET}")


class NamespaceHost:
    """One worker host in its own namespace: its link, its relay, its process (once started)."""

    def __init__(self, number: int, relay: DelayRelay | None, link: ipaddress.IPv4Network) -> None:
        pid = os.getpid()
        self.namespace = f"esf-{pid}-{number}"
        self.root_device = f"esf{pid}r{number}"  # at most 15 characters: pids have at most 7 digits
        self.host_device = f"esf{pid}h{number}"
        self.link = link
        self.root_address, self.host_address = (str(a) for a in link.hosts())
        self.relay = relay
        self.relay_process: Process | None = None
        self.relay_port = relay.port if relay is not None else 0
        self.process: Process | None = None

    @property
    def endpoint(self) -> str:
        """Where the host connects: the relay, on the root end of its link."""
        return f"tcp://{self.root_address}:{self.relay_port}"

    @property
    def name(self) -> str:
        """The host's name in the master's log: ``hostname:pid``."""
        assert self.process is not None
        return f"{self.namespace}:{self.process.popen.pid}"

    def cut(self) -> None:
        """Takes the link down (its root end: both ends lose carrier), as a pulled cable would."""
        run("ip", "link", "set", self.root_device, "down")

    def restore(self) -> None:
        """Brings the link back up."""
        run("ip", "link", "set", self.root_device, "up")

    def private_segments(self) -> list[str]:
        """The esfast segments in the host's own /dev/shm (seen through its mount namespace)."""
        assert self.process is not None
        directory = Path(f"/proc/{self.process.popen.pid}/root/dev/shm")
        return sorted(p.name for p in directory.glob("esfast-*"))

    def shaped_bytes(self) -> tuple[int, int]:
        """Bytes the link's tbf qdiscs have sent: (towards the host, from the host)."""
        down = json.loads(run("tc", "-s", "-j", "qdisc", "show", "dev", self.root_device))
        up = json.loads(run("tc", "-n", self.namespace, "-s", "-j", "qdisc", "show", "dev", self.host_device))
        return (sum(q["bytes"] for q in down if q["kind"] == "tbf"), sum(q["bytes"] for q in up if q["kind"] == "tbf"))


class HostNetwork:
    """Namespace worker hosts of one test or benchmark, joined to a master on 127.0.0.1; see the module docstring.

    Args:
        directory: where the hosts' (and relays') output files go.
        master_port: the port of the master, listening on 127.0.0.1.
        bandwidth: each link's rate each way, in tc's units (``100mbit``).
        delay: the relay's one-way delay in seconds.
        jitter: the relay's jitter, ± seconds.
        relay_processes: run each relay as its own process (``python tests/delay_relay.py``), not
            as a thread of this one: a benchmark whose master runs in this process keeps its
            interpreter lock to itself.

    Raises:
        NamespacesUnavailable: see :func:`require_namespaces`.
    """

    def __init__(
        self,
        directory: Path,
        master_port: int,
        *,
        bandwidth: str = DEFAULT_BANDWIDTH,
        delay: float = DEFAULT_DELAY,
        jitter: float = DEFAULT_JITTER,
        relay_processes: bool = False,
    ) -> None:
        require_namespaces()
        self.directory = directory
        self.master_port = master_port
        self.bandwidth, self.delay, self.jitter = bandwidth, delay, jitter
        self.relay_processes = relay_processes
        self.hosts: list[NamespaceHost] = []

    def __enter__(self) -> HostNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def host(self, procs: int = 1, args: tuple[str, ...] = ()) -> NamespaceHost:
        """Makes a namespace with its shaped link and relay, and starts an esfast-worker of ``procs`` evaluators in it."""
        number = next(_numbers)
        link = _free_link()
        host = NamespaceHost(number, None, link)
        self.hosts.append(host)  # from here on, close() removes whatever of it exists
        run("ip", "netns", "add", host.namespace)
        run("ip", "link", "add", host.root_device, "type", "veth", "peer", "name", host.host_device, "netns", host.namespace)
        run("ip", "addr", "add", f"{host.root_address}/{link.prefixlen}", "dev", host.root_device)
        run("ip", "link", "set", host.root_device, "up")
        run("ip", "-n", host.namespace, "addr", "add", f"{host.host_address}/{link.prefixlen}", "dev", host.host_device)
        run("ip", "-n", host.namespace, "link", "set", host.host_device, "up")
        run("ip", "-n", host.namespace, "link", "set", "lo", "up")
        shaper = ("root", "tbf", "rate", self.bandwidth, "burst", TBF_BURST, "latency", TBF_LATENCY)
        run("tc", "qdisc", "add", "dev", host.root_device, *shaper)
        run("tc", "-n", host.namespace, "qdisc", "add", "dev", host.host_device, *shaper)
        self._start_relay(host, number)
        script = f'mount -t tmpfs -o size={SHM_SIZE},mode=1777 tmpfs /dev/shm && hostname "$0" && exec "$@"'
        command = [
            *("ip", "netns", "exec", host.namespace, "unshare", "--mount", "--uts", "--propagation", "private"),
            *("sh", "-c", script, host.namespace),  # $0: the host name; "$@": the host's command
            *(sys.executable, "-m", "esfast.distributed.host", "--master", host.endpoint, "--procs", str(procs)),
            *("--parent", str(os.getpid())),  # exits if this process dies without stopping it
            *args,
        ]
        host.process = Process(command, self.directory / f"{host.namespace}.log")
        return host

    def _start_relay(self, host: NamespaceHost, number: int) -> None:
        target = ("127.0.0.1", self.master_port)
        if not self.relay_processes:
            host.relay = DelayRelay((host.root_address, 0), target, delay=self.delay, jitter=self.jitter, seed=number)
            host.relay_port = host.relay.port
            return
        command = [
            *(sys.executable, str(TESTS / "delay_relay.py")),
            *("--listen", f"{host.root_address}:0", "--target", f"127.0.0.1:{self.master_port}"),
            *("--delay-ms", repr(1000 * self.delay), "--jitter-ms", repr(1000 * self.jitter), "--seed", str(number)),
        ]
        host.relay_process = Process(command, self.directory / f"relay-{host.namespace}.log")
        host.relay_process.wait_for("listening on ", timeout=30)
        found = re.search(r"listening on \S+:(\d+)", host.relay_process.output)
        assert found is not None
        host.relay_port = int(found.group(1))

    def close(self) -> None:
        """Stops every process and removes every namespace, link and qdisc this network made."""
        for host in self.hosts:
            if host.process is not None:
                host.process.stop()
        for host in self.hosts:  # evaluators of a killed host, or anything else still in the namespace
            self._kill_remaining(host)
        for host in self.hosts:
            if host.relay is not None:
                host.relay.stop()
            if host.relay_process is not None:
                host.relay_process.stop()
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
            subprocess.run(["ip", "link", "del", host.root_device], capture_output=True)  # gone with the namespace, unless it failed before
        self.hosts = []

    @staticmethod
    def _kill_remaining(host: NamespaceHost) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
            pids = [int(p) for p in listed.stdout.split()] if listed.returncode == 0 else []
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)


def remaining_namespaces() -> list[str]:
    """Namespaces of this process's networks that still exist (none should, after close())."""
    prefix = f"esf-{os.getpid()}-"
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.startswith(prefix)]
