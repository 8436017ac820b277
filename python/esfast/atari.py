"""Atari environments (ALE ``v5``) with the standard preprocessing, and the reference batch.

The environment is gymnasium's own composition, so its behaviour is the documented one::

    gym.make(env_id, frameskip=1, repeat_action_probability=p, obs_type="ram")
      -> EmulatorScreen -> [StartStateReset]
      -> gymnasium.wrappers.AtariPreprocessing(noop_max, frame_skip, screen_size, terminal_on_life_loss)
      -> gymnasium.wrappers.FrameStackObservation(stack)

Observations are ``uint8`` arrays of shape ``(stack, screen_size, screen_size)``; rewards are the
game's own (not clipped: ES ranks the returns). Two choices that do not change what the agent sees
(a test compares every observation with gymnasium's plain composition on an RGB base):
``AtariPreprocessing`` reads the screen from the emulator itself and discards the base
environment's observation, so the base environment returns its cheapest one, the 128 bytes of RAM,
rather than copying the screen on each of the 4 frames of a step (about 50 us per agent step), and
:class:`EmulatorScreen` declares the screen's space, from which ``AtariPreprocessing`` sizes its
buffers; and gymnasium's passive environment checker is off (ale-py's environment is known-good).

Seeded resets: ale-py applies a seed by reloading the ROM (about 90 ms here, the time of ~400 agent
steps), and training seeds every episode. With ``repeat_action_probability == 0`` and ``noop_max > 0``
(the defaults), :class:`StartStateReset` sits between the emulator and ``AtariPreprocessing``: the
emulator state right after the first reset (ALE seed 0) is cloned once, every reset restores it
(about 2 ms with the no-ops), and the episode seed seeds the no-op draw. An episode is then fixed by
its seed alone, whatever ran before it in the process (tested), and episodes differ by their no-op
starts, the standard protocol. What is given up: ale-py's per-seed randomization of the power-on
state, which some games show (Seaquest, BeamRider, Frostbite) and Pong and Breakout do not. With
sticky actions the emulator's random generator matters within the episode, so resets reload the ROM
as ale-py does.

Bad input fails before any emulator work, with one line: :func:`check_atari_id` resolves the id in
gymnasium's registry, checks that it is an ALE environment and that its ROM is there and intact.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import ale_py
from ale_py import roms as ale_roms
import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from numpy.typing import NDArray

from esfast.config import AtariSettings
from esfast.rollout import EnvError

__all__ = ["AtariEnvError", "AtariSettings", "EmulatorScreen", "StartStateReset", "check_atari_id", "collect_reference_batch", "make_atari_env"]

logger = logging.getLogger(__name__)

ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
REFERENCE_KEEP_PROB = 0.1  # keep one step in ten: decorrelated observations from ~10x the batch size in steps

gym.register_envs(ale_py)


class AtariEnvError(EnvError):
    """An Atari environment that cannot be made (unknown id, missing ROM, bad settings); one line."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_atari_id(env_id: str) -> str:
    """Checks that ``env_id`` names an ALE environment whose ROM is installed; does no emulator work.

    Args:
        env_id: e.g. ``"ALE/Pong-v5"``.

    Returns:
        The ROM's game name (``"pong"``).

    Raises:
        AtariEnvError: the id is unknown (with gymnasium's suggestion), not an ALE environment, or
            its ROM is missing or corrupt.
    """
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise AtariEnvError(f"unknown Atari environment {env_id!r}: {_one_line(error)}") from None
    if spec.entry_point != ALE_ENTRY_POINT:
        raise AtariEnvError(f"{env_id!r} is not an Atari (ALE) environment; use an id like 'ALE/Pong-v5'")
    game = spec.kwargs.get("game")
    if not isinstance(game, str):
        raise AtariEnvError(f"Atari environment {env_id!r} names no game")
    # get_rom_path warns (not supported) or raises (file missing, bad hash); with ALE_ROMS_DIR set it
    # also prints the directory to stdout, which a library must not do.
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        try:
            path = ale_roms.get_rom_path(game)
        except OSError as error:
            raise AtariEnvError(f"the ROM of {env_id!r} (game {game!r}) is missing or corrupt: {_one_line(error)}") from None
    if path is None:
        reason = _one_line(caught[0].message) if caught else "not found"  # type: ignore[arg-type]
        raise AtariEnvError(f"no ROM for {env_id!r} (game {game!r}): {reason}")
    return game


