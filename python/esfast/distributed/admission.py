"""Whether the master takes a ``HELLO``: what a host announces, checked before it becomes a host.

The checks need no socket, so they are tested alone; :class:`~esfast.distributed.master.Master`
applies them and answers ``REFUSE`` with the reason, or ``WELCOME``. The environment's
fingerprint comes later (``FINGERPRINT``, see docs/protocol.md, "Admission").
"""

from __future__ import annotations

from typing import NamedTuple

from esfast.distributed.protocol import MAX_PROCS_PER_HOST, Message
from esfast.distributed.versions import check_versions, differences
from esfast.errors import ProtocolError

__all__ = ["MAX_HOST_NAME", "MAX_PID", "SESSION_CHARACTERS", "Verdict", "judge_hello"]

MAX_HOST_NAME = 255  # characters of a host name (a DNS name has at most 253)
MAX_PID = 2**31 - 1
SESSION_CHARACTERS = 32  # a session token: 16 random bytes in hex


class Verdict(NamedTuple):
    """A ``HELLO`` judged: the reason to refuse it (None: take it) and the version differences
    to warn about when a host is taken although its versions differ."""

    refusal: str | None
    version_differences: list[str]


def judge_hello(message: Message, *, table: dict[str, int], versions: dict[str, str | None], allow_mixed_versions: bool) -> Verdict:
    """Checks what a ``HELLO`` announces (its fields' types are the codec's business).

    Args:
        message: a decoded ``HELLO``.
        table: ``{"seed", "size"}`` of the run's noise table.
        versions: the master's package versions.
        allow_mixed_versions: take hosts of other versions (with the differences to warn about).
    """
    name, pid, procs = message["host"], message["pid"], message["procs"]
    if not (0 < len(name) <= MAX_HOST_NAME and name.isprintable()):
        return Verdict(f"the host name must be 1 to {MAX_HOST_NAME} printable characters", [])
    if not 0 <= pid <= MAX_PID:
        return Verdict(f"pid must be between 0 and {MAX_PID}", [])
    if not 1 <= procs <= MAX_PROCS_PER_HOST:
        return Verdict(f"procs must be between 1 and {MAX_PROCS_PER_HOST}, got {procs}", [])
    session = message["session"]
    if session is not None and not (len(session) == SESSION_CHARACTERS and all(c in "0123456789abcdef" for c in session)):
        return Verdict(f"session must be null or {SESSION_CHARACTERS} hex digits", [])
    held = message["table"]
    if held is not None and held != table:
        return Verdict(
            f"the worker holds a noise table with seed {held.get('seed')!r:.30} and size {held.get('size')!r:.30}; "
            f"this run uses seed {table['seed']} and size {table['size']} (restart the worker)",
            [],
        )
    try:
        theirs = check_versions(message["versions"])
    except ProtocolError as error:
        return Verdict(str(error), [])
    differ = differences(versions, theirs)
    if differ and not allow_mixed_versions:
        return Verdict(
            f"the worker runs other versions than the master: {'; '.join(differ)} "
            "(install the master's versions, or start the master with --allow-mixed-versions)",
            differ,
        )
    return Verdict(None, differ)
