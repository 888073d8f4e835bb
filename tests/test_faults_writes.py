"""Fault injection, what stands where a file is written: links, pipes, devices and folders are respected.

The atomic writer (experiments/core/atomic.py) replaces a regular file whole, but
never puts a regular file where the user's link, FIFO, device or folder was.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from experiments.core.atomic import write_report, write_text
from experiments.core.errors import StorageError
from tests.faults import no_temporaries


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "scores.jsonl").write_text("old\n")
    link = tmp_path / "scores.jsonl"
    link.symlink_to(Path("real") / "scores.jsonl")  # relative, as `ln -s` makes them
    write_text(link, "new\n")
    assert link.is_symlink() and (tmp_path / "real" / "scores.jsonl").read_text() == "new\n"
    dangling = tmp_path / "later.jsonl"
    dangling.symlink_to(tmp_path / "real" / "later.jsonl")
    write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "real" / "later.jsonl").read_text() == "made\n"
    assert no_temporaries(tmp_path)


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting, as `cat pipe` would be
    try:
        write_text(fifo, "through the pipe\n")
        assert os.read(reader, 100) == b"through the pipe\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_an_alias_of_an_open_file_is_written_through(tmp_path: Path) -> None:
    """/dev/stdout is a link to /proc/self/fd/1: the same, with a pipe's write end."""
    read_end, write_end = os.pipe()
    alias = tmp_path / "stdout"
    alias.symlink_to(f"/proc/self/fd/{write_end}")
    try:
        write_text(alias, "to the reader\n")
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            assert reader.read() == "to the reader\n"
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass
    assert alias.is_symlink()


def test_a_character_device_is_written_through(tmp_path: Path) -> None:
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    except PermissionError:
        pytest.skip("cannot make a device node here (not root)")
    write_text(null, "gone\n")
    assert stat.S_ISCHR(null.stat().st_mode) and no_temporaries(tmp_path)


def test_a_folder_a_loop_or_a_socket_at_the_target_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("kept")
    with pytest.raises(StorageError, match=r"cannot write .*out: a folder stands there; name a file"):
        write_text(tmp_path / "out", "report\n")
    assert (tmp_path / "out" / "kept.txt").read_text() == "kept" and no_temporaries(tmp_path)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(StorageError, match=r"cannot write .*a: its symbolic links form a loop"):
        write_text(tmp_path / "a", "report\n")
    import socket

    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        with pytest.raises(StorageError, match=r"cannot write .*sock: it is a socket, not a file"):
            write_text(tmp_path / "sock", "report\n")
    finally:
        server.close()


def test_a_dash_is_standard_output(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_report(Path("-"), "on stdout\n")
    assert capsys.readouterr().out == "on stdout\n" and not (tmp_path / "-").exists()


def test_a_cached_split_another_process_published_first_is_kept_not_replaced(tmp_path: Path) -> None:
    """Two grid jobs on a fresh cache build the same split (its folder is named by its content): the second
    must not remove the first's folder, which the first is about to read, to put its own in."""
    import datasets

    from experiments.data.sources import publish_dataset

    target = tmp_path / "raw" / "toy-train-abc"
    target.parent.mkdir()

    def write_while_the_other_publishes(into: Path) -> None:
        datasets.Dataset.from_dict({"src": ["ours"]}).save_to_disk(str(into))
        datasets.Dataset.from_dict({"src": ["theirs"]}).save_to_disk(str(target))  # the other job wins the race

    publish_dataset(target, write_while_the_other_publishes)
    assert datasets.load_from_disk(str(target))["src"] == ["theirs"]
    assert no_temporaries(target.parent)
    alone = tmp_path / "raw" / "toy-valid-def"
    publish_dataset(alone, lambda into: datasets.Dataset.from_dict({"src": ["only"]}).save_to_disk(str(into)))
    assert datasets.load_from_disk(str(alone))["src"] == ["only"]
    with pytest.raises(OSError):  # a failure that is not the race is not swallowed
        publish_dataset(tmp_path / "raw" / "broken", lambda into: (_ for _ in ()).throw(OSError(5, "I/O error")))
    assert no_temporaries(target.parent)
