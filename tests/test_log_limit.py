"""Log lines that peers cause, at a bounded rate."""

from __future__ import annotations

import logging

import pytest

from esfast.distributed import log_limit
from esfast.distributed.log_limit import LogLimiter


def test_each_kind_logs_its_burst_then_counts(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(log_limit.time, "monotonic", lambda: clock[0])
    limiter = LogLimiter(logging.getLogger("esfast.test"), burst=3, interval=10.0)
    with caplog.at_level(logging.INFO, logger="esfast.test"):
        for number in range(10):
            limiter.warning("drop", "dropped %d", number)
            limiter.info("join", "joined %d", number)
        assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == ["dropped 0", "dropped 1", "dropped 2"]
        assert sum("joined" in r.getMessage() for r in caplog.records) == 3
        clock[0] += 10.0
        caplog.clear()
        limiter.warning("drop", "dropped %d", 99)
        assert [r.getMessage() for r in caplog.records] == ["(7 more lines like the next were not logged in the last 10 s)", "dropped 99"]


def test_kinds_beyond_the_limit_share_one_budget(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(logging.getLogger("esfast.test"), burst=1)
    with caplog.at_level(logging.WARNING, logger="esfast.test"):
        for number in range(log_limit.MAX_KINDS + 10):
            limiter.warning(f"kind{number}", "line %d", number)
    assert len(caplog.records) == log_limit.MAX_KINDS + 1  # kinds beyond the 64th share "(other)": one line
