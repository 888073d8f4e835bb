"""Folder locks that die with their process: ``fcntl.flock`` on a lock file inside the folder.

The kernel drops a flock when its process ends, however it ends (SIGKILL, a
power cut of the node aside), so a killed job never leaves a folder locked.
The holder writes ``<pid> <host>`` into the file, so the one refused can say
who holds it. One folder can carry several locks by name: ``s2s-grid`` holds
``.grid.lock`` on a job folder for as long as it runs the job, and the
``s2s-train`` it starts there holds ``.train.lock`` of its own, so neither waits
for the other.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.core.atomic import storage_error

GRID = ".grid.lock"  # s2s-grid: this job folder is queued or running under a grid
TRAIN = ".train.lock"  # s2s-train: this run folder is being written by a live training process
NAMES = (GRID, TRAIN)


def describe(lock: Path) -> str:
    """Who holds ``lock`` as its holder wrote it (``pid 123 on host h``)."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid.isdigit():
        return "another process (it has not written its pid yet)"
    return f"pid {pid} on host {host or '?'}"


def holder(folder: Path, name: str) -> str | None:
    """Who holds ``folder``'s lock ``name`` right now, or None when nobody does."""
    lock = folder / name
    try:
        f = open(lock)
    except OSError:  # no lock file: never locked
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two lookers do not exclude each other
        except BlockingIOError:
            return describe(lock)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def is_locked(folder: Path, names: tuple[str, ...] = NAMES) -> bool:
    return any(holder(folder, name) for name in names)


@contextmanager
def hold(folder: Path, name: str) -> Iterator[str | None]:
    """Hold ``folder``'s lock ``name`` for the block; yields None, or who holds it when another process does.

    The file is opened without truncating it: a process that is refused must
    not erase the holder's pid.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / name, "a+")
    except OSError as e:
        raise storage_error(folder / name, e, "run again") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield describe(folder / name)
            return
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        try:
            yield None
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
