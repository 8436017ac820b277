"""Atari environments: preprocessing, the reference batch, bad input, a short Pong episode."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding

from esfast import _core
from esfast.config import AtariSettings, ConfigError, PolicySettings, resolve_config
from esfast.envs.atari import (
    AreaResize,
    StandardPreprocessing,
    StartStateReset,
    check_atari_id,
    collect_reference_batch,
    make_atari_env,
)
from esfast.envs.rollout import run_episode
from esfast.errors import AtariEnvError, EnvError
from esfast.policies.conv import ConvPolicy

PONG = "ALE/Pong-v5"


@pytest.fixture(scope="module")
def pong() -> gym.Env:
    env = make_atari_env(PONG)
    yield env
    env.close()


def test_observations_are_stacked_84x84_grayscale_uint8(pong: gym.Env) -> None:
    assert pong.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert pong.action_space == gym.spaces.Discrete(6)
    observation, _ = pong.reset(seed=0)
    assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
    assert np.array_equal(observation[0], observation[3])  # the stack starts as copies of the first frame
    previous = observation
    for _ in range(3):
        observation, reward, terminated, truncated, _ = pong.step(0)
        assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
        np.testing.assert_array_equal(observation[:3], previous[1:])  # the stack shifts by one frame a step
        previous = observation
    assert isinstance(reward, float) and not terminated and not truncated


def test_frame_skip_noops_and_stack_follow_the_settings() -> None:
    settings = AtariSettings(noop_max=0, frame_skip=3, screen_size=42, stack=2)
    env = make_atari_env(PONG, settings)
    observation, info = env.reset(seed=0)
    assert observation.shape == (2, 42, 42)
    assert info["episode_frame_number"] == 0  # no no-ops
    _, _, _, _, info = env.step(0)
    assert info["episode_frame_number"] == 3  # the action repeated on frame_skip frames
    env.close()
    env = make_atari_env(PONG)
    _, info = env.reset(seed=0)
    assert 1 <= info["episode_frame_number"] <= 30  # 1 to noop_max no-ops
    _, _, _, _, after = env.step(0)
    assert after["episode_frame_number"] == info["episode_frame_number"] + 4
    env.close()


def _reference_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area averaging the slow, plain way: each output cell's covered input pixels, weighted by the area covered."""
    source_h, source_w = image.shape
    cell_h, cell_w = Fraction(source_h, height), Fraction(source_w, width)

    def covered(index: int, cell: Fraction, size: int) -> list[tuple[int, Fraction]]:
        """(input pixel, length of its overlap) for output cell ``index`` along one axis."""
        low, high = index * cell, (index + 1) * cell
        overlaps = [(k, min(high, k + 1) - max(low, k)) for k in range(int(low), min(size, int(high) + 1))]
        return [(k, length) for k, length in overlaps if length > 0]

    columns = [covered(j, cell_w, source_w) for j in range(width)]
    out = np.empty((height, width), np.uint8)
    for i in range(height):
        rows = covered(i, cell_h, source_h)
        for j in range(width):
            area = sum(int(image[r, c]) * h * w for r, h in rows for c, w in columns[j])
            out[i, j] = round(area / (cell_h * cell_w))  # round() of a Fraction: nearest, ties to even
    return out


def _pong_screens(count: int) -> list[np.ndarray]:
    env = gym.make(PONG, frameskip=4, obs_type="grayscale", repeat_action_probability=0.0)
    observation, _ = env.reset(seed=0)
    screens = []
    for action in np.random.default_rng(0).integers(0, 6, count * 20):
        observation, *_ = env.step(int(action))
        screens.append(observation)
    env.close()
    return screens[::20]


@pytest.mark.parametrize("size", [(84, 84), (42, 42), (83, 61), (105, 80)])
def test_area_resize_equals_a_plain_reference(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0])
    images = [rng.integers(0, 256, (210, 160), dtype=np.uint8), *_pong_screens(2)]
    resize = AreaResize((210, 160), size)
    for image in images:
        ours = resize(image)
        assert ours.shape == size and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, _reference_resize(image, *size))  # exact: integer arithmetic


@pytest.mark.parametrize(
    ("source", "target"),
    [((7, 5), (3, 11)), ((13, 17), (13, 17)), ((1, 1), (4, 3)), ((300, 2), (1, 1)), ((17, 19), (5, 1))],
    ids=["mixed", "identity", "upscale", "wide-row-sums", "one-column"],
)
def test_area_resize_other_shapes(source: tuple[int, int], target: tuple[int, int]) -> None:
    """Other geometries, including row weights too large for the 16-bit row sums (300 rows -> 1)."""
    rng = np.random.default_rng(sum(source))
    for image in (rng.integers(0, 256, source, dtype=np.uint8), np.full(source, 255, np.uint8)):
        np.testing.assert_array_equal(AreaResize(source, target)(image), _reference_resize(image, *target))


