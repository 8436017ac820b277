"""An evaluator process's handling of one job: θ from the host's slots, stale jobs skipped, failures reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esfast.config import PolicySettings
from esfast.distributed.evaluator import Done, Failed, Job, Skipped, run_job
from esfast.distributed.shm import ThetaSlots
from esfast.runner import EpisodeRunner
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup

SETUP = WorkerSetup("CartPole-v1", None, PolicySettings(hidden_dims=(4,)), 4 * 4 + 4 + 4 * 2 + 2, 4, 10_000, 0)


def spec(generation: int) -> GenerationSpec:
    return GenerationSpec(generation, 0.1, np.zeros(4, np.float32), np.ones(4, np.float32), 50)


def test_a_job_runs_with_the_theta_of_its_generation(tmp_path: Path) -> None:
    slots = ThetaSlots.create(tmp_path, SETUP.num_params, SETUP.obs_dim)
    runner = EpisodeRunner(SETUP)
    try:
        theta = np.random.default_rng(0).standard_normal(SETUP.num_params).astype(np.float32)
        slots.write(theta, spec(3))
        pair = PairTask(0, 17, 5, True)
        reply = run_job(runner, slots, Job(1, 3, 0, pair))
        assert isinstance(reply, Done) and reply[:3] == (1, 3, 0) and isinstance(reply.result, PairResult)
        expected = runner.run_pair(theta, spec(3), pair)
        assert reply.result.returns == expected.returns and reply.result.lengths == expected.lengths
        evaluation = run_job(runner, slots, Job(1, 3, 7, EvalTask(0, 9)))
        assert isinstance(evaluation, Done) and isinstance(evaluation.result, EvalResult)
        assert evaluation.result.length <= 50  # the generation's timestep limit applies
    finally:
        runner.close()
        slots.remove()


def test_jobs_of_finished_generations_are_skipped(tmp_path: Path) -> None:
    slots = ThetaSlots.create(tmp_path, SETUP.num_params, SETUP.obs_dim)
    runner = EpisodeRunner(SETUP)
    try:
        theta = np.zeros(SETUP.num_params, np.float32)
        slots.write(theta, spec(4))
        slots.write(theta, spec(5))
        assert run_job(runner, slots, Job(0, 4, 2, EvalTask(0, 1))) == Skipped(0, 4, 2)  # older than the latest
        assert run_job(runner, slots, Job(0, 7, 2, EvalTask(0, 1))) == Skipped(0, 7, 2)  # θ not there
    finally:
        runner.close()
        slots.remove()


def test_an_episode_that_raises_is_reported(tmp_path: Path) -> None:
    slots = ThetaSlots.create(tmp_path, SETUP.num_params, SETUP.obs_dim)
    runner = EpisodeRunner(SETUP)
    try:
        slots.write(np.zeros(SETUP.num_params, np.float32), spec(0))
        reply = run_job(runner, slots, Job(0, 0, 1, PairTask(0, 10**12, 1, False)))  # offset beyond the table
        assert isinstance(reply, Failed) and reply[:3] == (0, 0, 1) and "offset" in reply.error
    finally:
        runner.close()
        slots.remove()
