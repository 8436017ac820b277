"""The versions a host announces and how the master words a difference."""

from __future__ import annotations

import pytest

from esfast import __version__
from esfast.distributed.versions import PACKAGES, check_versions, differences, software_versions
from esfast.errors import ProtocolError


def test_this_machines_versions() -> None:
    versions = software_versions()
    assert tuple(versions) == PACKAGES and versions["esfast"] == __version__
    assert all(isinstance(v, str) for v in versions.values())  # all of them are esfast's dependencies
    assert check_versions(versions) == versions and differences(versions, dict(versions)) == []


def test_differences_name_each_package_and_both_versions() -> None:
    master = software_versions()
    worker = {**master, "gymnasium": "0.29.1", "ale-py": None}
    assert differences(master, worker) == [
        f"gymnasium {master['gymnasium']} on the master, 0.29.1 on the worker",
        f"ale-py {master['ale-py']} on the master, not installed on the worker",
    ]


@pytest.mark.parametrize(
    "value",
    [None, [], {"esfast": "1"}, {**dict.fromkeys(PACKAGES, "1"), "extra": "1"}, {**dict.fromkeys(PACKAGES, "1"), "numpy": 2}],
)
def test_malformed_versions_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match=r"versions must name|must be a printable string"):
        check_versions(value)


def test_long_or_unprintable_versions_are_refused() -> None:
    for version in ("x" * 65, "1.0\x1b[2J", ""):
        with pytest.raises(ProtocolError, match="printable string of at most 64"):
            check_versions({**dict.fromkeys(PACKAGES, "1"), "mujoco": version})
