"""``esfast slurm``: a run as one Slurm batch job, its master on the first node and a worker host on every node.

The job is a script written into the run directory (``DIR/esfast.sbatch``) and submitted with
``sbatch --parsable``; submitting the same script again continues the run. What the script does:

- The batch shell runs on the job's first node. It starts ``esfast-master`` there in the
  background, a new run, or ``--resume DIR`` when ``DIR/checkpoints/latest.npz`` exists (a
  requeued job, a resubmitted script), and waits for it in a loop, so the shell's traps run while
  the master works.
- One ``srun`` step starts one ``esfast-worker`` per node (``--ntasks-per-node=1``), with as many
  evaluator processes as the node gives the step (``$SLURM_CPUS_ON_NODE``); with keys, the worker
  of node k (``$SLURM_NODEID`` = k - 1) reads ``KEYS/worker-k`` and the master ``KEYS/master``.
- The master listens on ``PORT_BASE + job id mod PORT_SPAN`` (a requeued job keeps its port, jobs
  that share a node differ) at the first node's IPv4 address, as Slurm reaches the node (its
  ``NodeAddr``); the workers connect there.
- ``#SBATCH --requeue --signal=B:USR1@S``: S seconds before the time limit Slurm sends USR1 to
  the batch shell alone. The trap sends SIGTERM to the master, which stops after checkpointing
  its last completed generation and stops the workers; the shell then runs ``scontrol requeue``
  on its own job, whose next start resumes from that checkpoint. ``scancel --batch --signal=USR1
  JOBID`` does the same at once.
- SIGTERM from Slurm (time limit, ``scancel``, preemption) reaches every process of the job: the
  master checkpoints and stops by itself and the shell waits for it. When the master has ended,
  the workers end on its ``STOP``; workers still running ``WORKERS_GRACE`` seconds later (a master
  that sent none) get SIGTERM, and the shell exits with the master's status.

The run directory must be on storage every node sees: a requeued job may start on other nodes.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from esfast.config import apply_overrides, resolve_config
from esfast.distributed.keys import MASTER_DIR, load_master_keys, load_worker_keys
from esfast.errors import KeysError, RunExistsError, SlurmError
from esfast.run_directory import default_run_path
from esfast.run_options import add_run_options

__all__ = [
    "PORT_BASE",
    "PORT_SPAN",
    "SCRIPT_NAME",
    "SIGNAL_BEFORE",
    "SlurmJob",
    "add_arguments",
    "check_job",
    "job_from_args",
    "render_script",
    "require_sbatch",
    "submit",
    "time_limit_seconds",
    "write_script",
]

SCRIPT_NAME = "esfast.sbatch"
PORT_BASE = 10000  # the master's port is PORT_BASE + job id mod PORT_SPAN: below Linux's ephemeral ports
PORT_SPAN = 20000
SIGNAL_BEFORE = 120  # seconds before the time limit at which the batch shell gets USR1 (checkpoint, requeue)
SIGNAL_SLACK = 60  # Slurm may send that signal up to this much earlier than asked (sbatch(1), --signal)
WORKERS_GRACE = 10  # seconds the workers get to end after the master (its STOP takes well under one), then after a SIGTERM
SBATCH_TIMEOUT = 120.0  # seconds sbatch may take to answer
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


@dataclass(frozen=True)
class SlurmJob:
    """One batch job's settings, as :func:`render_script` writes them.

    Attributes:
        out: the run directory (absolute; on storage every node sees); the script, the job's log
            (``slurm-JOBID.out``) and the run's files go there.
        new_run: ``esfast-master`` arguments of a new run, without ``--out``, ``--bind`` and
            ``--keys`` (a config, then options such as ``--generations 6``); a start that finds a
            checkpoint runs ``--resume`` instead.
        nodes: nodes of the job, one worker host on each.
        cpus_per_node: CPUs to ask for on each node; None: whole nodes (``--exclusive``).
        time: the time limit, in sbatch's ``--time`` format; None: the partition's default.
        partition: None: the cluster's default partition.
        sbatch_args: more sbatch options, one ``#SBATCH`` line each, e.g. ``--mem=8G``.
        keys: the folder of ``esfast keys DIR --workers N`` (N at least ``nodes``), or None.
        name: the job's name.
        signal_before: seconds before the time limit at which the master checkpoints and the job
            requeues itself.
        master, worker: the ``esfast-master`` and ``esfast-worker`` commands as the nodes run them.
        workers_grace: seconds the workers get to end after the master, before their step is ended.
    """

    out: Path
    new_run: tuple[str, ...]
    nodes: int
    cpus_per_node: int | None = None
    time: str | None = None
    partition: str | None = None
    sbatch_args: tuple[str, ...] = ()
    keys: Path | None = None
    name: str = "esfast"
    signal_before: int = SIGNAL_BEFORE
    master: str = "esfast-master"
    worker: str = "esfast-worker"
    workers_grace: int = WORKERS_GRACE

    @property
    def script(self) -> Path:
        """Where the batch script goes: ``out/esfast.sbatch``."""
        return self.out / SCRIPT_NAME

    def log(self, job_id: str) -> Path:
        """The job's log (standard output and error of the batch shell, the master and the workers)."""
        return self.out / f"slurm-{job_id}.out"


