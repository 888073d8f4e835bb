"""Whether other work shared the machine while the bench ran: the CPU time that was not the bench's.

The load average cannot say it: it lags by a minute either way (a grid paused
a moment before the run still reads as load 2, one started mid-run hardly
shows), and it counts the bench's own threads. Instead the busy CPU time of
the cores the bench may use over the run (``/proc/stat``, read as
``trainer.num_threads=0`` reads it: ``runtime.busy_ticks``, steal included:
time a virtual machine's host took slows the run the same way) is compared
with the bench's own (this process and every child it waited for: the
workers, JoeyNMT, ``--load``'s busy processes); what is left, per second of
the run, is other work in cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.core.runtime import busy_ticks

BUSY_CORES = 0.1  # other work above this many cores on average: the run's timings are not an idle machine's
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Mark:
    """CPU seconds at one moment: the usable cores' busy time, and the bench's own."""

    wall: float
    busy: float
    own: float


def mark() -> Mark | None:
    """Now; None where the system has no /proc/stat (the report then says nothing about other work)."""
    try:
        busy = busy_ticks(PROC_STAT.read_text(), set(os.sched_getaffinity(0)))
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    t = os.times()
    return Mark(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"),
                t.user + t.system + t.children_user + t.children_system)


def between(start: Mark | None, end: Mark | None) -> dict[str, Any] | None:
    """Other work in cores on average from ``start`` to ``end``, and whether that made the machine busy."""
    if start is None or end is None or end.wall <= start.wall:
        return None
    seconds = end.wall - start.wall
    other = max(0.0, (end.busy - start.busy) - (end.own - start.own)) / seconds
    return {"seconds": round(seconds, 1), "other_cores": round(other, 3), "busy": other > BUSY_CORES}


def describe(work: dict[str, Any]) -> str:
    """The report's line: "0.02 cores on average over 812 s: idle"."""
    verdict = ("busy: its timings are not an idle machine's; rerun it with the machine idle" if work["busy"]
               else "idle")
    return f"{work['other_cores']:.2f} cores on average over {work['seconds']:.0f} s: {verdict}"
