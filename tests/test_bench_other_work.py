"""Other work during a bench run (experiments/bench/other_work.py): CPU time the machine spent that was not the
bench's own, which the report states instead of trusting the load average."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from experiments.bench import other_work
from experiments.bench.other_work import Mark

SPIN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0:\n    pass\n"


def test_cpu_time_not_the_bench_s_is_other_work_in_cores() -> None:
    start = Mark(wall=100.0, busy=50.0, own=5.0)
    shared = Mark(wall=110.0, busy=80.0, own=15.0)  # 30 busy seconds, 10 of them ours, over 10 s
    assert other_work.between(start, shared) == {"seconds": 10.0, "other_cores": 2.0, "busy": True}
    alone = Mark(wall=110.0, busy=60.5, own=15.0)
    assert other_work.between(start, alone) == {"seconds": 10.0, "other_cores": 0.05, "busy": False}
    assert other_work.between(start, None) is None and other_work.between(shared, start) is None
    assert other_work.describe(other_work.between(start, shared)) == (
        "2.00 cores on average over 10 s: busy: its timings are not an idle machine's; rerun it with the machine idle")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_a_process_that_is_not_the_bench_s_counts_until_the_bench_has_waited_for_it() -> None:
    """A sibling spinning for 1 CPU second is other work while unreaped; once the bench waits for it (as for its
    workers) its time is the bench's own. Bounds hold however loaded the machine is: the child spins on its own
    CPU clock, and other processes only add to other work."""
    start = other_work.mark()
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # finished, not yet reaped
    unreaped = other_work.mark()
    child.wait()
    reaped = other_work.mark()
    spun = reaped.own - unreaped.own  # the child's CPU seconds, now in our children's times
    assert spun >= 1.0
    before, after = (other_work.between(start, end) for end in (unreaped, reaped))
    assert before["other_cores"] * before["seconds"] >= 0.9 * spun
    assert after["other_cores"] * after["seconds"] <= before["other_cores"] * before["seconds"] - 0.9 * spun + 0.1


def test_no_committed_bench_report_was_measured_on_a_busy_machine() -> None:
    """Issue 36: no figure in results/ from a machine that was busy. Reports that measured the other work (those
    written since it was recorded) must have found the machine idle; a busy one is rerun, not committed."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    measured = {}
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text())
        work = report.get("meta", {}).get("other_work") if isinstance(report, dict) else None
        if work:
            measured[path.name] = work
    assert measured, "no committed report records the other work yet"
    busy = {name: other_work.describe(work) for name, work in measured.items() if work["busy"]}
    assert not busy, busy
