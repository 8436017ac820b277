"""Emulator frames per second on one core: esfast's Atari rollout next to a bare ALE loop.

In the same run and process, interleaved, best of ``--repeats`` rounds:

- bare: ``gym.make("ALE/<Game>-v5")`` as it comes (frame skip 4 inside ale-py, RGB observation,
  no preprocessing) stepped with ``env.action_space.sample()``, reset at episode end;
- preprocessing: esfast's environment (:func:`esfast.envs.atari.make_atari_env`: no-op starts, frame
  skip with max-pooling, grayscale, area resize, frame stack) stepped with random actions, no policy;
- esfast: :func:`esfast.envs.rollout.run_episode` with the conv policy's actor (virtual batch norm
  refreshed from a 128-observation reference batch before each episode, as training does).

Frames are emulator frames: 4 per agent step for all three (frame skip 4); the no-op frames of a
reset (at most 30 per episode) are not counted, which understates esfast's rate slightly. The
forward pass, the resize and the VBN refresh are also timed alone. BLAS is held to one thread
(set before numpy is imported), so figures are per core.

Usage: python benchmarks/bench_atari.py [--game Pong] [--steps 1000] [--repeats 5]
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import machine  # noqa: E402
import numpy as np  # noqa: E402

from esfast.config import AtariSettings, PolicySettings  # noqa: E402
from esfast.envs.atari import AreaResize, collect_reference_batch, make_atari_env  # noqa: E402
from esfast.envs.rollout import run_episode  # noqa: E402
from esfast.policies.conv import ConvActor, ConvPolicy  # noqa: E402

FRAME_SKIP = 4


def bare_loop(env: gym.Env, steps: int) -> float:
    """Emulator frames per second of plain ``env.step(random action)``."""
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps * FRAME_SKIP / (time.perf_counter() - start)


def esfast_loop(env: gym.Env, actor: ConvActor, steps: int, seed: int) -> float:
    """Emulator frames per second of run_episode with the conv actor, refreshed per episode."""
    done = 0
    start = time.perf_counter()
    while done < steps:
        actor.refresh()
        episode = run_episode(env, actor, seed=seed + done, timestep_limit=steps - done)
        done += episode.length
    return done * FRAME_SKIP / (time.perf_counter() - start)


def best_time(function: object, calls: int, repeats: int = 5) -> float:
    """Best mean seconds per call of ``function()`` over ``repeats`` rounds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--steps", type=int, default=1000, help="agent steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the best of each loop is kept")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    env_id = f"ALE/{args.game}-v5"
    settings = AtariSettings()

    bare = gym.make(env_id)
    ours = make_atari_env(env_id, settings)
    plain = make_atari_env(env_id, settings)
    batch = collect_reference_batch(ours, settings.reference_batch_size, seed=0)
    policy = ConvPolicy(
        ours.observation_space, ours.action_space, PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu"), batch
    )
    actor = policy.actor(policy.initial_theta(np.random.default_rng(0)))

    rates: dict[str, float] = {"bare": 0.0, "preprocessing": 0.0, "esfast": 0.0}
    for round_ in range(args.repeats):
        rates["bare"] = max(rates["bare"], bare_loop(bare, args.steps))
        rates["preprocessing"] = max(rates["preprocessing"], bare_loop(plain, args.steps))
        rates["esfast"] = max(rates["esfast"], esfast_loop(ours, actor, args.steps, seed=1000 * round_))

    observations = batch[:16]
    index = iter(range(10**9))
    forward = best_time(lambda: actor(observations[next(index) % 16]), 2000)
    refresh = best_time(actor.refresh, 5)
    resize = AreaResize((210, 160), (settings.screen_size, settings.screen_size))
    screen = bare.unwrapped.ale.getScreenGrayscale()
    resized = np.empty((settings.screen_size, settings.screen_size), np.uint8)
    resize_time = best_time(lambda: resize(screen, out=resized), 2000)
    step_us = 1e6 * FRAME_SKIP / rates["bare"]

    print(
        f"{env_id}, {args.steps} agent steps x {args.repeats} rounds, one thread; frames are emulator frames ({FRAME_SKIP} per agent step)"
    )
    print(f"{'loop':<16}{'frames/s':>10}{'us/agent step':>15}{'vs bare':>9}")
    for name, rate in rates.items():
        print(f"{name:<16}{rate:>10.0f}{1e6 * FRAME_SKIP / rate:>15.1f}{rate / rates['bare']:>9.2f}")
    print(
        f"conv forward pass: {1e6 * forward:.1f} us per agent step ({1e6 * forward / FRAME_SKIP:.1f} us per emulator frame);"
        f" bare emulator step: {step_us:.1f} us per agent step ({step_us / FRAME_SKIP:.1f} us per frame);"
        f" forward / emulator = {1e6 * forward / step_us:.2f}"
    )
    print(
        f"preprocessing extra over the bare loop: {1e6 * FRAME_SKIP / rates['preprocessing'] - step_us:.1f} us per agent step;"
        f" the area resize 210x160 -> {settings.screen_size}x{settings.screen_size} alone: {1e6 * resize_time:.1f} us"
        " (the extra can be smaller: esfast steps the emulator with fewer Python calls than the bare loop)"
    )
    print(f"VBN refresh (reference batch of {len(batch)}): {1e3 * refresh:.1f} ms per episode")
    print(f"ratio esfast / bare: {rates['esfast'] / rates['bare']:.2f} (target >= 0.70)")
    for env in (bare, ours, plain):
        env.close()


if __name__ == "__main__":
    main()
