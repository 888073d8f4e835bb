"""Atomic file and directory writes: write to a temporary name, then rename.

A run killed mid-write leaves either the old file or the new one, never a
half-written file that a later run would trust. The temporary folder is named
after its target, host and process (``.last.pt.<host>-<pid>.<random>.tmp``),
so a later run can tell a dead writer's leftovers from a live writer's work
and remove them (``remove_stale``). A full disk or a read-only folder is a
``StorageError`` naming the target and what to do, with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.errors import StorageError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}  # the last two: a file in the way
LEGACY_STALE_SECONDS = 3600  # temporaries without an owner in their name (older versions) count as stale after this


def owner() -> str:
    return f"{socket.gethostname().replace('.', '_').replace('-', '_')}-{os.getpid()}"


def storage_error(target: Path, e: OSError, then: str = "run again; nothing half-written was kept") -> StorageError:
    reason = e.strerror or str(e)
    if e.errno in NO_SPACE or "No space left" in str(e):
        return StorageError(f"cannot write {target}: {reason}. Free disk space (or write the run / cache_dir "
                            f"elsewhere) and {then}")
    elsewhere = "write elsewhere (hydra.run.dir=... for a run, cache_dir=... or S2S_CACHE_DIR for the caches)"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return StorageError(f"cannot write {target}: a file stands where a folder must be ({reason}); move it away, "
                            f"or {elsewhere}")
    return StorageError(f"cannot write {target}: {reason}. Make {target.parent} writable, or {elsewhere}")


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and directories: whatever the body writes at the yielded
    path replaces ``target`` in one ``os.replace`` (directories: the old one is
    removed first, so only a crash in that instant can leave no target, never a
    partial one). On an exception the temporary is deleted.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{owner()}.", suffix=".tmp", dir=target.parent))
    except OSError as e:
        if e.errno in NO_SPACE | NOT_WRITABLE:
            raise storage_error(target, e) from None
        raise
    tmp_target = tmp / target.name
    try:
        yield tmp_target
        if tmp_target.is_dir() and target.exists():
            shutil.rmtree(target)
        os.replace(tmp_target, target)
    except OSError as e:
        if e.errno in NO_SPACE | NOT_WRITABLE or "No space left" in str(e):
            raise storage_error(target, e) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def is_stale(tmp: Path) -> bool:
    """Whether ``tmp`` is a temporary of ``atomic_path`` whose writer is gone.

    Its writer is known when it was made on this host; one from another host is
    left alone (it may be live), one from an older version without an owner in
    its name is stale once it is an hour old.
    """
    parts = tmp.name.split(".")
    host, _, pid = (parts[-3] if len(parts) >= 4 else "").rpartition("-")
    if host and pid.isdigit():
        return host == owner().rpartition("-")[0] and not _alive(int(pid))
    try:
        return time.time() - tmp.stat().st_mtime > LEGACY_STALE_SECONDS
    except FileNotFoundError:
        return False


def remove_stale(folder: Path, recursive: bool = False) -> list[Path]:
    """Delete the temporaries that killed writers left in ``folder`` (and below, when ``recursive``)."""
    if not folder.is_dir():
        return []
    pattern = "**/.*.tmp" if recursive else ".*.tmp"
    removed = [tmp for tmp in folder.glob(pattern) if tmp.is_dir() and is_stale(tmp)]
    for tmp in removed:
        shutil.rmtree(tmp, ignore_errors=True)
    return removed
