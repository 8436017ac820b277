"""The software a host simulates with, as it travels in ``HELLO`` and ``WELCOME``.

Hosts with other versions of gymnasium, MuJoCo or ALE may simulate the same episode differently,
and another esfast or numpy may compute differently: the master compares its own versions with
every host's before it admits one (docs/protocol.md, "Admission"). Versions are read from the
installed packages' metadata, without importing them.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from esfast.errors import ProtocolError

__all__ = ["PACKAGES", "check_versions", "differences", "software_versions"]

# The packages whose versions must match across a cluster, as pip names them.
PACKAGES = ("esfast", "numpy", "gymnasium", "mujoco", "ale-py")
MAX_VERSION_CHARACTERS = 64


def software_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def check_versions(value: Any) -> dict[str, str | None]:
    """A peer's versions object, checked: exactly :data:`PACKAGES`, each a short string or null.

    Raises:
        ProtocolError: anything else.
    """
    if not isinstance(value, dict) or set(value) != set(PACKAGES):
        raise ProtocolError(f"versions must name exactly {', '.join(PACKAGES)}")
    for name, version in value.items():
        if version is not None and not (isinstance(version, str) and 0 < len(version) <= MAX_VERSION_CHARACTERS and version.isprintable()):
            raise ProtocolError(f"the version of {name} must be a printable string of at most {MAX_VERSION_CHARACTERS} characters")
    return value


def differences(master: dict[str, str | None], worker: dict[str, str | None]) -> list[str]:
    """What differs, one phrase per package: ``"gymnasium 1.0.0 on the master, 1.1.1 on the worker"``."""
    return [
        f"{name} {master.get(name) or 'not installed'} on the master, {worker.get(name) or 'not installed'} on the worker"
        for name in PACKAGES
        if master.get(name) != worker.get(name)
    ]
