"""The probe process of MuJoCo's offscreen rendering: ``python -m esfast.media.gl_probe BACKEND``.

Started by :func:`esfast.media.offscreen.choose_offscreen_backend`, one process per backend it
tries (``egl``, ``osmesa`` or ``glfw``), so that whatever a backend that does not work leaves
behind stays out of the process that renders: PyOpenGL binds its platform once per process, at its
first import (``mujoco.egl`` and ``mujoco.osmesa`` set ``PYOPENGL_PLATFORM`` before it), and a
broken driver may abort or crash the process that loads it.

The process makes a small GL context of the backend current and a MuJoCo render context on it,
which is what gymnasium's offscreen renderer makes at its first frame, and the check that the
context really is current (GLFW without a display only warns, and its context is then no context).

Exit status 0: the backend works. 1: it does not, and the last line on stdout says why, as
``ExceptionType: first line of its message``.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

__all__ = ["main", "probe"]


def probe(backend: str) -> None:
    """Makes a 16x16 GL context of MuJoCo's ``backend`` current and a MuJoCo render context on it.

    Call it in a process of its own, with ``MUJOCO_GL`` set to ``backend`` before ``mujoco`` is
    first imported.

    Raises:
        Exception: any failure (a missing library, no display, no device); a MuJoCo error is a
            RuntimeError carrying the warning that explains it, where there is one.
    """
    import mujoco

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        context = importlib.import_module(f"mujoco.{backend}").GLContext(16, 16)
        try:
            context.make_current()
            try:
                mujoco.MjrContext(mujoco.MjModel.from_xml_string("<mujoco/>"), mujoco.mjtFontScale.mjFONTSCALE_100).free()
            except mujoco.FatalError as error:
                raise RuntimeError(f"{caught[0].message if caught else error}") from None
        finally:
            context.free()


def main(argv: list[str] | None = None) -> int:
    """Probes the backend named by the one argument; returns the exit status (0: it works)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m esfast.media.gl_probe egl|osmesa|glfw")
        return 2
    backend = args[0]
    os.environ["MUJOCO_GL"] = backend  # for mujoco's own import, should the caller not have set it
    try:
        probe(backend)
    except Exception as error:  # any failure means: not this backend; say why, on one line
        lines = str(error).strip().splitlines()
        print(f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