def time_limit_seconds(limit: str) -> int | None:
    """Seconds of a time limit in sbatch's formats: ``minutes``, ``minutes:seconds``,
    ``hours:minutes:seconds``, ``days-hours``, ``days-hours:minutes``, ``days-hours:minutes:seconds``.

    Returns:
        The seconds, or None for no limit (``UNLIMITED``, ``INFINITE``, or 0, as sbatch(1) reads it).

    Raises:
        SlurmError: another format.
    """
    if limit.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = _TIME.fullmatch(limit)
    if match is None:
        raise SlurmError(
            f"--time {limit!r} is not a Slurm time limit (minutes, minutes:seconds, hours:minutes:seconds, days-hours, "
            "days-hours:minutes or days-hours:minutes:seconds)"
        )
    days, first, second, third = match.groups()
    if days is not None:  # days-hours[:minutes[:seconds]]
        return ((int(days) * 24 + int(first)) * 60 + int(second or 0)) * 60 + int(third or 0)
    if third is not None:  # hours:minutes:seconds
        return (int(first) * 60 + int(second)) * 60 + int(third)
    if second is not None:  # minutes:seconds
        return int(first) * 60 + int(second)
    return int(first) * 60 or None  # minutes; 0: no limit


def check_job(job: SlurmJob) -> None:
    """Checks that a job's settings fit together, before anything is written or submitted.

    Raises:
        SlurmError: a count below 1, a time limit too short for the checkpoint signal, a run
            directory sbatch cannot name, a malformed partition name or sbatch option.
        KeysError: a keys folder without the master's keys or without worker keys for every node.
    """
    if job.nodes < 1:
        raise SlurmError(f"--nodes must be at least 1, got {job.nodes}")
    if job.cpus_per_node is not None and job.cpus_per_node < 1:
        raise SlurmError(f"--cpus-per-node must be at least 1, got {job.cpus_per_node}")
    if job.signal_before < 0:
        raise SlurmError(f"--signal-before must be at least 0 seconds, got {job.signal_before}")
    if job.time is not None:
        limit = time_limit_seconds(job.time)
        if limit is not None and limit <= job.signal_before + SIGNAL_SLACK:
            raise SlurmError(
                f"--time {job.time} leaves no room for the checkpoint signal {job.signal_before} s before the limit (which Slurm may "
                f"send up to {SIGNAL_SLACK} s early): ask for more than {job.signal_before + SIGNAL_SLACK} s or a smaller --signal-before"
            )
    if re.search(r"[\s%\\]", str(job.out)):
        raise SlurmError(
            f"the run directory {str(job.out)!r} holds a space, % or \\, which #SBATCH --output cannot name: choose another --out"
        )
    if job.partition is not None and (not job.partition or re.search(r"\s", job.partition)):
        raise SlurmError(f"--partition {job.partition!r} is not a partition name (a word, or several joined by commas)")
    for argument in job.sbatch_args:
        if not argument.startswith("-") or "\n" in argument:
            raise SlurmError(f"--sbatch-arg {argument!r} is not an sbatch option (write it as --sbatch-arg=--mem=8G)")
        name = argument.split("=", 1)[0] if argument.startswith("--") else argument[:2]
        if name in _SCRIPT_OPTIONS:
            raise SlurmError(f"--sbatch-arg {argument!r}: the script sets {name} itself ({_SCRIPT_OPTIONS[name]})")
    if job.keys is not None:
        _check_keys(job.keys, job.nodes)


