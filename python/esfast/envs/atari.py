"""Atari environments (ALE ``v5``) with the standard preprocessing, and the reference batch.

The chain, all of it esfast's except the emulator (no OpenCV)::

    gym.make(env_id, frameskip=1, repeat_action_probability=p, obs_type="ram")
      -> [StartStateReset]
      -> StandardPreprocessing(noop_max, frame_skip, screen_size, terminal_on_life_loss, stack)

Observations are ``uint8`` arrays of shape ``(stack, screen_size, screen_size)``; rewards are the
game's own (not clipped: ES ranks the returns). :class:`StandardPreprocessing` does what gymnasium's
``AtariPreprocessing`` followed by ``FrameStackObservation`` does (no-op starts, the action repeated
on ``frame_skip`` frames with rewards summed, the max of the last two frames, grayscale read from the
emulator, an area-averaging resize, episode end on game over, a stack of the last observations),
with the resize written here (:class:`AreaResize`, exact integer arithmetic, no ``cv2``) and the
stack kept in the same wrapper (cheaper than gymnasium's ``FrameStackObservation``; docs/atari.md
has the measurements).

The base environment's own observation is the 128 bytes of RAM, its cheapest: the preprocessing
reads the screen from ``env.unwrapped.ale`` on the frames it needs and ignores the base
observation. Gymnasium's passive environment checker is off (ale-py's environment is known-good).

Seeded resets: ale-py applies a seed by reloading the ROM (the time of hundreds of agent steps),
and training seeds every episode. With ``repeat_action_probability == 0`` and ``noop_max > 0``
(the defaults), :class:`StartStateReset` sits between the emulator and the preprocessing: the
emulator state right after the first reset (ALE seed 0) is cloned once, every reset restores it
(far cheaper than a reload), and the episode seed seeds the no-op draw. An episode is then fixed by
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
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms as ale_roms
from gymnasium.utils import seeding
from gymnasium.wrappers import OrderEnforcing
from numpy.typing import NDArray

from esfast import _core
from esfast.config import AtariSettings
from esfast.errors import AtariEnvError

__all__ = [
    "AreaResize",
    "StandardPreprocessing",
    "StartStateReset",
    "check_atari_id",
    "collect_reference_batch",
    "make_atari_env",
]

logger = logging.getLogger(__name__)

ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
REFERENCE_KEEP_PROB = 0.1  # keep one step in ten: decorrelated observations from ~10x the batch size in steps

gym.register_envs(ale_py)
# The emulator prints a two-line banner on stdout for every environment made (each evaluator's,
# each episode's reset of a new env): keep its warnings and errors only.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Warning)


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


class AreaResize:
    """Resizes ``uint8`` images by area averaging (OpenCV's ``INTER_AREA`` when shrinking), exactly.

    Each output pixel is the mean of the input pixels its cell covers, each weighted by the area
    covered (for 210x160 -> 84x84: a cell is 2.5 rows by 1.905 columns, at most 3 x 3 input
    pixels), rounded to the nearest integer, ties to even (OpenCV rounds with ``cvRound``, also
    ties to even, but on float weights; it agrees with this resize except on a few pixels per frame
    that sit within float error of a tie, by 1).

    The weights are integers over a common denominator ``D`` (``D = 5 * 40 = 200`` for 210x160 ->
    84x84), so every sum is an exact integer below ``255 * D < 2**24`` and the final division is
    exactly rounded: the result does not depend on the machine. The work is the C++ kernel
    ``esfast._core.AreaResize`` (``cpp/src/atari_screen.cpp``): per output row, the row taps in
    16-bit lanes over the whole width, then the column taps and the division.

    Args:
        source: ``(height, width)`` of the input.
        target: ``(height, width)`` of the output.

    Raises:
        ValueError: a size below 1, or sizes whose denominator ``D`` makes ``255 * D`` reach ``2**24``
            (the sums would no longer be exact in float32; never for a 210x160 screen).

    Not thread-safe (a scratch row per object).
    """

    def __init__(self, source: tuple[int, int], target: tuple[int, int]) -> None:
        if min(*source, *target) < 1:
            raise ValueError(f"sizes must be >= 1, got {source} -> {target}")
        self.source = (int(source[0]), int(source[1]))
        self.target = (int(target[0]), int(target[1]))
        self._impl = _core.AreaResize(self.source, self.target)
        self.denominator = int(self._impl.denominator)

    def __call__(
        self, image: NDArray[np.uint8], out: NDArray[np.uint8] | None = None, other: NDArray[np.uint8] | None = None
    ) -> NDArray[np.uint8]:
        """The resized image, or with ``other`` the resized pixelwise maximum of the two.

        Args:
            image: ``uint8`` array of shape ``source``, C-contiguous.
            out: ``uint8`` array of shape ``target``, C-contiguous, written in place; allocated if None.
            other: ``uint8`` array of shape ``source``, C-contiguous, or None.

        Returns:
            ``out``.
        """
        if out is None:
            out = np.empty(self.target, dtype=np.uint8)
        self._impl(image, out, other)
        return out


class StandardPreprocessing(gym.Wrapper):
    """The standard Atari preprocessing and frame stack, reading the screen from the emulator.

    What gymnasium's ``AtariPreprocessing(grayscale_obs=True)`` then ``FrameStackObservation``
    do, without OpenCV:

    - reset: the base environment's reset, then ``k`` no-op steps (action 0), ``k`` drawn uniformly
      in ``[1, noop_max]`` from ``env.unwrapped.np_random`` right after that reset (so from the
      episode seed); an episode ending during the no-ops is reset again with the same seed. The
      stack starts as ``stack`` copies of the first observation;
    - step: the action on ``frame_skip`` frames, rewards summed; the grayscale screens of the last
      two frames max-pooled, resized to ``screen_size`` by :class:`AreaResize`, and pushed onto the
      stack (a new array each step: callers may keep observations);
    - ``terminated`` on game over (or, with ``terminal_on_life_loss``, also when ``ale.lives()``
      drops); ``truncated`` as the base environment says (ale-py's frame limit, or a ``TimeLimit``
      in the base chain); ``info`` is the last frame's. If the episode ends before the last frame
      of a step, the observation is the screen of the frame it ended on (gymnasium returns stale
      buffers there; ES never acts on that observation).

    How a step runs, for speed (the result is the same either way, tested; docs/atari.md has the figures):
    where the wrappers between this one and ale-py's environment only pass steps through
    (``StartStateReset``, ``OrderEnforcing``), the frames are played on the emulator directly
    (``ale.act``, ``game_over``, ``game_truncated``, as ale-py's ``step`` does, and the info of the
    last frame only), which costs less than four ``env.step`` calls. The screens are read as
    palette indices (``ale.getScreen``) and turned to grayscale through a table
    (``esfast._core.palette_to_gray`` with AVX-512 VBMI; on CPUs without it, or on a code path
    below AVX-512 selected when the wrapper is made (``esfast.core.set_code_path``), where the
    table lookup is slower, ALE's own ``ale.getScreenGrayscale`` is used) rather than by
    ``ale.getScreenGrayscale``, which is slower. ALE's
    grayscale is a lookup of the palette index, so the table is learned from ALE itself: a screen
    with an index not seen before is read again with ``getScreenGrayscale`` and its pairs enter
    the table; the output is ALE's grayscale exactly, from the first screen on.

    Args:
        env: an ALE environment with ``frameskip=1`` (any ``obs_type``: its observation is unused).
        noop_max: at most this many no-ops after a reset; 0: none.
        frame_skip: emulator frames per agent step.
        screen_size: side of the square observation.
        terminal_on_life_loss: end the episode when a life is lost.
        stack: observations stacked along the first axis.

    Raises:
        ValueError: a setting out of range, a base environment that skips frames itself, or
            ``noop_max > 0`` on a game whose action 0 is not NOOP.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        noop_max: int = 30,
        frame_skip: int = 4,
        screen_size: int = 84,
        terminal_on_life_loss: bool = False,
        stack: int = 4,
    ) -> None:
        super().__init__(env)
        if frame_skip < 1 or noop_max < 0 or screen_size < 1 or stack < 1:
            raise ValueError(
                f"need frame_skip >= 1, noop_max >= 0, screen_size >= 1, stack >= 1; got {frame_skip}, {noop_max}, {screen_size}, {stack}"
            )
        if getattr(env.unwrapped, "_frameskip", None) != 1:
            raise ValueError("the base environment must not skip frames itself (make it with frameskip=1)")
        base: Any = env.unwrapped  # ale-py's AtariEnv: its ale and action meanings are not on gym.Env
        if noop_max > 0 and base.get_action_meanings()[0] != "NOOP":
            raise ValueError("no-op starts need action 0 to be NOOP")
        self.noop_max = noop_max
        self.frame_skip = frame_skip
        self.screen_size = screen_size
        self.terminal_on_life_loss = terminal_on_life_loss
        self.stack = stack
        self._ale = base.ale
        height, width = self._ale.getScreenDims()
        self._indices = np.zeros((height, width), dtype=np.uint8)  # a screen's palette indices
        self._screens = np.zeros((2, height, width), dtype=np.uint8)  # their grayscale
        self._gray_table = np.zeros(256, dtype=np.uint8)  # palette index -> ALE's grayscale, as learned
        self._gray_known = np.zeros(256, dtype=np.uint8)
        self._table_lookup = _core.palette_to_gray_vectorized()  # else the scalar lookup, slower than ALE's own
        self._resize = AreaResize((height, width), (screen_size, screen_size))
        self._action_set = self._direct_action_set(env)
        self._needs_reset = True  # the direct path skips OrderEnforcing: keep its check here
        self._stacked = np.zeros((stack, screen_size, screen_size), dtype=np.uint8)
        self._lives = 0
        self.observation_space = gym.spaces.Box(0, 255, self._stacked.shape, np.uint8)

    @staticmethod
    def _direct_action_set(env: gym.Env[Any, Any]) -> list[Any] | None:
        """ale-py's action set if ``env.step`` only passes steps down to ale-py's one-frame step, else None."""
        inner = env
        while isinstance(inner, gym.Wrapper):
            if type(inner) not in (StartStateReset, OrderEnforcing):
                return None
            inner = inner.env
        base = inner
        if not isinstance(base, ale_py.env.AtariEnv) or base._frameskip != 1 or base.continuous:
            return None
        return list(base._action_set)

    def _read_screen(self, slot: int) -> None:
        """The current screen's grayscale into ``self._screens[slot]``."""
        ale, indices, screen = self._ale, self._indices, self._screens[slot]
        if not self._table_lookup:
            ale.getScreenGrayscale(screen)
            return
        ale.getScreen(indices)
        if not _core.palette_to_gray(indices, self._gray_table, self._gray_known, screen):
            ale.getScreenGrayscale(screen)  # a palette index not seen yet: ALE's own conversion, learned
            self._gray_table[indices] = screen
            self._gray_known[indices] = 1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[NDArray[np.uint8], dict[str, Any]]:
        """Resets, plays the no-ops, and returns the first stacked observation and the info."""
        _, info = self.env.reset(seed=seed, options=options)
        noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops):
            _, _, terminated, truncated, step_info = self.env.step(0)
            info.update(step_info)
            if terminated or truncated:
                _, info = self.env.reset(seed=seed, options=options)
        self._lives = self._ale.lives()
        self._needs_reset = False
        self._read_screen(0)
        stacked = np.empty_like(self._stacked)
        self._resize(self._screens[0], out=stacked[-1])
        stacked[:-1] = stacked[-1]
        self._stacked = stacked
        return stacked, info

    def step(self, action: int) -> tuple[NDArray[np.uint8], float, bool, bool, dict[str, Any]]:
        """The action on ``frame_skip`` frames; the new stacked observation, summed reward, flags, info."""
        ale, last = self._ale, self.frame_skip - 1
        total = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        pool = last > 0
        direct = self._action_set is not None
        if direct and self._needs_reset:
            raise gym.error.ResetNeeded("Cannot call env.step() before calling env.reset()")
        code = self._action_set[action] if direct else None  # type: ignore[index]
        for frame in range(self.frame_skip):
            if direct:
                total += ale.act(code, 1.0)
                terminated = ale.game_over(with_truncation=False)
                truncated = ale.game_truncated()
            else:
                _, reward, terminated, truncated, info = self.env.step(action)
                total += float(reward)
            if self.terminal_on_life_loss:
                lives = ale.lives()
                terminated = terminated or lives < self._lives
                self._lives = lives
            if frame == last or terminated or truncated:
                self._read_screen(0)
                pool = pool and frame == last  # an episode ending early: that frame's screen alone
                break
            if frame == last - 1:
                self._read_screen(1)
        if direct:
            info = {"lives": ale.lives(), "episode_frame_number": ale.getEpisodeFrameNumber(), "frame_number": ale.getFrameNumber()}
        stacked = np.empty_like(self._stacked)
        stacked[:-1] = self._stacked[1:]
        self._resize(self._screens[0], out=stacked[-1], other=self._screens[1] if pool else None)
        self._stacked = stacked
        return stacked, total, terminated, truncated, info


