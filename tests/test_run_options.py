"""The run options every training command shares (esfast.run_options)."""

from __future__ import annotations

import argparse

import pytest

from esfast.cli import build_master_parser, build_parser
from esfast.run_options import add_run_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add_run_options(parser, env_module_help="where it is imported")
    return parser


def test_defaults_and_repeated_sets() -> None:
    args = _parser().parse_args(["--set", "noise_stdev=0.01", "--set", "l2coeff=0", "--seed", "3"])
    assert args.set == ["noise_stdev=0.01", "l2coeff=0"] and args.seed == 3
    assert args.generations is None and args.timesteps is None and args.env_module is None and not args.tensorboard


def test_the_two_budgets_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parser().parse_args(["--generations", "2", "--timesteps", "10"])
    assert stopped.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_help_of_env_module_is_the_commands() -> None:
    assert "where it is imported" in _parser().format_help()


@pytest.mark.parametrize("command", [["train"], ["ray", "--address", "auto"], ["slurm", "cartpole", "--nodes", "1"], None])
def test_every_training_command_takes_them(command: list[str] | None) -> None:
    shared = ["--timesteps", "5", "--seed", "1", "--env-module", "m", "--set", "a=1", "--tensorboard"]
    args = build_master_parser().parse_args(shared) if command is None else build_parser().parse_args([*command, *shared])
    assert (args.timesteps, args.seed, args.env_module, args.set, args.tensorboard) == (5, 1, "m", ["a=1"], True)
