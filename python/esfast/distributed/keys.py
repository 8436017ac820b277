"""CURVE keys of a cluster: making them (``esfast keys``), where each file goes, loading them.

The master and every worker host hold a ZeroMQ CURVE key pair. The master accepts a connection
only from a worker whose public key it lists; a worker connects only to a master that holds the
secret half of the public key it was given. Connections are then encrypted and authenticated by
ZeroMQ itself: every file here is made and read by pyzmq's ``zmq.auth`` (``create_certificates``,
``load_certificate``), and the master checks keys with pyzmq's ``ThreadAuthenticator``; esfast
does no cryptography of its own.

``esfast keys DIR --workers N`` makes one folder per machine::

    DIR/master/                     copy to the master's machine: esfast-master --keys DIR/master
        master.key_secret           the master's key pair (secret: this machine only)
        master.key                  the master's public key
        authorized/worker-N.key     the public key of every worker the master accepts
    DIR/worker-N/                   copy to worker N's machine: esfast-worker --keys DIR/worker-N
        worker.key_secret           worker N's key pair (secret: this machine only)
        worker.key                  its public key (the same file as DIR/master/authorized/worker-N.key)
        master.key                  the master's public key, which the worker checks

Running it again with a larger N adds the missing workers and keeps every existing key; a
worker is withdrawn by deleting its file in ``authorized/`` (the master reads the folder again
while it runs). Secret files are readable by their owner only.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from esfast.errors import KeysError

__all__ = [
    "AUTHORIZED_DIR",
    "MASTER_DIR",
    "KeyCheck",
    "MasterKeys",
    "WorkerKeys",
    "authorized_keys",
    "load_master_keys",
    "load_worker_keys",
    "make_keys",
    "worker_dirs",
]

logger = logging.getLogger(__name__)

MASTER_DIR = "master"
AUTHORIZED_DIR = "authorized"
WORKER_PREFIX = "worker-"
MASTER_NAME = "master"  # master.key, master.key_secret
WORKER_NAME = "worker"  # worker.key, worker.key_secret
_WORKER_FOLDER = re.compile(r"worker-([1-9][0-9]*)")
Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85
RELOAD_INTERVAL = 5.0  # seconds between looks at the master's authorized folder
REFUSED_LOG_INTERVAL = 10.0  # at most one line per this many seconds about refused keys


@dataclass(frozen=True)
class MasterKeys:
    """What ``esfast-master --keys DIR`` uses: its key pair and the folder of accepted workers' keys."""

    directory: Path
    public: bytes  # Z85
    secret: bytes  # Z85
    authorized: Path


@dataclass(frozen=True)
class WorkerKeys:
    """What ``esfast-worker --keys DIR`` uses: its key pair and the master's public key."""

    directory: Path
    public: bytes  # Z85
    secret: bytes  # Z85
    master_public: bytes  # Z85


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise KeysError(f"this pyzmq (libzmq {zmq.zmq_version()}) was built without CURVE support, so --keys cannot be used")


