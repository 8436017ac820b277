from __future__ import annotations

import signal

import pytest

from esfast.interrupts import deferred_sigint, uninterrupted


def test_a_signal_during_the_clean_up_does_not_cut_it_short() -> None:
    """A second Ctrl-C or SIGTERM during a clean-up (or one arriving as the process stops of itself) is
    ignored until the clean-up is done; the handlers are back afterwards."""
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    steps: list[str] = []

    def close() -> None:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        steps.append("closed")  # reached: neither signal raised KeyboardInterrupt

    try:
        uninterrupted(close)
        assert steps == ["closed"]
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_in_a_deferred_block_is_raised_at_its_end() -> None:
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    steps: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt), deferred_sigint():
            signal.raise_signal(signal.SIGTERM)
            steps.append("finished")  # the block runs to its end first
        assert steps == ["finished"]
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
