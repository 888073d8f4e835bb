"""Atomic file and directory writes: write to a temporary name, then rename.

A run killed mid-write leaves either the old file or the new one, never a
half-written file that a later run would trust. The temporary folder is named
after its target, host and process (``.last.pt.<host>-<pid>.<random>.tmp``),
so a later run can tell a dead writer's leftovers from a live writer's work
and remove them (``remove_stale``). A full disk or a read-only folder is a
``StorageError`` naming the target and what to do, with nothing left behind.
What stands at the target is respected: a symbolic link is followed, a FIFO
or device is written in place, a folder is not replaced by a file (``landing``).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.core.errors import StorageError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}  # the last two: a file in the way
MAX_HOPS = 40  # symbolic links followed before a chain counts as a loop (Linux's own limit)
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


def link_hops(target: Path) -> list[Path]:
    """``target`` and every path its symbolic links lead to, in order (the last is no link)."""
    hops = [target]
    for _ in range(MAX_HOPS):
        if not hops[-1].is_symlink():
            return hops
        hops.append(hops[-1].parent / os.readlink(hops[-1]))  # a relative link is relative to its folder
    raise StorageError(f"cannot write {target}: its symbolic links form a loop ({' -> '.join(map(str, hops[:4]))} "
                       "...); remove the link or name another file")


def landing(target: Path) -> tuple[Path, bool]:
    """Where a write to ``target`` lands, and whether it is written through (in place, not replaced).

    A symbolic link is followed: the file it names is replaced, the link stays.
    A FIFO, a character device (``/dev/null``, a terminal) or an alias of an
    open file (``/dev/stdout``, ``/proc/self/fd/N``) is written in place:
    replacing it would put a regular file where the pipe or device was. A block
    device or a socket is refused.
    """
    hops = link_hops(target)
    if any(hop.absolute().parts[1:2] == ("proc",) for hop in hops):
        return target, True  # an open file's alias: its link may name a pipe that no path reaches
    try:
        mode = hops[-1].stat().st_mode
    except FileNotFoundError:
        return hops[-1], False
    except OSError as e:
        raise storage_error(target, e) from None
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        raise StorageError(f"cannot write {target}: it is a {'block device' if stat.S_ISBLK(mode) else 'socket'}, "
                           "not a file; name a file")
    through = stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)
    return (target if through else hops[-1]), through


def failed_write(target: Path, e: OSError) -> OSError:
    """A full disk or an unwritable place as a ``StorageError``; any other error as it was."""
    if e.errno in NO_SPACE | NOT_WRITABLE or "No space left" in str(e):
        return storage_error(target, e)
    return e


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and directories: whatever the body writes at the yielded
    path replaces ``target`` in one ``os.replace`` (directories: the old one is
    removed first, so only a crash in that instant can leave no target, never a
    partial one). On an exception the temporary is deleted. A symbolic link,
    FIFO or device at ``target`` is not replaced (``landing``), and a file is
    not written where a folder is.
    """
    target = Path(target)
    real, through = landing(target)
    if through:
        try:
            yield real
        except OSError as e:
            raise failed_write(target, e) from None
        return
    with owned_temporary(real, target) as tmp:
        tmp_target = tmp / real.name
        try:
            yield tmp_target
            if real.is_dir():
                if not tmp_target.is_dir():
                    raise StorageError(f"cannot write {target}: a folder stands there; name a file (or move the "
                                       "folder away)")
                shutil.rmtree(real)
            os.replace(tmp_target, real)
        except OSError as e:
            raise failed_write(target, e) from None


@contextmanager
def owned_temporary(beside: Path, named: Path | None = None) -> Iterator[Path]:
    """A new folder beside ``beside``, named for it and for this process, removed at the end of the block.

    A writer killed inside the block leaves the folder, and ``remove_stale``
    knows it by its name (``.<name>.<host>-<pid>.<random>.tmp``). ``named``:
    the path an error names (default ``beside``).
    """
    try:
        beside.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{owner()}.", suffix=".tmp", dir=beside.parent))
    except OSError as e:
        raise failed_write(named or beside, e) from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_report(target: Path | None, text: str) -> None:
    """A command's report to the file ``target``, or to standard output when it is None or ``-``."""
    if target is None or str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text(target, text)


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
