"""Finished runs as the tables read them: found on disk, exported into the repo, and their texts.

A run folder written by ``s2s-train`` holds checkpoints and caches the repo
does not keep. ``export`` copies what the tables and a re-scoring need, and
nothing else, into ``results/runs/<experiment>/<model>/seed<k>/``::

    results.json     the run's summary (scores, budget, hardware, commit, seed)
    metrics.jsonl    every train / validation / test event (the curves)
    config.yaml      the resolved config it trained with
    hyps/            detokenized test outputs, gzipped: <split>-beam<K>.txt.gz
                     (best checkpoint) and <split>-beam<K>-average.txt.gz
                     (averaged checkpoint, where the run averaged)

Those files, with the public datasets, are enough to rebuild every table
(``s2s-tables results/runs/<experiment>``) or to re-score any row with the
``sacrebleu`` CLI or rouge-score.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.atomic import atomic_path
from experiments.config import validate
from experiments.errors import UserError
from experiments.runfolder import REPLACED
from experiments.sources import default_cache_dir, default_data_root, iter_text, raw_split

KEPT = ("results.json", "metrics.jsonl", "config.yaml")



def default_runs_dir() -> Path:
    """Where ``s2s-grid`` keeps its job folders: ``$S2S_RUNS_DIR``, else ``~/s2s-runs`` (outside the work tree)."""
    return Path(os.environ.get("S2S_RUNS_DIR") or Path.home() / "s2s-runs")


def shown_path(path: str | Path, runs_dir: Path | None = None) -> str:
    """``path`` as a reader on another machine needs it: relative to the runs folder (or the working folder).

    A report that names ``/home/alice/s2s-runs/multi30k_de_en/gru/seed1`` tells
    nobody else where to look; ``multi30k_de_en/gru/seed1`` (in their own runs
    folder) does. Paths outside both folders are shown as given.
    """
    resolved = Path(path).expanduser().resolve()
    for base in (runs_dir or default_runs_dir(), Path.cwd()):
        try:
            return str(resolved.relative_to(base.expanduser().resolve()))
        except ValueError:
            continue
    return str(path)


def find_runs(roots: list[Path]) -> list[dict[str, Any]]:
    """Every ``results.json`` below ``roots``, each with ``run_dir`` set to its folder.

    Runs that ``trainer.overwrite=true`` moved aside (``<name>.replaced-<time>``) were replaced: left out.
    """
    runs = []
    for root in roots:
        if not root.exists():
            raise UserError(f"{root} does not exist: pass the folder(s) holding the runs (e.g. multirun/<name>)")
        for path in sorted(root.rglob("results.json")):
            if any(REPLACED in part for part in path.relative_to(root).parts):
                continue
            result = json.loads(path.read_text())
            result["run_dir"] = str(path.parent)
            runs.append(result)
    if not runs:
        raise UserError(f"no results.json under {[str(r) for r in roots]}: have the runs finished?")
    return runs


def output_name(run: dict[str, Any], split: str, averaged: bool = False) -> str:
    return f"{split}-beam{run['beam_size']}{'-average' if averaged else ''}.txt"


def hypotheses(run: dict[str, Any], split: str, averaged: bool = False) -> list[str]:
    """A run's detokenized test outputs, one per example, from ``hyps/`` (plain or gzipped)."""
    path = Path(run["run_dir"]) / "hyps" / output_name(run, split, averaged)
    if path.exists():
        text = path.read_text(encoding="utf-8")
    elif path.with_suffix(".txt.gz").exists():
        text = gzip.decompress(path.with_suffix(".txt.gz").read_bytes()).decode("utf-8")
    else:
        raise UserError(f"{path} (or .gz) is missing: the run folder is incomplete; export it again from the run")
    return text.split("\n")[:-1]


def export(run: dict[str, Any], into: Path) -> Path:
    """Copy a finished run's summary, events, config and gzipped test outputs to ``into/<exp>/<model>/seed<k>``."""
    target = into / (run.get("experiment") or run["task"]) / run["model"] / f"seed{run['seed']}"
    source = Path(run["run_dir"])
    if source.resolve() == target.resolve():
        return target
    for name in KEPT:
        with atomic_path(target / name) as tmp:
            shutil.copyfile(source / name, tmp)
    outputs = {output_name(run, split, averaged): "\n".join(hypotheses(run, split, averaged)) + "\n"
               for split in run["test"] for averaged in ((False, True) if run.get("averaged") else (False,))}
    if not run["test"]:  # a search trial decodes no test set: its claim is the best validation, kept re-scorable
        best = f"valid-step{run['best_step']}.txt"
        outputs[best] = read_text_file(source / "hyps" / best)
    for name, text in outputs.items():
        with atomic_path(target / "hyps" / (name + ".gz")) as tmp:
            tmp.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))  # mtime 0: the same bytes every time
    return target


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror}): the run folder is incomplete") from None


def task_of(run: dict[str, Any]) -> Any:
    """The run's task config, read from its config.yaml."""
    return validate(OmegaConf.load(Path(run["run_dir"]) / "config.yaml")).task


def texts(task: Any, split: str) -> tuple[list[str], list[list[str]]]:
    """Raw sources and references (every annotation) of a task's split, from the data root: no tokenizer needed.

    The data root and cache are this machine's ($S2S_DATA_DIR, $S2S_CACHE_DIR), not the ones recorded in the run.
    """
    ds, _ = raw_split(task, task.splits[split], Path(task.data_root) if task.data_root else default_data_root(),
                      default_cache_dir())
    sources = list(iter_text(ds, "src"))
    if "refs" in ds.column_names:
        refs = [list(r) for r in ds["refs"]]
    else:
        refs = [[r] for r in iter_text(ds, "tgt")]
    return sources, refs
