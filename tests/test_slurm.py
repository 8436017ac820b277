"""esfast slurm: the batch script it writes, run with stand-in commands, and real runs on a one-node Slurm cluster.

The cluster (:class:`slurm_cluster.SlurmCluster`) is Debian's slurmctld, slurmd and munged in a
network namespace of its own, every file in the test's temporary directory, stopped by pid when
the tests end, also when they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster import Process, final_theta, listening_addresses, records
from slurm_cluster import CRED_EXPIRE, VETH, SlurmCluster, job_log

from esfast.clusters.slurm import PORT_BASE, PORT_SPAN, SlurmJob, render_script, time_limit_seconds, write_script
from esfast.distributed.keys import make_keys
from esfast.errors import SlurmError

TESTS = Path(__file__).resolve().parent
# CartPole with small batches: a generation takes a fraction of a second on one evaluator.
CARTPOLE = (
    "cartpole",
    "--set",
    "episodes_per_batch=40",
    "--set",
    "hidden_dims=[16]",
    "--set",
    "run.eval_episodes=2",
    "--set",
    "snapshot_freq=0",
)


def esfast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esfast.cli", *args], capture_output=True, text=True, timeout=120, env=env, check=False)


# The script, with stand-in commands ------------------------------------------------------------------

STAND_INS = {
    # Records its arguments; holds (until SIGTERM, then exits as the master does) when asked to.
    "master": """#!/bin/bash
echo "master $*" >> "$CALLS"
if [ -e "$HOLD" ]; then
  trap 'echo "master SIGTERM" >> "$CALLS"; exit 130' TERM
  while :; do sleep 0.05; done
fi
""",
    # Records its arguments; holds (until SIGTERM) when asked to.
    "worker": """#!/bin/bash
echo "worker node $SLURM_NODEID: $*" >> "$CALLS"
if [ -e "$HOLD_WORKERS" ]; then
  trap 'echo "worker node $SLURM_NODEID SIGTERM" >> "$CALLS"; exit 130' TERM
  while :; do sleep 0.05; done
fi
""",
    # srun: skips its options and runs the command once per node, as that node's task; passes
    # SIGTERM on to the tasks.
    "srun": """#!/bin/bash
echo "srun $*" >> "$CALLS"
while [ "${1#--}" != "$1" ]; do shift; done
for node in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do
  SLURM_NODEID=$node SLURM_CPUS_ON_NODE=3 "$@" &
done
trap 'kill -TERM $(jobs -p)' TERM
while [ -n "$(jobs -pr)" ]; do wait; done
""",
    "scancel": """#!/bin/bash
echo "scancel $*" >> "$CALLS"
""",
    "scontrol": """#!/bin/bash
echo "scontrol $*" >> "$CALLS"
if [ "$1" = show ]; then
  printf 'NodeName=%s Arch=x86_64 CoresPerSocket=1\\n   NodeAddr=127.0.0.1 NodeHostName=%s Version=22.05.8\\n' "$3" "$3"
