"""Lean steps for gymnasium's MuJoCo environments: what a rollout reads, and nothing else.

gymnasium's ``Humanoid-v5`` step spends about a tenth of its time in Python around the physics
(README.md, "Rollouts", has the measurements): it builds an ``info`` dict (positions, copies of the tendon state, the distance from
the origin, the reward terms), computes the centre of mass before the physics (the one it
computed after the previous step), copies each part of the observation twice, and goes through
a property or two per reward term and ``np.clip`` on a scalar. An ES rollout reads only the
observation, the reward and the termination.

:func:`lean_step` returns a step function that computes exactly those, with the same arithmetic
in the same order on the same values, so they are ``env.step``'s bit for bit. That is checked,
not assumed: the arithmetic inside a v5 environment can change between gymnasium releases
(1.4's ``mass_center`` is an ``einsum`` where 1.0's was a product and a sum; both add the bodies
in order), so the lean steps apply only under the gymnasium releases listed in
``VERIFIED_GYMNASIUM``, each one checked by running ``tests/test_mujoco_steps.py`` under it (the
tests compare with ``env.step`` under each option of the environment away from its default).
Under any other release rollouts use ``env.step``: the same results, without the saving.

A lean step keeps the centre of mass of the state it last saw, so it is made after each reset
and used until the next. It applies only to the exact classes listed here (a subclass may
change ``step``), and never to an environment made to render (``render_mode="human"`` draws
in ``step``; the other modes are refused too, to be safe); any other environment is stepped with
its own ``step``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

# (observation, reward, terminated, truncated, info), as env.step returns them.
StepResult = tuple[NDArray[np.float64], float, bool, bool, dict[str, object]]
Step = Callable[[Any], StepResult]

# The gymnasium releases (major, minor) under which tests/test_mujoco_steps.py has been run and
# passed: the lean steps are used under these only.
VERIFIED_GYMNASIUM = ((1, 0), (1, 1), (1, 2), (1, 3), (1, 4))


def _humanoid_v5(env: Any) -> Step:
    """``HumanoidEnv.step`` without the ``info`` dict and the repeated work.

    ``env`` is a ``HumanoidEnv`` (typed Any: its options are private attributes gymnasium does not type).
    """
    import mujoco  # here, not at the top: rollouts of other environments need not load it

    model, data = env.model, env.data
    # mass_center(model, data) of humanoid_v5: the mass-weighted positions summed over the bodies
    # in order, over the total mass (a constant of the model); x and y.
    mass = np.expand_dims(model.body_mass, axis=1)
    total_mass = np.sum(mass)
    positions = data.xipos
    weighted = np.empty_like(positions)

    def mass_center() -> NDArray[np.float64]:
        np.multiply(mass, positions, out=weighted)
        center: NDArray[np.float64] = (np.sum(weighted, axis=0) / total_mass)[0:2]
        return center

    # _get_obs: flat views of the parts it concatenates, in its order, with its tests of the
    # options (``is True`` for the parts, truthiness for the positions).
    parts = [data.qpos[2:] if env._exclude_current_positions_from_observation else data.qpos, data.qvel]
    if env._include_cinert_in_observation is True:
        parts.append(data.cinert[1:].reshape(-1))
    if env._include_cvel_in_observation is True:
        parts.append(data.cvel[1:].reshape(-1))
    if env._include_qfrc_actuator_in_observation is True:
        parts.append(data.qfrc_actuator[6:])
    if env._include_cfrc_ext_in_observation is True:
        parts.append(data.cfrc_ext[1:].reshape(-1))
    observed = tuple(parts)

    qpos, ctrl, contact_forces = data.qpos, data.ctrl, data.cfrc_ext
    forward_weight, healthy_reward = env._forward_reward_weight, env._healthy_reward
    ctrl_weight, contact_weight = env._ctrl_cost_weight, env._contact_cost_weight
    (min_contact_cost, max_contact_cost), (min_z, max_z) = env._contact_cost_range, env._healthy_z_range
    # np.clip takes None for no bound.
    min_contact_cost = -np.inf if min_contact_cost is None else min_contact_cost
    max_contact_cost = np.inf if max_contact_cost is None else max_contact_cost
    terminate, frame_skip, dt = env._terminate_when_unhealthy, env.frame_skip, env.dt
    controls = (model.nu,)
    position = mass_center()

    def step(action: Any) -> StepResult:
        nonlocal position
        if np.shape(action) != controls:  # as MujocoEnv.do_simulation checks it
            raise ValueError(f"Action dimension mismatch. Expected {controls}, found {np.shape(action)}")
        before = position
        ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
        mujoco.mj_rnePostConstraint(model, data)  # cfrc_ext, as gymnasium computes it
        position = mass_center()
        x_velocity, _ = (position - before) / dt
        observation = np.concatenate(observed)
        healthy = min_z < qpos[2] < max_z
        # np.clip is min(max(.)) of its bounds; Python's min and max keep a NaN as np.clip does.
        contact_cost = min(max(contact_weight * np.sum(np.square(contact_forces)), min_contact_cost), max_contact_cost)
        costs = ctrl_weight * np.sum(np.square(ctrl)) + contact_cost
        reward = (forward_weight * x_velocity + healthy * healthy_reward) - costs
        return observation, reward, (not healthy) and terminate, False, {}

    return step


# The classes with a lean step, by module and name (so that nothing is imported to check an
# environment that is not one of them).
_LEAN_STEPS: dict[str, Callable[[gym.Env], Step]] = {
    "gymnasium.envs.mujoco.humanoid_v5.HumanoidEnv": _humanoid_v5,
}


@functools.cache
def _verified(version: str) -> bool:
    """Whether gymnasium ``version`` is one of ``VERIFIED_GYMNASIUM``."""
    try:
        release = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:  # a version string of another form: not one that was checked
        return False
    return release in VERIFIED_GYMNASIUM


def lean_step(env: gym.Env) -> Step | None:
    """A step for the unwrapped environment ``env`` that skips what rollouts do not read, or None.

    The step returns ``(observation, reward, terminated, False, {})`` exactly as ``env.step``
    would, with an empty ``info``, and raises the same ``ValueError`` for an action of the wrong
    shape. Make it after ``env.reset`` and use it until the next reset.

    Args:
        env: an unwrapped environment (no wrappers around it), just reset.

    Returns:
        The step function; None when ``env`` is not of a class listed here, renders, or the
        installed gymnasium is not one of ``VERIFIED_GYMNASIUM``.
    """
    kind = type(env)
    make = _LEAN_STEPS.get(f"{kind.__module__}.{kind.__qualname__}")
    if make is None or env.render_mode is not None or not _verified(gym.__version__):
        return None
    return make(env)
