"""``s2s-grid``: run an experiment preset's grid so that any interruption costs at most one validation.

    s2s-grid multi30k_de_en                       # start, resume or skip every job; 2 jobs side by side
    s2s-grid multi30k_de_en --status              # what is done, running, interrupted, missing
    s2s-grid samsum --jobs 1 --threads 2 trainer.eval_every=400

The jobs are the product of the preset's ``hydra.sweeper.params`` (seeds
outermost, so seed 1 of every model finishes first). Each job has a fixed
folder, ``<runs-dir>/<experiment>/<model>/seed<k>`` (default runs dir
``$S2S_RUNS_DIR`` or ``~/s2s-runs``: outside the work tree, which may be laid
anew between sessions). Running the command again after any interruption is
safe: a job with ``results.json`` is skipped, one with ``checkpoints/last.pt``
resumes from it (exactly: same batches, RNG and schedule), the others start
fresh, and a job that another ``s2s-grid`` is running right now (its folder's
lock is held) is left to it.

Why several one-thread jobs instead of one job with every core: on these small
models a second thread adds far less than a second job (measured on a 2-core
AMD EPYC: 833 + 786 target tokens/s for two one-thread jobs against 1441 for one
two-thread job).
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

from experiments.errors import ConfigError, UserError
from experiments.runtime import usable_cores
from experiments.train import CONF_DIR


def default_runs_dir() -> Path:
    return Path(os.environ.get("S2S_RUNS_DIR") or Path.home() / "s2s-runs")


@dataclass
class Job:
    experiment: str
    params: dict[str, str]  # the sweep's choices for this job, e.g. {"model": "gru", "seed": "1"}
    folder: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def state(self) -> str:
        if (self.folder / "results.json").exists():
            return "done"
        if is_locked(self.folder):
            return "running"
        if (self.folder / "checkpoints" / "last.pt").exists():
            return "interrupted"
        return "missing"

    def progress(self) -> str:
        """The last step and the best validation value logged so far, from metrics.jsonl."""
        path = self.folder / "metrics.jsonl"
        if not path.exists():
            return ""
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        valid = [r for r in rows if r["event"] == "valid"]
        text = f"step {rows[-1]['step']}" if rows else ""
        for key in ("bleu", "rouge_mean"):
            if valid and key in valid[0]:
                best = max(valid, key=lambda r: r[key])
                text += f", best valid {key} {best[key]:.2f} at step {best['step']}"
        return text

    def command(self, threads: int) -> list[str]:
        cmd = [sys.executable, "-m", "experiments.train", f"experiment={self.experiment}",
               *(f"{k}={v}" for k, v in self.params.items()), f"hydra.run.dir={self.folder}",
               f"trainer.num_threads={threads}", "trainer.progress=false", *self.overrides]
        if (self.folder / "checkpoints" / "last.pt").exists():
            cmd.append("trainer.resume=true")
        return cmd


def sweep_params(experiment: str) -> dict[str, list[str]]:
    """The preset's ``hydra.sweeper.params`` as lists of choices, e.g. {"model": ["gru", "transformer"], ...}."""
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


def plan(experiment: str, runs_dir: Path, overrides: list[str], only: dict[str, str]) -> list[Job]:
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
        jobs.append(Job(experiment, choice, job_folder(runs_dir, experiment, choice), overrides))
    return jobs


def is_locked(folder: Path) -> bool:
    lock = folder / ".grid.lock"
    if not lock.exists():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@contextmanager
def locked(folder: Path) -> Iterator[bool]:
    """Hold ``folder``'s lock while a job runs (yields False when another process holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".grid.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_job(job: Job, threads: int) -> tuple[Job, str]:
    """Run one job to its end in its folder (log appended to train.log); returns the outcome."""
    with locked(job.folder) as mine:
        if not mine:
            return job, "running elsewhere"
        if (job.folder / "results.json").exists():
            return job, "done"
        cmd = job.command(threads)
        started = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"[{stamp}] start  {job.name}: {' '.join(cmd[3:])}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with open(job.folder / "train.log", "a") as log:
            log.write(f"\n=== {stamp} {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        took = (time.time() - started) / 60
        outcome = "done" if rc == 0 and (job.folder / "results.json").exists() else f"failed (exit {rc})"
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {outcome}  {job.name} after {took:.1f} min "
              f"(log: {job.folder / 'train.log'})", flush=True)
        return job, outcome


def parse_only(items: list[str]) -> dict[str, str]:
    only = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--only {item!r}: expected key=value, e.g. --only model=gru or --only seed=1,2")
        only[key] = value
    return only


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-grid", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("experiment", help="a preset in conf/experiment/ with hydra.sweeper.params")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every job (key=value)")
    parser.add_argument("--runs-dir", type=Path, default=default_runs_dir(),
                        help="where the job folders live (default $S2S_RUNS_DIR or ~/s2s-runs)")
    parser.add_argument("--jobs", type=int, default=0, help="jobs side by side (default: one per usable core)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=V[,V]",
                        help="restrict the grid, e.g. --only seed=1 --only model=gru")
    parser.add_argument("--status", action="store_true", help="print each job's state and progress, run nothing")
    args = parser.parse_args(argv)
    try:
        jobs = plan(args.experiment, args.runs_dir.expanduser().resolve(), args.overrides, parse_only(args.only))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.status:
        for job in jobs:
            print(f"{job.state():12s} {job.name:28s} {job.progress():52s} {job.folder}")
        return
    todo = [j for j in jobs if j.state() in ("interrupted", "missing")]
    width = args.jobs or max(1, usable_cores() // args.threads)
    print(f"{args.experiment}: {len(jobs)} jobs, {len(jobs) - len(todo)} done or running elsewhere, "
          f"{len(todo)} to run, {width} at a time with {args.threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(max_workers=width) as pool:
        outcomes = list(pool.map(lambda j: run_job(j, args.threads), todo))
    failed = [job.name for job, outcome in outcomes if outcome.startswith("failed")]
    if failed:
        print(f"{len(failed)} job(s) failed: {', '.join(failed)}; their train.log says why; "
              "run the same command again to retry them", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
