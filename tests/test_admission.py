"""Which HELLOs the master takes: names, numbers, sessions, tables and versions."""

from __future__ import annotations

import pytest
from cluster import hello

from esfast.distributed.admission import judge_hello
from esfast.distributed.protocol import Message
from esfast.distributed.versions import software_versions

TABLE = {"seed": 0, "size": 1000}


def judge(**changes: object) -> tuple[str | None, list[str]]:
    message = hello("node-1", 42)
    fields = {**message.fields, **changes}
    refusal, differ = judge_hello(Message("HELLO", fields), table=TABLE, versions=software_versions(), allow_mixed_versions=False)
    return refusal, differ


def test_an_honest_hello_is_taken() -> None:
    assert judge() == (None, [])
    assert judge(table=dict(TABLE), session="0123456789abcdef" * 2) == (None, [])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": "x" * 256}, "the host name must be 1 to 255 printable characters"),
        ({"host": ""}, "the host name must be 1 to 255"),
        ({"host": "node\x1b[2J"}, "printable characters"),
        ({"pid": -1}, "pid must be between 0 and"),
        ({"pid": 2**40}, "pid must be between 0 and"),
        ({"procs": 0}, "procs must be between 1 and 4096, got 0"),
        ({"procs": 4097}, "procs must be between 1 and 4096"),
        ({"session": "not hex"}, "session must be null or 32 hex digits"),
        ({"session": "A" * 32}, "session must be null or 32 hex digits"),
        ({"table": {"seed": 1, "size": 1000}}, "holds a noise table with seed 1 and size 1000; this run uses seed 0"),
        ({"versions": {"esfast": "0.1.0"}}, "versions must name exactly"),
    ],
)
def test_hellos_that_are_refused_say_why(changes: dict[str, object], message: str) -> None:
    refusal, _ = judge(**changes)
    assert refusal is not None and message in refusal


def test_other_versions_are_refused_unless_mixed_versions_are_allowed() -> None:
    versions = {**software_versions(), "mujoco": "2.3.7"}
    refusal, differ = judge(versions=versions)
    assert refusal is not None and "other versions than the master: mujoco" in refusal and "--allow-mixed-versions" in refusal
    message = Message("HELLO", {**hello("n", 1).fields, "versions": versions})
    assert judge_hello(message, table=TABLE, versions=software_versions(), allow_mixed_versions=True) == (None, differ)