def _check_keys(keys: Path, nodes: int) -> None:
    """Loads the master's keys and those of the workers of nodes 1 to ``nodes`` once, as the job will."""
    make = f"make keys for every node with: esfast keys {keys} --workers {nodes}"
    folders = [keys / MASTER_DIR, *(keys / f"worker-{node}" for node in range(1, nodes + 1))]
    for folder in folders:
        if not folder.is_dir():
            raise KeysError(f"{keys} has no {folder.name} folder (the job has {nodes} node{'s' if nodes > 1 else ''}): {make}")
    load_master_keys(folders[0])
    for folder in folders[1:]:
        load_worker_keys(folder)


def _sbatch_lines(job: SlurmJob) -> list[str]:
    lines = [
        f"--job-name={job.name}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job.cpus_per_node}" if job.cpus_per_node is not None else "--exclusive",
    ]
    if job.time is not None:
        lines.append(f"--time={job.time}")
    if job.partition is not None:
        lines.append(f"--partition={job.partition}")
    lines += [
        f"--output={job.out}/slurm-%j.out",
        "--open-mode=append",  # a requeued job's log goes on after its earlier starts'
        "--requeue",
        f"--signal=B:USR1@{job.signal_before}",
        *job.sbatch_args,
    ]
    return [f"#SBATCH {line}" for line in lines]


# The part of the script that does not depend on the job: it reads the variables set above it.
_BODY = r"""
export PYTHONUNBUFFERED=1  # progress lines reach the job's log as they are printed

# The master's port, from the job id: a requeued job keeps it, jobs that share a node differ.
port=$((port_base + SLURM_JOB_ID % port_span))
# Its address: this (the first) node's, as Slurm reaches the node (NodeAddr), as an IPv4 address.
node_addr=$(scontrol show node "$SLURMD_NODENAME" 2>/dev/null | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
address=$(getent ahostsv4 "${node_addr:-$SLURMD_NODENAME}" | awk 'NR == 1 { print $1 }')
if [ -z "$address" ]; then
  echo "esfast: error: no IPv4 address for node $SLURMD_NODENAME (NodeAddr ${node_addr:-unknown})" >&2
  exit 2
fi
master_address="tcp://$address:$port"

if [ -e "$out/checkpoints/latest.npz" ]; then
  run=(--resume "$out")
  what="continues the run in $out from its latest checkpoint"
else
  run=("${new_run[@]}")
  what="starts a new run in $out"
fi
master_keys=()
if [ -n "$keys" ]; then
  master_keys=(--keys "$keys/master")
fi
echo "esfast: job $SLURM_JOB_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)), on $SLURM_JOB_NODELIST $what; master at $master_address"

master=
requeue=0
on_usr1() {
  echo "esfast: USR1: the master checkpoints and stops, then the job requeues itself"
  requeue=1
  if [ -n "$master" ]; then
    kill -TERM "$master" 2>/dev/null
  fi
}
trap on_usr1 USR1
# Slurm sends SIGTERM to every process of the job (time limit, scancel, preemption): the master
# checkpoints and stops by itself, and this shell waits for it.
trap 'echo "esfast: SIGTERM: the master checkpoints and stops"' TERM

"$master_exe" "${run[@]}" --bind "$master_address" "${master_keys[@]}" &
master=$!
if [ "$requeue" = 1 ]; then  # USR1 came before the master had started
  kill -TERM "$master"
fi

# One worker host per node, with the CPUs the node gives the job (asked for explicitly: since
# Slurm 22.05 a step does not inherit the job's --cpus-per-task, and where tasks are bound to
# their CPUs a step task of one CPU would crowd every evaluator onto it); node k (SLURM_NODEID k - 1)
# uses the keys of worker-k. --no-kill: a job that keeps its other nodes when one fails (sbatch
# --no-kill) keeps their workers too.
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_ON_NODE" --kill-on-bad-exit=0 --no-kill --label \
  bash -c 'exec "$0" --master "$1" --procs "$SLURM_CPUS_ON_NODE" ${2:+--keys "$2/worker-$((SLURM_NODEID + 1))"}' \
  "$worker_exe" "$master_address" "$keys" &
workers=$!

# wait returns when a trapped signal arrives: wait again until the master has ended.
while kill -0 "$master" 2>/dev/null; do
  wait "$master"
done
wait "$master"
status=$?
echo "esfast: the master exited with status $status"

# The master's STOP ends the workers. A master that sent none (it died, or it ended before they had
# connected) leaves them waiting for it: SIGTERM to their step (the script's only one, step 0), on
# which each says BYE and frees its shared memory; then srun ends the step (SIGKILL).
workers_end_within() {  # workers_end_within SECONDS: whether the workers' step ends within them
  local waited=0
  while kill -0 "$workers" 2>/dev/null && [ "$waited" -lt "$1" ]; do
    sleep 1
    waited=$((waited + 1))
  done
  ! kill -0 "$workers" 2>/dev/null
}
if ! workers_end_within "$workers_grace"; then
  echo "esfast: the workers are still running $workers_grace s after the master; stopping them"
  scancel --signal=TERM "$SLURM_JOB_ID.0"
  if ! workers_end_within "$workers_grace"; then
    kill -TERM "$workers"
  fi
fi
wait "$workers"

if [ "$requeue" = 1 ] && [ "$status" -ne 0 ]; then
  echo "esfast: requeueing job $SLURM_JOB_ID: its next start continues from $out/checkpoints/latest.npz"
  if scontrol requeue "$SLURM_JOB_ID"; then
    exit 0
  fi
  echo "esfast: error: scontrol requeue $SLURM_JOB_ID failed; continue the run with: sbatch $script" >&2
fi
exit "$status"
"""