class StartStateReset(gym.Wrapper):
    """Resets by restoring the emulator state cloned after the first reset; the seed seeds the no-ops.

    Wraps the base ALE environment (``obs_type="ram"``, no frame skip, no sticky actions), below
    :class:`StandardPreprocessing`, which draws its no-op count from ``env.unwrapped.np_random``.

    Args:
        env: the base environment (``frameskip=1``, ``repeat_action_probability=0``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        env.reset(seed=0)
        base: Any = env.unwrapped  # ale-py's AtariEnv
        self._ale = base.ale
        self._start = self._ale.cloneState(include_rng=True)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[NDArray[np.uint8], dict[str, Any]]:
        """Restores the start state; ``seed`` (if given) reseeds ``env.unwrapped.np_random``.

        Returns:
            The base environment's observation (the RAM) and its info
            (``lives``, ``episode_frame_number``, ``frame_number``).
        """
        if seed is not None:
            self.env.unwrapped.np_random = seeding.np_random(seed)[0]
        ale = self._ale
        ale.restoreState(self._start)
        info = {"lives": ale.lives(), "episode_frame_number": ale.getEpisodeFrameNumber(), "frame_number": ale.getFrameNumber()}
        return ale.getRAM(), info


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
        if settings.repeat_action_probability == 0 and settings.noop_max > 0:
            env = StartStateReset(env)
        return StandardPreprocessing(
            env,
            noop_max=settings.noop_max,
            frame_skip=settings.frame_skip,
            screen_size=settings.screen_size,
            terminal_on_life_loss=settings.terminal_on_life_loss,
            stack=settings.stack,
        )
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
    shape = env.observation_space.shape
    if shape is None:
        raise ValueError(f"collect_reference_batch needs an observation space with a shape, got {env.observation_space}")
    batch = np.empty((size, *shape), dtype=np.uint8)
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
