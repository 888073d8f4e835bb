"""Finished runs as the tables read them: found on disk, exported into the repo, and their texts.

A run folder written by ``s2s-train`` holds checkpoints and caches the repo
does not keep. ``export`` copies what the tables and a re-scoring need, and
nothing else, into ``results/runs/<experiment>/<model>/seed<k>/``::

    results.json     the run's summary (scores, budget, hardware, commit, seed)
    metrics.jsonl    every train / validation / test event (the curves)
    config.yaml      the resolved config it trained with
    hyps/            detokenized test outputs, gzipped: <split>-beam<K>.txt.gz
                     (best checkpoint) and <split>-beam<K>-average.txt.gz
                     (averaged checkpoint, where the run averaged); where the
                     run chose its length settings on validation, the
                     validation outputs of every setting it tried

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

import yaml
from omegaconf import OmegaConf

from experiments.core.atomic import atomic_path
from experiments.core.config import validate
from experiments.core.errors import UserError
from experiments.training.runfolder import REPLACED
from experiments.data.sources import default_cache_dir, default_data_root, iter_text, raw_split

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

# What the tables read of a results.json
REQUIRED = ("task", "kind", "model", "seed", "params", "steps", "best_step", "train_seconds", "train_tokens_per_s",
            "test", "beam_size", "hardware", "precision", "commit")


def read_results(path: Path) -> dict[str, Any]:
    """A run's ``results.json``, checked for what the tables read; a damaged one is a ``UserError`` naming it."""
    redo = ("write it again with trainer.resume=true in that run folder (it tests the best checkpoint again), "
            "or move the folder away")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}): cut short or damaged; {redo}") from None
    if not isinstance(result, dict):
        raise UserError(f"{path} holds a {type(result).__name__}, not a run's summary (a JSON object); {redo}")
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise UserError(f"{path} lacks {missing}: not a summary s2s-train wrote, or damaged; {redo}")
    tests = result["test"]  # split -> scores; empty for a search trial, which decodes no test set
    if not isinstance(tests, dict) or not all(isinstance(v, dict) for v in tests.values()):
        raise UserError(f"{path} has no scores of the test split (\"test\": {json.dumps(tests)[:60]}): the run "
                        "ended before its tests or had trainer.test_after_training=false; resume it with "
                        "trainer.resume=true trainer.test_after_training=true, or move the folder away")
    return result


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
            result = read_results(path)
            result["run_dir"] = str(path.parent)
            runs.append(result)
    if not runs:
        raise UserError(f"no results.json under {[str(r) for r in roots]}: have the runs finished?")
    return runs


def output_name(run: dict[str, Any], split: str, averaged: bool = False) -> str:
    return f"{split}-beam{run['beam_size']}{'-average' if averaged else ''}.txt"


def hypotheses(run: dict[str, Any], split: str, averaged: bool = False, expected: int | None = None) -> list[str]:
    """A run's detokenized test outputs, one per example, from ``hyps/`` (plain or gzipped).

    ``expected``: the split's size; a file with another count of lines is refused (cut short, or another split's).
    """
    path = Path(run["run_dir"]) / "hyps" / output_name(run, split, averaged)
    try:
        if path.exists():
            text = path.read_text(encoding="utf-8")
        elif path.with_suffix(".txt.gz").exists():
            path = path.with_suffix(".txt.gz")
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        else:
            raise UserError(f"{path} (or .gz) is missing: the run folder is incomplete; export it again from the run")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not readable UTF-8 text ({e}): damaged; export it again from the run, or "
                        "resume the run (trainer.resume=true) to write its test outputs again") from None
    lines = text.split("\n")[:-1]
    if expected is not None and len(lines) != expected:
        raise UserError(f"{path} has {len(lines)} lines, but {split} has {expected} sentences: cut short or another "
                        "split's outputs; export it again from the run, or resume the run (trainer.resume=true)")
    return lines


def export(run: dict[str, Any], into: Path) -> Path:
    """Copy a finished run's summary, events, config and gzipped test outputs to ``into/<exp>/<model>/seed<k>``.

    The folder is replaced as a whole (written beside it, then renamed), so an export that fails half-way
    leaves the earlier export as it was, never a new results.json beside old outputs.
    """
    target = into / (run.get("experiment") or run["task"]) / run["model"] / f"seed{run['seed']}"
    source = Path(run["run_dir"])
    if source.resolve() == target.resolve():
        return target
    missing = [name for name in KEPT if not (source / name).is_file()]
    if missing:
        raise UserError(f"{source} lacks {missing}: the run folder is incomplete, so it cannot be exported")
    outputs = {output_name(run, split, averaged): "\n".join(hypotheses(run, split, averaged)) + "\n"
               for split in run["test"] for averaged in ((False, True) if run.get("averaged") else (False,))}
    if not run["test"]:  # a search trial decodes no test set: its claim is the best validation, kept re-scorable
        best = f"valid-step{run['best_step']}.txt"
        outputs[best] = read_text_file(source / "hyps" / best)
    for choice in (run.get("length_choice"), (run.get("averaged") or {}).get("length_choice")):
        for tried in (choice or {}).get("tried", []):  # the validation outputs that chose the length settings
            outputs[tried["hyps"]] = read_text_file(source / "hyps" / tried["hyps"])
    with atomic_path(target) as tmp:
        (tmp / "hyps").mkdir(parents=True)
        for name in KEPT:
            shutil.copyfile(source / name, tmp / name)
        for name, text in outputs.items():  # mtime 0: the same bytes every time
            (tmp / "hyps" / (name + ".gz")).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    return target


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror}): the run folder is incomplete") from None


def config_of(run: dict[str, Any]) -> Any:
    """The run's config, read from its config.yaml and validated; a missing or damaged one is a ``UserError``."""
    path = Path(run["run_dir"]) / "config.yaml"
    try:
        return validate(OmegaConf.load(path))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read {path} ({str(e).splitlines()[0]}): the run folder is incomplete or damaged; "
                        "export it again from the run") from None


def validation_setting(run: dict[str, Any]) -> str:
    """How the run decoded its validation split, which chose its checkpoint: "greedy, the whole split"."""
    trainer = config_of(run).trainer
    beam = "greedy" if trainer.val_beam_size == 1 else f"beam {trainer.val_beam_size}"
    n = trainer.eval_max_sentences
    return f"{beam}, " + (f"its first {n} sentences" if n else "the whole split")


def task_of(run: dict[str, Any]) -> Any:
    """The run's task config, read from its config.yaml."""
    return config_of(run).task


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