def test_area_resize_known_values() -> None:
    image = np.arange(210 * 160, dtype=np.int64).reshape(210, 160) % 256
    halves = AreaResize((210, 160), (105, 80))(image.astype(np.uint8))
    means = image.reshape(105, 2, 80, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(halves, np.round(means))  # 2x2 means (np.round: ties to even, as documented)
    constant = np.full((210, 160), 173, np.uint8)
    assert (AreaResize((210, 160), (84, 84))(constant) == 173).all()
    out = np.empty((84, 84), np.uint8)
    assert AreaResize((210, 160), (84, 84))(constant, out=out) is out
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        AreaResize((210, 160), (0, 84))
    with pytest.raises(ValueError, match="too large for exact float32 sums"):
        AreaResize((1000, 1000), (999, 999))


def test_area_resize_pools_two_frames_and_checks_its_arrays() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (210, 160), dtype=np.uint8) for _ in range(2))
    resize = AreaResize((210, 160), (84, 84))
    np.testing.assert_array_equal(resize(a, other=b), resize(np.maximum(a, b)))
    np.testing.assert_array_equal(resize(a, other=b), _reference_resize(np.maximum(a, b), 84, 84))
    out = np.empty((84, 84), np.uint8)
    with pytest.raises(TypeError, match="image must have dtype uint8, got float32"):
        resize(a.astype(np.float32), out)
    with pytest.raises(ValueError, match=r"image must have shape \(210, 160\), got \(160, 210\)"):
        resize(a.T.copy(), out)
    with pytest.raises(ValueError, match="image must be C-contiguous"):
        resize(np.asfortranarray(a), out)
    with pytest.raises(ValueError, match=r"out must have shape \(84, 84\)"):
        resize(a, np.empty((84, 83), np.uint8))
    with pytest.raises(ValueError, match="out must be writeable"):
        out.flags.writeable = False
        resize(a, out)
    with pytest.raises(TypeError, match="other must be a numpy array"):
        resize(a, other=[1, 2])
    image = np.zeros(210 * 160 + 84 * 84, np.uint8)
    with pytest.raises(ValueError, match="out must not overlap"):
        resize(image[: 210 * 160].reshape(210, 160), image[210 * 160 - 10 : 210 * 160 - 10 + 84 * 84].reshape(84, 84))


def test_palette_to_gray_is_a_table_lookup_that_reports_unknown_indices() -> None:
    rng = np.random.default_rng(5)
    indices = rng.integers(0, 256, (210, 160), dtype=np.uint8)  # every vector lane and the scalar tail
    table = rng.integers(0, 256, 256, dtype=np.uint8)
    known = np.ones(256, np.uint8)
    gray = np.empty_like(indices)
    assert _core.palette_to_gray(indices, table, known, gray)
    np.testing.assert_array_equal(gray, table[indices])
    for position in ((0, 0), (209, 159), (100, 3)):  # in a vector block and in the tail
        known[:] = 1
        known[indices[position]] = 0
        assert not _core.palette_to_gray(indices, table, known, gray)
    odd = indices.ravel()[:37]  # shorter than one vector
    known[:] = 1
    out = np.empty_like(odd)
    assert _core.palette_to_gray(odd, table, known, out)
    np.testing.assert_array_equal(out, table[odd])
    with pytest.raises(ValueError, match=r"table must have shape \(256,\)"):
        _core.palette_to_gray(indices, table[:255], known, gray)
    with pytest.raises(ValueError, match="out must have shape"):
        _core.palette_to_gray(indices, table, known, gray[:-1])
    with pytest.raises(TypeError, match="indices must have dtype uint8"):
        _core.palette_to_gray(indices.astype(np.int32), table, known, gray)


