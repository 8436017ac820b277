"""A run directory: one run's config, log and checkpoints, locked by the process that runs it.

Layout::

    config.json          the resolved config
    log.jsonl            one JSON record per generation, generations 1, 2, ... in order
    progress.csv         the same records as a table (one row per generation, one column per field)
    tensorboard/         TensorBoard event files, when asked for (:mod:`esfast.tensorboard_log`)
    checkpoints/         latest.npz, and gen_NNNNN.npz every snapshot_freq generations
    .lock                held (flock) by the process training the run; it holds its pid

The log and the latest checkpoint always agree: each checkpoint carries the log record of its
generation, and :meth:`RunDirectory.reconcile_log` makes the log end with exactly that generation
when a run starts or resumes (dropping records of generations a failed save did not checkpoint,
appending the record a crash kept from being written). ``log.jsonl`` is the source of truth;
``progress.csv`` is rewritten from it whenever the two differ.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from esfast.config import Config
from esfast.errors import RunLockedError

__all__ = ["RUNS", "RunDirectory", "default_run_path"]

RUNS = Path("runs")  # where runs go when no directory is named, relative to the working directory


def default_run_path(exp_prefix: str) -> Path:
    """The directory of a new run when none is named (``esfast train`` without ``--out``, ``esfast.train(out=None)``).

    Args:
        exp_prefix: the config's ``exp_prefix``.

    Returns:
        ``runs/<exp_prefix>-<YYYYmmdd-HHMMSS>`` (local time), with ``-2``, ``-3``, ... appended when a
        run started in the same second has that name; the directory is not created.
    """
    base = RUNS / f"{exp_prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, count = base, 1
    while path.exists():
        count += 1
        path = base.with_name(f"{base.name}-{count}")
    return path


class RunDirectory:
    """The files of one run under ``path`` (created if missing).

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = self.path / "config.json"
        self.log = self.path / "log.jsonl"
        self.csv = self.path / "progress.csv"
        self.tensorboard = self.path / "tensorboard"
        self.checkpoints = self.path / "checkpoints"
        self.latest = self.checkpoints / "latest.npz"
        self._lock: int | None = None

    def write_config(self, config: Config) -> None:
        """Writes ``config.json`` atomically (a temporary file, flushed to disk, renamed).

        Raises:
            OSError: it could not be written; the previous file, if any, is left as it was.
        """
        temporary = self.config.with_name(self.config.name + ".tmp")
        try:
            with open(temporary, "w") as file:
                file.write(json.dumps(config.to_dict(), indent=2) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.config)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def snapshot(self, generation: int) -> Path:
        """The path of generation ``generation``'s snapshot checkpoint."""
        return self.checkpoints / f"gen_{generation:05d}.npz"

    # The lock --------------------------------------------------------------------------------

    def lock(self) -> None:
        """Makes the directory this process's run; a lock left by a dead process is taken over
        (the kernel releases a lock when its holder exits, however it exits).

        Raises:
            RunLockedError: another live process holds it.
        """
        if self._lock is not None:
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path} is in use by process {holder}; wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd

    def unlock(self) -> None:
        """Releases the lock (safe to call when not held)."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    # The log -----------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Appends one generation's record to ``log.jsonl`` and a row to ``progress.csv``."""
        with open(self.log, "a") as file:
            file.write(json.dumps(record) + "\n")
        columns = self._csv_columns()
        if columns is None or any(key not in columns for key in record):
            self._write_csv(self.records())  # a new field (or a new file): the whole table again
            return
        with open(self.csv, "a", newline="") as file:
            csv.DictWriter(file, columns, restval="").writerow(record)

    def _csv_columns(self) -> list[str] | None:
        """The header of ``progress.csv``, or None if there is no usable one."""
        try:
            with open(self.csv, newline="") as file:
                header = next(csv.reader(file), None)
        except OSError:
            return None
        return header or None

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        """Writes ``progress.csv`` for ``records``: the columns in the order fields first appear."""
        columns: dict[str, None] = {}
        for record in records:
            columns.update(dict.fromkeys(record))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, list(columns), restval="")
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue() if records else ""
        if self.csv.exists() and self.csv.read_text() == text:
            return
        temporary = self.csv.with_name(self.csv.name + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.csv)

    def records(self) -> list[dict[str, Any]]:
        """The log's records; a line cut short by a crash, and what follows it, are left out."""
        if not self.log.exists():
            return []
        records = []
        for line in self.log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(record, dict) or not isinstance(record.get("generation"), int):
                break
            records.append(record)
        return records

    def reconcile_log(self, generation: int, record: dict[str, Any] | None) -> None:
        """Makes the log end at ``generation``, the latest checkpoint's.

        Args:
            generation: the checkpoint's generation (0: nothing checkpointed yet).
            record: the checkpoint's own record of that generation, appended if the log lacks it.
        """
        records = self.records()
        kept = [r for r in records if r["generation"] <= generation]
        if (not kept or kept[-1]["generation"] < generation) and record is not None and record.get("generation") == generation:
            kept.append(record)
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if not self.log.exists() and not text:
            return
        if not self.log.exists() or self.log.read_text() != text:
            temporary = self.log.with_name(self.log.name + ".tmp")
            temporary.write_text(text)
            os.replace(temporary, self.log)
        self._write_csv(kept)
