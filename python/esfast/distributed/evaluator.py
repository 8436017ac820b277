"""An evaluator process of a worker host: runs the host's jobs, one at a time, and replies.

The host (:mod:`esfast.distributed.host`) starts one per core with :func:`evaluator_main` and talks
to it over a pipe: it sends :class:`Job` values (``None`` to stop) and receives one reply per job
(:class:`Done`, :class:`Failed` or :class:`Skipped`), after a first :class:`Ready` (or
:class:`Broken` if this process cannot serve the run). θ and the generation's settings are read
from the host's :class:`~esfast.distributed.shm.ThetaSlots`, never sent through the pipe.

A job of a generation older than the latest θ is skipped without running (its result would be
stale), so a task queued in the pipe never delays the next generation.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
from pathlib import Path
from typing import NamedTuple

from esfast import core
from esfast.distributed.shm import ThetaSlots
from esfast.envs.probe import probe_environment
from esfast.runner import EpisodeRunner
from esfast.tasks import PairTask, Result, Task, WorkerSetup

__all__ = ["Broken", "Done", "Failed", "Job", "Ready", "Reply", "Skipped", "evaluator_main"]


class Job(NamedTuple):
    """Run ``task`` (id ``task_id`` of ``generation``) for the host's connection ``epoch``."""

    epoch: int
    generation: int
    task_id: int
    task: Task


class Ready(NamedTuple):
    """The evaluator has made its environment and policy and takes jobs; ``fingerprint`` is the
    environment's (:mod:`esfast.envs.probe`) if it was asked to probe it, else None."""

    fingerprint: str | None = None


class Broken(NamedTuple):
    """The evaluator cannot serve this run (``error`` says why) and has exited."""

    error: str


class Done(NamedTuple):
    """The result of a job."""

    epoch: int
    generation: int
    task_id: int
    result: Result


class Failed(NamedTuple):
    """A job whose episode raised ``error``."""

    epoch: int
    generation: int
    task_id: int
    error: str


class Skipped(NamedTuple):
    """A job not run: its generation is over."""

    epoch: int
    generation: int
    task_id: int


Reply = Ready | Broken | Done | Failed | Skipped


def evaluator_main(
    conn: multiprocessing.connection.Connection, setup: WorkerSetup, theta_path: str, parent: int, probe: bool = False
) -> None:
    """The evaluator process: serves jobs until told to stop or the host is gone.

    Args:
        conn: this end of the host's pipe.
        setup: the run; ``setup.table_name`` names the host's table, attached read-only.
        theta_path: the host's θ slots.
        parent: the host's pid; if the host was killed, this process removes its segments.
        probe: also fingerprint the run's environment (in a fresh instance) for :class:`Ready`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the host's to handle
    try:
        serve_jobs(conn, setup, Path(theta_path), probe=probe)
    except (EOFError, OSError):  # the pipe broke: the host is gone
        if os.getppid() != parent:  # killed, so it could not clean up: do it for it
            Path(theta_path).unlink(missing_ok=True)
            if setup.table_name:
                core.NoiseTable.remove_if_stale(setup.table_name)


def serve_jobs(conn: multiprocessing.connection.Connection, setup: WorkerSetup, theta_path: Path, *, probe: bool = False) -> None:
    """Runs jobs in order, one reply each; returns on ``None``."""
    try:
        runner = EpisodeRunner(setup)
    except Exception as error:  # reported to the host, which cannot serve this run
        conn.send(Broken(f"{type(error).__name__}: {error}"))
        return
    try:
        try:
            found = None
            if probe:
                found = probe_environment(setup.env_id, setup.env_module, atari=setup.atari, env_kwargs=setup.env_kwargs).fingerprint
        except Exception as error:
            conn.send(Broken(f"the environment's fingerprint could not be taken: {type(error).__name__}: {error}"))
            return
        slots = ThetaSlots(theta_path, setup.num_params, setup.obs_dim, writable=False)
        conn.send(Ready(found))
        while (job := conn.recv()) is not None:
            conn.send(run_job(runner, slots, job))
    finally:
        runner.close()


def run_job(runner: EpisodeRunner, slots: ThetaSlots, job: Job) -> Reply:
    """Runs one job with the θ of its generation; skips it if that generation is over."""
    found = slots.read(job.generation) if job.generation >= slots.latest else None
    if found is None:
        return Skipped(job.epoch, job.generation, job.task_id)
    theta, spec = found
    try:
        result = runner.run_pair(theta, spec, job.task) if isinstance(job.task, PairTask) else runner.run_eval(theta, spec, job.task)
    except Exception as error:
        return Failed(job.epoch, job.generation, job.task_id, f"{type(error).__name__}: {error}")
    return Done(job.epoch, job.generation, job.task_id, result)
