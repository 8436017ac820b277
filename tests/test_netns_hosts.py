"""esfast-master with worker hosts in their own network namespaces: shaped links, relay delay, cuts, stalls, resets.

Every test here needs root and iproute2 (CI runs as root): without them it fails, naming what is
missing, and is never skipped. The master runs in the root namespace on 127.0.0.1; each host
reaches it through its veth link (tbf, 100 Mbit/s each way) and a delay relay (20 ms ± 5 ms each
way) listening on the link's root-side address. Final θ is compared with that of one host on
loopback with the same config and seed (docs/determinism.md).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster import CARTPOLE, SLOW_REACH, Cluster, Process, final_theta, records
from netns_hosts import HostNetwork, NamespaceHost, NamespacesUnavailable, remaining_namespaces

from esfast.distributed.keys import make_keys
from esfast.distributed.protocol import HEARTBEAT_INTERVAL, LIVENESS

# SlowReach with about 70,000 parameters: a THETA of 280 kB, many TCP segments.
LARGE_THETA_RUN = [*SLOW_REACH, "--set", "hidden_dims=[256,256]"]


@pytest.fixture
def network(cluster: Cluster, tmp_path: Path) -> Iterator[HostNetwork]:
    """Namespace hosts in front of ``cluster``'s master port; all removed at the end, also on failure."""
    try:
        made = HostNetwork(tmp_path, cluster.port)
    except NamespacesUnavailable as error:
        pytest.fail(f"namespace hosts cannot run here: {error}")
    devices = []
    try:
        yield made
    finally:
        devices = [host.root_device for host in made.hosts]
        made.close()
    assert remaining_namespaces() == [], "namespaces left behind"
    for device in devices:
        assert subprocess.run(["ip", "link", "show", device], capture_output=True).returncode != 0, f"link {device} left behind"


