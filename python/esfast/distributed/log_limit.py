"""Log lines that peers cause, at a bounded rate: a flood of bad messages must not flood the log.

:class:`LogLimiter` logs at most ``burst`` lines of one kind per ``interval`` seconds; the lines
it holds back are counted and reported in one line when that kind may log again. Counters in the
generation's log record keep the full numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

__all__ = ["LogLimiter"]

MAX_KINDS = 64  # kinds tracked at once; more share one budget


@dataclass
class _Window:
    start: float
    logged: int = 0
    held: int = 0


class LogLimiter:
    """Rate-limited warnings, per kind of line.

    Args:
        logger: where lines go.
        burst: lines of one kind per window.
        interval: the window, in seconds.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 20, interval: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.windows: dict[str, _Window] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Logs ``message % args`` at warning level unless ``kind`` has had its ``burst`` lines in this window."""
        self.log(logging.WARNING, kind, message, *args)

    def info(self, kind: str, message: str, *args: object) -> None:
        """As :meth:`warning`, at info level."""
        self.log(logging.INFO, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Logs ``message % args`` at ``level`` unless ``kind`` has had its ``burst`` lines in this window."""
        now = time.monotonic()
        if kind not in self.windows and len(self.windows) >= MAX_KINDS:
            kind = "(other)"
        window = self.windows.setdefault(kind, _Window(now))
        if now - window.start >= self.interval:
            if window.held:
                self.logger.log(level, "(%d more lines like the next were not logged in the last %.0f s)", window.held, now - window.start)
            window.start, window.logged, window.held = now, 0, 0
        if window.logged >= self.burst:
            window.held += 1
            return
        window.logged += 1
        self.logger.log(level, message, *args)