def test_unpickled_arrays_are_accepted_and_shifted_overlaps_refused() -> None:
    """An unpickled array carries its own dtype object: the bindings compare dtypes, not identities."""
    image = pickle.loads(pickle.dumps(np.full((210, 160), 9, np.uint8)))
    out = pickle.loads(pickle.dumps(np.zeros((84, 84), np.uint8)))
    assert (AreaResize((210, 160), (84, 84))(image, out) == 9).all()
    table = pickle.loads(pickle.dumps(np.arange(256, dtype=np.uint8)[::-1].copy()))
    buffer = np.arange(200, dtype=np.uint8)
    assert _core.palette_to_gray(buffer, table, np.ones(256, np.uint8), buffer)  # in place: allowed
    np.testing.assert_array_equal(buffer, 255 - np.arange(200))
    with pytest.raises(ValueError, match="out must be indices itself or not overlap it"):
        _core.palette_to_gray(buffer[:100], table, np.ones(256, np.uint8), buffer[1:101])


def test_step_before_reset_is_refused_on_the_direct_path() -> None:
    env = make_atari_env(PONG, AtariSettings(noop_max=0))  # no StartStateReset, which resets when made
    assert env._action_set is not None
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    env.close()


def test_steps_on_the_emulator_directly_equal_steps_through_the_wrappers() -> None:
    """The fast path (ale.act, palette-index screens) against the same chain stepped through env.step."""

    class Passthrough(gym.Wrapper):  # any wrapper esfast does not know sends steps through env.step
        pass

    settings = AtariSettings(terminal_on_life_loss=True)
    fast = make_atari_env("ALE/Breakout-v5", settings)
    base = make_atari_env("ALE/Breakout-v5", settings)
    slow = StandardPreprocessing(Passthrough(base.env), noop_max=settings.noop_max, terminal_on_life_loss=True)
    assert fast._action_set is not None and slow._action_set is None
    actions = np.random.default_rng(6).integers(0, 4, 3000)
    for seed in (1, 2):
        ours = [fast.reset(seed=seed)]
        theirs = [slow.reset(seed=seed)]
        for action in actions:
            ours.append(fast.step(int(action)))
            theirs.append(slow.step(int(action)))
            if ours[-1][2] or ours[-1][3]:
                break
        assert len(ours) == len(theirs) > 10
        for step, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_array_equal(a[0], b[0], err_msg=f"step {step}")
            assert a[1:] == b[1:], step  # reward, flags and info (lives, frame numbers) alike
    if fast._table_lookup:  # else ALE's own grayscale is read, no table
        assert fast._gray_known.sum() >= 2  # the table was learned from ALE's own grayscale
    fast.close()
    slow.close()


def _reference_play(
    settings: AtariSettings, seed: int, actions: np.ndarray, resize: Callable[[np.ndarray], np.ndarray]
) -> tuple[int, list[tuple[np.ndarray, float, bool, bool]]]:
    """The preprocessing written out on a grayscale base environment: the number of no-ops and each step's results."""
    env = gym.make(PONG, frameskip=1, obs_type="grayscale", repeat_action_probability=settings.repeat_action_probability)
    screen, _ = env.reset(seed=seed)
    noops = 0
    if settings.noop_max > 0:
        noops = int(seeding.np_random(seed)[0].integers(1, settings.noop_max + 1))  # the no-op count from the seed
        for _ in range(noops):
            screen, *_ = env.step(0)
    stack = [resize(screen)] * settings.stack
    trace = [(np.stack(stack), 0.0, False, False)]
    for action in actions:
        frames, total, terminated, truncated = [], 0.0, False, False
        for _ in range(settings.frame_skip):
            screen, reward, terminated, truncated, _ = env.step(int(action))
            frames.append(screen)
            total += float(reward)
            if terminated or truncated:
                break
        ended_early = len(frames) < settings.frame_skip
        pooled = frames[-1] if ended_early or len(frames) == 1 else np.maximum(frames[-2], frames[-1])
        stack = [*stack[1:], resize(pooled)]
        trace.append((np.stack(stack), total, terminated, truncated))
        if terminated or truncated:
            break
    env.close()
    return noops, trace


def _play_ours(env: gym.Env, seed: int, actions: np.ndarray) -> tuple[int, list[tuple[np.ndarray, float, bool, bool]]]:
    observation, info = env.reset(seed=seed)
    trace = [(observation, 0.0, False, False)]
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(int(action))
        trace.append((observation, float(reward), terminated, truncated))
        if terminated or truncated:
            break
    return int(info["episode_frame_number"]), trace


def _assert_same_trace(ours: list[tuple[np.ndarray, float, bool, bool]], reference: list[tuple[np.ndarray, float, bool, bool]]) -> None:
    assert len(ours) == len(reference)
    for step, ((a, ra, ta, ua), (b, rb, tb, ub)) in enumerate(zip(ours, reference)):
        assert a.dtype == np.uint8 and a.shape == b.shape, step
        np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
        assert (ra, ta, ua) == (rb, tb, ub), step


