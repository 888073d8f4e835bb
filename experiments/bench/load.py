"""Threads under load (``s2s-bench --load``): training beside a busy process, and a two-job sweep.

A researcher's machine is rarely idle. Two measurements:

* the Transformer's plain configuration beside one busy single-thread process
  (``python -m experiments.bench.load``: one torch thread multiplying
  matrices, as another one-thread training job would), with a fixed thread
  count (all cores: what the trainer used to take), the same with OpenMP's
  passive wait policy, one thread, and ``trainer.num_threads=0`` (auto: the
  cores left free, ``runtime.FreeCores``); the passive policy once more on the
  idle machine, to see what it costs there;
* a two-job Hydra sweep (``model=gru,transformer``) run side by side by the
  local launcher (submitit), with fixed and with auto threads, against the
  same jobs one after the other (Hydra's basic launcher), timed end to end.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments.bench.runner import run_measured
from experiments.core.runtime import usable_cores

# name -> (launcher overrides, trainer.num_threads or None for all cores)
SWEEPS: dict[str, tuple[list[str], int | None]] = {
    "one after the other, auto": ([], 0),
    "side by side, all cores each": (["hydra/launcher=local", "hydra.launcher.tasks_per_node=1"], None),
    "side by side, auto": (["hydra/launcher=local", "hydra.launcher.tasks_per_node=1"], 0),
}


def spin() -> None:
    """The busy process: one torch thread, 256-cubed fp32 matmuls, forever (ended by the bench)."""
    torch.set_num_threads(1)
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ b)


def sweep_command(name: str, models: str, overrides: list[str], sweep_dir: Path, steps: int) -> list[str]:
    launcher, threads = SWEEPS[name]
    count = usable_cores() if threads is None else threads
    return [sys.executable, "-m", "experiments.training.train", "-m", *launcher, f"model={models}",
            f"trainer.num_threads={count}", f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
            "trainer.log_every=5", "trainer.eval_max_sentences=20", "trainer.test_after_training=false",
            "trainer.early_stopping_patience=0", *overrides, f"hydra.sweep.dir={sweep_dir}"]


def run_sweeps(models: str, overrides: list[str], work_dir: Path, steps: int, timeout: float,
               say: Any = print) -> list[dict[str, Any]]:
    """Each of SWEEPS over the same two jobs (``model=models``; ``overrides``: task, precision, batch budget ...),
    timed end to end, from the sweep command's start to its exit."""
    rows = []
    for name in SWEEPS:
        folder = work_dir / "sweeps" / name.replace(",", "").replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        say(f"sweep {name} ...")
        rc, wall, _, _ = run_measured(sweep_command(name, models, overrides, folder, steps),
                                   log_path=folder / "sweep.log", timeout=timeout)
        row = {"sweep": name, "steps": steps, "wall_s": wall, "jobs": sweep_jobs(folder)}
        if rc != 0 or len(row["jobs"]) != 2:
            tail = (folder / "sweep.log").read_text()[-400:] if (folder / "sweep.log").exists() else ""
            row["error"] = f"exit {rc}, {len(row['jobs'])} job(s) finished: {tail.strip()}"
        else:
            say(f"  {wall:.0f} s for both jobs")
        rows.append(row)
    return rows


def sweep_jobs(folder: Path) -> list[dict[str, Any]]:
    """Each finished job of a sweep folder: its model, tok/s after its first log window, the threads it ran."""
    jobs = []
    for metrics in sorted(folder.rglob("metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train = [r for r in rows if r.get("event") == "train"]
        steady = train[1:] or train
        model = str(OmegaConf.load(metrics.parent / "config.yaml").model.name)
        jobs.append({"model": model, "tokens_per_s": sum(r["tokens_per_s"] for r in steady) / max(1, len(steady)),
                     "threads": sorted({r.get("threads") for r in train if r.get("threads") is not None})})
    return jobs


if __name__ == "__main__":
    spin()