fi
""",
}
JOB_ID = 12345


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A folder of stand-in commands (see STAND_INS)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in STAND_INS.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _job(tmp_path: Path, stand_ins: Path, **settings: object) -> SlurmJob:
    fields: dict[str, object] = {
        "out": tmp_path / "run",
        "new_run": ("cartpole", "--generations", "6", "--set", "hidden_dims=[16]"),
        "nodes": 2,
        "master": str(stand_ins / "master"),
        "worker": str(stand_ins / "worker"),
        **settings,
    }
    return SlurmJob(**fields)  # type: ignore[arg-type]


@contextlib.contextmanager
def _run_script(script: Path, stand_ins: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """The batch script in a session of its own; at the end its whole process group is killed
    (held stand-ins of the master, srun and the workers too), also when the test fails."""
    env = {
        **os.environ,
        "PATH": f"{stand_ins}{os.pathsep}{os.environ['PATH']}",
        "CALLS": str(tmp_path / "calls"),
        "HOLD": str(tmp_path / "hold"),
        "HOLD_WORKERS": str(tmp_path / "hold-workers"),
        "SLURM_JOB_ID": str(JOB_ID),
        "SLURMD_NODENAME": "node1",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "node[1-2]",
    }
    process = subprocess.Popen(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_the_script_starts_a_new_run_with_keys_on_the_port_of_its_job_id(tmp_path: Path, stand_ins: Path) -> None:
    job = _job(tmp_path, stand_ins, keys=tmp_path / "keys")
    with _run_script(write_script(job), stand_ins, tmp_path) as script:
        output, _ = script.communicate(timeout=60)
        assert script.returncode == 0, output
        port = PORT_BASE + JOB_ID % PORT_SPAN
        out, keys = tmp_path / "run", tmp_path / "keys"
        calls = _calls(tmp_path)
        master = f"master cartpole --out {out} --generations 6 --set hidden_dims=[16] --bind tcp://127.0.0.1:{port} --keys {keys}/master"
        assert master in calls, calls
        for node in (0, 1):
            assert f"worker node {node}: --master tcp://127.0.0.1:{port} --procs 3 --keys {keys}/worker-{node + 1}" in calls, calls
        assert any(call.startswith("srun --nodes=2 --ntasks-per-node=1") for call in calls), calls
        assert "scontrol show node node1" in calls and not any("requeue" in call for call in calls)
        assert f"start 1, on node[1-2] starts a new run in {out}; master at tcp://127.0.0.1:{port}" in output
        assert "the master exited with status 0" in output


def test_the_script_resumes_from_the_latest_checkpoint(tmp_path: Path, stand_ins: Path) -> None:
    job = _job(tmp_path, stand_ins)
    (job.out / "checkpoints").mkdir(parents=True)
    (job.out / "checkpoints" / "latest.npz").write_bytes(b"")
    with _run_script(write_script(job), stand_ins, tmp_path) as script:
        output, _ = script.communicate(timeout=60)
        assert script.returncode == 0, output
        port = PORT_BASE + JOB_ID % PORT_SPAN
        calls = _calls(tmp_path)
        assert f"master --resume {job.out} --bind tcp://127.0.0.1:{port}" in calls, calls
        assert f"worker node 1: --master tcp://127.0.0.1:{port} --procs 3" in calls, calls  # no keys: no --keys
        assert "continues the run in" in output


def test_usr1_stops_the_master_and_requeues_the_job(tmp_path: Path, stand_ins: Path) -> None:
    """The batch shell's trap: SIGTERM to the master, wait for it, then scontrol requeue of its own job."""
    (tmp_path / "hold").touch()
    with _run_script(write_script(_job(tmp_path, stand_ins)), stand_ins, tmp_path) as script:
        deadline = time.monotonic() + 30
        while not any(call.startswith("master") for call in _calls(tmp_path)) or len(_calls(tmp_path)) < 5:
            assert time.monotonic() < deadline and script.poll() is None, _calls(tmp_path)
            time.sleep(0.05)
        script.send_signal(signal.SIGUSR1)
        output, _ = script.communicate(timeout=60)
        assert script.returncode == 0, output
        calls = _calls(tmp_path)
        assert "master SIGTERM" in calls and calls[-1] == f"scontrol requeue {JOB_ID}", calls
        assert "the master exited with status 130" in output and f"requeueing job {JOB_ID}" in output


def test_workers_left_running_by_a_master_that_died_are_ended(tmp_path: Path, stand_ins: Path) -> None:
    """A master that ends without a STOP (here: at once, status 1) leaves the workers waiting for it: the
    shell ends their step after the grace period and exits with the master's status."""
    (tmp_path / "hold-workers").touch()
    (stand_ins / "master").write_text('#!/bin/bash\necho "master $*" >> "$CALLS"\nexit 1\n')
    with _run_script(write_script(_job(tmp_path, stand_ins, workers_grace=1)), stand_ins, tmp_path) as script:
        output, _ = script.communicate(timeout=60)
        assert script.returncode == 1, output
        assert "the master exited with status 1" in output and "the workers are still running 1 s after the master; stopping them" in output
        calls = _calls(tmp_path)
        assert f"scancel --signal=TERM {JOB_ID}.0" in calls, calls  # SIGTERM to each worker, on a real cluster
        assert "worker node 0 SIGTERM" in calls and "worker node 1 SIGTERM" in calls, calls  # here: the stand-in srun passes on srun's
        assert not any("requeue" in call for call in calls)


