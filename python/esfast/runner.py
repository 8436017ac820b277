"""Runs a run's tasks in this process: one environment, one policy, perturbation buffers.

:class:`EpisodeRunner` is what every place that runs episodes uses: the serial evaluator
(:mod:`esfast.evaluators`) and each evaluator process of a worker host
(:mod:`esfast.distributed.evaluator`). A task's result depends only on the task, θ and the
generation's settings, never on the process that runs it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from esfast import core
from esfast.envs import make_env
from esfast.envs.rollout import run_episode
from esfast.errors import PolicyError
from esfast.policies import Actor, make_policy
from esfast.tasks import EvalResult, EvalTask, GenerationSpec, PairResult, PairTask, WorkerSetup

__all__ = ["EpisodeRunner"]


class EpisodeRunner:
    """Owns an environment, a policy and perturbation buffers; runs one task at a time.

    Args:
        setup: the run description.
        table: the noise table; None: attach to ``setup.table_name`` (waiting up to a minute for
            it), or generate a private one from ``setup``'s seed and size.

    Raises:
        EnvError, PolicyError: the environment cannot be made here, or gives a policy of another
            size than the run's (different gymnasium or environment versions).
    """

    def __init__(self, setup: WorkerSetup, table: core.NoiseTable | None = None) -> None:
        self.env = make_env(setup.env_id, setup.env_module, atari=setup.atari, env_kwargs=setup.env_kwargs)
        self.policy = make_policy(self.env.observation_space, self.env.action_space, setup.policy, setup.reference_batch)
        if (self.policy.num_params, self.policy.obs_stat_dim) != (setup.num_params, setup.obs_dim):
            self.env.close()
            raise PolicyError(
                f"{setup.env_id} gives a policy of {self.policy.num_params} parameters for {self.policy.obs_stat_dim} observations "
                f"here; the run has {setup.num_params} and {setup.obs_dim} (different gymnasium or environment versions?)"
            )
        if table is None:
            table = (
                core.NoiseTable.attach(setup.table_name, timeout=60.0, threads=1)
                if setup.table_name
                else core.NoiseTable(setup.table_size, setup.table_seed)
            )
        self.table = table
        # Parameter buffers with an actor bound to each, made once: a task only fills the buffers.
        # Defined values first: the Atari actor computes its normalization at once.
        self.plus = np.zeros(self.policy.num_params, dtype=np.float32)
        self.minus = np.zeros(self.policy.num_params, dtype=np.float32)
        self.center = np.zeros(self.policy.num_params, dtype=np.float32)
        self.actors: dict[str, Actor] = {
            name: self.policy.actor(buffer) for name, buffer in (("plus", self.plus), ("minus", self.minus), ("center", self.center))
        }
        self.action_noise_std = setup.policy.ac_noise_std if self.policy.continuous else 0.0

    def run_pair(self, theta: NDArray[np.float32], spec: GenerationSpec, task: PairTask) -> PairResult:
        """Both episodes of an antithetic pair, θ + σε and θ − σε, with the task's episode seed."""
        core.perturb_pair(theta, self.table, task.offset, spec.sigma, out_plus=self.plus, out_minus=self.minus)
        episodes = []
        for name in ("plus", "minus"):
            actor = self.actors[name]
            actor.prepare(spec.obs_mean, spec.obs_std)
            episodes.append(
                run_episode(
                    self.env,
                    actor,
                    seed=task.episode_seed,
                    timestep_limit=spec.timestep_limit,
                    action_noise_std=self.action_noise_std,
                    record_obs=task.record_obs,
                )
            )
        plus, minus = episodes
        obs_sum = obs_sumsq = None
        if plus.obs_sum is not None and minus.obs_sum is not None and plus.obs_sumsq is not None and minus.obs_sumsq is not None:
            obs_sum = plus.obs_sum + minus.obs_sum
            obs_sumsq = plus.obs_sumsq + minus.obs_sumsq
        return PairResult(
            task.pair, (plus.ret, minus.ret), (plus.length, minus.length), obs_sum, obs_sumsq, plus.obs_count + minus.obs_count
        )

    def run_eval(self, theta: NDArray[np.float32], spec: GenerationSpec, task: EvalTask) -> EvalResult:
        """One episode of the unperturbed θ, without action noise."""
        np.copyto(self.center, theta)
        actor = self.actors["center"]
        actor.prepare(spec.obs_mean, spec.obs_std)
        episode = run_episode(self.env, actor, seed=task.episode_seed, timestep_limit=spec.timestep_limit)
        return EvalResult(task.index, episode.ret, episode.length)

    def close(self) -> None:
        """Closes the environment (the table is the caller's)."""
        self.env.close()
