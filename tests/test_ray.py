"""esfast ray (esfast.clusters.ray) on a real Ray cluster on this machine, and its parts without Ray.

The cluster is Ray's own test tooling (``ray.cluster_utils.Cluster``): a head without CPUs and
nodes of one CPU each, every process on 127.0.0.1, with small object stores and no dashboard;
each test removes the nodes it added, and the cluster is shut down when the module ends, also
when a test fails (the nodes' reaper ends them should pytest itself die).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster import CARTPOLE, SLOW_REACH, TESTS, Process, final_theta, free_port, listening_addresses, records

from esfast.clusters.ray import KeyPool, NodeInfo, alive_nodes, check_address, check_keys_directory, master_endpoint
from esfast.distributed.keys import make_keys
from esfast.errors import KeysError, RayClusterError

ESFAST = "import sys; from esfast.cli import main; sys.exit(main())"
OBJECT_STORE = 80 * 1024 * 1024  # bytes per node: esfast sends nothing through it (Ray's minimum is 75 MiB)
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": OBJECT_STORE}
GENERATIONS = "10"  # SlowReach: 13 episodes of 0.2 s a generation, so nodes come and go mid-run


def esfast(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", ESFAST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esfast: error: "), result.stderr
    return lines[0]


# Without Ray -------------------------------------------------------------------------------


def test_esfast_and_its_cli_do_not_import_ray() -> None:
    code = "import sys, esfast, esfast.cli, esfast.clusters.ray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_ray_installed_esfast_ray_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    (tmp_path / "ray.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    result = esfast("ray", "--address", "auto", "--env", "CartPole-v1", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{TESTS}"})
    assert "pip install 'esfast[ray]'" in one_line_error(result)


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ray://10.0.0.1:10001", "Ray Client (ray://) is not supported"),
        ("nowhere", "--address must be auto or the cluster's HOST:PORT"),
        ("10.0.0.1:99999", "--address must be auto or the cluster's HOST:PORT"),
        (None, "cannot reach the Ray cluster at 127.0.0.1:"),  # a free port: nothing listens
    ],
)
def test_a_bad_address_is_one_line(address: str | None, says: str) -> None:
    result = esfast("ray", "--address", address or f"127.0.0.1:{free_port()}", "--env", "CartPole-v1")
    assert says in one_line_error(result)


def test_a_bad_port_or_keys_folder_is_one_line_before_ray_is_reached(tmp_path: Path) -> None:
    assert "--port must be 0 to 65535, got 70000" in one_line_error(esfast("ray", "--address", "auto", "--port", "70000"))
    make_keys(tmp_path, 1)
    result = esfast("ray", "--address", "auto", "--keys", str(tmp_path / "master"))
    assert "esfast ray takes the whole folder esfast keys made" in one_line_error(result)


def test_check_address_takes_auto_and_host_port() -> None:
    assert check_address("auto") == "auto"
    assert check_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert check_address("[::1]:6379") == "[::1]:6379"
    for bad in ("", ":6379", "10.0.0.1", "10.0.0.1:0", "ray://10.0.0.1:10001", "10.0.0.1:port"):
        with pytest.raises(RayClusterError):
            check_address(bad)


def test_master_endpoint_brackets_ipv6() -> None:
    assert master_endpoint("10.0.0.1", 5555) == "tcp://10.0.0.1:5555"
    assert master_endpoint("::1", 0) == "tcp://[::1]:0"


def test_alive_nodes_are_the_live_ones_with_a_whole_cpu() -> None:
    table = [
        {"NodeID": "bb", "Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0, "memory": 1e9}},
        {"NodeID": "aa", "Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 2.5}},
        {"NodeID": "cc", "Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 4.0}},
        {"NodeID": "dd", "Alive": True, "NodeManagerAddress": "10.0.0.4", "Resources": {"CPU": 0.5}},
        {"NodeID": "ee", "Alive": True, "NodeManagerAddress": "10.0.0.5", "Resources": {"GPU": 1.0}},
    ]
    nodes = alive_nodes(table)
    assert nodes == [NodeInfo("aa", "10.0.0.1", 2.5), NodeInfo("bb", "10.0.0.2", 8.0)]
    assert [node.procs for node in nodes] == [2, 8]  # the actor holds all 2.5 CPUs, the host runs 2 evaluators


def test_the_key_pool_lends_the_lowest_free_folder_and_takes_it_back(tmp_path: Path) -> None:
    make_keys(tmp_path, 2)
    pool = KeyPool(tmp_path)
    assert pool.take("a") == tmp_path / "worker-1"
    assert pool.take("b") == tmp_path / "worker-2"
    assert pool.take("a") == tmp_path / "worker-1"  # a node keeps its folder
    assert pool.take("c") is None  # every folder is lent: no two hosts share a key
    assert pool.release("a") == tmp_path / "worker-1"
    assert pool.take("c") == tmp_path / "worker-1"  # a node that joins takes the folder a lost one gave back
    make_keys(tmp_path, 3)  # folders added while the run goes on are lent too
    assert pool.take("d") == tmp_path / "worker-3"
    assert pool.release("nobody") is None and pool.size() == 3


def test_keys_take_the_whole_folder_esfast_keys_made(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", 1)
    assert check_keys_directory(tmp_path / "keys") == tmp_path / "keys" / "master"
    for wrong, says in [
        (tmp_path / "keys" / "master", "takes the whole folder"),
        (tmp_path / "keys" / "worker-1", "takes the whole folder"),
        (tmp_path / "empty", "no master/ folder"),
    ]:
        wrong.mkdir(exist_ok=True)
        with pytest.raises(KeysError, match=says):
            check_keys_directory(wrong)
    shutil.rmtree(tmp_path / "keys" / "worker-1")
    with pytest.raises(KeysError, match="no worker-K folders"):
        check_keys_directory(tmp_path / "keys")


# On a real Ray cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A Ray head on 127.0.0.1 with no CPUs (so it runs no worker host), for the tests to add nodes to."""
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    # The nodes' processes start with this environment: no usage reports, and the test
    # environments (custom_envs) importable by the worker hosts Ray's actors start.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray turns 127.0.0.1 into this machine's network address (ray.init, its services' own
    # addresses) unless its multi-machine switch is off, which makes that address loopback: so
    # every connection of the cluster and its drivers stays on 127.0.0.1.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved.get("PYTHONPATH")]))
    temp = tempfile.mkdtemp(prefix="esray-", dir="/tmp")  # short: Ray's socket paths live below it
    os.environ["RAY_TMPDIR"] = temp  # Ray's sessions and its address file, for this cluster and its drivers
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False},
        )
        yield cluster
    finally:
        try:
            if cluster is not None:
                cluster.shutdown()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def nodes(ray_cluster: Any) -> Iterator[list[Any]]:
    """The nodes a test adds (to this list); those still there are removed when it ends."""
    added: list[Any] = []
    try:
        yield added
    finally:
        for node in added:
            if node in ray_cluster.worker_nodes:
                ray_cluster.remove_node(node)