def worker_dirs(directory: Path) -> list[Path]:
    """The ``worker-N`` folders of a keys directory, by N."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _WORKER_FOLDER.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def make_keys(directory: Path, workers: int) -> tuple[bool, list[Path]]:
    """Makes (or completes) a keys directory: the master's pair and workers ``1..workers``.

    Keys that exist are kept; a worker folder that exists is left as it is.

    Args:
        directory: the keys directory (created if missing).
        workers: how many worker folders the directory should hold at least.

    Returns:
        (whether the master's key pair was made now, the worker folders made now).

    Raises:
        KeysError: CURVE is not available, ``workers`` < 1, or an existing master folder is
            incomplete or damaged.
    """
    _require_curve()
    if workers < 1:
        raise KeysError(f"--workers must be at least 1, got {workers}")
    master = directory / MASTER_DIR
    authorized = master / AUTHORIZED_DIR
    previous = os.umask(0o077)  # secret files and folders for their owner only, from the start
    try:
        made_master = not (master / f"{MASTER_NAME}.key_secret").exists()
        if made_master:
            if master.exists() and any(master.iterdir()):
                raise KeysError(f"{master} exists but holds no {MASTER_NAME}.key_secret; remove it or choose another folder")
            authorized.mkdir(parents=True, exist_ok=True)
            _, secret = zmq.auth.create_certificates(master, MASTER_NAME)
            os.chmod(secret, 0o600)
        else:
            load_master_keys(master)  # refuses a damaged master folder before workers are added to it
            authorized.mkdir(exist_ok=True)
        made: list[Path] = []
        for number in range(1, workers + 1):
            folder = directory / f"{WORKER_PREFIX}{number}"
            if folder.exists():
                continue
            folder.mkdir(mode=0o700)
            public, secret = zmq.auth.create_certificates(folder, WORKER_NAME)
            os.chmod(secret, 0o600)
            shutil.copyfile(master / f"{MASTER_NAME}.key", folder / f"{MASTER_NAME}.key")
            shutil.copyfile(public, authorized / f"{folder.name}.key")
            made.append(folder)
    finally:
        os.umask(previous)
    for path in [master, authorized, *made]:
        os.chmod(path, 0o700)
    return made_master, made


def _read(path: Path, *, secret: bool, option: str) -> tuple[bytes, bytes | None]:
    """(public, secret) of one key file, or a one-line KeysError naming the file."""
    if not path.is_file():
        raise KeysError(f"{option}: {path} is missing")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise KeysError(f"{option}: {path} is not a key file made by esfast keys ({error})") from None
    for name, key in (("public", public), ("secret", secret_key)):
        if key is None:
            continue
        try:
            valid = len(key) == Z85_KEY_LENGTH and len(z85.decode(key)) == 32
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise KeysError(f"{option}: {path} holds a damaged {name} key (a CURVE key is {Z85_KEY_LENGTH} Z85 characters)")
    if secret and secret_key is None:
        raise KeysError(f"{option}: {path} holds no secret key (the .key_secret file is needed, not the .key file)")
    if secret and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeysError(f"{option}: {path} can be read by other users; make it private with: chmod 600 {path}")
    return public, secret_key


def _misplaced(directory: Path, option: str, wanted: str) -> KeysError | None:
    """A clearer error when ``directory`` is the whole keys directory, or another machine's folder."""
    if (directory / MASTER_DIR).is_dir():
        return KeysError(f"{option} {directory}: that is the folder esfast keys made; give {wanted} its own folder inside it")
    return None


def load_master_keys(directory: str | Path) -> MasterKeys:
    """The master's keys from its folder (``DIR/master`` of ``esfast keys DIR``).

    Raises:
        KeysError: a missing, damaged or readable-by-others file, or no worker key listed (one line).
    """
    _require_curve()
    directory = Path(directory)
    option = "--keys"
    if not directory.is_dir():
        raise KeysError(f"{option} {directory}: no such folder (make one with: esfast keys DIR, then give the master DIR/master)")
    if (problem := _misplaced(directory, option, "the master")) is not None:
        raise problem
    if not (directory / f"{MASTER_NAME}.key_secret").exists() and (directory / f"{WORKER_NAME}.key_secret").exists():
        raise KeysError(f"{option} {directory}: that is a worker's folder; the master's is DIR/master")
    public, secret = _read(directory / f"{MASTER_NAME}.key_secret", secret=True, option=option)
    authorized = directory / AUTHORIZED_DIR
    keys = authorized_keys(authorized)
    if not keys:
        raise KeysError(f"{option}: {authorized} lists no worker keys (*.key); add some with: esfast keys DIR --workers N")
    assert secret is not None
    return MasterKeys(directory, public, secret, authorized)


def authorized_keys(folder: Path) -> dict[bytes, str]:
    """The public keys listed in the master's ``authorized`` folder: Z85 key -> worker name.

    Raises:
        KeysError: the folder is missing, or a file in it is not a public key file.
    """
    if not folder.is_dir():
        raise KeysError(f"--keys: {folder} is missing (it holds the public keys of the workers the master accepts)")
    keys: dict[bytes, str] = {}
    for path in sorted(folder.glob("*.key")):
        public, _ = _read(path, secret=False, option="--keys")
        keys[public] = path.stem
    return keys


def load_worker_keys(directory: str | Path) -> WorkerKeys:
    """A worker's keys from its folder (``DIR/worker-N`` of ``esfast keys DIR``).

    Raises:
        KeysError: a missing, damaged or readable-by-others file (one line).
    """
    _require_curve()
    directory = Path(directory)
    option = "--keys"
    if not directory.is_dir():
        raise KeysError(f"{option} {directory}: no such folder (make one with: esfast keys DIR, then give this worker DIR/worker-N)")
    if (problem := _misplaced(directory, option, "each worker")) is not None:
        raise problem
    if (directory / f"{MASTER_NAME}.key_secret").exists():
        raise KeysError(f"{option} {directory}: that is the master's folder; a worker's is DIR/worker-N")
    public, secret = _read(directory / f"{WORKER_NAME}.key_secret", secret=True, option=option)
    master_public, _ = _read(directory / f"{MASTER_NAME}.key", secret=False, option=option)
    assert secret is not None
    return WorkerKeys(directory, public, secret, master_public)


class KeyCheck:
    """Which workers' keys the master accepts: pyzmq's authenticator asks :meth:`callback` at
    every CURVE handshake (``ThreadAuthenticator.configure_curve_callback``).

    The keys are those listed in the master's ``authorized`` folder, read again when the folder
    changes (:meth:`reload`, from the master's thread), minus the keys of evicted hosts
    (:meth:`ban`). Thread-safe: the authenticator calls from its own thread.
    """

    def __init__(self, keys: MasterKeys) -> None:
        self.folder = keys.authorized
        self.lock = threading.Lock()
        self.keys = authorized_keys(self.folder)
        self.banned: set[bytes] = set()
        self.stamp = self._stamp()
        self.checked = time.monotonic()
        self.refused = 0  # handshakes refused for an unlisted or banned key, since the start
        self.refused_logged = 0
        self.last_log = -float("inf")

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self.folder.stat()
        except OSError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_ino)

    def callback(self, domain: str, key: bytes) -> bool:
        """Whether a worker with this Z85 public key may connect (pyzmq's credentials provider)."""
        with self.lock:
            allowed = key in self.keys and key not in self.banned
            if not allowed:
                self.refused += 1
            now = time.monotonic()
            if allowed or now - self.last_log < REFUSED_LOG_INTERVAL:
                return allowed
            self.last_log = now
            count, self.refused_logged = self.refused - self.refused_logged, self.refused
        why = "of an evicted worker host" if key in self.banned else f"not listed in {self.folder}"
        logger.warning("refused %d connection%s with a key %s (last: %s)", count, "" if count == 1 else "s", why, key.decode())
        return False

    def name(self, key: str | bytes | None) -> str | None:
        """The worker name (``worker-N``) of a listed Z85 key, or None."""
        if key is None:
            return None
        with self.lock:
            return self.keys.get(key.encode() if isinstance(key, str) else key)

    def accepts(self, key: str | bytes | None) -> bool:
        """Whether a worker with this Z85 key may take part now: listed and not banned."""
        if key is None:
            return False
        raw = key.encode() if isinstance(key, str) else key
        with self.lock:
            return raw in self.keys and raw not in self.banned

    def ban(self, key: str | bytes) -> None:
        """Refuses this key from now on, whatever the folder lists (an evicted host's)."""
        with self.lock:
            self.banned.add(key.encode() if isinstance(key, str) else key)

    def reload(self, now: float) -> None:
        """Reads the folder again if it changed (at most every RELOAD_INTERVAL seconds); a folder
        that cannot be read keeps the keys read last, with a warning."""
        if now - self.checked < RELOAD_INTERVAL:
            return
        self.checked = now
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        try:
            keys = authorized_keys(self.folder)
        except KeysError as error:
            logger.warning("the authorized keys were not read again: %s; the %d keys read before stay", error, len(self.keys))
            return
        with self.lock:
            added, removed = len(set(keys) - set(self.keys)), len(set(self.keys) - set(keys))
            self.keys, self.stamp = keys, stamp
        logger.info("authorized keys read again from %s: %d listed (%d added, %d removed)", self.folder, len(keys), added, removed)