def render_script(job: SlurmJob) -> str:
    """The batch script of ``job`` (see the module docstring for what it does)."""
    from esfast import __version__

    quote = shlex.quote
    header = [
        "#!/bin/bash",
        f"# Written by esfast slurm (esfast {__version__}): esfast-master on the first node, one esfast-worker per node.",
        f"# Submit it again (sbatch {quote(str(job.script))}) to continue the run from its latest checkpoint;",
        "# scancel --batch --signal=USR1 JOBID: checkpoint and requeue now; scancel JOBID: checkpoint and stop.",
        *_sbatch_lines(job),
    ]
    settings = [
        f"out={quote(str(job.out))}",
        f"script={quote(str(job.script))}",
        f"keys={quote(str(job.keys)) if job.keys is not None else ''}",
        f"master_exe={quote(job.master)}",
        f"worker_exe={quote(job.worker)}",
        f'new_run=({" ".join(quote(argument) for argument in job.new_run[:1])} --out "$out"'
        f"{''.join(' ' + quote(argument) for argument in job.new_run[1:])})",
        f"port_base={PORT_BASE}",
        f"port_span={PORT_SPAN}",
        f"workers_grace={job.workers_grace}",
    ]
    return "\n".join(header) + "\n\n" + "\n".join(settings) + "\n" + _BODY


def write_script(job: SlurmJob) -> Path:
    """Writes ``job``'s batch script to ``job.script`` (the run directory is created if missing).

    Raises:
        OSError: the directory or the file cannot be written.
    """
    job.out.mkdir(parents=True, exist_ok=True)
    job.script.write_text(render_script(job))
    return job.script


def submit(script: Path) -> str:
    """Submits ``script`` with ``sbatch --parsable``.

    Returns:
        The job id.

    Raises:
        SlurmError: sbatch is not installed, did not answer, or refused the job (its message).
    """
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=SBATCH_TIMEOUT, check=False)
    except FileNotFoundError:
        raise SlurmError(_NO_SBATCH) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"sbatch did not answer within {SBATCH_TIMEOUT:.0f} s (is slurmctld running?)") from None
    if result.returncode != 0:
        lines = [line.removeprefix("sbatch: error: ").strip() for line in result.stderr.splitlines() if line.strip()]
        raise SlurmError(f"sbatch refused {script}: {lines[-1] if lines else f'exit status {result.returncode}'}")
    job_id = result.stdout.strip().split(";")[0]  # --parsable: "JOBID" or "JOBID;CLUSTER"
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {result.stdout.strip()!r}, not a job id")
    return job_id


# sbatch options the script sets itself (the one-worker-per-node layout, the keys, the log, the
# requeue): another value through --sbatch-arg would break them in silence.
_SCRIPT_OPTIONS = {
    "--job-name": "from the config",
    "-J": "from the config",
    "--nodes": "use --nodes",
    "-N": "use --nodes",
    "--ntasks-per-node": "one worker host per node",
    "--ntasks": "one worker host per node",
    "-n": "one worker host per node",
    "--cpus-per-task": "use --cpus-per-node",
    "-c": "use --cpus-per-node",
    "--exclusive": "whole nodes unless --cpus-per-node",
    "--output": "the log goes to the run directory: use --out",
    "-o": "the log goes to the run directory: use --out",
    "--open-mode": "a requeued job appends to its log",
    "--requeue": "the job requeues itself",
    "--no-requeue": "the job requeues itself",
    "--signal": "use --signal-before",
    "--time": "use --time",
    "-t": "use --time",
    "--partition": "use --partition",
    "-p": "use --partition",
}

