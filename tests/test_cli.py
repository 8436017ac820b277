"""The esfast command, run for real in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cluster import evaluators

import esfast as esfast_package
from esfast.checkpoint import load_checkpoint, save_checkpoint
from esfast.cli import exposed_without_keys
from esfast.distributed.keys import make_keys

TESTS = Path(__file__).resolve().parent
REACH = [
    "--env",
    "EsfastTest/Reach-v0",
    "--env-module",
    "custom_envs",
    "--set",
    "episodes_per_batch=8",
    "--set",
    "hidden_dims=[4]",
    "--workers",
    "1",
]


def esfast(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "esfast.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@contextlib.contextmanager
def training_past_generation_2(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``esfast train ARGS`` running, once it has printed generation 2's line (or after 60 s); killed
    on leaving if it is still running."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "esfast.cli", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not process.stdout.readline().startswith("gen     2"):
            pass
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_train_then_play(tmp_path: Path) -> None:
    run = esfast("train", *REACH, "--generations", "3", "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    # Reach has no shipped config: its kind's defaults (docs/configs.md), 9 bins for each of its 2 action dimensions.
    assert "EsfastTest/Reach-v0 | policy 2-4-18 tanh" in run.stdout
    assert run.stdout.count("gen ") == 3 and "done: 3 generations" in run.stdout
    play = esfast("play", str(tmp_path / "run" / "checkpoints" / "latest.npz"), "--episodes", "2")
    assert play.returncode == 0, play.stderr
    assert "episode 2: return" in play.stdout and "mean return over 2 episodes" in play.stdout


def test_play_takes_a_run_directory_and_plays_as_the_evaluation_episodes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train = esfast("train", *REACH, "--set", "episode_cutoff_mode=4", "--generations", "1", "--out", str(out))
    assert train.returncode == 0, train.stderr
    play = esfast("play", str(out), "--episodes", "2")  # the run directory: its latest checkpoint
    assert play.returncode == 0, play.stderr
    assert play.stdout.count(", length 4\n") == 2  # the run's cutoff, not Reach's own 10 steps
    state, config = load_checkpoint(out / "checkpoints" / "latest.npz")
    grown_state = {**state, **{key: np.append(state[key], np.float32(0)) for key in ("theta", "optimizer_m", "optimizer_v")}}
    save_checkpoint(tmp_path / "grown.npz", grown_state, config)
    grown = esfast("play", str(tmp_path / "grown.npz"))
    size = state["theta"].size
    assert grown.returncode == 2 and f"holds a policy of {size + 1} parameters; its config gives {size}" in grown.stderr
    assert len(grown.stderr.splitlines()) == 1


def test_resume_continues(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert esfast("train", *REACH, "--generations", "2", "--out", out).returncode == 0
    again = esfast("train", *REACH, "--generations", "2", "--out", out)
    assert again.returncode == 2 and "already holds a run; continue it with --resume" in again.stderr
    resumed = esfast("train", "--resume", out, "--generations", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "gen     3" in resumed.stdout and "gen     1" not in resumed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "cannot make environment 'NoSuchEnv-v0'"),
        (["no_such_config.json"], "cannot read config no_such_config.json"),
        (["nonsense-name"], "no config file 'nonsense-name' and no shipped config of that name"),
        (["--set", "noise_stdevv=0.1"], "did you mean 'noise_stdev'?"),
        (["--set", "episodes_per_batch=0"], "episodes_per_batch must be an integer >= 2"),
        (["--set", "noise_stdev=0"], "noise_stdev must be a positive number"),
        (["--env-module", "no_such_module_xyz"], "cannot import env_module 'no_such_module_xyz'"),
        (["--env", "CartPole-v1", "--set", "run.noise_table_size=100000000000"], "larger than this machine's memory"),
        (["pong", "--env", "ALE/NoSuchGame-v5"], "unknown Atari environment 'ALE/NoSuchGame-v5'"),
        (["pong", "--env", "CartPole-v1"], "is not an Atari (ALE) environment"),
        (["pong", "--set", "screen_size=10"], "atari.screen_size must be an integer >= 20"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = esfast("train", *args, "--generations", "1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_malformed_config_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"env_id": ')
    result = esfast("train", str(path), "--generations", "1")
    assert result.returncode == 2 and "is not valid JSON" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_of_another_shape(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert esfast("train", *REACH, "--generations", "1", "--out", str(out)).returncode == 0
    saved = json.loads((out / "config.json").read_text())
    saved["policy"]["args"]["hidden_dims"] = [7]
    (out / "config.json").write_text(json.dumps(saved))
    result = esfast("train", "--resume", str(out), "--generations", "2")
    assert result.returncode == 2 and "holds a policy with" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with training_past_generation_2(*REACH, "--out", str(out)) as process:
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "continue with: esfast train --resume" in stderr and "Traceback" not in stderr
    assert (out / "checkpoints" / "latest.npz").exists()
    resumed = esfast("train", "--resume", str(out), "--generations", "1000", "--timesteps", "1")
    assert resumed.returncode == 2  # --generations and --timesteps exclude each other
    resumed = esfast("train", "--resume", str(out), "--timesteps", "1")
    assert resumed.returncode == 0, resumed.stderr


def test_non_positive_budget() -> None:
    result = esfast("train", "--generations", "0")
    assert result.returncode == 2 and "--generations must be at least 1" in result.stderr


def test_render_without_display_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert esfast("train", *REACH, "--generations", "1", "--out", str(out)).returncode == 0
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "esfast.cli", "play", str(out / "checkpoints" / "latest.npz"), "--render"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2 and "--render needs a display" in result.stderr


def test_play_missing_checkpoint(tmp_path: Path) -> None:
    result = esfast("play", str(tmp_path / "nothing.npz"))
    assert result.returncode == 2 and "no checkpoint at" in result.stderr


def test_a_killed_evaluator_process_is_replaced_and_the_run_unchanged(tmp_path: Path) -> None:
    args = [*REACH[:-1], "2", "--generations", "6"]  # REACH ends with "--workers 1": use two evaluator processes
    straight = esfast("train", *args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "run"
    with training_past_generation_2(*args, "--out", str(out)) as process:
        running = evaluators(process.pid)
        assert len(running) == 2
        os.kill(running[0], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "an evaluator process died (exit code -9)" in stdout + stderr and "Traceback" not in stderr
    assert "done: 6 generations" in stdout
    theta = [load_checkpoint(path / "checkpoints" / "latest.npz")[0]["theta"] for path in (tmp_path / "straight", out)]
    np.testing.assert_array_equal(*theta)


def test_unwritable_run_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = esfast("train", "--env", "CartPole-v1", "--generations", "1", "--out", str(blocker / "run"))
    assert result.returncode == 2 and "Not a directory" in result.stderr and "Traceback" not in result.stderr


def test_bad_values_before_any_work_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["train", "--env", "", "--out", str(tmp_path / "a")], "env_id must be a non-empty string"),
        (["train", *REACH, "--set", "ac_noise_std=Infinity", "--out", str(tmp_path / "b")], "policy.args.ac_noise_std"),
        (["train", *REACH, "--seed", "-5", "--out", str(tmp_path / "c")], "--seed must be in [0, 2**63)"),
        (["play", str(tmp_path / "none.npz"), "--seed", "-5"], "--seed must be in [0, 2**63)"),
    ]
    for args, message in cases:
        result = esfast(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, args
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_bind_address_with_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    code = "import sys; from esfast.cli import master_main; sys.exit(master_main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code, *REACH[:-2], "--bind", "tcp://127.0.0.1:99999", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2 and "--bind 'tcp://127.0.0.1:99999': the port must be 0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr


def master_command(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from esfast.cli import master_main; sys.exit(master_main())"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_a_master_others_can_reach_without_keys_says_so_first() -> None:
    for bind in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:5555", "tcp://node7:5555", "tcp://[::]:5555", "tcp://eth0:5555"):
        assert exposed_without_keys(bind) is not None, bind
    for bind in ("tcp://127.0.0.1:5555", "tcp://127.0.0.2:0", "tcp://localhost:5555", "tcp://[::1]:5555", "ipc:///tmp/esfast"):
        assert exposed_without_keys(bind) is None, bind


def test_the_warning_is_the_masters_first_line(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails after the warning.
    result = master_command(*REACH[:-2], "--bind", "tcp://192.0.2.1:5555", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "esfast-master: error: cannot bind tcp://192.0.2.1:5555" in result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("warning: tcp://192.0.2.1:5555 accepts other machines without keys") and "esfast keys DIR" in first


def test_an_audit_fraction_outside_0_and_1_is_refused(tmp_path: Path) -> None:
    for fraction in ("1.5", "-0.1", "nan"):
        result = master_command(*REACH[:-2], "--audit", fraction, "--out", str(tmp_path / "run"))
        assert result.returncode == 2 and "--audit must be a fraction in [0, 1]" in result.stderr, result.stderr
    result = master_command(*REACH[:-2], "--audit-action", "ban", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "invalid choice: 'ban'" in result.stderr


def test_master_keys_that_cannot_be_used_are_one_line(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", 1)
    for keys, message in (
        (tmp_path / "none", "no such folder"),
        (tmp_path / "keys", "that is the folder esfast keys made"),
        (tmp_path / "keys" / "worker-1", "that is a worker's folder"),
    ):
        result = master_command(*REACH[:-2], "--keys", str(keys), "--out", str(tmp_path / "run"))
        assert result.returncode == 2 and f"esfast-master: error: --keys {keys}: {message}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_damaged_checkpoint_is_one_line_for_play_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert esfast("train", *REACH, "--generations", "1", "--out", str(out)).returncode == 0
    latest = out / "checkpoints" / "latest.npz"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    for args in (["play", str(latest)], ["train", "--resume", str(out)]):
        result = esfast(*args)
        assert result.returncode == 2 and "checkpoint" in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_two_runs_in_one_directory_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    slow = ["--env", "EsfastTest/SlowReach-v0", *REACH[2:]]
    first = subprocess.Popen(
        [sys.executable, "-m", "esfast.cli", "train", *slow, "--generations", "50", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert first.stdout is not None and first.stdout.readline().startswith("esfast: no shipped config for EsfastTest/SlowReach-v0")
        assert "run directory" in first.stdout.readline()
        while not first.stdout.readline().startswith("gen     1"):  # a generation checkpointed and logged
            pass
        second = esfast("train", "--resume", str(out), "--generations", "60")
        assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
        if first.stdout is not None:
            first.stdout.close()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["generation"] for r in records] == list(range(1, len(records) + 1))
    resumed = esfast("train", "--resume", str(out), "--generations", str(len(records) + 1))  # the lock went with the process
    assert resumed.returncode == 0, resumed.stderr


def test_version_and_the_list_of_shipped_configs() -> None:
    version = esfast("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"esfast {esfast_package.__version__}"
    listing = esfast("configs")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["name", "task", "policy", "parameters", "pairs", "budget"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {path.stem for path in (TESTS.parent / "configs").glob("*.json")}
    assert "HalfCheetah-v5" in rows["halfcheetah"] and "64x64 tanh" in rows["halfcheetah"] and "timesteps" in rows["halfcheetah"]
    # 17 observations, two hidden layers of 64, 6 actions: 17*64+64 + 64*64+64 + 64*6+6 parameters.
    assert rows["halfcheetah"].split()[5] == f"{17 * 64 + 64 + 64 * 64 + 64 + 64 * 6 + 6:,}"
    assert rows["cartpole"].split()[1:] == [
        "CartPole-v1",
        "MLPPolicy",
        "64x64",
        "tanh",
        f"{4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2:,}",
        "40",
        "50",
        "generations",
    ]
    assert all(row.split()[5].replace(",", "").isdigit() for row in rows.values())  # every environment is made here, Atari too
