"""The OpenGL backend of MuJoCo's offscreen rendering, chosen for a machine without a display.

Gymnasium's MuJoCo renderer reads ``MUJOCO_GL`` at its first frame and makes a GL context of that
backend (``mujoco.egl``, ``mujoco.osmesa`` or ``mujoco.glfw``). :func:`choose_offscreen_backend`
sets the variable to one that works: the one the user set, else the first of EGL and OSMesa (both
run on Mesa's llvmpipe without a GPU; EGL uses a GPU where there is one) that a probe finds to
work. Each probe is a process of its own (:mod:`esfast.media.gl_probe`): a backend that fails,
aborts or hangs leaves nothing in this process, whose PyOpenGL has not bound a platform yet when
the renderer's backend is imported. A probe's answer is kept for the rest of the process.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys

from esfast.errors import EnvError

__all__ = [
    "GYMNASIUM_BACKENDS",
    "OFFSCREEN_BACKENDS",
    "OFFSCREEN_PACKAGES",
    "PROBE_SECONDS",
    "choose_offscreen_backend",
    "probe",
    "requested_backend",
]

logger = logging.getLogger(__name__)

OFFSCREEN_BACKENDS = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is not set
# What each backend needs on Debian and Ubuntu (EGL: glvnd's loader, Mesa's EGL, and Mesa's drivers
# with llvmpipe; PyOpenGL loads GL through libGL).
OFFSCREEN_PACKAGES = "apt-get install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri (EGL), or apt-get install libosmesa6 (OSMesa)"
GYMNASIUM_BACKENDS = ("egl", "osmesa", "glfw")  # the values of MUJOCO_GL gymnasium's MuJoCo renderer takes
PROBE_MODULE = "esfast.media.gl_probe"
PROBE_SECONDS = 60.0  # a probe that has not answered by then (a driver that hangs) counts as failed
_REASON_CHARS = 120  # of each backend's failure, in the one-line error


def requested_backend() -> str:
    """The backend ``MUJOCO_GL`` names (lower case), or ``""`` when it is unset.

    Raises:
        EnvError: a value gymnasium's MuJoCo renderer does not take (MuJoCo itself would fail at
            import with a traceback).
    """
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested and requested not in GYMNASIUM_BACKENDS:
        raise EnvError(f"MUJOCO_GL={requested!r}: gymnasium's MuJoCo renderer takes {', '.join(GYMNASIUM_BACKENDS)} (or leave it unset)")
    return requested


def _probe_command(backend: str) -> list[str]:
    return [sys.executable, "-m", PROBE_MODULE, backend]


def _shorten(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


@functools.cache
def _probe(backend: str, platform: str | None) -> str | None:
    """:func:`probe` for one value of ``PYOPENGL_PLATFORM`` (which the probe process inherits)."""
    try:
        done = subprocess.run(
            _probe_command(backend),
            env={**os.environ, "MUJOCO_GL": backend},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the probe gave no answer within {PROBE_SECONDS:g} s"
    except OSError as error:  # the interpreter could not be started
        return _shorten(f"the probe could not start: {error}")
    if done.returncode == 0:
        return None
    said = done.stdout.strip().splitlines() or done.stderr.strip().splitlines()
    if done.returncode < 0:
        try:
            cause = signal.Signals(-done.returncode).name
        except ValueError:
            cause = f"signal {-done.returncode}"
        return _shorten(f"the probe process died of {cause}" + (f" ({said[-1]})" if said else ""))
    if done.returncode == 1 and said:
        return _shorten(said[-1])
    return _shorten(f"the probe process exited with status {done.returncode}" + (f": {said[-1]}" if said else ""))


def probe(backend: str) -> str | None:
    """Whether MuJoCo's offscreen rendering works here on ``backend``, found in a process of its own.

    The answer is kept for the rest of this process, one per backend and value of
    ``PYOPENGL_PLATFORM``.

    Args:
        backend: ``"egl"``, ``"osmesa"`` or ``"glfw"``.

    Returns:
        None if it works, else one line saying why not (at most 120 characters).
    """
    return _probe(backend, os.environ.get("PYOPENGL_PLATFORM"))


def choose_offscreen_backend() -> str:
    """Chooses the OpenGL backend of MuJoCo's offscreen rendering for this process, and sets ``MUJOCO_GL`` to it.

    ``MUJOCO_GL`` if it is set (``egl``, ``osmesa`` or ``glfw``, gymnasium's choices), else the
    first of ``OFFSCREEN_BACKENDS`` that :func:`probe` finds to work. Call it before the
    environment's first ``render()``; later calls of the process give the same answer at once.

    Returns:
        ``"egl"``, ``"osmesa"`` or (when ``MUJOCO_GL`` says so) ``"glfw"``.

    Raises:
        EnvError: ``MUJOCO_GL`` names another backend, or no backend works: one line with each
            backend's reason and what to install (or, where ``PYOPENGL_PLATFORM`` rules the
            backends out, to unset it).
    """
    requested = requested_backend()
    candidates = (requested,) if requested else OFFSCREEN_BACKENDS
    failures = []
    for name in candidates:
        reason = probe(name)
        if reason is None:
            os.environ["MUJOCO_GL"] = name
            logger.debug("MuJoCo offscreen rendering with MUJOCO_GL=%s", name)
            return name
        logger.debug("MuJoCo offscreen backend %s does not work here: %s", name, reason)
        failures.append(f"{name}: {reason}")
    platform = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    if platform and platform not in candidates and set(candidates) <= set(OFFSCREEN_BACKENDS):
        remedy = f"unset PYOPENGL_PLATFORM (it is {platform!r}, which rules out {' and '.join(candidates)})"
    else:
        remedy = OFFSCREEN_PACKAGES
    if requested:
        raise EnvError(f"MUJOCO_GL={requested} cannot render here ({failures[0]}); unset it to let esfast choose, or {remedy}")
    raise EnvError(f"offscreen rendering needs EGL or OSMesa, and neither works here ({'; '.join(failures)}): {remedy}")
