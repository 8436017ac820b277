"""Environments: gymnasium's, and Atari's with the standard preprocessing.

- :func:`make_env` makes the environment a config names (Atari, and so ale-py, loaded only for
  Atari runs);
- :mod:`esfast.envs.rollout`: episodes (:func:`~esfast.envs.rollout.run_episode`);
- :mod:`esfast.envs.mujoco_steps`: lean steps for gymnasium's MuJoCo environments;
- :mod:`esfast.envs.atari`: ALE environments with the standard preprocessing, the reference batch.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from esfast.config import AtariSettings
from esfast.errors import EnvError

__all__ = ["make_env"]

logger = logging.getLogger(__name__)


@functools.cache
def _route_mujoco_warnings() -> None:
    """Sends MuJoCo's warnings to logging, once per process.

    MuJoCo's default handler prints them and appends them to ``MUJOCO_LOG.TXT`` in the working
    directory, from every evaluator process; gymnasium's own models trigger a deprecation warning
    each time one is compiled. Deprecations go to the debug level, anything else (instabilities
    such as non-finite accelerations) to the warning level.
    """
    try:
        import mujoco
    except ImportError:
        return

    def handle(message: str) -> None:
        logger.log(logging.DEBUG if "deprecated" in message else logging.WARNING, "MuJoCo: %s", message)

    mujoco.set_mju_user_warning(handle)


def make_env(
    env_id: str,
    env_module: str | None = None,
    *,
    atari: AtariSettings | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> gym.Env[Any, Any]:
    """``gymnasium.make(env_id, **env_kwargs, **kwargs)``, after importing ``env_module`` (which may
    register ``env_id``): ``env_kwargs`` are the config's options of the environment, ``kwargs``
    the caller's own (``render_mode``).

    With ``atari`` settings (configs of the Atari policy), an ALE environment with the standard
    preprocessing instead (:func:`esfast.envs.atari.make_atari_env`).

    Raises:
        EnvError: the module cannot be imported, the id is unknown or broken, or the environment
            does not take ``env_kwargs``.
    """
    if atari is not None:
        from esfast.envs.atari import make_atari_env  # imports ale_py: only for Atari runs

        return make_atari_env(env_id, atari)
    _route_mujoco_warnings()
    if env_module:
        try:
            importlib.import_module(env_module)
        except ImportError as error:
            raise EnvError(f"cannot import env_module {env_module!r}: {error}") from None
    options = dict(env_kwargs or {})
    try:
        return gym.make(env_id, **options, **kwargs)
    except (TypeError, ValueError) as error:
        if not options:
            raise
        also = f" (and {kwargs})" if kwargs else ""
        raise EnvError(f"cannot make environment {env_id!r} with env_kwargs {options}{also}: {error}") from None
    except gym.error.Error as error:
        raise EnvError(f"cannot make environment {env_id!r}: {error}") from None
    except ImportError as error:
        raise EnvError(f"environment {env_id!r} needs a missing package: {error}") from None
