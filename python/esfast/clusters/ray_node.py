"""What runs on a Ray node for ``esfast ray``: the actor's class that starts and stops the node's
worker host, and what the driver sends it.

The driver (:mod:`esfast.clusters.ray`) makes :class:`NodeWorkerHost` a Ray actor pinned to one
node; the actor runs ``esfast-worker --procs N --parent <its own pid>`` as its child, in a session
of its own, so the host stops on SIGTERM from :meth:`NodeWorkerHost.stop` or when the actor's
process is gone (a node's loss, ``ray.kill``, the driver's end). A run with keys sends the node
its ``worker-K`` folder's files (:class:`KeyFiles`), written to a private temporary folder that
goes as soon as the host has read them (at its first line of output), or when it stops. Nothing
here imports Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from esfast.distributed.keys import MASTER_NAME, WORKER_NAME, load_worker_keys

__all__ = ["KEY_FILES", "STOP_SECONDS", "HostExited", "HostStarted", "KeyFiles", "NodeWorkerHost"]

STOP_SECONDS = 15.0  # a worker host's time to say BYE and clean up after SIGTERM, before SIGKILL
TAIL_LINES = 3  # lines of a worker host's output kept for the driver's line about its exit
KEY_FILES = (f"{WORKER_NAME}.key_secret", f"{WORKER_NAME}.key", f"{MASTER_NAME}.key")


@dataclass(frozen=True)
class KeyFiles:
    """A ``worker-K`` folder's files, sent to the node whose worker host uses them."""

    name: str  # worker-K
    files: dict[str, bytes]

    @classmethod
    def read(cls, folder: Path) -> KeyFiles:
        """Reads (and checks) one worker folder.

        Raises:
            KeysError: a missing, damaged or readable-by-others file (one line).
        """
        load_worker_keys(folder)
        return cls(folder.name, {name: (folder / name).read_bytes() for name in KEY_FILES})

    def write(self) -> Path:
        """Writes the files into a new private temporary folder and returns it."""
        folder = Path(tempfile.mkdtemp(prefix=f"esfast-{self.name}-"))  # mode 0700
        for name, content in self.files.items():
            descriptor = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
        return folder


@dataclass(frozen=True)
class HostStarted:
    """A node's worker host has started."""

    hostname: str
    pid: int


@dataclass(frozen=True)
class HostExited:
    """A node's worker host has exited."""

    status: int
    tail: tuple[str, ...]  # its last lines of output


class NodeWorkerHost:
    """One ``esfast-worker`` on the node this object lives on: a Ray actor's class
    (:class:`NodeWatcher` makes it one with ``ray.remote``), its methods returning at once or
    after ``timeout`` seconds at most.

    The host's output goes to the actor's (Ray shows it on the driver's console, prefixed with
    the actor); its last lines come back with :meth:`poll`.

    Args:
        master: the master's endpoint.
        procs: evaluator processes.
        keys: the host's ``worker-K`` files, or None for a run without keys.
    """

    def __init__(self, master: str, procs: int, keys: KeyFiles | None) -> None:
        self.master = master
        self.procs = procs
        self.keys = keys
        self.key_folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.reader: threading.Thread | None = None

    def start(self) -> HostStarted:
        """Starts the worker host (once; later calls report the one started)."""
        if self.process is None:
            command = [sys.executable, "-m", "esfast.distributed.host", "--master", self.master, "--procs", str(self.procs)]
            command += ["--parent", str(os.getpid())]  # it exits when this actor's process is gone
            if self.keys is not None:
                self.key_folder = self.keys.write()
                command += ["--keys", str(self.key_folder)]
            # Its own session: a signal to this actor's process group is not one to the host,
            # which stops on SIGTERM from stop() or on losing its parent.
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
            assert self.process.stdout is not None
            self.reader = threading.Thread(target=self._forward, args=(self.process.stdout,), daemon=True)
            self.reader.start()
        return HostStarted(socket.gethostname(), self.process.pid)

    def _forward(self, stream: IO[bytes]) -> None:
        """Copies the host's output to this process's, keeping the last lines; removes the key
        folder at the first line, which the host writes only after it has read its keys."""
        for raw in stream:
            self._remove_keys()
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def poll(self, timeout: float) -> HostExited | None:
        """Waits up to ``timeout`` seconds for the host to exit: how it exited, or None while it runs."""
        if self.process is None:
            return None
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._cleanup()
        return HostExited(status, tuple(self.tail))

    def stop(self, grace: float) -> HostExited | None:
        """Stops the host and removes its key folder; None if it never started.

        Args:
            grace: seconds the host has to exit by itself first (the master has told it to stop,
                and it is closing); then SIGTERM (it says BYE and cleans up), and SIGKILL after
                STOP_SECONDS more.
        """
        if self.process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._cleanup()
        return HostExited(self.process.returncode, tuple(self.tail))

    def _cleanup(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=1.0)  # the output's end, which follows the host's
        if self.process is not None and self.process.stdout is not None and (self.reader is None or not self.reader.is_alive()):
            self.process.stdout.close()
        self._remove_keys()

    def _remove_keys(self) -> None:
        """Removes the key folder (once; from the reader's thread or the actor's)."""
        folder, self.key_folder = self.key_folder, None
        if folder is not None:
            for name in KEY_FILES:
                (folder / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