@pytest.mark.parametrize(
    "settings",
    [AtariSettings(), AtariSettings(repeat_action_probability=0.25), AtariSettings(noop_max=0, frame_skip=3, stack=2, screen_size=42)],
    ids=["standard", "sticky", "no-noops"],
)
def test_same_observations_as_a_numpy_reference(settings: AtariSettings) -> None:
    """No-ops from the seed, frame skip with summed rewards, max of the last two frames, exact area resize, stack."""
    env = make_atari_env(PONG, settings)
    actions = np.random.default_rng(0).integers(0, 6, 8)
    size = (settings.screen_size, settings.screen_size)
    noops, reference = _reference_play(settings, 3, actions, lambda image: _reference_resize(image, *size))
    frames, ours = _play_ours(env, 3, actions)
    if settings.noop_max > 0 and settings.repeat_action_probability == 0:
        assert frames == noops  # StartStateReset: the seed alone fixes the no-ops
    _assert_same_trace(ours, reference)
    env.close()


def test_a_whole_episode_to_game_over_matches_the_reference() -> None:
    """The step logic up to game over (the resize is AreaResize here, checked against the plain one above)."""
    settings = AtariSettings(frame_skip=5)  # the game may end before a step's last frame
    env = make_atari_env(PONG, settings)
    actions = np.random.default_rng(4).integers(0, 6, 20_000)
    resize = AreaResize((210, 160), (84, 84))
    _, reference = _reference_play(settings, 9, actions, lambda image: resize(image).copy())
    _, ours = _play_ours(env, 9, actions)
    assert reference[-1][2] and not reference[-1][3]  # a real game over (terminated, not truncated)
    assert sum(step[1] for step in ours) <= -15  # Pong under random actions: most points lost, not clipped
    _assert_same_trace(ours, reference)
    env.close()


def test_terminal_on_life_loss_ends_the_episode_at_the_first_lost_life() -> None:
    env = make_atari_env("ALE/Breakout-v5", AtariSettings(terminal_on_life_loss=True))
    _, info = env.reset(seed=0)
    lives = info["lives"]
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            break
    assert terminated and info["lives"] == lives - 1 and not env.unwrapped.ale.game_over()
    env.close()


def test_preprocessing_needs_no_opencv() -> None:
    code = (
        "import sys, esfast.envs.atari as a; env = a.make_atari_env('ALE/Pong-v5'); env.reset(seed=0); env.step(0);"
        " assert 'cv2' not in sys.modules, 'cv2 imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_preprocessing_rejects_a_base_that_skips_frames() -> None:
    base = gym.make(PONG, obs_type="ram")  # frameskip 4 inside ale-py
    with pytest.raises(ValueError, match="must not skip frames itself"):
        StandardPreprocessing(base)
    base.close()


def test_rewards_are_not_clipped_and_episodes_end_on_game_over_only(pong: gym.Env) -> None:
    names = [type(wrapper).__name__ for wrapper in _wrappers(pong)]
    assert not any("Reward" in name for name in names), names
    preprocessing = next(w for w in _wrappers(pong) if isinstance(w, StandardPreprocessing))
    assert preprocessing.terminal_on_life_loss is False and preprocessing.noop_max == 30


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def test_reference_batch_is_seeded_and_deterministic(pong: gym.Env) -> None:
    first = collect_reference_batch(pong, 6, seed=5)
    second = collect_reference_batch(pong, 6, seed=5)
    other = collect_reference_batch(pong, 6, seed=6)
    assert first.shape == (6, 4, 84, 84) and first.dtype == np.uint8 and first.flags.c_contiguous
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert len({frame.tobytes() for frame in first}) > 1


def test_reference_batch_bad_arguments(pong: gym.Env) -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        collect_reference_batch(pong, 0, seed=0)
    with pytest.raises(ValueError, match=r"keep_prob must be in \(0, 1\]"):
        collect_reference_batch(pong, 4, seed=0, keep_prob=0.0)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [
        (
            "ALE/Pongg-v5",
            "unknown Atari environment 'ALE/Pongg-v5': Environment `Pongg` doesn't exist in namespace ALE. Did you mean: `Pong`?",
        ),
        ("ALE/Pong-v9", "unknown Atari environment 'ALE/Pong-v9'"),
        ("NoSuchGame-v5", "unknown Atari environment 'NoSuchGame-v5'"),
        ("CartPole-v1", "'CartPole-v1' is not an Atari (ALE) environment; use an id like 'ALE/Pong-v5'"),
    ],
)
def test_bad_id_is_one_line(env_id: str, message: str) -> None:
    with pytest.raises(AtariEnvError) as info:
        make_atari_env(env_id)
    assert str(info.value) == message or str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, EnvError)


