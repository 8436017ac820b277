"""The README's example scripts run and do what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quadratic_example_converges() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quadratic.py"), "--generations", "150"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("generation    0")
    distance = float(re.search(r"distance to target: ([0-9.]+)", result.stdout).group(1))
    assert distance < 0.05
