"""Videos: ``esfast play --video`` run for real (MuJoCo offscreen, Atari's screen), the camera, and the backend choice.

The backend choice is :mod:`esfast.media.offscreen` with its probe process, :mod:`esfast.media.gl_probe`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray

from esfast.config import Config, apply_overrides, load_config
from esfast.envs import make_env
from esfast.errors import EnvError, UserError
from esfast.evaluators import SerialEvaluator
from esfast.media import offscreen, video
from esfast.training import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PENDULUM = [
    "env_id=InvertedPendulum-v5",
    "episodes_per_batch=4",
    "hidden_dims=[4]",
    "episode_cutoff_mode=20",
    "run.noise_table_size=100000",
    "run.eval_episodes=1",
    "snapshot_freq=0",
    "run.generations=1",
]
PONG = [
    "episodes_per_batch=2",
    "episode_cutoff_mode=50",
    "run.noise_table_size=1000000",
    "reference_batch_size=4",
    "run.eval_episodes=1",
    "snapshot_freq=0",
    "run.generations=1",
]


def checkpoint(config: Config, out: Path) -> Path:
    """A checkpoint of one generation trained in this process."""
    with Trainer(config, out, evaluator=SerialEvaluator) as trainer:
        trainer.train()
    return out / "checkpoints" / "latest.npz"


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(apply_overrides(Config(), PENDULUM), tmp_path_factory.mktemp("pendulum"))


@pytest.fixture(scope="module")
def pong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(apply_overrides(load_config(CONFIGS / "pong.json"), PONG), tmp_path_factory.mktemp("pong"))


def play(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``esfast play ARGS`` in a subprocess, with the OpenGL backend left for esfast to choose."""
    env = {key: value for key, value in os.environ.items() if key not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "esfast.cli", "play", *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def lengths(stdout: str) -> list[int]:
    return [int(length) for length in re.findall(r"^episode \d+: return \S+, length (\d+)$", stdout, re.MULTILINE)]


def read_video(path: Path) -> tuple[list[NDArray[np.uint8]], Fraction]:
    """The decoded RGB frames and the stream's frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or 0)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], rate


def test_mujoco_video_has_a_frame_per_step_of_each_episode(pendulum: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    result = play(str(pendulum), "--video", str(out), "--episodes", "2")
    assert result.returncode == 0, result.stderr
    steps = lengths(result.stdout)
    assert len(steps) == 2 and result.stderr == ""
    frames, rate = read_video(out)
    assert len(frames) == sum(steps)
    assert f"video: {out} ({sum(steps)} frames, 480x480, 25 fps, from MuJoCo offscreen (" in result.stdout
    assert frames[0].shape == (480, 480, 3) and rate == 25  # gymnasium's default size; render_fps = 1 / dt
    assert frames[0].max() > 50 and not np.array_equal(frames[0], frames[-1])  # a scene, and it moves


def test_video_size_and_rate_options(pendulum: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.mkv"
    result = play(str(pendulum), "--video", str(out), "--episodes", "1", "--width", "96", "--height", "63", "--fps", "10")
    assert result.returncode == 0, result.stderr
    frames, rate = read_video(out)
    assert len(frames) == sum(lengths(result.stdout))
    assert frames[0].shape == (64, 96, 3) and rate == 10  # an odd height is padded to even (yuv420p)


def test_atari_video_is_the_game_screen(pong: Path, tmp_path: Path) -> None:
    out = tmp_path / "pong.mp4"
    result = play(str(pong), "--video", str(out), "--episodes", "1")
    assert result.returncode == 0, result.stderr
    (steps,) = lengths(result.stdout)
    frames, rate = read_video(out)
    assert len(frames) == steps and f"({steps} frames, 160x210, 15 fps, from the ALE screen)" in result.stdout
    assert frames[0].shape == (210, 160, 3) and rate == 15  # the emulator's screen at 60 / frame_skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "320"], "an Atari video is the 210x160 ALE screen"),
        (["--fps", "0"], "--fps must be positive, got 0.0"),
        (["--render"], "not allowed with argument --video"),
    ],
)
def test_bad_video_options_are_one_line(pong: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = play(str(pong), "--video", str(tmp_path / "out.mp4"), *args)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / "out.mp4").exists()
    assert "Traceback" not in result.stderr


def test_missing_extra_is_one_line(pendulum: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "av"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'av'\")\n")
    result = play(str(pendulum), "--video", str(tmp_path / "out.mp4"), extra_env={"PYTHONPATH": str(shadow.parent)})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "esfast: error: videos need PyAV: pip install 'esfast[video]'\n"


def test_missing_extra_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(UserError, match=re.escape("pip install 'esfast[video]'")):
        video.VideoWriter(tmp_path / "out.mp4", 30)


@pytest.mark.parametrize(
    ("name", "message"),
    [("out.gif", "a video file ends in .mp4, .mkv, .mov"), ("missing/out.mp4", "no folder")],
)
def test_bad_video_paths(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        video.check_video_path(tmp_path / name)


def test_writer_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 31, 45, 3), dtype=np.uint8)
    with video.VideoWriter(tmp_path / "noise.mp4", Fraction(30000, 1001)) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.frames == 7 and writer.size == (32, 46)
    decoded, rate = read_video(tmp_path / "noise.mp4")
    assert len(decoded) == 7 and decoded[0].shape == (32, 46, 3) and rate == Fraction(30000, 1001)


def test_egl_broken_falls_back_to_osmesa_or_names_the_packages(pendulum: Path, tmp_path: Path) -> None:
    """With glvnd finding no EGL vendor: OSMesa where libosmesa6 is installed, else one line saying what to install."""
    out = tmp_path / "out.mp4"
    result = play(str(pendulum), "--video", str(out), "--episodes", "1", extra_env={"__EGL_VENDOR_LIBRARY_DIRS": str(tmp_path)})
    if result.returncode == 0:
        assert "from MuJoCo offscreen (osmesa))" in result.stdout
        assert len(read_video(out)[0]) == sum(lengths(result.stdout))
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "offscreen rendering needs EGL or OSMesa" in result.stderr and "libosmesa6" in result.stderr


@pytest.fixture(autouse=True)
def fresh_probes() -> None:
    """Each test finds the backends afresh (the answers are kept per process)."""
    offscreen._probe.cache_clear()


class FakeBackends:
    """Stands in for ``offscreen.probe``: the backends in ``failing`` do not work."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.tried: list[str] = []

    def __call__(self, name: str) -> str | None:
        self.tried.append(name)
        return f"ImportError: no {name} here" if name in self.failing else None


def unset(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setenv(name, "")  # recorded, so the test's own choice is undone after it
        monkeypatch.delenv(name)


def test_backend_falls_back_to_osmesa(monkeypatch: pytest.MonkeyPatch) -> None:
    unset(monkeypatch, "MUJOCO_GL", "PYOPENGL_PLATFORM")
    fake = FakeBackends({"egl"})
    monkeypatch.setattr(offscreen, "probe", fake)
    assert offscreen.choose_offscreen_backend() == "osmesa"
    assert fake.tried == ["egl", "osmesa"] and os.environ["MUJOCO_GL"] == "osmesa"
    assert "PYOPENGL_PLATFORM" not in os.environ


def test_no_backend_is_one_line_naming_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    unset(monkeypatch, "MUJOCO_GL", "PYOPENGL_PLATFORM")
    monkeypatch.setattr(offscreen, "probe", FakeBackends({"egl", "osmesa"}))
    with pytest.raises(EnvError) as caught:
        offscreen.choose_offscreen_backend()
    message = str(caught.value)
    assert "\n" not in message and "egl: ImportError: no egl here; osmesa: ImportError: no osmesa here" in message
    assert "apt-get install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri" in message and "libosmesa6" in message
    assert "MUJOCO_GL" not in os.environ
    monkeypatch.setenv("PYOPENGL_PLATFORM", "x11")
    with pytest.raises(EnvError, match="unset PYOPENGL_PLATFORM \\(it is 'x11', which rules out egl and osmesa\\)"):
        offscreen.choose_offscreen_backend()


def test_mujoco_gl_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "OSMesa")
    fake = FakeBackends(set())
    monkeypatch.setattr(offscreen, "probe", fake)
    assert offscreen.choose_offscreen_backend() == "osmesa" and fake.tried == ["osmesa"]
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    fake.failing = {"osmesa"}
    with pytest.raises(EnvError, match=r"MUJOCO_GL=osmesa cannot render here .*; unset it to let esfast choose"):
        offscreen.choose_offscreen_backend()
    monkeypatch.setenv("MUJOCO_GL", "wgl")
    with pytest.raises(EnvError, match="gymnasium's MuJoCo renderer takes egl, osmesa, glfw"):
        offscreen.choose_offscreen_backend()


def probe_with(monkeypatch: pytest.MonkeyPatch, code: str) -> list[str]:
    """Makes the probe process ``python -c code``; returns the list of backends it is started for."""
    started: list[str] = []

    def command(backend: str) -> list[str]:
        started.append(backend)
        return [sys.executable, "-c", code]

    monkeypatch.setattr(offscreen, "_probe_command", command)
    return started


def test_a_probe_runs_in_a_process_of_its_own_and_its_answer_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    started = probe_with(monkeypatch, "import os; print('noise'); print(os.environ['MUJOCO_GL'], 'is not here'); raise SystemExit(1)")
    assert offscreen.probe("egl") == "egl is not here"  # the last line the process printed, for the backend named
    assert offscreen.probe("egl") == "egl is not here" and started == ["egl"]  # the second answer is the kept one
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")  # another platform: the answer may differ, so it is asked again
    assert offscreen.probe("egl") == "egl is not here" and started == ["egl", "egl"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os; os.abort()", "the probe process died of SIGABRT"),
        ("import time; time.sleep(30)", "the probe gave no answer within 0.5 s"),
        ("raise SystemExit(3)", "the probe process exited with status 3"),
        ("import sys; sys.stderr.write('Traceback\\nOSError: no libEGL\\n'); sys.exit(1)", "OSError: no libEGL"),  # said on stderr only
    ],
)
def test_a_probe_that_crashes_or_hangs_is_a_reason(monkeypatch: pytest.MonkeyPatch, code: str, reason: str) -> None:
    probe_with(monkeypatch, code)
    monkeypatch.setattr(offscreen, "PROBE_SECONDS", 0.5)
    unset(monkeypatch, "MUJOCO_GL", "PYOPENGL_PLATFORM")
    assert offscreen.probe("egl") == reason
    with pytest.raises(EnvError, match=re.escape(f"egl: {reason}; osmesa: {reason}")):
        offscreen.choose_offscreen_backend()