def test_missing_rom_is_one_line_before_any_emulator_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))  # ale-py looks for ROMs there: an empty directory
    with pytest.raises(AtariEnvError) as info:
        make_atari_env(PONG)
    message = str(info.value)
    assert message.startswith("the ROM of 'ALE/Pong-v5' (game 'pong') is missing or corrupt:") and "pong.bin" in message
    assert "\n" not in message
    assert capsys.readouterr().out == ""  # ale-py's own print about ALE_ROMS_DIR is kept off the console
    (tmp_path / "pong.bin").write_bytes(b"not a rom")
    with pytest.raises(AtariEnvError, match=r"is missing or corrupt: The hash of pong\.bin does not match what was expected!$"):
        check_atari_id(PONG)


def test_check_atari_id_returns_the_game() -> None:
    assert check_atari_id("ALE/BeamRider-v5") == "beam_rider"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_skip": 0}, "atari.frame_skip must be an integer >= 1, got 0"),
        ({"noop_max": -1}, "atari.noop_max must be an integer >= 0, got -1"),
        ({"screen_size": 16}, "atari.screen_size must be an integer >= 20 (the network's smallest input), got 16"),
        ({"stack": 2.5}, "atari.stack must be an integer >= 1, got 2.5"),
        ({"terminal_on_life_loss": 1}, "atari.terminal_on_life_loss must be true or false, got 1"),
        ({"repeat_action_probability": 1.5}, "atari.repeat_action_probability must be a number in [0, 1], got 1.5"),
        ({"reference_batch_size": 1}, "atari.reference_batch_size must be an integer >= 2"),
    ],
)
def test_bad_settings_are_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AtariSettings(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_short_pong_episode_through_run_episode(pong: gym.Env) -> None:
    batch = collect_reference_batch(pong, 8, seed=0)
    policy = ConvPolicy(
        pong.observation_space, pong.action_space, PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu"), batch
    )
    actor = policy.actor(policy.initial_theta(np.random.default_rng(0)))
    first = run_episode(pong, actor, seed=7, timestep_limit=25)
    second = run_episode(pong, actor, seed=7, timestep_limit=25)
    assert first.length == 25 and np.isfinite(first.ret)
    assert (first.ret, first.length) == (second.ret, second.length)
    recorded = run_episode(pong, actor, seed=7, timestep_limit=3, record_obs=True)
    assert recorded.obs_sum is not None and recorded.obs_sum.shape == (4, 84, 84)


@pytest.mark.parametrize("name", ["pong", "breakout", "seaquest", "beamrider", "frostbite"])
def test_shipped_atari_configs_name_installed_games(name: str) -> None:
    config = resolve_config(name)
    check_atari_id(config.env_id)  # the id exists and its ROM is in ale-py's wheel


def _play(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple[bytes, float, bool]]:
    observation, _ = env.reset(seed=seed)
    trace = [(observation.tobytes(), 0.0, False)]
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(int(action))
        trace.append((observation.tobytes(), float(reward), terminated))
        if terminated or truncated:
            break
    return trace


@pytest.mark.parametrize("game", ["Pong", "Seaquest"])
def test_a_seeded_episode_does_not_depend_on_what_ran_before(game: str) -> None:
    """Resets restore the start state (no ROM reload); Seaquest is a game whose power-on state varies."""
    env_id = f"ALE/{game}-v5"
    fresh, used = make_atari_env(env_id), make_atari_env(env_id)
    assert any(isinstance(w, StartStateReset) for w in _wrappers(fresh))
    rng = np.random.default_rng(1)
    _play(used, 11, rng.integers(0, used.action_space.n, 300))  # a different history in one of them
    actions = rng.integers(0, fresh.action_space.n, 150)
    assert _play(fresh, 5, actions) == _play(used, 5, actions)
    assert _play(fresh, 5, actions) != _play(fresh, 6, actions)  # the seed matters (no-op starts)
    fresh.close()
    used.close()


def test_sticky_actions_or_no_noops_keep_ale_pys_own_reset() -> None:
    for settings in (AtariSettings(repeat_action_probability=0.25), AtariSettings(noop_max=0)):
        env = make_atari_env(PONG, settings)
        assert not any(isinstance(w, StartStateReset) for w in _wrappers(env))
        env.close()