def test_the_sbatch_lines_carry_the_request(tmp_path: Path, stand_ins: Path) -> None:
    text = render_script(
        _job(tmp_path, stand_ins, nodes=3, cpus_per_node=8, time="2:00:00", partition="cpu", sbatch_args=("--mem=8G",), signal_before=300)
    )
    lines = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for expected in (
        "--nodes=3",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--time=2:00:00",
        "--partition=cpu",
        f"--output={tmp_path / 'run'}/slurm-%j.out",
        "--open-mode=append",
        "--requeue",
        "--signal=B:USR1@300",
        "--mem=8G",
    ):
        assert f"#SBATCH {expected}" in lines, lines
    whole_nodes = render_script(_job(tmp_path, stand_ins))
    assert "#SBATCH --exclusive" in whole_nodes and "#SBATCH --cpus-per-task" not in whole_nodes
    # The step asks for the node's CPUs itself: since Slurm 22.05 it does not inherit the job's.
    srun = next(line for line in whole_nodes.splitlines() if line.startswith("srun "))
    assert '--ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_ON_NODE"' in srun


@pytest.mark.parametrize(
    ("limit", "seconds"),
    [
        ("30", 1800),
        ("5:30", 330),
        ("1:02:03", 3723),
        ("2-3", 183600),
        ("1-0:30", 88200),
        ("1-1:01:01", 90061),
        ("UNLIMITED", None),
        ("0", None),
    ],
)
def test_time_limits_in_slurms_formats(limit: str, seconds: int | None) -> None:
    assert time_limit_seconds(limit) == seconds


def test_a_time_limit_in_another_format_is_refused() -> None:
    with pytest.raises(SlurmError, match="not a Slurm time limit"):
        time_limit_seconds("2h")


# The command's checks, before anything is submitted -------------------------------------------------


