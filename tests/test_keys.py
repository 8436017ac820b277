"""CURVE keys: the folders esfast keys makes, what each machine loads, one-line errors, the key check."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq.auth

from esfast.distributed.keys import KeyCheck, load_master_keys, load_worker_keys, make_keys, worker_dirs
from esfast.errors import KeysError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_layout_one_folder_per_machine(tmp_path: Path) -> None:
    made_master, made = make_keys(tmp_path / "keys", 2)
    keys = tmp_path / "keys"
    assert made_master and made == [keys / "worker-1", keys / "worker-2"] == worker_dirs(keys)
    master = load_master_keys(keys / "master")
    assert sorted(p.name for p in (keys / "master" / "authorized").iterdir()) == ["worker-1.key", "worker-2.key"]
    for number in (1, 2):
        worker = load_worker_keys(keys / f"worker-{number}")
        assert worker.master_public == master.public  # the worker checks the master's key
        listed, _ = zmq.auth.load_certificate(keys / "master" / "authorized" / f"worker-{number}.key")
        assert listed == worker.public and worker.secret != master.secret
        assert mode(keys / f"worker-{number}" / "worker.key_secret") == 0o600 and mode(keys / f"worker-{number}") == 0o700
    assert mode(keys / "master" / "master.key_secret") == 0o600 and mode(keys / "master") == 0o700


def test_making_again_keeps_every_key_and_adds_workers(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 1)
    before = (keys / "master" / "master.key_secret").read_bytes(), (keys / "worker-1" / "worker.key_secret").read_bytes()
    made_master, made = make_keys(keys, 3)
    assert not made_master and made == [keys / "worker-2", keys / "worker-3"]
    after = (keys / "master" / "master.key_secret").read_bytes(), (keys / "worker-1" / "worker.key_secret").read_bytes()
    assert after == before
    assert len(list((keys / "master" / "authorized").glob("*.key"))) == 3


@pytest.mark.parametrize(
    ("damage", "folder", "message"),
    [
        (lambda keys: None, "nowhere", "no such folder"),
        (lambda keys: None, ".", "that is the folder esfast keys made"),
        (lambda keys: None, "worker-1", "that is a worker's folder"),
        (lambda keys: (keys / "master" / "master.key_secret").unlink(), "master", "master.key_secret is missing"),
        (lambda keys: (keys / "master" / "master.key_secret").write_text("secret-key = 1\n"), "master", "is not a key file"),
        (
            lambda keys: (keys / "master" / "master.key_secret").write_text('public-key = "short"\nsecret-key = "short"\n'),
            "master",
            "holds a damaged public key",
        ),
        (lambda keys: os.chmod(keys / "master" / "master.key_secret", 0o644), "master", "can be read by other users; make it private"),
        (lambda keys: shutil.rmtree(keys / "master" / "authorized"), "master", "authorized is missing"),
        (lambda keys: (keys / "master" / "authorized" / "worker-1.key").unlink(), "master", "lists no worker keys"),
    ],
)
def test_master_keys_that_cannot_be_used_are_one_line(tmp_path: Path, damage: object, folder: str, message: str) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 1)
    damage(keys)  # type: ignore[operator]
    with pytest.raises(KeysError, match=message) as caught:
        load_master_keys(keys / folder)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("damage", "folder", "message"),
    [
        (lambda keys: None, "master", "that is the master's folder"),
        (lambda keys: (keys / "worker-1" / "master.key").unlink(), "worker-1", "master.key is missing"),
        (lambda keys: shutil.copy(keys / "worker-1" / "worker.key", keys / "worker-1" / "worker.key_secret"), "worker-1", "no secret key"),
    ],
)
def test_worker_keys_that_cannot_be_used_are_one_line(tmp_path: Path, damage: object, folder: str, message: str) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 1)
    damage(keys)  # type: ignore[operator]
    os.chmod(keys / "worker-1" / "worker.key_secret", 0o600)
    with pytest.raises(KeysError, match=message):
        load_worker_keys(keys / folder)


def test_the_key_check_lists_bans_and_reads_the_folder_again(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    make_keys(keys, 1)
    check = KeyCheck(load_master_keys(keys / "master"))
    first = load_worker_keys(keys / "worker-1").public
    assert check.callback("*", first) and check.name(first.decode()) == "worker-1"
    make_keys(keys, 2)
    second = load_worker_keys(keys / "worker-2").public
    assert not check.callback("*", second) and check.refused == 1
    check.reload(1e9)  # the folder changed: worker-2 is listed now
    assert check.callback("*", second) and check.accepts(second.decode())
    check.ban(first)
    assert not check.callback("*", first) and not check.accepts(first)
    (keys / "master" / "authorized" / "worker-2.key").unlink()
    check.reload(2e9)
    assert not check.accepts(second)


def test_the_keys_command_says_what_goes_where(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "esfast.cli", "keys", str(tmp_path / "k"), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"made the master's keys: {tmp_path / 'k' / 'master'}" in result.stdout
    assert f"made worker keys: {tmp_path / 'k' / 'worker-2'}" in result.stdout
    assert f"esfast-master --keys {tmp_path / 'k' / 'master'}" in result.stdout
    again = subprocess.run(
        [sys.executable, "-m", "esfast.cli", "keys", str(tmp_path / "k"), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 2 and "--workers must be at least 1" in again.stderr