def add_node(ray_cluster: Any, nodes: list[Any]) -> Any:
    node = ray_cluster.add_node(**NODE)  # in the head's temporary folder
    nodes.append(node)
    return node


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local run: esfast train with the Ray runs' config, seed and generations."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = esfast("train", *SLOW_REACH, "--generations", GENERATIONS, "--workers", "2", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def driver(tmp_path: Path, ray_cluster: Any, *args: str, name: str = "driver") -> Process:
    return Process([sys.executable, "-c", ESFAST, "ray", *args, "--address", ray_cluster.address, "--port", "0"], tmp_path / f"{name}.log")


def endpoint(process: Process) -> str:
    process.wait_for("master listening at ")
    found = re.search(r"master listening at (tcp://\S+?)[;\s]", process.output)
    assert found, process.output
    return found.group(1)


def hosts_of(master: str) -> list[int]:
    """The pids of worker hosts connected (by command line) to ``master``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            words = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        if b"esfast.distributed.host" in words and master.encode() in words:
            found.append(int(proc.name))
    return found


def wait_until_no_hosts(master: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while hosts_of(master):
        assert time.monotonic() < deadline, f"worker hosts of {master} still running: {hosts_of(master)}"
        time.sleep(0.2)


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them (by the parent pids in /proc)."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_bytes() if proc.name.isdigit() else b""
        except OSError:  # exited meanwhile
            continue
        if stat:
            parents[int(proc.name)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
    found = set(pids)
    while grown := {pid for pid, parent in parents.items() if parent in found and pid not in found}:
        found |= grown
    return found


def assert_listens_on_loopback_only(ray_cluster: Any) -> set[str]:
    """Checks that every process of the cluster's nodes and below them (its workers and actors)
    listens on loopback addresses only; returns the names of those that listen."""
    nodes = [ray_cluster.head_node, *ray_cluster.worker_nodes]
    started = {process.pid for node in nodes for _kind, process in node.live_processes()}
    listening = {}
    for pid in _descendants(started):
        with contextlib.suppress(OSError):  # exited meanwhile
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            listening[name] = listening.get(name, set()) | {address for address, _port in listening_addresses(pid)}
    for name, addresses in listening.items():
        for address in addresses:
            parsed = ipaddress.ip_address(address)
            assert (getattr(parsed, "ipv4_mapped", None) or parsed).is_loopback, (name, address)
    return {name for name, addresses in listening.items() if addresses}


def test_the_clusters_processes_listen_on_the_loopback_address_only(ray_cluster: Any, nodes: list[Any]) -> None:
    add_node(ray_cluster, nodes)
    listening = assert_listens_on_loopback_only(ray_cluster)
    assert any("gcs_server" in name for name in listening) and any("raylet" in name for name in listening), listening


def test_a_cluster_without_a_node_with_cpus_is_one_line(ray_cluster: Any) -> None:
    result = esfast("ray", "--address", ray_cluster.address, "--env", "CartPole-v1", "--generations", "1")
    assert "has no alive node with a CPU (1 alive node)" in one_line_error(result)


def test_nodes_that_leave_and_join_mid_run_keep_the_local_theta(tmp_path: Path, ray_cluster: Any, nodes: list[Any], straight: Path) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 2)  # two nodes at a time: the node that joins takes the key the lost one gave back
    key_copies = set(Path(tempfile.gettempdir()).glob("esfast-worker-*"))
    first, second = add_node(ray_cluster, nodes), add_node(ray_cluster, nodes)
    out = tmp_path / "run"
    run = driver(tmp_path, ray_cluster, *SLOW_REACH, "--generations", GENERATIONS, "--keys", str(keys), "--out", str(out))
    try:
        master = endpoint(run)
        run.wait_for("(2 hosts connected)", timeout=120)
        run.wait_for("gen     2", timeout=120)
        assert any("NodeWorker" in name for name in assert_listens_on_loopback_only(ray_cluster))  # the actors too
        ray_cluster.remove_node(first)
        run.wait_for("left the cluster", timeout=60)
        third = add_node(ray_cluster, nodes)
        assert run.wait(timeout=300) == 0, run.output
    finally:
        run.stop()
    log = records(out)
    assert [r["generation"] for r in log] == list(range(1, int(GENERATIONS) + 1))
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))
    assert log[-1]["hosts"] == 2 and log[-1]["hosts_total"] >= 3, [(r["hosts"], r["hosts_total"]) for r in log]

    def key_of(node: Any) -> str:
        found = re.findall(
            rf"\({node.node_id[:8]}\): starting a worker host with 1 evaluator process and the keys of (worker-\d)", run.output
        )
        assert len(found) == 1, run.output
        return str(found[0])

    assert {key_of(first), key_of(second)} == {"worker-1", "worker-2"}
    assert key_of(third) == key_of(first)
    assert f"Ray node 127.0.0.1 ({first.node_id[:8]}) left the cluster" in run.output
    wait_until_no_hosts(master)  # every host ended with the run
    # The nodes' copies of the keys went as their hosts had read them, that of the removed node too.
    assert set(Path(tempfile.gettempdir()).glob("esfast-worker-*")) <= key_copies


def test_a_lost_driver_ends_its_hosts_and_the_run_resumes(tmp_path: Path, ray_cluster: Any, nodes: list[Any], straight: Path) -> None:
    add_node(ray_cluster, nodes)
    add_node(ray_cluster, nodes)
    out = tmp_path / "run"
    lost = driver(tmp_path, ray_cluster, *SLOW_REACH, "--generations", GENERATIONS, "--out", str(out), name="lost")
    try:
        master = endpoint(lost)
        lost.wait_for("gen     3", timeout=120)
        lost.signal(signal.SIGKILL)  # no checkpoint beyond the last generation, no STOP to the hosts
        lost.wait()
        wait_until_no_hosts(master)  # Ray ends the actors of a driver that is gone, and their hosts with them
    finally:
        lost.stop()
    resumed = driver(tmp_path, ray_cluster, "--resume", str(out), "--generations", GENERATIONS, name="resumed")
    try:
        assert resumed.wait(timeout=300) == 0, resumed.output
    finally:
        resumed.stop()
    generations = [r["generation"] for r in records(out)]
    assert generations[-1] == int(GENERATIONS) and sorted(set(generations)) == list(range(1, int(GENERATIONS) + 1))
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))


def test_a_host_refused_for_its_key_starts_again_and_joins_once_the_key_is_listed(
    tmp_path: Path, ray_cluster: Any, nodes: list[Any]
) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 2)
    listed = keys / "master" / "authorized" / "worker-1.key"
    listed.unlink()  # the pool lends worker-1 first, which the master does not list (yet)
    add_node(ray_cluster, nodes)
    out = tmp_path / "run"
    run = driver(tmp_path, ray_cluster, *CARTPOLE, "--generations", "2", "--keys", str(keys), "--out", str(out))
    try:
        run.wait_for("its worker host exited with status 2: ", timeout=120)
        assert "does not accept this worker's key" in run.output
        run.wait_for("a new worker host starts in 5 s")
        shutil.copyfile(keys / "worker-1" / "worker.key", listed)  # the master reads its authorized folder again
        assert run.wait(timeout=180) == 0, run.output
    finally:
        run.stop()
    assert "(key worker-1) joined" in run.output
    assert [r["generation"] for r in records(out)] == [1, 2]