_NO_SBATCH = "sbatch is not on PATH: run esfast slurm where Slurm's commands are (a login node), or write the script only with --dry-run"


def require_sbatch() -> None:
    """Raises SlurmError (one line) when sbatch is not on PATH: checked before anything is written."""
    if shutil.which("sbatch") is None:
        raise SlurmError(_NO_SBATCH)


def _entry_point(name: str) -> str:
    """The path of one of esfast's commands: beside this Python (its environment's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SlurmError(f"{name} is neither beside {sys.executable} nor on PATH: install esfast where every node can run it")
    return str(Path(found).absolute())


def job_from_args(args: argparse.Namespace) -> SlurmJob:
    """The job ``esfast slurm`` asks for; the config and its overrides are checked here, before any submission.

    Raises:
        ConfigError: the config or an override cannot be used.
        RunExistsError: the run directory holds a run already.
        SlurmError, KeysError: as :func:`check_job`; esfast's commands cannot be found.
    """
    config_name = args.config
    if Path(config_name).suffix == ".json" or Path(config_name).exists():  # a file: the job may start elsewhere
        config_name = str(Path(config_name).resolve())
    overrides = list(args.set)
    if args.env_module is not None:
        overrides.append(f"env_module={args.env_module}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    config = apply_overrides(resolve_config(config_name), overrides)
    new_run = [config_name]
    for option, value in (("--env-module", args.env_module), ("--seed", args.seed), ("--generations", args.generations)):
        if value is not None:
            new_run += [option, str(value)]
    if args.timesteps is not None:
        new_run += ["--timesteps", str(args.timesteps)]
    for override in args.set:
        new_run += ["--set", override]
    if args.tensorboard:
        new_run.append("--tensorboard")
    out = Path(args.out) if args.out is not None else default_run_path(config.exp_prefix)
    job = SlurmJob(
        out=out.resolve(),
        new_run=tuple(new_run),
        nodes=args.nodes,
        cpus_per_node=args.cpus_per_node,
        time=args.time,
        partition=args.partition,
        sbatch_args=tuple(args.sbatch_arg),
        keys=Path(args.keys).resolve() if args.keys is not None else None,
        name=f"esfast-{config.exp_prefix}",
        signal_before=args.signal_before,
        master=_entry_point("esfast-master"),
        worker=_entry_point("esfast-worker"),
    )
    check_job(job)
    if (job.out / "checkpoints" / "latest.npz").exists():
        raise RunExistsError(f"{job.out} already holds a run; continue it with: sbatch {job.script} (or choose another --out)")
    return job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``esfast slurm`` (its handler is the CLI's)."""
    parser.add_argument("config", metavar="CONFIG", help="config file, or the name of a shipped config (esfast configs)")
    parser.add_argument("--nodes", type=int, required=True, help="nodes of the job: one esfast-worker on each, the master on the first")
    parser.add_argument("--cpus-per-node", type=int, help="CPUs to ask for on each node, one evaluator each (default: whole nodes)")
    parser.add_argument("--time", help="the job's time limit, as sbatch --time (e.g. 4:00:00); a requeued job starts with a new one")
    parser.add_argument("--partition", help="the partition (default: the cluster's default)")
    parser.add_argument(
        "--out",
        help="run directory, on storage every node sees (default: runs/<exp_prefix>-<time>); the script and the job's log go there",
    )
    parser.add_argument(
        "--sbatch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more sbatch option for the script, e.g. --sbatch-arg=--mem=8G (repeatable)",
    )
    parser.add_argument(
        "--signal-before",
        type=int,
        default=SIGNAL_BEFORE,
        metavar="SECONDS",
        help=f"seconds before the time limit at which the master checkpoints and the job requeues itself (default: {SIGNAL_BEFORE})",
    )
    parser.add_argument("--keys", metavar="DIR", help="the folder of esfast keys DIR --workers N (N >= nodes): master and workers use keys")
    parser.add_argument("--dry-run", action="store_true", help="write the script and print it; do not submit it")
    add_run_options(parser, env_module_help="module to import before making the environment (on every node)")
