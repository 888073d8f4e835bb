"""s2s-grid --until: jobs that cannot end in time are not started, and side-by-side jobs shed the slowest."""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.training import grid, locks
from experiments.training.deadline import Deadline, parse_until
from experiments.core.errors import ConfigError
from tests.conftest import REPO


def test_until_is_a_clock_time_or_a_duration() -> None:
    now = time.mktime((2026, 12, 2, 5, 0, 0, 0, 0, -1))
    assert parse_until("+90m", now) == now + 5400
    assert parse_until("+2.5h", now) == now + 9000
    assert parse_until("06:50", now) == now + 110 * 60
    assert parse_until("04:30", now) == now + 23.5 * 3600  # already past today: tomorrow's
    for bad in ("7pm", "25:00", "+3d", "06:61"):
        with pytest.raises(ConfigError, match=re.escape(f"--until {bad!r}: expected HH:MM")):
            parse_until(bad, now)


def test_the_job_that_would_end_last_is_stopped_only_when_it_overruns() -> None:
    now = 10_000.0
    # a: 1000 updates left at 2 s; b: 2000 left at 3 s (both measured over 100 updates under this grid)
    running = [("a", 1100, now - 200, 0, 100), ("b", 2100, now - 300, 0, 100)]
    assert Deadline(at=now + 5000, final_s=600).to_stop(running, now) == "b"  # b ends at now + 6600
    assert Deadline(at=now + 7000, final_s=600).to_stop(running, now) is None
    young = [running[0], ("b", 2100, now - 30, 0, 10)]  # b's pace is not known yet
    assert Deadline(at=now + 100, final_s=0).to_stop(young, now) is None
    assert Deadline(at=now + 100, final_s=0).to_stop(running[:1], now) is None  # the last job always runs on


def test_a_job_starts_only_if_its_siblings_pace_ends_it_in_time() -> None:
    deadline = Deadline(at=10_000.0 + 3600, final_s=600)
    assert deadline.start_verdict(1000, 2.5, 10_000.0) == ""  # 1000 x 2.75 s + 600 s < 3600 s
    late = deadline.start_verdict(3000, 2.5, 10_000.0)
    assert "3000 updates at 2.50 s (its sibling's pace) would end it at" in late and "after --until" in late


def ended(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_stopped_job_is_ended_with_its_process_group_and_reported_as_stopped(tmp_path: Path) -> None:
    job = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1", "model": "gru"})[0]
    child = ("import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; "
             "time.sleep(600)']); print(g.pid, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", child], start_new_session=True, stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())
    running = grid.Running()
    running.add(job, proc, 0)
    running.stop(job, "--until: it would have finished too late")
    assert proc.wait(timeout=60) == -signal.SIGTERM
    deadline = time.monotonic() + 30
    while not ended(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended(grandchild)  # the job's own children went with it
    assert running.remove(job) == "--until: it would have finished too late"


def test_an_ended_grid_ends_its_jobs_and_starts_no_more(tmp_path: Path, shared_cache: Path) -> None:
    """A job outliving its grid would hold no lock: the same command run again would start it a second time.

    The kernel hands a signal sent to the grid to any of its threads; here it goes to a job's thread, not the
    main thread, where Python runs handlers: the main thread must still notice it (a wait without timeout never
    woke, and the grid ran on)."""
    cmd = [sys.executable, "-m", "experiments.training.grid", "smoke", "--runs-dir", str(tmp_path), "--only", "seed=1",
           "--jobs", "1", f"cache_dir={shared_cache}", "trainer.max_steps=100000", "trainer.eval_every=100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # the queue's header, then its first job's start
        assert "start  smoke/gru_tiny:1" in lines[1], lines
        folder = tmp_path / "smoke" / "gru_tiny" / "seed1"
        assert locks.is_locked(folder)
        worker = min(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
        assert ctypes.CDLL(None, use_errno=True).tgkill(proc.pid, worker, signal.SIGTERM) == 0
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a hung grid: end it and its job, or they outlive the test
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and str(tmp_path) in cmdline(p)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 1, out + err
    assert "SIGTERM: ending the running jobs" in out
    assert "stopped (the grid got SIGTERM; resumes from last.pt next time)  smoke/gru_tiny:1" in out
    assert "transformer_tiny" not in out  # the queue's next job was not started
    assert "run the same command again to resume" in err
    assert not locks.is_locked(folder)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and str(folder) in cmdline(pid)]


def cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # ended meanwhile
        return ""


def test_grid_skips_a_job_its_sibling_says_cannot_end_in_time(tmp_path: Path, shared_cache: Path) -> None:
    sibling = tmp_path / "smoke" / "gru_tiny" / "seed2"
    sibling.mkdir(parents=True)
    (sibling / "metrics.jsonl").write_text(json.dumps({"event": "valid", "step": 10, "bleu": 1.0,
                                                       "train_seconds": 1000.0}) + "\n")  # 100 s an update
    out = subprocess.run([sys.executable, "-m", "experiments.training.grid", "smoke", "--runs-dir", str(tmp_path), "--only",
                          "seed=1", "--only", "model=gru_tiny", "--until", "+5m", f"cache_dir={shared_cache}"],
                         cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "skip   smoke/gru_tiny:1: 100 updates at 100.00 s (its sibling's pace)" in out.stdout
    assert "the free cores as thread(s) each, until" in out.stdout
    assert not (tmp_path / "smoke" / "gru_tiny" / "seed1" / "metrics.jsonl").exists()
