"""Environment steps per second on one core: esfast's rollout next to a bare gymnasium loop.

For each environment, in the same run and the same process:
- bare loop: ``env.step(env.action_space.sample())`` with resets, the cheapest way to drive it;
- esfast: ``run_episode`` with the shipped config's policy (observation normalization, the MLP,
  action noise), as training runs it;
- replay: a bare loop (``env.step``) stepping the same seeds with the actions esfast's policy
  chose, recorded beforehand. The physics' cost depends on the actions (a MuJoCo humanoid driven
  by a policy falls differently from one driven by uniform random torques), so the ratio against
  the replay separates esfast's own per-step cost from that difference. It can exceed 100%:
  esfast steps below gymnasium's bookkeeping wrappers, and Humanoid with a lean step
  (``esfast.envs.mujoco_steps``);
- policy alone: the forward pass on random observations, to show its share of a step.

Usage: python benchmarks/bench_rollout.py [--steps N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import machine
import numpy as np

from esfast.config import resolve_config
from esfast.envs import make_env
from esfast.envs.rollout import run_episode
from esfast.policies import MLPActor, MLPPolicy
from esfast.seeding import Purpose, derive_rng

# (environment, shipped config, hidden sizes or None for the config's own). The extra Humanoid row
# with a small network shows how much of the gap is the size of the paper's 256x256 policy.
ENVIRONMENTS = (("HalfCheetah-v5", "halfcheetah", None), ("Humanoid-v5", "humanoid", None), ("Humanoid-v5", "humanoid", (64, 64)))


def bare_loop(env_id: str, steps: int) -> float:
    env = make_env(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def replay_loop(env_id: str, episodes: list[tuple[int, list[np.ndarray]]]) -> float:
    """Steps per second of a bare loop replaying recorded (seed, actions) episodes."""
    env = make_env(env_id)
    steps = sum(len(actions) for _, actions in episodes)
    start = time.perf_counter()
    for seed, actions in episodes:
        env.reset(seed=seed)
        for action in actions:
            env.step(action)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def record_actions(env_id: str, actor: MLPActor, noise_std: float, steps: int) -> list[tuple[int, list[np.ndarray]]]:
    """The actions esfast's actor takes in the episodes that esfast_loop runs (same seeds)."""
    env = make_env(env_id)
    episodes, done, seed = [], 0, 0
    while done < steps:
        observation, _ = env.reset(seed=seed)
        rng = np.random.Generator(np.random.PCG64(seed)) if noise_std > 0 else None
        actions: list[np.ndarray] = []
        while done < steps:
            noise = rng.standard_normal(actor.policy.act_dim, dtype=np.float32) * np.float32(noise_std) if rng else None
            action = np.array(actor(observation, noise))
            actions.append(action)
            observation, _, terminated, truncated, _ = env.step(action)
            done += 1
            if terminated or truncated:
                break
        episodes.append((seed, actions))
        seed += 1
    env.close()
    return episodes


def esfast_loop(env_id: str, config_name: str, hidden: tuple[int, ...] | None, steps: int) -> tuple[float, float, int, float]:
    config = resolve_config(config_name)
    if hidden is not None:
        config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, hidden_dims=hidden))
    env = make_env(env_id)
    policy = MLPPolicy(env.observation_space, env.action_space, config.policy)
    theta = policy.initial_theta(derive_rng(0, Purpose.INIT))
    actor = policy.actor(theta, np.zeros(policy.obs_dim, np.float32), np.ones(policy.obs_dim, np.float32))
    done, seed = 0, 0
    start = time.perf_counter()
    while done < steps:
        episode = run_episode(env, actor, seed=seed, timestep_limit=steps - done, action_noise_std=config.policy.ac_noise_std)
        done += episode.length
        seed += 1
    rate = done / (time.perf_counter() - start)
    observations = np.random.default_rng(0).standard_normal((2000, policy.obs_dim))
    start = time.perf_counter()
    for observation in observations:
        actor(observation)
    forward = (time.perf_counter() - start) / len(observations)
    env.close()
    replay = replay_loop(env_id, record_actions(env_id, actor, config.policy.ac_noise_std, steps))
    return rate, forward, policy.num_params, replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000, help="steps per measurement (default 20,000)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per loop, interleaved; the fastest is kept")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    header = (
        f"{'environment':<16} {'policy':>18} {'bare steps/s':>13} {'esfast steps/s':>15} {'ratio':>6} "
        f"{'replay steps/s':>15} {'ratio':>6} {'forward us':>11}"
    )
    print(header)
    print("-" * len(header))
    for env_id, config_name, hidden in ENVIRONMENTS:
        # Interleaved, so that load from elsewhere on the machine hits both loops alike.
        bare_rates, runs = [], []
        for _ in range(args.repeats):
            bare_rates.append(bare_loop(env_id, args.steps))
            runs.append(esfast_loop(env_id, config_name, hidden, args.steps))
        bare = max(bare_rates)
        ours = max(r[0] for r in runs)
        forward = min(r[1] for r in runs)
        params = runs[0][2]
        replay = max(r[3] for r in runs)
        policy = f"{hidden or resolve_config(config_name).policy.hidden_dims} {params:,}p"
        print(
            f"{env_id:<16} {policy:>18} {bare:>13,.0f} {ours:>15,.0f} {ours / bare:>6.0%} "
            f"{replay:>15,.0f} {ours / replay:>6.0%} {forward * 1e6:>11.1f}"
        )


if __name__ == "__main__":
    main()
