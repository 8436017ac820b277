"""The README's Python examples run as printed, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
PYTHON_BLOCK = r"```python\n(.*?)```"
# The "Python API" section's examples train a policy and then load it: they run in order, in a
# directory of their own (below); every other example stands alone and prints a number near 0.
API_SECTION = re.search(r"^## Python API\n(.*?)^## ", TEXT, flags=re.DOTALL | re.MULTILINE)
API_BLOCKS = re.findall(PYTHON_BLOCK, API_SECTION.group(1), flags=re.DOTALL) if API_SECTION else []
BLOCKS = [block for block in re.findall(PYTHON_BLOCK, TEXT, flags=re.DOTALL) if block not in API_BLOCKS]


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2
    assert len(API_BLOCKS) == 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed, "each README example prints its result"
    assert abs(float(printed[-1])) < 0.01  # both examples print a distance or loss near 0


def test_readme_python_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """esfast.train until the callback stops the run, then esfast.load_policy and an episode with the policy."""
    monkeypatch.chdir(tmp_path)  # the examples write runs/pendulum
    train, play = API_BLOCKS
    exec(compile(train, "README.md Python API block 0", "exec"), {})
    *progress, summary = capsys.readouterr().out.strip().splitlines()
    generation, checkpoint = summary.split()
    assert len(progress) == int(generation) < 100, "the callback stops the run before its budget"
    assert [line.endswith("evaluation return 1000") for line in progress[-3:]] == [True] * 3
    assert progress[0].startswith("generation 1: evaluation return ")
    assert (tmp_path / checkpoint).is_file() and checkpoint == "runs/pendulum/checkpoints/latest.npz"
    exec(compile(play, "README.md Python API block 1", "exec"), {})
    total = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert total >= 950  # InvertedPendulum's maximum is 1000 (the README shows what it measured)
