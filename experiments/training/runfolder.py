"""A run folder belongs to one run, written by one live process.

``s2s-train`` holds the folder's ``.train.lock`` (``experiments/training/locks.py``)
from before it reads anything there until it ends, so a second ``s2s-train``
on the same folder is refused instead of interleaving its rows, checkpoints
and hypotheses with the first one's. A fresh start (``trainer.resume=false``)
in a folder that already holds a run is refused too, unless
``trainer.overwrite=true`` asks to move the old run aside first, to a sibling
``<name>.replaced-<time>`` that s2s-tables leaves out.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.training import distributed, locks
from experiments.core.atomic import storage_error
from experiments.core.errors import RunFolderError, StorageError, UserError

# What a run that got as far as training leaves in its folder; a start that failed earlier leaves at most
# config.yaml and tokenizer/, which a fresh start rewrites.
RUN_FILES = ("metrics.jsonl", "results.json", "checkpoints", "hyps", "attention", "wandb", "wandb_run_id")
# Written by the command now starting (Hydra's .hydra/ and its open train.log, s2s-grid's open grid.log, the locks):
# never moved; a log is copied aside and emptied, since its writer keeps appending to it.
STAYS = (".hydra", *locks.NAMES)
LOGS = ("train.log", "grid.log")
REPLACED = ".replaced-"  # in the name of a run moved aside by trainer.overwrite=true


def in_use(run_dir: Path, other: str) -> RunFolderError:
    return RunFolderError(f"{run_dir} is in use by s2s-train {other} (it holds {run_dir / locks.TRAIN}): wait for "
                          "that run to end, or choose another hydra.run.dir")


def check_run_dir(overrides: list[str]) -> None:
    """A ``hydra.run.dir=PATH`` of the command line must be a folder this process can write, not in use.

    Checked before Hydra writes its own files there (``.hydra/``), which would
    end in a traceback for a file of that name or a read-only place, and would
    rewrite a live run's record of its command line.
    """
    given = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    if given is None or "${" in given:
        return
    folder = Path(given)
    other = locks.holder(folder, locks.TRAIN)
    if other:  # refused before Hydra rewrites the live run's .hydra/ (the run itself takes the lock)
        raise in_use(folder, other)
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"hydra.run.dir={given} is a file, not a folder: name a folder for the run (it is made "
                           "if it does not exist)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(folder, e, "run again") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise storage_error(folder / ".hydra", e, "run again") from None  # the first thing Hydra writes there


def previous_run(run_dir: Path) -> list[str]:
    """The files of an earlier run in ``run_dir`` (empty folders do not count)."""
    found = []
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def aside_path(run_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}{REPLACED}{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}{REPLACED}{stamp}-{n}")
    return aside


def move_aside(run_dir: Path) -> Path:
    """Move the run in ``run_dir`` to a new sibling folder, whole but for what this command writes; its path."""
    aside = aside_path(run_dir)
    try:
        aside.mkdir()
        for entry in sorted(run_dir.iterdir()):
            if entry.name in STAYS:
                continue
            if entry.name in LOGS:
                shutil.copy2(entry, aside / entry.name)
                with open(entry, "r+") as log:
                    log.truncate()
            else:
                entry.rename(aside / entry.name)
    except OSError as e:
        raise storage_error(aside, e, "run again: what was not moved yet is still in " + str(run_dir)) from None
    return aside


def claim(run_dir: Path, overwrite: bool) -> str:
    """Check that a fresh start may write ``run_dir`` (moving an old run aside when asked); a line to log, or ''."""
    found = previous_run(run_dir)
    if not found:
        return ""
    if not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(found)}): add trainer.resume=true to go on with it, choose "
            f"another hydra.run.dir, or add trainer.overwrite=true to move it aside to "
            f"{run_dir.name}{REPLACED}<time>/ beside it and start afresh")
    return f"trainer.overwrite=true: moved the run that was in {run_dir} to {move_aside(run_dir)}"


@contextmanager
def owned(run_dir: Path, fresh: bool, overwrite: bool) -> Iterator[str]:
    """Hold ``run_dir`` for this run (rank 0 locks and checks it for every rank); yields a line to log, or ''.

    ``fresh``: a fresh start, which must not find another run in the folder
    (False to resume, or for a job its launcher requeued into its own folder).

    Every rank gets rank 0's verdict, so a refusal ends them all instead of
    leaving the others waiting for rank 0 at their first collective call.
    """
    if distributed.rank():
        verdict = distributed.broadcast(None)
        if isinstance(verdict, UserError):
            raise verdict
        yield ""
        return
    with locks.hold(run_dir, locks.TRAIN) as other:
        try:
            if other:
                raise in_use(run_dir, other)
            note = claim(run_dir, overwrite) if fresh else ""
        except UserError as e:
            distributed.broadcast(e)
            raise
        distributed.broadcast(note)
        yield note
