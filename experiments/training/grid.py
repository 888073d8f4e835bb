"""``s2s-grid``: run an experiment preset's grid so that any interruption costs at most one validation.

    s2s-grid multi30k_de_en                       # start, resume or skip every job; 2 jobs side by side
    s2s-grid multi30k_de_en samsum:1 aeslc:1      # several grids, one queue, in this order (samsum seed 1 only)
    s2s-grid multi30k_de_en --status              # what is done, running, interrupted, begun, missing
    s2s-grid samsum --jobs 1 --threads 2 trainer.eval_every=400
    s2s-grid multi30k_de_en:2,3 --until 06:50    # only what can end by 06:50: shed the slower job if need be
    s2s-grid samsum:2 multi30k_de_en/transformer:1,2,3 --committed none   # retrain committed runs (checkpoints)

The jobs of a preset are the product of its ``hydra.sweeper.params`` (seeds
outermost, so seed 1 of every model finishes first); ``NAME:1,2`` keeps only
those seeds, ``NAME/transformer:1,2`` only that model's (the folder layout's
order). Several presets form one queue, so no core idles between them. Each
job has a fixed folder, ``<runs-dir>/<experiment>/<model>/seed<k>`` (default runs dir
``$S2S_RUNS_DIR`` or ``~/s2s-runs``: outside the work tree, which may be laid
anew between sessions). Running the command again after any interruption is
safe: a job with ``results.json`` is skipped, one with ``checkpoints/last.pt``
resumes from it (exactly: same batches, RNG and schedule), the others start
fresh (one stopped before its first checkpoint, "begun", has its partial run
moved aside to ``seed<k>.replaced-<time>/``), and a job that another
``s2s-grid`` or a plain ``s2s-train`` is running right now (its folder's
``.grid.lock`` or ``.train.lock`` is held) is left to it. Ending the grid
(SIGTERM, Ctrl-C) ends its running jobs with it and starts no more: a job
left running without its grid would hold no lock, and the same command would
start it a second time in the same folder. A grid whose checkout moves to
another commit while it runs starts no more jobs either (its loaded code would
compose the new commit's conf/ and fail): run the command again, on the new
code. A job that fails before its training starts says why at once, in the
grid's output, and the queue goes on.

Why several one-thread jobs instead of one job with every core: on these small
models a second thread adds far less than a second job (measured on a 2-core
AMD EPYC: 833 + 786 target tokens/s for two one-thread jobs against 1441 for one
two-thread job). The jobs run on tcmalloc where it is installed
(``--allocator``; why and what it gives: experiments/core/allocator.py).

Over 400 lines: the queue, the folder locks, the deadline watch, the end on a
signal and the status table are one command's life cycle around one ``Job``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from experiments.training import locks
from experiments.training.runfolder import previous_run
from experiments.training.compute_plan import embed_plan
from experiments.core.config_groups import check_tuned
from experiments.core import allocator
from experiments.core.errors import ConfigError, UserError
from experiments.training.deadline import Deadline, clock, parse_until
from experiments.training.resume import is_environment, recorded_changes, show
from experiments.training.search import as_trained, given_keys
from experiments.training.runs import default_runs_dir, shown_path
from experiments.core.runtime import git_commit, usable_cores
from experiments.training.train import CONF_DIR


COMMITTED = Path(CONF_DIR).parent / "results" / "runs"  # where s2s-tables --export puts finished runs
COMPOSING = threading.Lock()  # Hydra's compose API is one global state: the jobs' threads take turns


def typical_pace(timed: list[dict[str, Any]], unit: str) -> float:
    """Training seconds per ``unit`` (step or tokens): the median over the intervals between validations, so
    that an interval in which the job was paused (SIGSTOP for a benchmark or CI: wall seconds that count as
    training) does not set the pace; the mean so far while there is only one interval."""
    points = [(0.0, 0.0)] + [(float(r[unit]), float(r["train_seconds"])) for r in timed if r.get(unit)]
    paces = [(t1 - t0) / (u1 - u0) for (u0, t0), (u1, t1) in zip(points, points[1:]) if u1 > u0]
    return float(statistics.median(paces)) if paces else points[-1][1] / max(points[-1][0], 1.0)


@dataclass
class Job:
    experiment: str
    params: dict[str, str]  # the sweep's choices for this job, e.g. {"model": "gru", "seed": "1"}
    folder: Path
    overrides: list[str] = field(default_factory=list)
    committed: Path | None = None  # its exported copy (results/runs/...): a job committed there is done
    composed: Any = field(default=None, repr=False)  # preset_config's composition, made on first use

    @property
    def name(self) -> str:
        """As a queue item names it, so a log line can be pasted into a command: ``samsum/gru:2``."""
        model, seed = self.params.get("model"), self.params.get("seed")
        other = " ".join(f"{k}={v}" for k, v in self.params.items() if k not in ("model", "seed"))
        return (self.experiment + (f"/{model}" if model else "") + (f":{seed}" if seed else "")
                + (f" {other}" if other else ""))

    def state(self) -> str:
        if (self.folder / "results.json").exists() or self.is_committed():
            return "done"
        if locks.is_locked(self.folder):  # under another grid, or a plain s2s-train
            return "running"
        if (self.folder / "checkpoints" / "last.pt").exists():
            return "interrupted"
        if previous_run(self.folder):
            return "begun"  # stopped before its first validation wrote last.pt: it starts over (command)
        return "missing"

    def is_committed(self) -> bool:
        return self.committed is not None and (self.committed / "results.json").exists()

    def source(self) -> Path:
        """Where its facts are read: the committed copy where there is one (it is what the tables report; a run
        folder beside it holds a retraining with --committed none, begun or finished), else the run folder."""
        return self.committed if self.is_committed() else self.folder

    def where(self, runs_dir: Path) -> str:
        """Its folder as --status shows it: relative to the runs folder, or its exported copy when only that exists."""
        if self.is_committed() and not (self.folder / "metrics.jsonl").exists():  # (a lock file is not a run)
            return f"{shown_path(self.committed)} (exported copy; no run folder here)"
        return shown_path(self.folder, runs_dir)

    def facts(self) -> dict[str, Any]:
        """Step, best validation value and step, seconds per update, from metrics.jsonl (empty before it exists)."""
        path = self.source() / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        valid = [r for r in rows if r["event"] == "valid"]
        out: dict[str, Any] = {"step": max((r["step"] for r in rows), default=0)}
        key = next((k for k in ("bleu", "rouge_mean") if valid and k in valid[0]), None)
        if key:
            best = max(valid, key=lambda r: r[key])
            out.update(metric=key, best=best[key], best_step=best["step"])
        timed = [r for r in valid if r.get("train_seconds")]
        if timed:  # training seconds per update (and per real target token), validation not included
            out["s_per_update"] = typical_pace(timed, "step")
            if timed[-1].get("tokens"):
                out["tokens"], out["s_per_token"] = timed[-1]["tokens"], typical_pace(timed, "tokens")
        return out

    def limits(self) -> tuple[int, int]:
        """The job's update limit and real-target-token limit (0: none), from its run folder's (or committed
        copy's) config, else from the preset."""
        config = self.source() / "config.yaml"
        trainer = OmegaConf.load(config).trainer if config.exists() else self.preset_config().trainer
        return int(trainer.max_steps), int(trainer.get("max_tokens") or 0)

    def overrides_of_job(self) -> list[str]:
        """What s2s-train is given for this job besides where and how fast: the preset, its sweep's choices,
        the grid's overrides."""
        return [f"experiment={self.experiment}", *self.overrides, *(f"{k}={v}" for k, v in self.params.items())]

    def preset_config(self) -> Any:
        """The config the preset composes for this job today, before a trial's draws or a tuned recipe (composed
        once a process: the status, the plan and the job's start all read it; each call gets its own copy)."""
        if self.composed is None:
            with COMPOSING, initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                self.composed = compose("config", overrides=self.overrides_of_job())
        return copy.deepcopy(self.composed)

    def as_trained(self) -> Any:
        """The job's config as s2s-train makes it from the preset: a trial's draws and a tuned recipe applied."""
        return as_trained(self.preset_config(), given_keys(self.overrides_of_job()))

    def changed_since(self) -> dict[str, tuple[Any, Any]]:
        """A done job: the settings its preset gives today (with a trial's draws and a tuned recipe applied, as
        s2s-train applies them) that differ from those its run recorded, where and how fast it ran left out.

        A committed run counts as done whatever the preset says now; this says when its rows are not what the
        preset would train and test today (a preset changed after the run), so they are rerun on purpose."""
        config = self.source() / "config.yaml"
        if self.state() != "done" or not config.exists():
            return {}
        try:
            return recorded_changes(config, self.as_trained(), ignored=is_environment)
        except UserError:
            return {}  # a recipe the preset needs is missing (or the record is damaged): nothing to compare

    def limit(self) -> int:
        return self.limits()[0]

    def progress(self) -> str:
        f = self.facts()
        text = f"step {f['step']}" if f["step"] else ""
        if "metric" in f:
            text += f", best valid {f['metric']} {f['best']:.2f} at step {f['best_step']}"
        if "s_per_update" in f:
            text += f", {f['s_per_update']:.2f} s/update"
        return text

    def command(self, threads: int) -> list[str]:
        cmd = [sys.executable, "-m", "experiments.training.train", f"experiment={self.experiment}",
               *(f"{k}={v}" for k, v in self.params.items()), f"hydra.run.dir={self.folder}",
               f"trainer.num_threads={threads}", "trainer.progress=false", *self.overrides]
        if (self.folder / "checkpoints" / "last.pt").exists():
            cmd.append("trainer.resume=true")
        elif previous_run(self.folder):
            # Stopped before its first validation wrote last.pt: nothing to resume, so it starts over, and the
            # begun run is moved aside (<seed>.replaced-<time>/, left out of every table) rather than refused.
            cmd.append("trainer.overwrite=true")
        return cmd


def sweep_params(experiment: str) -> dict[str, list[str]]:
    """The preset's ``hydra.sweeper.params`` as lists of choices, e.g. {"model": ["gru", "transformer"], ...}."""
    if (Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").exists():
        check_tuned(experiment, Path(CONF_DIR))
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(f"experiment {experiment!r}: {str(e).splitlines()[0]} (presets are in conf/experiment/)") \
            from None
    params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.get("params") else {}
    if not params:
        raise ConfigError(f"conf/experiment/{experiment}.yaml has no hydra.sweeper.params: there is no grid to run")
    return {k: [v.strip() for v in str(choices).split(",")] for k, choices in params.items()}


def job_folder(runs_dir: Path, experiment: str, params: dict[str, str]) -> Path:
    """``<runs>/<experiment>/<model>/seed<k>``, plus ``key=value`` parts for any other swept key."""
    parts = [params.get("model", "model"), f"seed{params['seed']}" if "seed" in params else "seed"]
    parts[-1] += "".join(f"_{k.replace('.', '-')}={v}" for k, v in params.items() if k not in ("model", "seed"))
    return runs_dir / experiment / parts[0] / parts[1]


def plan(experiment: str, runs_dir: Path, overrides: list[str], only: dict[str, str],
         committed: Path | None = None) -> list[Job]:
    """The preset's jobs (``only`` restricts the swept values); ``committed``: the exported runs (results/runs),
    where a job already there counts as done, whatever the runs folder holds."""
    params = sweep_params(experiment)
    for key, value in only.items():
        if key not in params:
            raise ConfigError(f"--only {key}={value}: {key!r} is not swept by {experiment} (swept: {sorted(params)})")
        params[key] = [v for v in value.split(",")]
    keys = sorted(params, key=lambda k: k != "seed")  # seeds outermost: seed 1 of every model first
    jobs = []
    for values in itertools.product(*(params[k] for k in keys)):
        choice = {k: v for k, v in zip(keys, values)}
        choice = {k: choice[k] for k in params}  # the preset's order in names and folders
        jobs.append(Job(experiment, choice, job_folder(runs_dir, experiment, choice), overrides,
                        job_folder(committed, experiment, choice) if committed else None))
    return jobs


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class Running:
    """The jobs this grid runs right now, each with its process and where it stood when it started."""

    def __init__(self, side_by_side: int = 1) -> None:
        self.side_by_side = side_by_side  # jobs started at once: each starts on its share of the cores
        self.commit = checkout_commit()  # of the code this grid loaded; its conf/ is read from disk at each start
        self.lock = threading.Lock()
        self.jobs: dict[int, tuple[Job, subprocess.Popen, float, int]] = {}  # id -> job, process, start time, step
        self.stopped: dict[int, str] = {}  # id -> why it was stopped
        self.ended_by = ""  # why the grid itself was ended (a signal, a moved checkout): start nothing more

    def add(self, job: Job, proc: subprocess.Popen, step: int) -> None:
        with self.lock:
            self.jobs[id(job)] = (job, proc, time.time(), step)

    def remove(self, job: Job) -> str:
        """Forget ``job``; why it was stopped ('' when it was not)."""
        with self.lock:
            self.jobs.pop(id(job), None)
            return self.stopped.get(id(job), "")

    def stop(self, job: Job, why: str) -> None:
        with self.lock:
            if id(job) in self.jobs:
                self.stopped[id(job)] = why
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.jobs[id(job)][1].pid, signal.SIGTERM)

    def end(self, signum: int, _frame: Any = None) -> None:
        """The grid got SIGTERM or SIGINT: end its jobs too and start no more. A job outliving its grid would
        run without the folder's lock, and the same command run again would start it a second time."""
        self.ended_by = f"the grid got {signal.Signals(signum).name}"
        print(f"[{now()}] {signal.Signals(signum).name}: ending the running jobs; "
              "the same command resumes them from their last validation", flush=True)
        with self.lock:
            current = [job for job, _, _, _ in self.jobs.values()]
        for job in current:
            self.stop(job, self.ended_by)


def run_job(job: Job, threads: int, running: Running | None = None,
            deadline: Deadline | None = None, env: dict[str, str] | None = None) -> tuple[Job, str]:
    """Run one job to its end in its folder (its output appended to grid.log); returns the outcome.

    ``threads`` 0 lets the trainer follow the free cores (``trainer.num_threads=0``). ``env``: the job's
    environment (default this process's; ``main`` adds the allocator's ``LD_PRELOAD``). With a ``deadline``, a
    job whose pace elsewhere in the runs folder says it would finish too late is not started. An error before
    the job's process starts (its preset no longer composes, say) is its outcome, said at once: the pool would
    keep it until the whole queue had run.
    """
    try:
        return _run_job(job, threads, running, deadline, dict(os.environ) if env is None else env)
    except Exception as e:  # every job's error is reported, none ends the queue
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        with contextlib.suppress(OSError), open(job.folder / "grid.log", "a") as log:
            log.write(f"\n=== {now()} not started:\n{traceback.format_exc()}")
        print(f"[{now()}] failed  {job.name} before it started: {type(e).__name__}: {why} "
              f"(traceback: {job.folder / 'grid.log'})", flush=True)
        return job, f"failed ({type(e).__name__} before it started)"


def checkout_commit() -> str:
    """The commit of this code's checkout (edits not committed do not count: only a moved checkout does)."""
    return git_commit().removesuffix("-dirty")


def moved_checkout(running: Running | None) -> str:
    """Why this grid must start nothing more because its checkout is another commit now ('' if it is not)."""
    if running is None or (current := checkout_commit()) == running.commit:
        return ""
    return (f"the checkout under this grid moved from {running.commit} to {current} since the grid started; "
            "run the same command again to go on with the new code")


def _run_job(job: Job, threads: int, running: Running | None, deadline: Deadline | None,
             base_env: dict[str, str]) -> tuple[Job, str]:
    with locks.hold(job.folder, locks.GRID) as other:
        if other or locks.holder(job.folder, locks.TRAIN):
            return job, "running elsewhere"
        if (job.folder / "results.json").exists():
            return job, "done"
        if job.is_committed():
            return job, f"done (committed in {job.committed})"
        if running and running.ended_by:
            return job, "not started (the grid was ended)"
        if moved := moved_checkout(running):
            running.ended_by = moved
            print(f"[{now()}] not starting {job.name} or any job after it: {moved}", flush=True)
            return job, "not started (the grid was ended)"
        if deadline and (late := too_late_to_start(job, deadline)):
            print(f"[{now()}] skip   {job.name}: {late}", flush=True)
            return job, "skipped (--until)"
        if waiting := start_from_source(job):
            return job, waiting
        cmd = job.command(threads)
        started = time.time()
        stamp = now()
        print(f"[{stamp}] start  {job.name}: {' '.join(cmd[3:])}", flush=True)
        env = {**base_env, **({"OMP_NUM_THREADS": str(threads)} if threads else
                                {"S2S_JOBS_SIDE_BY_SIDE": str(running.side_by_side if running else 1)})}
        with open(job.folder / "grid.log", "a") as log:  # Hydra itself writes train.log
            log.write(f"\n=== {stamp} {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            if running:
                running.add(job, proc, job.facts()["step"])
                if running.ended_by:  # ended between the check above and the start
                    running.stop(job, running.ended_by)
            rc = proc.wait()  # Running.end stops it if the grid itself is ended
        stopped = running.remove(job) if running else ""
        took = (time.time() - started) / 60
        outcome = "done" if rc == 0 and (job.folder / "results.json").exists() else \
            f"stopped ({stopped}; resumes from last.pt next time)" if stopped else f"failed (exit {rc})"
        print(f"[{now()}] {outcome}  {job.name} after {took:.1f} min "
              f"(log: {job.folder / 'grid.log'})", flush=True)
        return job, outcome


def start_from_source(job: Job) -> str:
    """A job of a preset with ``trained_as``: copy its source's finished run into its folder, so that it resumes
    there instead of training (experiments/training/derive.py). Returns why it does not start now ('' when it
    does: from the copy, or training as usual where the source has no finished run here)."""
    from experiments.training import derive

    if (job.folder / "checkpoints" / "last.pt").exists():
        return ""  # copied already, or begun: it resumes
    preset = job.preset_config()
    if not preset.get("trained_as"):
        return ""
    source = job_folder(job.folder.parents[2], preset.trained_as, job.params)  # the same model and seed there
    state = derive.state(source)
    if state == "busy":
        return f"waiting for {source} (trained_as: {preset.trained_as}): run the grid again once it has finished"
    if state == "ready":
        try:
            derive.check_same_training(source, job.as_trained())
        except UserError as e:
            print(f"[{now()}] failed {job.name}: {e}", flush=True)
            return f"failed ({e})"
        derive.copy_run(source, job.folder)
        print(f"[{now()}] copy   {job.name}: the finished run {source} "
              f"(trained_as: {preset.trained_as}); it is tested under {job.experiment}", flush=True)
    return ""


def siblings(job: Job) -> list[Job]:
    """The other seeds' folders of the same preset and model (they may hold a measured pace)."""
    root = job.folder.parent
    return [Job(job.experiment, {**job.params, "seed": p.name.removeprefix("seed")}, p, job.overrides)
            for p in sorted(root.glob("seed*")) if p != job.folder and (p / "metrics.jsonl").exists()]


def too_late_to_start(job: Job, deadline: Deadline) -> str:
    """Why ``job`` should not start before ``deadline`` (empty when it may), from its siblings' pace."""
    paces = [f["s_per_update"] for j in siblings(job) if "s_per_update" in (f := j.facts())]
    return deadline.start_verdict(job.limit() - job.facts()["step"], min(paces), time.time()) if paces else ""


def watch(running: Running, deadline: Deadline, done: threading.Event, every: float = 30.0) -> None:
    """Every ``every`` seconds until ``done``: stop the job that would end last, while it ends after the deadline."""
    while not done.wait(every):
        with running.lock:
            current = [(job, t0, step0) for job, _, t0, step0 in running.jobs.values()
                       if id(job) not in running.stopped]
        now = time.time()
        key = deadline.to_stop([(id(j), j.limit(), t0, s0, j.facts()["step"]) for j, t0, s0 in current], now)
        job = next((j for j, _, _ in current if id(j) == key), None)
        if job:
            print(f"[{now()}] stop   {job.name}: side by side it would end after "
                  f"--until {clock(deadline.at)}; the other job(s) get its core", flush=True)
            running.stop(job, "--until: it would have finished too late")


def parse_only(items: list[str]) -> dict[str, str]:
    only = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--only {item!r}: expected key=value, e.g. --only model=gru or --only seed=1,2")
        only[key] = value
    return only


def parse_preset(item: str, only: list[str]) -> tuple[str, dict[str, str]]:
    """``NAME[/MODEL[,MODEL]][:SEEDS]`` -> (NAME, the swept values it keeps), on top of the global ``--only``."""
    name, _, seeds = item.partition(":")
    name, _, models = name.partition("/")
    if not name or (":" in item and not seeds) or ("/" in item.split(":")[0] and not models):
        raise ConfigError(f"{item!r}: expected NAME, NAME:SEEDS or NAME/MODEL:SEEDS, e.g. multi30k_de_en/gru:1,2")
    return name, parse_only(only + ([f"model={models}"] if models else []) + ([f"seed={seeds}"] if seeds else []))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-grid", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\nOver 400")[0].split("\n\n")[1:]))
    parser.add_argument("items", nargs="+", metavar="PRESET[/MODEL][:SEEDS] | KEY=VALUE",
                        help="presets in conf/experiment/ with hydra.sweeper.params (NAME, NAME:1,2 for some "
                             "seeds, NAME/gru:1,2 for one model's), then Hydra overrides applied to every job")
    parser.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                        help="where the job folders live (default $S2S_RUNS_DIR or ~/s2s-runs)")
    parser.add_argument("--jobs", type=int, default=0, help="jobs side by side (default: one per usable core)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per job (default 1; with --until 0: each job follows the free cores)")
    parser.add_argument("--until", metavar="HH:MM|+90m",
                        help="jobs should end by then: skip a job whose sibling's pace ends it too late, and stop "
                             "the job that would end last while side-by-side jobs would overrun (it resumes next "
                             "time)")
    parser.add_argument("--final-minutes", type=float, default=10.0,
                        help="with --until: minutes allowed after a job's last update (its final tests)")
    parser.add_argument("--allocator", choices=allocator.CHOICES, default="auto",
                        help="the jobs' malloc: tcmalloc where installed (auto, the default; about 1.1x faster "
                             "training on a CPU: results/allocator.md), tcmalloc or an error saying what to "
                             "install, or the system's")
    parser.add_argument("--committed", type=Path, default=COMMITTED,
                        help="the exported runs (s2s-tables --export): a job found there is done and not run again, "
                             "even where the runs folder was lost ('none': ignore them)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=V[,V]",
                        help="restrict the grid, e.g. --only seed=1 --only model=gru")
    parser.add_argument("--status", action="store_true", help="print each job's state and progress, run nothing")
    parser.add_argument("--readme", type=Path, help="with --status: write the jobs as a Markdown table between "
                        "<!-- compute-plan --> and <!-- /compute-plan --> in this file (docs/reproducing.md)")
    args = parser.parse_intermixed_args(argv)  # presets and overrides may come before or after the options
    overrides = [i for i in args.items if "=" in i]
    presets = [i for i in args.items if "=" not in i]
    try:
        if not presets:
            raise ConfigError("name at least one preset, e.g. s2s-grid multi30k_de_en")
        jobs = []
        for preset in presets:
            name, only = parse_preset(preset, args.only)
            jobs += plan(name, args.runs_dir.expanduser().resolve(), overrides, only,
                         None if str(args.committed) == "none" else args.committed.resolve())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.status:
        for job in jobs:
            print(f"{job.state():12s} {job.name:44s} {job.progress():70s} {job.where(args.runs_dir)}")
            if changed := job.changed_since():
                print(f"{'':12s} the preset changed since this run: {show(changed)}; its rows are not what "
                      "the preset trains today (rerun: move its run folder and exported copy away)")
        if args.readme:
            embed_plan(args.readme, jobs, " ".join(args.items))
        return
    todo = [j for j in jobs if j.state() in ("interrupted", "begun", "missing")]
    try:
        deadline = Deadline(parse_until(args.until), 60 * args.final_minutes) if args.until else None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        env, malloc = allocator.preload_env(dict(os.environ), args.allocator)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    threads = args.threads if args.threads is not None else 0 if deadline else 1
    width = args.jobs or max(1, usable_cores() // max(1, threads))
    print(f"{' '.join(presets)}: {len(jobs)} jobs, {len(jobs) - len(todo)} done or running elsewhere, "
          f"{len(todo)} to run, {width} at a time with "
          f"{threads or 'the free cores as'} thread(s) each" + (f", until {clock(deadline.at)}" if deadline else "")
          + f"; malloc: {malloc}", flush=True)
    running, finished = Running(min(width, len(todo)) or 1), threading.Event()
    if deadline:
        threading.Thread(target=watch, args=(running, deadline, finished), daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, running.end)
    with ThreadPoolExecutor(max_workers=width) as pool:
        futures = [pool.submit(run_job, job, threads, running, deadline, env) for job in todo]
        # A signal may be handed to a job's thread; Python runs the handler in the main thread, which a wait
        # without timeout would never wake: wake every second.
        while wait(futures, timeout=1.0).not_done:
            pass
    outcomes = [future.result() for future in futures]
    finished.set()
    if running.ended_by:
        print("the grid was ended; run the same command again to resume", file=sys.stderr)
        sys.exit(1)
    failed = [job.name for job, outcome in outcomes if outcome.startswith("failed")]
    if failed:
        print(f"{len(failed)} job(s) failed: {', '.join(failed)}; their grid.log says why; "
              "run the same command again to retry them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
