"""Videos of a policy (``esfast play --video``), made on a machine without a display.

What a video holds: one frame per agent step, the screen right after that step's action (an episode
of length ``L`` gives ``L`` frames, the reset screen is not one of them), the episodes one after
another in one file. Where the frames come from:

- MuJoCo environments: gymnasium's offscreen renderer (``render_mode="rgb_array"``, 480x480 unless
  the environment is made with another ``width`` and ``height``), on the OpenGL backend that
  :func:`esfast.media.offscreen.choose_offscreen_backend` finds to work, through a camera that
  follows the agent where the model has one (:func:`follow_agent`);
- Atari environments: the emulator's own RGB screen (``ale.getScreenRGB()``, 210x160), not the
  84x84 grayscale observation the policy sees; one frame per agent step, so at
  ``ATARI_FRAME_RATE / frame_skip`` frames per second the video runs at the game's speed;
- any other environment: its ``render()`` in ``rgb_array`` mode.

Encoding: H.264 (``libx264``, ``yuv420p``, which players expect) in an MP4, Matroska or QuickTime
file, through PyAV, whose wheel carries FFmpeg and x264: ``pip install "esfast[video]"``. PyAV is
imported only here, and only when a video is written; without it, writing one is a
:class:`~esfast.errors.UserError` of one line naming the extra.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esfast.errors import EnvError, UserError
from esfast.media.offscreen import choose_offscreen_backend

if TYPE_CHECKING:
    import av.container
    import av.video.stream

__all__ = [
    "ATARI_FRAME_RATE",
    "TRACKING_CAMERA",
    "VIDEO_SUFFIXES",
    "FrameRecorder",
    "VideoWriter",
    "check_video_path",
    "follow_agent",
    "frame_rate",
    "screen_reader",
]

logger = logging.getLogger(__name__)

VIDEO_EXTRA = "pip install 'esfast[video]'"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that hold H.264
ATARI_FRAME_RATE = 60  # frames per second of the Atari 2600 (NTSC), the ALE's emulation rate
DEFAULT_FRAME_RATE = 30  # for environments whose metadata names no render_fps
TRACKING_CAMERA = "track"  # the camera gymnasium's MuJoCo models define to follow the agent (mode trackcom)
FREE_CAMERA = -1  # gymnasium's renderer's camera_id for its free camera, placed by default_camera_config
_REASON_CHARS = 120  # of an error's message, in a one-line error


def _one_line(error: BaseException, limit: int = _REASON_CHARS) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_mujoco(env: gym.Env[Any, Any]) -> bool:
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    return isinstance(env.unwrapped, MujocoEnv)


def follow_agent(env: gym.Env[Any, Any]) -> str | None:
    """Films a MuJoCo environment through its model's ``track`` camera where its view would stay put.

    Gymnasium's renderer shows a model's camera when one is chosen (``camera_name=`` or
    ``camera_id=``; before gymnasium 1.4 the default was the ``track`` camera of the models that
    define one), and otherwise its free camera, placed once by the task's
    ``default_camera_config``. The free camera does not move: MuJoCo reads the config's
    ``trackbodyid`` for tracking cameras only, and gymnasium sets the camera free again at every
    frame, so a HalfCheetah, Hopper, Walker2d or Humanoid soon runs out of the picture. Here a
    renderer on its free camera is switched, before its first frame, to the model's ``track``
    camera (mode ``trackcom``: it follows the centre of mass), which gymnasium's locomotion models
    define (Ant, HalfCheetah, Hopper, Humanoid, HumanoidStandup, Swimmer, Walker2d). A camera the
    environment was made with is kept, and so is the free view of a model without a ``track``
    camera (InvertedPendulum, Reacher, Pusher: tasks that stay in place).

    Returns:
        The name of the camera the environment is now filmed through, if this switched it; else None.
    """
    base: Any = env.unwrapped
    renderer, model = getattr(base, "mujoco_renderer", None), getattr(base, "model", None)
    if renderer is None or model is None or getattr(renderer, "camera_id", None) != FREE_CAMERA:
        return None
    import mujoco

    camera = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, TRACKING_CAMERA)
    if camera < 0:
        return None
    renderer.camera_id = camera
    return TRACKING_CAMERA


def screen_reader(env: gym.Env[Any, Any]) -> tuple[Callable[[], NDArray[np.uint8]], str]:
    """What reads the environment's current screen, and where its frames come from (for the console).

    For a MuJoCo environment this chooses the offscreen backend
    (:func:`~esfast.media.offscreen.choose_offscreen_backend`) and the camera (:func:`follow_agent`).

    Args:
        env: an ALE environment (possibly wrapped, e.g. by :func:`esfast.envs.atari.make_atari_env`),
            or one made with ``render_mode="rgb_array"``.

    Returns:
        A function of no argument returning the screen, ``uint8`` of shape ``(height, width, 3)``,
        and a description such as ``"the ALE screen"`` or ``"MuJoCo offscreen (egl, camera track)"``.

    Raises:
        EnvError: the environment does not render to arrays, or no offscreen backend works.
    """
    base: Any = env.unwrapped
    ale = getattr(base, "ale", None)  # ale-py's AtariEnv
    if ale is not None and hasattr(ale, "getScreenRGB"):
        read_ale: Callable[[], NDArray[np.uint8]] = ale.getScreenRGB
        return read_ale, "the ALE screen"
    if env.render_mode != "rgb_array":
        raise EnvError(f"cannot record {env.spec.id if env.spec else type(base).__name__}: it was made without render_mode='rgb_array'")
    if _is_mujoco(env):
        backend, camera = choose_offscreen_backend(), follow_agent(env)
        source = f"MuJoCo offscreen ({backend}{f', camera {camera}' if camera else ''})"
    else:
        source = "render()"

    def render() -> NDArray[np.uint8]:
        try:
            frame = env.render()
        except gym.error.Error as error:  # e.g. a renderer's missing package (pygame)
            raise EnvError(f"the environment cannot render: {_one_line(error)}") from None
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise EnvError(f"render() gave {type(frame).__name__} {getattr(frame, 'shape', '')}, not an RGB image (height, width, 3)")
        return np.asarray(frame, dtype=np.uint8)

    return render, source


def frame_rate(env: gym.Env[Any, Any], frame_skip: int | None = None, *, fps: float | None = None) -> Fraction:
    """Frames per second of a video of ``env``: ``fps`` if given, else the environment's own speed.

    Args:
        env: the environment.
        frame_skip: emulator frames per agent step, for Atari (the video has one frame per agent
            step): the speed is then ``ATARI_FRAME_RATE / frame_skip`` (15 for the standard 4);
            ale-py's ``metadata["render_fps"]`` (30, whatever the frame skip) is not used.
        fps: a rate chosen by the user, > 0.

    Returns:
        ``fps``; for Atari as above; else ``env.metadata["render_fps"]`` (MuJoCo's: ``1 / dt``), or
        ``DEFAULT_FRAME_RATE`` where the metadata has none.
    """
    if fps is not None:
        return Fraction(fps).limit_denominator(1001)
    if frame_skip is not None:
        return Fraction(ATARI_FRAME_RATE, frame_skip)
    render_fps = env.metadata.get("render_fps")
    if isinstance(render_fps, (int, float)) and render_fps > 0:
        return Fraction(render_fps).limit_denominator(1001)
    name = env.spec.id if env.spec else type(env.unwrapped).__name__
    logger.info("%s names no render_fps: the video runs at %d frames per second", name, DEFAULT_FRAME_RATE)
    return Fraction(DEFAULT_FRAME_RATE)


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError(f"videos need PyAV: {VIDEO_EXTRA}") from None
    return av


def check_video_path(path: str | Path) -> Path:
    """Checks, before any work, that a video can be written to ``path``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        UserError: PyAV is not installed (the message names ``esfast[video]``), the suffix is not
            one of ``VIDEO_SUFFIXES``, or the folder does not exist.
    """
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"a video file ends in {', '.join(VIDEO_SUFFIXES)} (H.264); got {str(path)!r}")
    if not path.parent.is_dir():
        raise UserError(f"no folder {str(path.parent)!r} to write the video {path.name!r} into")
    _import_av()
    return path


class VideoWriter:
    """Encodes RGB frames into an H.264 video file with PyAV; a context manager.

    The frame size is that of the first frame; an odd height or width is padded by one row or
    column (a copy of the last one), as ``yuv420p`` needs even sizes.

    Args:
        path: the file (``.mp4``, ``.mkv`` or ``.mov``) in an existing folder; replaced if it exists.
        fps: frames per second.

    Raises:
        UserError: as :func:`check_video_path`, or the file cannot be written (here, or at a
            later ``write`` or ``close``: FFmpeg opens it when the first frames are encoded).
    """

    def __init__(self, path: str | Path, fps: Fraction | int) -> None:
        self.path = check_video_path(path)
        self.fps = Fraction(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) as encoded
        self.closed = False
        self._av = _import_av()
        self._stream: av.video.stream.VideoStream | None = None
        with self._writing():
            self._container: av.container.OutputContainer = self._av.open(str(self.path), mode="w")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """FFmpeg's errors (an unwritable file, a full disk) as one line naming the file."""
        try:
            yield
        except (self._av.FFmpegError, OSError, ValueError) as error:
            raise UserError(f"cannot write the video {self.path}: {_one_line(error)}") from None

    def write(self, frame: NDArray[np.uint8]) -> None:
        """Encodes one frame, ``uint8`` of shape ``(height, width, 3)`` (RGB), the size of the first."""
        height, width = frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2
        if (height, width) != frame.shape[:2]:
            frame = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")
        if self._stream is None:
            stream = self._container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            self._stream, self.size = stream, (height, width)
        elif (height, width) != self.size:
            raise ValueError(f"a frame of (height, width) {(height, width)} in a video of {self.size}")
        picture = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
        with self._writing():
            self._container.mux(self._stream.encode(picture))
        self.frames += 1

    def close(self) -> None:
        """Flushes the encoder and closes the file (a video of no frame is an empty container); idempotent."""
        if self.closed:
            return
        self.closed = True
        stream, self._stream = self._stream, None
        with self._writing():
            try:
                if stream is not None:
                    self._container.mux(stream.encode(None))
            finally:
                self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()


class FrameRecorder(gym.Wrapper):
    """Writes the screen after each step to a :class:`VideoWriter`; steps and resets are unchanged.

    Resets write nothing, and neither do the steps a wrapper inside this one takes on its own
    (Atari's no-op starts): the video has one frame per step taken through this wrapper. As the
    outermost wrapper it keeps :func:`~esfast.envs.rollout.run_episode` from peeling gymnasium's
    bookkeeping wrappers: the steps go through ``env.step``, with the same results.

    Args:
        env: the environment.
        writer: where the frames go.
        read_screen: the screen reader (:func:`screen_reader`).
    """

    def __init__(self, env: gym.Env[Any, Any], writer: VideoWriter, read_screen: Callable[[], NDArray[np.uint8]]) -> None:
        super().__init__(env)
        self.writer = writer
        self.read_screen = read_screen

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """``env.step(action)``, then the screen into the video."""
        result = self.env.step(action)
        self.writer.write(self.read_screen())
        return result
