"""TensorBoard event files of a run, written with TensorBoard's own event-file writer.

Optional (``pip install 'esfast[tensorboard]'``): the trainer writes them when ``run.tensorboard``
is set (``esfast train --tensorboard``), into ``<run directory>/tensorboard/``; watch a run with
``tensorboard --logdir runs/``. One scalar per numeric field of each generation's log record, at
step = the generation, grouped by what it is about (``return/``, ``eval/``, ``time/``, ``update/``,
``cluster/``). A resumed run appends a new event file to the same directory, starting after the last
generation already written there, so no step appears twice; if the event files hold generations
past the run's checkpoint (a run rolled back to an earlier checkpoint), a restart marker makes
TensorBoard drop them, and the run's own records take their place.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from esfast.errors import UserError

__all__ = ["TAGS", "TensorBoardLog", "last_step", "require_tensorboard"]

# Log-record field -> TensorBoard tag; fields not listed here are not written.
TAGS = {
    "return_mean": "return/mean",
    "return_max": "return/max",
    "return_min": "return/min",
    "episode_length_mean": "return/episode_length_mean",
    "eval_return_mean": "eval/return_mean",
    "eval_length_mean": "eval/length_mean",
    "timesteps_total": "time/timesteps",
    "episodes_total": "time/episodes",
    "pairs": "time/pairs",
    "rounds": "time/rounds",
    "time_elapsed": "time/seconds",
    "steps_per_second": "time/steps_per_second",
    "timestep_limit": "time/timestep_limit",
    "obs_count": "update/obs_count",
    "grad_norm": "update/grad_norm",
    "update_ratio": "update/update_ratio",
    "hosts": "cluster/hosts",
    "hosts_total": "cluster/hosts_total",
    "procs": "cluster/procs",
    "tasks_reissued": "cluster/tasks_reissued",
    "tasks_duplicated": "cluster/tasks_duplicated",
    "results_stale": "cluster/results_stale",
    "results_duplicate": "cluster/results_duplicate",
    "messages_dropped": "cluster/messages_dropped",
    "hosts_lost": "cluster/hosts_lost",
    "hosts_refused": "cluster/hosts_refused",
    "tasks_failed": "cluster/tasks_failed",
    "results_unassigned": "cluster/results_unassigned",
    "results_refused": "cluster/results_refused",
    "audits": "cluster/audits",
    "audit_mismatches": "cluster/audit_mismatches",
    "hosts_evicted": "cluster/hosts_evicted",
}
STEP_TAG = "time/timesteps"  # written for every generation: the tag a resume reads its last step from


class TensorBoardLog:
    """Writes a run's log records as TensorBoard scalars into ``directory``.

    Args:
        directory: where the event files go (created).
        generation: the run's generation (its checkpoint's); steps past it in the directory are
            dropped for TensorBoard with a restart marker.

    Raises:
        UserError: the tensorboard package is not installed (one line naming the extra).
    """

    def __init__(self, directory: Path, generation: int = 0) -> None:
        require_tensorboard()
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.directory = directory
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.last_step = last_step(directory) if directory.exists() else 0
        directory.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(directory))
        if self.last_step > generation:  # TensorBoard purges the earlier events from this step on
            restart = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._writer.add_event(self._event(wall_time=time.time(), step=generation + 1, session_log=restart))
            self._writer.flush()
            self.last_step = generation

    def write(self, record: dict[str, Any]) -> None:
        """Writes one generation's record (if it is newer than what the directory holds) and flushes."""
        step = int(record["generation"])
        if step <= self.last_step:
            return
        values = [
            self._summary.Value(tag=tag, simple_value=float(record[field]))
            for field, tag in TAGS.items()
            if isinstance(record.get(field), (int, float)) and math.isfinite(record[field])
        ]
        self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=self._summary(value=values)))
        self._writer.flush()
        self.last_step = step

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        """Writes the records of the run's log that the event files lack (after a crash or when
        TensorBoard logging is turned on for a resumed run)."""
        for record in records:
            self.write(record)

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


def require_tensorboard() -> None:
    """Raises a one-line UserError naming the extra if the tensorboard package cannot be imported."""
    try:
        import tensorboard.compat.proto.event_pb2
        import tensorboard.summary.writer.event_file_writer  # noqa: F401
    except ImportError:
        raise UserError("TensorBoard logs need the tensorboard package: pip install 'esfast[tensorboard]'") from None


def last_step(directory: Path) -> int:
    """The last generation written to the event files in ``directory`` (0: none), read with
    TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    if STEP_TAG not in accumulator.Tags().get("scalars", []):
        return 0
    return int(max(event.step for event in accumulator.Scalars(STEP_TAG)))
