"""``s2s-grid --until``: which jobs can still end before a deadline, from paces measured on this machine.

Two decisions. A job is not started when the same model of the same preset
(another seed, in the runs folder) trained at a pace that would end it too
late. While several jobs run side by side, once each has run ``MIN_UPDATES``
updates under this grid, the one that would end last is stopped if it would
end after the deadline, so that the others get its core (with
``trainer.num_threads=0`` they take it within a few updates); it resumes from
its last checkpoint next time. The last job running is never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass

from experiments.core.errors import ConfigError

# wall time per update over training time per update: validation every few hundred updates
VALIDATION_OVERHEAD = 1.1


def clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def parse_until(text: str, now: float | None = None) -> float:
    """``HH:MM`` (the next time the clock shows it) or ``+90m`` / ``+2.5h`` from now, as epoch seconds."""
    now = time.time() if now is None else now
    try:
        if text.startswith("+"):
            return now + float(text[1:-1]) * {"m": 60, "h": 3600}[text[-1]]
        hours, minutes = (int(x) for x in text.split(":"))
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValueError(text)
        local = time.localtime(now)
        target = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, hours, minutes, 0, 0, 0, -1))
        return target if target > now else target + 24 * 3600
    except (KeyError, ValueError):
        raise ConfigError(f"--until {text!r}: expected HH:MM or +MINUTESm / +HOURSh (e.g. 06:50, +170m, +2.5h)") \
            from None


@dataclass
class Deadline:
    """Jobs should be finished by ``at`` (epoch seconds), ``final_s`` allowed after a job's last update."""

    at: float
    final_s: float
    MIN_UPDATES = 50  # updates under this grid before a job's pace is trusted

    def finish(self, steps_left: int, pace: float, now: float) -> float:
        """When a job with ``steps_left`` updates at ``pace`` seconds each ends, its final tests included."""
        return now + steps_left * pace + self.final_s

    def start_verdict(self, steps_left: int, training_pace: float, now: float) -> str:
        """Why a job should not start (empty when it may), at a sibling's training seconds per update."""
        end = self.finish(steps_left, VALIDATION_OVERHEAD * training_pace, now)
        if end <= self.at:
            return ""
        return (f"{steps_left} updates at {training_pace:.2f} s (its sibling's pace) would end it at {clock(end)}, "
                f"after --until {clock(self.at)}")

    def to_stop(self, running: list[tuple[Hashable, int, float, int, int]], now: float) -> Hashable | None:
        """Of the jobs running side by side, as (key, update limit, start time, start step, step now), the key
        of the one to stop: the one that would end last, if that is after the deadline."""
        if len(running) < 2:
            return None
        ends = []
        for key, limit, t0, step0, step in running:
            if step - step0 < self.MIN_UPDATES:
                return None  # not every pace is known yet
            ends.append((self.finish(limit - step, (now - t0) / (step - step0), now), key))
        latest, key = max(ends, key=lambda e: e[0])
        return key if latest > self.at else None
