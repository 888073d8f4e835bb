"""The compute plan: a grid's jobs as a Markdown table (state, progress, pace, hours left), for docs/reproducing.md."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from experiments.core.atomic import write_text
from experiments.core.errors import ConfigError


def plan_table(jobs: list[Any]) -> str:
    """The jobs as a Markdown table: state, progress, measured seconds per update, hours left at that pace."""
    lines = ["| preset | model | seed | state | updates | best validation | s/update | hours left |",
             "|---|---|---|---|---|---|---|---|"]
    facts = {id(job): job.facts() for job in jobs}
    hours, unknown, derived = 0.0, 0, 0  # the jobs not done: their hours, how many have no pace, how many copy
    paces = pooled_paces(jobs, facts, lambda job: job.experiment)
    task_paces: dict[tuple[Any, ...], float] | None = None  # pooled by task on first need: composing every preset
    states = {id(job): job.state() for job in jobs}  # each reads the folder and its lock: once a job
    queued = {job.folder: job for job in jobs}
    for job in jobs:
        f, (limit, tokens), state = facts[id(job)], job.limits(), states[id(job)]
        # A token budget (a search's trials) ends a run before its update cap: count what is left in tokens.
        unit, done, total = ("s_per_token", f.get("tokens", 0), tokens) if tokens else ("s_per_update", f["step"], limit)
        done = 0 if state == "begun" else done  # no checkpoint to resume from: it starts over
        model = job.params.get("model")
        pace, guess = f.get(unit), ""  # its own pace; else its preset's runs' (~), else its task's (≈)
        if state == "done":
            left = "0"
        elif not pace and copies_its_training(job, queued):
            derived += 1
            left = "tests only"
        else:
            if not pace:
                pace, guess = paces.get((job.experiment, model, unit)), "~"
            if not pace:
                task_paces = pooled_paces(jobs, facts, task_of) if task_paces is None else task_paces
                pace, guess = task_paces.get((task_of(job), model, unit)), "≈"
            left = f"{guess}{(total - done) * pace / 3600:.1f}" if pace else "–"
            hours += (total - done) * pace / 3600 if pace else 0.0
            unknown += not pace
        best = f"{f['metric']} {f['best']:.2f} (step {f['best_step']})" if "metric" in f else "–"
        updates = f"{f['step']} / {limit}" + (f" ({f.get('tokens', 0) / 1e6:.2f}M / {tokens / 1e6:.2f}M tokens)"
                                              if tokens else "")
        pace = f"{f['s_per_update']:.2f}" if "s_per_update" in f else "–"
        changed = job.changed_since()
        shown = state + (f" (preset changed since: {', '.join(changed)})" if changed else "")
        lines.append(f"| {job.experiment} | {job.params.get('model', '–')} | {job.params.get('seed', '–')} | "
                     f"{shown} | {updates} | {best} | {pace} | {left} |")
    todo = sum(state != "done" for state in states.values())
    total = (f"In all, {todo} jobs not done: {hours:.1f} job-hours at these paces"
             + (f"; {derived} of them only run their tests, on a copy of another preset's run (minutes each)"
                if derived else "")
             + (f"; and {unknown} with no pace yet (no run of that model on that task has timed an update)" if unknown
                else "")
             + f"; about {hours / 2:.1f} h as two one-thread jobs side by side (on 2 cores, as these paces were "
               "timed; a session's pauses for benchmarks and CI come on top).")
    return "\n".join(lines) + "\n\n" + (total if todo else "Every job is done.") + "\n"


def pooled_paces(jobs: list[Any], facts: dict[int, dict[str, Any]],
                 group: Callable[[Any], str]) -> dict[tuple[Any, ...], float]:
    """(group, model, unit) -> the pace of all the group's jobs of that model with one, together: their paces
    weighted by their updates (or tokens); ``group``: a job's preset, or its task. What a job that has not timed an
    update yet is planned at; a search's trials draw different batch sizes and shapes, so any one trial's pace
    says little of the next one's."""
    seconds: dict[tuple[Any, ...], float] = defaultdict(float)
    amount: dict[tuple[Any, ...], float] = defaultdict(float)
    for job in jobs:
        f = facts[id(job)]
        for unit, count in (("s_per_update", f.get("step", 0)), ("s_per_token", f.get("tokens", 0))):
            if unit in f and count:
                key = (group(job), job.params.get("model"), unit)
                seconds[key] += f[unit] * count
                amount[key] += count
    return {key: seconds[key] / amount[key] for key in seconds}


def task_of(job: Any) -> str:
    return str(job.preset_config().task.name)


def copies_its_training(job: Any, queued: dict[Path, Any]) -> bool:
    """Whether s2s-grid will start ``job`` from a copy of its ``trained_as`` source's run (grid.start_from_source)
    rather than train it: the source's run is here with its checkpoints, or is queued to train here. A source
    only exported (results/runs keeps no checkpoints) leaves the job to train."""
    trained_as = job.preset_config().get("trained_as")
    if not trained_as:
        return False
    source = job.folder.parents[2] / trained_as / job.folder.parent.name / job.folder.name  # same model and seed
    twin = queued.get(source)
    return (source / "checkpoints" / "last.pt").exists() or (twin is not None and not twin.is_committed())


def embed_plan(readme: Path, jobs: list[Any], command: str) -> None:
    text = readme.read_text()
    start, end = "<!-- compute-plan -->", "<!-- /compute-plan -->"
    if start not in text or end not in text:
        raise ConfigError(f"{readme} has no {start} ... {end} markers: add them where the plan belongs")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = (f"Written by `s2s-grid {command} --status --readme {readme.as_posix()}` on {stamp}; s/update is the median "
            "over its validation intervals of the training time per update (validation excluded; an interval in which "
            "the job was paused does not set it) on the machine that ran it, hours left assume "
            "that pace up to the update limit, or the token budget where a run has one (~: the pace of the same "
            "model's runs in the same preset, all together; ≈: of its runs on the same task in the other presets "
            "here, which may train otherwise, e.g. with copy; early stopping may end a run sooner).\n\n"
            + plan_table(jobs))
    head, rest = text.split(start, 1)
    write_text(readme, head + start + "\n" + body + end + rest.split(end, 1)[1])