def test_dry_run_writes_and_prints_the_script_without_slurm(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no sbatch here, and none needed
    out = tmp_path / "run"
    result = esfast("slurm", *CARTPOLE, "--nodes", "2", "--out", str(out), "--generations", "6", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (out / "esfast.sbatch").read_text()
    assert "#SBATCH --nodes=2" in result.stdout and "--generations 6" in result.stdout
    assert f"master_exe={Path(sys.executable).parent / 'esfast-master'}" in result.stdout
    assert result.stderr.strip() == f"wrote {out / 'esfast.sbatch'} (not submitted); submit it with: sbatch {out / 'esfast.sbatch'}"


def test_without_sbatch_the_command_says_so_in_one_line(tmp_path: Path) -> None:
    result = esfast("slurm", "cartpole", "--nodes", "1", "--out", str(tmp_path / "run"), env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("esfast: error: sbatch is not on PATH") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes must be at least 1, got 0"),
        (["--nodes", "1", "--cpus-per-node", "0"], "--cpus-per-node must be at least 1, got 0"),
        (["--nodes", "1", "--time", "2"], "--time 2 leaves no room for the checkpoint signal 120 s before the limit"),
        (["--nodes", "1", "--time", "2h"], "--time '2h' is not a Slurm time limit"),
        (["--nodes", "1", "--sbatch-arg", "mem=8G"], "--sbatch-arg 'mem=8G' is not an sbatch option"),
        (["--nodes", "1", "--sbatch-arg=--output=/tmp/x.out"], "the script sets --output itself (the log goes to the run directory"),
        (["--nodes", "1", "--sbatch-arg=--no-requeue"], "the script sets --no-requeue itself (the job requeues itself)"),
        (["--nodes", "1", "--sbatch-arg=-N2"], "the script sets -N itself (use --nodes)"),
        (["--nodes", "1", "--partition", "cpu gpu"], "--partition 'cpu gpu' is not a partition name"),
        (["--nodes", "1", "--set", "noise_stdev=-1"], "noise_stdev"),
        (["--nodes", "3", "--keys", "KEYS"], "has no worker-3 folder (the job has 3 nodes): make keys for every node with: esfast keys"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    make_keys(tmp_path / "keys", 2)
    args = [str(tmp_path / "keys") if arg == "KEYS" else arg for arg in args]
    result = esfast("slurm", "cartpole", "--out", str(tmp_path / "run"), "--dry-run", *args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("esfast: error: ") and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_run_directory_that_holds_a_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.npz").write_bytes(b"")
    result = esfast("slurm", "cartpole", "--nodes", "1", "--out", str(out), "--dry-run")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"esfast: error: {out} already holds a run; continue it with: sbatch {out}/esfast.sbatch (or choose another --out)"
    )


# On a real one-node Slurm cluster --------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _submit(slurm: SlurmCluster, *args: str) -> str:
    result = slurm.esfast("slurm", *args)
    assert result.returncode == 0, result.stderr
    match = re.match(r"submitted job (\d+): ", result.stdout)
    assert match is not None, result.stdout
    assert f"scancel --batch --signal=USR1 {match.group(1)}" in result.stdout
    return match.group(1)


def test_the_clusters_daemons_listen_only_in_a_namespace_with_no_link_out(slurm: SlurmCluster) -> None:
    for name in ("slurmctld", "slurmd"):
        pid = slurm.processes[name].popen.pid
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"), name
        devices = {line.split(":")[0].strip() for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]}
        assert devices == {"lo", *VETH}, (name, devices)  # the veth pair's two ends are both in the namespace
        assert listening_addresses(pid), name


def test_a_cartpole_run_submitted_with_esfast_slurm_completes(slurm: SlurmCluster, tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", 1)
    out = tmp_path / "run"
    job_id = _submit(slurm, *CARTPOLE, "--nodes", "1", "--keys", str(tmp_path / "keys"), "--out", str(out), "--generations", "3")
    fields = slurm.wait_for(job_id, lambda job: job.get("JobState") == "COMPLETED", "COMPLETED", out, timeout=180)
    assert fields["ExitCode"] == "0:0" and fields["Restarts"] == "0"
    log = job_log(out, job_id)
    assert "CURVE keys: encrypted, listed workers only" in log, log
    assert "the master stopped this worker: the run is over" in log, log
    assert [r["generation"] for r in records(out)] == [1, 2, 3]
    assert all(r["hosts"] == 1 and r["procs"] == slurm.cpus for r in records(out))  # the whole node (--exclusive)

    # The script submitted again continues the run: here one whose budget is spent, so the master
    # ends before its worker has connected, and the script stops the worker (SIGTERM to its step).
    again = slurm.run("sbatch", "--parsable", str(out / "esfast.sbatch"))
    assert again.returncode == 0, again.stderr
    second = again.stdout.strip()
    fields = slurm.wait_for(second, lambda job: job.get("JobState") == "COMPLETED", "COMPLETED", out, timeout=120)
    log = job_log(out, second)
    assert "the run has already spent its budget (generation 3" in log and "the master exited with status 0" in log, log
    if "the master stopped this worker: the run is over" not in log:  # the worker had not connected in time
        assert "stopping them" in log and "esfast-worker: interrupted" in log and "Killed" not in log, log
    assert [r["generation"] for r in records(out)] == [1, 2, 3]


def test_a_signalled_run_requeues_and_ends_with_the_theta_of_an_undisturbed_run(slurm: SlurmCluster, tmp_path: Path) -> None:
    generations = "30"
    out, straight = tmp_path / "run", tmp_path / "straight"
    job_id = _submit(slurm, *CARTPOLE, "--nodes", "1", "--cpus-per-node", "1", "--out", str(out), "--generations", generations)
    undisturbed = Process(
        [sys.executable, "-m", "esfast.cli", "train", *CARTPOLE, "--generations", generations, "--workers", "1", "--out", str(straight)],
        tmp_path / "straight.log",
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "log.jsonl").exists() or len(records(out)) < 2:
            assert time.monotonic() < deadline, job_log(out, job_id)
            assert slurm.job(job_id).get("JobState") in ("PENDING", "RUNNING"), job_log(out, job_id)
            time.sleep(0.1)
        signalled = slurm.run("scancel", "--batch", "--signal=USR1", job_id)
        assert signalled.returncode == 0, signalled.stderr
        slurm.wait_for(job_id, lambda job: job.get("Restarts") == "1", "requeued", out, timeout=60)
        # Slurm holds a requeued job back for cred_expire seconds before it may start again.
        fields = slurm.wait_for(job_id, lambda job: job.get("JobState") == "COMPLETED", "COMPLETED", out, timeout=CRED_EXPIRE + 180)
        assert undisturbed.wait(180) == 0, undisturbed.output
    finally:
        undisturbed.stop()
    log = job_log(out, job_id)
    assert fields["Restarts"] == "1" and fields["ExitCode"] == "0:0", log
    first, second = log.split("start 2,")
    assert "USR1: the master checkpoints and stops" in first and "the master exited with status 130" in first, log
    assert f"requeueing job {job_id}" in first, log
    assert f"continues the run in {out} from its latest checkpoint" in second and "the master exited with status 0" in second, log
    generations_logged = [r["generation"] for r in records(out)]
    assert generations_logged == list(range(1, int(generations) + 1))
    np.testing.assert_array_equal(final_theta(out), final_theta(straight))