class EmulatorScreen(gym.Wrapper):
    """Declares the emulator's grayscale screen as the observation space of an ``obs_type="ram"`` env.

    Steps and resets pass through unchanged (their observation is the RAM, which ``AtariPreprocessing``
    discards: it reads the screen from ``env.unwrapped.ale``).

    Args:
        env: a base ALE environment made with ``obs_type="ram"``.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width = env.unwrapped.ale.getScreenDims()
        self.observation_space = gym.spaces.Box(0, 255, (height, width), np.uint8)


class StartStateReset(gym.Wrapper):
    """Resets by restoring the emulator state cloned after the first reset; the seed seeds the no-ops.

    Wraps the base ALE environment (``obs_type="grayscale"``, no frame skip, no sticky actions),
    below ``AtariPreprocessing``, which draws its no-op count from ``env.unwrapped.np_random``.

    Args:
        env: the base environment (``frameskip=1``, ``repeat_action_probability=0``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        env.reset(seed=0)
        self._ale = env.unwrapped.ale
        self._start = self._ale.cloneState(include_rng=True)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Restores the start state; ``seed`` (if given) reseeds ``env.unwrapped.np_random``.

        Returns:
            The base environment's observation (the grayscale screen) and its info
            (``lives``, ``episode_frame_number``, ``frame_number``).
        """
        if seed is not None:
            self.env.unwrapped.np_random = seeding.np_random(seed)[0]
        ale = self._ale
        ale.restoreState(self._start)
        info = {"lives": ale.lives(), "episode_frame_number": ale.getEpisodeFrameNumber(), "frame_number": ale.getFrameNumber()}
        return ale.getScreenGrayscale(), info


def make_atari_env(env_id: str, settings: AtariSettings | None = None) -> gym.Env:
    """An ALE environment with the standard preprocessing (see the module docstring).

    Args:
        env_id: an ALE id such as ``"ALE/Pong-v5"``.
        settings: preprocessing settings (default: ``AtariSettings()``, the standard ones).

    Returns:
        The wrapped environment: observations ``uint8`` of shape ``(stack, screen_size, screen_size)``,
        ``Discrete`` actions (the game's minimal action set).

    Raises:
        AtariEnvError: unknown or non-ALE id, missing ROM, or settings the wrappers reject.
    """
    settings = settings if settings is not None else AtariSettings()
    check_atari_id(env_id)
    try:
        env = gym.make(
            env_id,
            frameskip=1,
            repeat_action_probability=float(settings.repeat_action_probability),
            obs_type="ram",
            disable_env_checker=True,
        )
        env = EmulatorScreen(env)
        if settings.repeat_action_probability == 0 and settings.noop_max > 0:
            env = StartStateReset(env)
        env = AtariPreprocessing(
            env,
            noop_max=settings.noop_max,
            frame_skip=settings.frame_skip,
            screen_size=settings.screen_size,
            terminal_on_life_loss=settings.terminal_on_life_loss,
            grayscale_obs=True,
            scale_obs=False,
        )
        return FrameStackObservation(env, settings.stack)
    except (gym.error.Error, ValueError, TypeError) as error:
        raise AtariEnvError(f"cannot make Atari environment {env_id!r}: {_one_line(error)}") from None


def collect_reference_batch(
    env: gym.Env,
    size: int = 128,
    *,
    seed: int,
    keep_prob: float = REFERENCE_KEEP_PROB,
) -> NDArray[np.uint8]:
    """Observations seen while playing uniformly random actions: the reference batch of VBN.

    Each step's observation is kept with probability ``keep_prob`` (so the batch is spread over
    roughly ``size / keep_prob`` steps, possibly several episodes, rather than the first frames of
    one). The episode seeds, actions and keep decisions all come from ``seed``: the same seed and
    environment settings give the same batch in any process.

    Args:
        env: an environment from :func:`make_atari_env` (reset here).
        size: number of observations.
        seed: seeds everything random here.
        keep_prob: probability of keeping a step's observation, in (0, 1].

    Returns:
        ``uint8`` array of shape ``(size, *env.observation_space.shape)``, C-contiguous.

    Raises:
        ValueError: ``size`` < 1 or ``keep_prob`` outside (0, 1].
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"collect_reference_batch needs a Discrete action space, got {env.action_space}")
    rng = np.random.Generator(np.random.PCG64(seed))
    batch = np.empty((size, *env.observation_space.shape), dtype=np.uint8)
    actions = int(env.action_space.n)
    kept = steps = episodes = 0
    observation, _ = env.reset(seed=int(rng.integers(2**31)))
    while kept < size:
        observation, _, terminated, truncated, _ = env.step(int(rng.integers(actions)))
        steps += 1
        if rng.random() < keep_prob:
            batch[kept] = observation
            kept += 1
        if terminated or truncated:
            episodes += 1
            observation, _ = env.reset(seed=int(rng.integers(2**31)))
    logger.info("reference batch: %d observations from %d random-action steps (%d episodes ended)", size, steps, episodes)
    return batch
