"""The command-line options that shape a run, shared by every command that starts one.

``esfast train``, ``esfast-master``, ``esfast ray`` and ``esfast slurm`` all take a budget
(``--generations`` or ``--timesteps``), ``--seed``, ``--env-module``, ``--set KEY=VALUE`` and
``--tensorboard`` with the same meaning; they are declared here once so that the commands cannot
drift apart. The command-specific options stay with each command.
"""

from __future__ import annotations

import argparse


def add_run_options(parser: argparse.ArgumentParser, *, env_module_help: str) -> None:
    """Add the budget, ``--seed``, ``--env-module``, ``--set`` and ``--tensorboard`` options to ``parser``.

    Args:
        parser: the command's parser.
        env_module_help: the help of ``--env-module``, which says where the module is imported.
    """
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--generations", type=int, help="stop after this many generations")
    budget.add_argument("--timesteps", type=int, help="stop after this many environment steps")
    parser.add_argument("--seed", type=int, help="run seed (overrides the config)")
    parser.add_argument("--env-module", help=env_module_help)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set noise_stdev=0.01"
    )
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (esfast[tensorboard])")