@pytest.fixture(scope="module")
def large_straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of LARGE_THETA_RUN with one host of two evaluators on loopback."""
    directory = tmp_path_factory.mktemp("large-straight")
    cluster = Cluster(directory)
    try:
        return _straight(cluster, directory, LARGE_THETA_RUN, 8, 2)
    finally:
        cluster.stop()


def _straight(cluster: Cluster, tmp_path: Path, config: list[str], generations: int, procs: int) -> Path:
    """The run with one host on loopback: the θ every other layout must give."""
    out = tmp_path / "straight"
    master = cluster.master(*config, "--generations", str(generations), out=out)
    cluster.worker(procs=procs)
    assert master.wait() == 0, master.output
    return out


def _wait_for_count(process: Process, text: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while process.output.count(text) < count:
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} {process.output.count(text)} times, not {count}:\n{process.output}")
        time.sleep(0.05)


def _hosts_end_well(hosts: list[NamespaceHost]) -> None:
    for host in hosts:
        assert host.process is not None
        assert host.process.wait(30) == 0, host.process.output
        assert "the master stopped this worker: the run is over" in host.process.output


def test_three_hosts_train_cartpole_to_the_theta_of_one_host(cluster: Cluster, network: HostNetwork, tmp_path: Path) -> None:
    straight = _straight(cluster, tmp_path, CARTPOLE, 8, 1)
    keys = tmp_path / "keys"  # the keys pass through the namespace path as through any other
    make_keys(keys, 3)
    out = tmp_path / "run"
    master = cluster.master(*CARTPOLE, "--generations", "8", "--keys", str(keys / "master"), out=out)
    hosts = [network.host(args=("--keys", str(keys / f"worker-{k}"))) for k in (1, 2, 3)]
    for host in hosts:  # each generated its own table, in its own /dev/shm
        assert host.process is not None
        host.process.wait_for("connected to the master at")
        pid = host.process.popen.pid
        assert any(name.startswith(f"esfast-host-{pid}-") for name in host.private_segments()), host.private_segments()
        assert not list(Path("/dev/shm").glob(f"esfast-host-{pid}-*")), "a namespace host's table is in the root /dev/shm"
    assert master.wait() == 0, master.output
    _hosts_end_well(hosts)
    log = records(out)
    assert len(log) == 8 and max(r["hosts"] for r in log) == 3
    for host in hosts:
        assert f"worker host {host.name} (key worker-" in master.output
        down, up = host.shaped_bytes()
        assert down > 0 and up > 0, "traffic went around the shaped link"
        assert host.relay is not None and host.relay.bytes_relayed >= down  # the relay carried what the link did, and more framing
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))


def test_a_host_cut_off_longer_than_the_liveness_is_replaced_and_rejoins(cluster: Cluster, network: HostNetwork, tmp_path: Path) -> None:
    generations = 20
    straight = _straight(cluster, tmp_path, SLOW_REACH, generations, 4)
    out = tmp_path / "run"
    master = cluster.master(*SLOW_REACH, "--generations", str(generations), out=out)
    master.wait_for("master listening at")  # a host that asks before gives up on its first HELLO, which may join once more
    cut, other = network.host(procs=2), network.host(procs=2)
    assert cut.process is not None
    master.wait_for("gen     2")
    joins = master.output.count(f"worker host {cut.name} joined")
    cut.cut()
    try:
        master.wait_for(f"worker host {cut.name} was silent for", timeout=10 * LIVENESS * HEARTBEAT_INTERVAL)
        cut.process.wait_for("was silent for", timeout=10 * LIVENESS * HEARTBEAT_INTERVAL)  # the host's side: it reconnects
    finally:
        cut.restore()
    cut.process.wait_for("reconnected to the master", timeout=60)  # its evaluators and table kept
    _wait_for_count(master, f"worker host {cut.name} joined", joins + 1)
    assert master.wait() == 0, master.output
    _hosts_end_well([cut, other])
    log = records(out)
    assert [r["generation"] for r in log] == list(range(1, generations + 1))
    assert sum(r["hosts_lost"] for r in log) >= 1
    # Its tasks were run by the other host: as tail copies while it was silent, or reissued once it was
    # dropped (every task it held then goes back to the queue and is counted so).
    assert sum(r["tasks_reissued"] + r["tasks_duplicated"] for r in log) > 0
    lost = re.search(rf"worker host {re.escape(cut.name)} was silent for [0-9.]+ s; (\d+) of its tasks go back", master.output)
    assert lost is not None, master.output
    assert sum(r["tasks_reissued"] for r in log) >= int(lost[1])
    rejoined_at = master.output.rindex(f"worker host {cut.name} joined")
    later = [int(number) for number in re.findall(r"gen +(\d+) \|", master.output[rejoined_at:])]
    assert later and max(log[g - 1]["hosts"] for g in later) == 2, "the host rejoined but took no work"
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))


def test_a_reset_in_the_middle_of_a_theta_costs_one_reconnect_at_once(
    cluster: Cluster, network: HostNetwork, tmp_path: Path, large_straight: Path
) -> None:
    out = tmp_path / "run"
    master = cluster.master(*LARGE_THETA_RUN, "--generations", "8", out=out)
    master.wait_for("master listening at")
    victim, other = network.host(), network.host()
    assert victim.process is not None and victim.relay is not None
    master.wait_for("gen     1")
    done = victim.relay.reset_mid_message("THETA")
    assert done.wait(60), "no THETA went to the host after generation 1"
    master_before = len(master.output)  # the host may have rejoined already (it starts over as its connection ends)
    [reset] = victim.relay.resets
    assert reset.size > 200_000 and 0 < reset.forwarded < reset.size, reset
    assert master.wait() == 0, master.output
    _hosts_end_well([victim, other])
    # The host saw its connection end and started over then, not after the liveness:
    assert victim.process.output.count("the connection to the master at") == 1, victim.process.output
    assert "was silent for" not in victim.process.output, victim.process.output
    assert master.output[master_before:].count(f"worker host {victim.name} joined") <= 1, master.output
    np.testing.assert_array_equal(final_theta(out), final_theta(large_straight))


def test_a_stall_shorter_than_the_liveness_loses_no_host(
    cluster: Cluster, network: HostNetwork, tmp_path: Path, large_straight: Path
) -> None:
    out = tmp_path / "run"
    master = cluster.master(*LARGE_THETA_RUN, "--generations", "8", out=out)
    master.wait_for("master listening at")
    stalled, other = network.host(), network.host()
    assert stalled.relay is not None and stalled.process is not None
    master.wait_for("gen     2")
    stalled.relay.stall(LIVENESS * HEARTBEAT_INTERVAL / 2)  # heartbeats then arrive late, but within the liveness
    assert master.wait() == 0, master.output
    _hosts_end_well([stalled, other])
    assert "was silent for" not in master.output and "reconnecting" not in stalled.process.output
    log = records(out)
    assert sum(r["hosts_lost"] for r in log) == 0
    assert sum(r["tasks_duplicated"] for r in log) > 0  # the stall held its tasks long enough for copies to go to the other host
    np.testing.assert_array_equal(final_theta(out), final_theta(large_straight))
