"""How esfast's processes treat Ctrl-C and SIGTERM around the steps that must not be cut short.

Both guards act on the main thread only, where Python delivers signals; elsewhere the block runs
as it is, and signals are the main thread's business.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["deferred_sigint", "uninterrupted"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Holds back Ctrl-C (and SIGTERM) until the block ends, so an update is never left half done.

    Raises:
        KeyboardInterrupt: at the end of the block, if a signal came during it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = [signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in _SIGNALS]
    try:
        yield
    finally:
        for signum, handler in zip(_SIGNALS, previous):
            signal.signal(signum, handler)
        if received:
            raise KeyboardInterrupt


def uninterrupted(step: Callable[[], None]) -> None:
    """Runs ``step`` with Ctrl-C and SIGTERM ignored: for the clean-up of a process that is ending
    anyway (stopping workers, freeing shared memory, releasing a lock), which a second signal, or
    one that arrives just as the process stops of itself, must not cut short. The previous
    handlers are back when ``step`` returns or raises."""
    if threading.current_thread() is not threading.main_thread():
        step()
        return
    previous = [signal.signal(signum, signal.SIG_IGN) for signum in _SIGNALS]
    try:
        step()
    finally:
        for signum, handler in zip(_SIGNALS, previous):
            signal.signal(signum, handler)
