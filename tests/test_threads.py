"""trainer.num_threads=0 (auto): the thread count follows the cores other processes leave free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.core.runtime import FreeCores, busy_ticks, threads_for, usable_cores
from experiments.training.trainer import Trainer
from tests.faults import TINY

LINUX = Path("/proc/stat").exists()


@pytest.mark.parametrize(("cores", "ranks", "others", "expected"), [
    (2, 1, 0.0, 2),   # idle: every core
    (2, 1, 0.3, 2),   # light background work does not take a core
    (2, 1, 0.67, 1),  # one busy process sharing the two cores with our threads
    (2, 1, 1.9, 1),   # never fewer than one thread
    (4, 2, 0.0, 2),   # two ranks on the node: half the cores each, even when idle
    (4, 2, 2.0, 2),   # ... the other rank is the busy one: still the rank's share
    (4, 1, 1.0, 3),
    (1, 1, 5.0, 1),
])
def test_threads_for(cores: int, ranks: int, others: float, expected: int) -> None:
    assert threads_for(cores, ranks, others) == expected


def test_busy_ticks_counts_only_the_given_cpus_and_not_idle_time() -> None:
    text = ("cpu  100 0 100 900 10 0 0 0 0 0\n"
            "cpu0 40 1 10 500 5 2 3 4 0 0\n"
            "cpu1 60 0 90 400 5 0 0 0 0 0\n"
            "intr 12345\n")
    assert busy_ticks(text, {0}) == 40 + 1 + 10 + 2 + 3 + 4
    assert busy_ticks(text, {1}) == 150
    assert busy_ticks(text, {0, 1}) == 60 + 150
    assert busy_ticks(text, {7}) == 0


def test_free_cores_subtracts_its_own_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = FreeCores()
    watch.cpus = {0, 1}
    tick = os.sysconf("SC_CLK_TCK")
    watch.last = (10.0, 1000, 500)
    # Over 2 s both cores were busy (4 core-seconds), 2 of them ours: the others kept one core.
    monkeypatch.setattr(watch, "_sample", lambda: (12.0, 1000 + 4 * tick, 500 + 2 * tick))
    assert watch.threads() == 1 and watch.others == pytest.approx(1.0)
    # The next 2 s: both cores busy with our threads alone: the other process stopped.
    monkeypatch.setattr(watch, "_sample", lambda: (14.0, 1000 + 8 * tick, 500 + 6 * tick))
    assert watch.threads() == 2 and watch.others == pytest.approx(0.0)


def spinner() -> subprocess.Popen:
    """A process that keeps one core busy (a pure-Python loop), started and seen running before returning."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 60
    while int(stat.read_text().rsplit(")", 1)[1].split()[11]) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until it has run a few ticks: it is on a core
    return proc


needs_two_cores = pytest.mark.skipif(not LINUX or usable_cores() < 2, reason="needs Linux /proc and 2+ usable cores")


@needs_two_cores
def test_a_busy_process_takes_a_thread_away() -> None:
    proc = spinner()
    try:
        watch = FreeCores()
        assert watch.threads(settle=1.0) <= usable_cores() - 1
        assert watch.others >= 0.5
    finally:
        proc.kill()
        proc.wait()


@needs_two_cores
def test_trainer_auto_threads_leave_the_busy_core_alone(tmp_path: Path) -> None:
    from tests.conftest import compose_cfg

    cfg = compose_cfg([*TINY, "trainer.num_threads=0", "trainer.max_steps=10", "trainer.log_every=5",
                       "trainer.eval_every=10"])
    proc = spinner()
    try:
        trainer = Trainer(cfg, tmp_path / "run")
        trainer.fit()
    finally:
        proc.kill()
        proc.wait()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    threads = [r["threads"] for r in rows if r["event"] == "train"]
    assert threads and all(1 <= t <= usable_cores() - 1 for t in threads)


def test_fixed_threads_are_kept_and_logged(tmp_path: Path) -> None:
    from tests.conftest import compose_cfg

    cfg = compose_cfg([*TINY, "trainer.max_steps=10", "trainer.log_every=5", "trainer.eval_every=10"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.cores is None  # trainer.num_threads=1: nothing is measured, nothing changes
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in rows if r["event"] == "train"] == [1, 1]


@needs_two_cores
def test_jobs_started_side_by_side_start_on_their_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import compose_cfg

    monkeypatch.setenv("S2S_JOBS_SIDE_BY_SIDE", str(usable_cores()))  # as s2s-grid sets it for auto threads
    trainer = Trainer(compose_cfg([*TINY, "trainer.num_threads=0"]), tmp_path / "run")
    assert trainer.threads == 1  # the machine may be idle now: its siblings are starting this very moment
