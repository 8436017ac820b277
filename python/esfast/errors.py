"""esfast's exceptions, all in one place.

Feature modules import their errors from here, never from each other, so no import cycle starts
with an exception class. Errors a user can fix (:class:`UserError` and its subclasses) carry a
one-line message saying what to change; the command-line tools print it and exit with status 2.
"""

from __future__ import annotations

__all__ = [
    "AtariEnvError",
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "EvaluatorsFailing",
    "HostExit",
    "KeysError",
    "PolicyError",
    "ProtocolError",
    "RayClusterError",
    "RunExistsError",
    "RunLockedError",
    "SlurmError",
    "TrainingDiverged",
    "UserError",
    "WorkerError",
]


class UserError(ValueError):
    """Bad input that the user can fix; the message is one line saying what to change."""


class ConfigError(UserError):
    """A config that cannot be used; the message says what to change."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the run."""


class PolicyError(UserError):
    """The policy cannot be built for this environment or this parameter vector."""


class EnvError(UserError):
    """An environment that cannot be made; the message is one line for the user."""


class AtariEnvError(EnvError):
    """An Atari environment that cannot be made (unknown id, missing ROM, bad settings); one line."""


class KeysError(UserError):
    """CURVE keys that cannot be used (missing, damaged, or not private); one line naming the file."""


class RayClusterError(UserError):
    """``esfast ray`` cannot use the Ray cluster (Ray missing, a bad address, no node with a CPU); one line."""


class RunLockedError(UserError):
    """The run directory is in use by another live esfast process."""


class RunExistsError(UserError):
    """A new run was asked for in a directory that holds one (resume it, or choose another)."""


class SlurmError(UserError):
    """Slurm is missing or refused a job, or a job's settings do not fit together; one line."""


class ProtocolError(ValueError):
    """A message that breaks the wire protocol; the text says which rule."""


class WorkerError(RuntimeError):
    """A worker process died or failed, so the generation could not be evaluated."""


class EvaluatorsFailing(RuntimeError):
    """A worker host's evaluator processes keep dying (more than its restart limit allows)."""


class HostExit(Exception):
    """Ends a worker host with an exit status (and a message, logged by the host)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TrainingDiverged(RuntimeError):
    """θ or the observation statistics became non-finite; the last finite checkpoint is kept."""