def test_the_probe_process_says_why_in_one_line() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    command = [sys.executable, "-m", "esfast.media.gl_probe"]
    broken = subprocess.run([*command, "nonsense"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert broken.returncode == 1 and len(broken.stdout.splitlines()) == 1 and "nonsense" in broken.stdout
    usage = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert usage.returncode == 2 and usage.stdout.startswith("usage: python -m esfast.media.gl_probe")


@pytest.mark.parametrize(
    ("env_id", "camera"),
    [
        ("HalfCheetah-v5", "track"),  # a default view that never moves
        ("Hopper-v5", "track"),  # its default config names a body to track, which MuJoCo's free camera ignores
        ("Walker2d-v5", "track"),
        ("InvertedPendulum-v5", None),  # no track camera: a task that stays in place keeps gymnasium's view
    ],
)
def test_videos_of_mujoco_tasks_follow_the_agent(env_id: str, camera: str | None) -> None:
    import mujoco

    env = make_env(env_id, render_mode="rgb_array")
    try:
        base = env.unwrapped
        renderer = base.mujoco_renderer  # type: ignore[attr-defined]
        default = renderer.camera_id  # -1, the free camera, since gymnasium 1.4; the track camera before
        switched = video.follow_agent(env)
        track = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_CAMERA, "track")  # type: ignore[attr-defined]
        if camera is None:
            assert track == -1 and switched is None and renderer.camera_id == default == -1
        else:
            assert renderer.camera_id == track >= 0 and switched == (camera if default == -1 else None)
            assert base.model.cam_mode[track] == mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM  # type: ignore[attr-defined]
            assert video.follow_agent(env) is None  # on its camera now: nothing more to switch
    finally:
        env.close()


def test_a_camera_the_environment_was_made_with_is_kept() -> None:
    cheetah = make_env("HalfCheetah-v5", render_mode="rgb_array", camera_id=0)
    pole = make_env("CartPole-v1", render_mode="rgb_array")
    try:
        assert video.follow_agent(cheetah) is None and cheetah.unwrapped.mujoco_renderer.camera_id == 0  # type: ignore[attr-defined]
        assert video.follow_agent(pole) is None  # not a MuJoCo model
    finally:
        cheetah.close()
        pole.close()
