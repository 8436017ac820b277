"""A real one-node Slurm cluster for the tests, in a network namespace of its own.

:class:`SlurmCluster` starts Debian's munged, slurmctld and slurmd as child processes with every
file in the test's temporary directory (configuration, munge key and socket, state, spool, logs),
inside a network namespace it makes (``ip netns add``) with no link out of it: the daemons listen
on every address of that namespace (its loopback, and a veth pair whose two ends are both inside),
so nothing of the cluster is reachable from outside, whatever this machine's name resolves to. Clients
(``sbatch``, ``scontrol``, the ``esfast slurm`` command) run in the same namespace through
:meth:`SlurmCluster.command` (``nsenter --net``). :meth:`SlurmCluster.stop` cancels the jobs left, stops the daemons by
pid, ends any process left in the namespace and deletes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster import Process

TESTS = Path(__file__).resolve().parent
SLURM_PACKAGES = "slurmctld slurmd slurm-client munge"
SLURM_COMMANDS = ("slurmctld", "slurmd", "munged", "mungekey", "sbatch", "srun", "scontrol", "squeue", "scancel")
# How long a requeued job waits before it may start again: Slurm's AuthInfo cred_expire
# (slurm.conf(5): "This also controls how long a requeued job must wait before starting again").
CRED_EXPIRE = 10
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")
NAMESPACE_PREFIX = "esfast-slurm-"
VETH = ("slurm0", "slurm1")  # both ends in the cluster's namespace
INSIDE_ADDRESS = "198.18.0.1/30"  # of slurm0: a benchmarking range (RFC 2544), reachable from nowhere


class SlurmCluster:
    """munged, slurmctld and slurmd of one node (this machine, at 127.0.0.1 of the cluster's own
    network namespace), all files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        missing = [name for name in SLURM_COMMANDS if shutil.which(name, path=f"{os.environ['PATH']}:/usr/sbin:/sbin") is None]
        if missing:
            pytest.fail(f"Slurm is not installed here (no {', '.join(missing)}): apt-get install {SLURM_PACKAGES} (bash .ci/run does)")
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
            pytest.fail("the Slurm tests run the cluster in a network namespace: they need root, ip and nsenter (iproute2, util-linux)")
        self.namespace = f"{NAMESPACE_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        self.namespace_made = False
        self.directory = directory
        self.processes: dict[str, Process] = {}  # by name, in the order started
        self.node = socket.gethostname().split(".")[0]
        self.cpus = len(os.sched_getaffinity(0))
        self.conf = directory / "slurm.conf"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        }
        for folder in ("munge", "state", "spool", "log"):
            (directory / folder).mkdir(mode=0o700)
        self.munge_socket = directory / "munge" / "munge.socket.2"

    def command(self, *args: str) -> list[str]:
        """``args`` as a command that runs in the cluster's network namespace."""
        # nsenter, not ip netns exec: that one mounts a new /sys, without the cgroup file system slurmd reads.
        return ["nsenter", f"--net=/run/netns/{self.namespace}", *args]

    def start(self) -> None:
        delete_abandoned_namespaces()
        subprocess.run(["ip", "netns", "add", self.namespace], check=True, capture_output=True)
        self.namespace_made = True
        # The loopback, and a veth pair with both ends inside, whose address only makes getaddrinfo's
        # AI_ADDRCONFIG (with which the daemons look up the address to listen on) find IPv4 configured.
        for setup in (
            ("link", "set", "lo", "up"),
            ("link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1]),
            ("addr", "add", INSIDE_ADDRESS, "dev", VETH[0]),
            ("link", "set", VETH[0], "up"),
            ("link", "set", VETH[1], "up"),
        ):
            subprocess.run(["ip", "-n", self.namespace, *setup], check=True, capture_output=True)
        munge = self.directory / "munge"
        key = munge / "munge.key"
        subprocess.run([self._sbin("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
        self._daemon(
            "munged",
            "--foreground",
            "--force",  # its socket is in a folder only root may enter (the test's): the clients are root's
            "--socket",
            str(self.munge_socket),
            "--key-file",
            str(key),
            "--pid-file",
            str(munge / "munged.pid"),
            "--log-file",
            str(self.directory / "log" / "munged.log"),
            "--seed-file",
            str(munge / "munged.seed"),
        )
        self._wait(self.munge_socket.exists, "munged's socket", self._daemon_logs)
        self.conf.write_text(self._configuration())
        self._daemon("slurmctld", "-D", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf))  # the node named after this machine
        self._wait(lambda: self._node_state() in ("IDLE", "IDLE+DYNAMIC"), f"node {self.node} to be idle", self._daemon_logs)

    def _configuration(self) -> str:
        directory = self.directory
        return f"""# A one-node cluster for esfast's tests: everything under {directory}.
ClusterName=esfast-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE}
StateSaveLocation={directory / "state"}
SlurmdSpoolDir={directory / "spool"}
SlurmctldPidFile={directory / "slurmctld.pid"}
SlurmdPidFile={directory / "slurmd.pid"}
SlurmctldLogFile={directory / "log" / "slurmctld.log"}
SlurmdLogFile={directory / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
MpiDefault=none
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=10
FirstJobId={1 + int.from_bytes(os.urandom(2), "little")}
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=2048 State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    @staticmethod
    def _sbin(name: str) -> str:
        found = shutil.which(name, path=f"{os.environ['PATH']}:/usr/sbin:/sbin")
        assert found is not None
        return found

    def _daemon(self, name: str, *args: str) -> None:
        # nsenter execs the daemon: the process started is the daemon, stopped by its pid.
        self.processes[name] = Process(self.command(self._sbin(name), *args), self.directory / "log" / f"{name}.out")

    def _daemon_logs(self) -> str:
        return "\n".join(
            f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}" for path in sorted((self.directory / "log").iterdir())
        )

    def _wait(self, ready: Callable[[], bool], what: str, logs: Callable[[], str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.popen.poll() is not None:
                    raise AssertionError(f"{name} exited ({process.popen.returncode}) while waiting for {what}:\n{logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{logs()}")
            time.sleep(0.2)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A client command (``sbatch``, ``scontrol``, ...) of the cluster, run to its end."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, env=self.env, check=False)

    def esfast(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``esfast ARGS`` run where the cluster's clients run."""
        return self.run(sys.executable, "-m", "esfast.cli", *args, timeout=120)

    def _node_state(self) -> str:
        return self.run("sinfo", "--noheader", "--nodes", self.node, "--format", "%T").stdout.strip().upper()

    def job(self, job_id: str) -> dict[str, str]:
        """The job's fields, as ``scontrol show job`` prints them (empty: not known)."""
        text = self.run("scontrol", "--oneliner", "show", "job", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait_for(self, job_id: str, done: Callable[[dict[str, str]], bool], what: str, out: Path, timeout: float) -> dict[str, str]:
        """Waits until ``done(fields)``, failing at once if the job ends otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if done(fields):
                return fields
            if fields.get("JobState") in FINISHED or time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} {fields.get('JobState')}, not {what}:\n{job_log(out, job_id)}\n{self._daemon_logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancels the jobs left, waits for them to leave the node, then stops the daemons by pid."""
        try:
            jobs = self.run("squeue", "--noheader", "--format", "%i").stdout.split() if "slurmctld" in self.processes else []
            if jobs:
                self.run("scancel", *jobs)
            deadline = time.monotonic() + 60
            while jobs and time.monotonic() < deadline:  # pending, running or completing
                jobs = self.run("squeue", "--noheader", "--format", "%i").stdout.split()
                time.sleep(0.5)
        finally:
            try:
                for process in reversed(self.processes.values()):  # slurmd, slurmctld, munged
                    process.stop()
            finally:
                self._delete_namespace()

    def _delete_namespace(self) -> None:
        if self.namespace_made:
            delete_namespace(self.namespace)
            self.namespace_made = False


def delete_namespace(namespace: str) -> None:
    """Ends every process in ``namespace`` (SIGKILL, again until none is left: a job step may fork
    meanwhile) and deletes it.

    Raises:
        AssertionError: processes still there after 10 s, or ``ip netns del`` failed.
    """
    deadline = time.monotonic() + 10
    while pids := subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split():
        assert time.monotonic() < deadline, f"processes {pids} of namespace {namespace} did not end"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)
    deleted = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, text=True)
    assert deleted.returncode == 0, f"ip netns del {namespace}: {deleted.stderr.strip()}"


def delete_abandoned_namespaces() -> None:
    """Deletes the namespaces of earlier test sessions that were killed before they could (their
    pytest, whose pid the name holds, no longer runs), with the daemons still in them."""
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(NAMESPACE_PREFIX) :].split("-")[0]
        if name.startswith(NAMESPACE_PREFIX) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            delete_namespace(name)


def job_log(out: Path, job_id: str) -> str:
    log = out / f"slurm-{job_id}.out"
    return log.read_text(errors="replace") if log.exists() else f"(no {log})"
