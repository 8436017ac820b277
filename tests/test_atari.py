"""Atari environments: preprocessing, the reference batch, bad input, a short Pong episode."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from esfast.atari import AtariEnvError, StartStateReset, check_atari_id, collect_reference_batch, make_atari_env
from esfast.config import AtariSettings, ConfigError, PolicySettings
from esfast.conv_policy import ConvPolicy
from esfast.cli import resolve_config
from esfast.rollout import EnvError, run_episode

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


@pytest.mark.parametrize(
    "settings",
    [AtariSettings(), AtariSettings(repeat_action_probability=0.25), AtariSettings(noop_max=0, frame_skip=3, stack=2)],
    ids=["standard", "sticky", "no-noops"],
)
def test_same_observations_as_gymnasiums_composition_on_an_rgb_base(settings: AtariSettings) -> None:
    """Our shortcuts (RAM base observation, no env checker, start-state resets) change nothing the agent sees."""
    ours = make_atari_env(PONG, settings)
    base = gym.make(PONG, frameskip=1, repeat_action_probability=settings.repeat_action_probability)
    theirs = FrameStackObservation(
        AtariPreprocessing(base, noop_max=settings.noop_max, frame_skip=settings.frame_skip, screen_size=settings.screen_size), settings.stack
    )
    a, _ = ours.reset(seed=3)
    b, _ = theirs.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    for action in rng.integers(0, 6, 40):
        a, ra, ta, _, _ = ours.step(int(action))
        b, rb, tb, _, _ = theirs.step(int(action))
        np.testing.assert_array_equal(a, b)
        assert (ra, ta) == (rb, tb)
    ours.close()
    theirs.close()


def test_rewards_are_not_clipped_and_episodes_end_on_game_over_only(pong: gym.Env) -> None:
    names = [type(wrapper).__name__ for wrapper in _wrappers(pong)]
    assert not any("Reward" in name for name in names), names
    preprocessing = next(w for w in _wrappers(pong) if isinstance(w, AtariPreprocessing))
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
        ("ALE/Pongg-v5", "unknown Atari environment 'ALE/Pongg-v5': Environment `Pongg` doesn't exist in namespace ALE. Did you mean: `Pong`?"),
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


def test_missing_rom_is_one_line_before_any_emulator_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALE_ROMS_DIR", str(tmp_path))  # ale-py looks for ROMs there: an empty directory
    with pytest.raises(AtariEnvError) as info:
        make_atari_env(PONG)
    message = str(info.value)
    assert message.startswith("the ROM of 'ALE/Pong-v5' (game 'pong') is missing or corrupt:") and "pong.bin" in message
    assert "\n" not in message
    assert capsys.readouterr().out == ""  # ale-py's own print about ALE_ROMS_DIR is kept off the console
    (tmp_path / "pong.bin").write_bytes(b"not a rom")
    with pytest.raises(AtariEnvError, match="is missing or corrupt: The hash of pong.bin does not match what was expected!$"):
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
    policy = ConvPolicy(pong.observation_space, pong.action_space, PolicySettings(type="AtariPolicy", hidden_dims=(256,), nonlin_type="relu"), batch)
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
