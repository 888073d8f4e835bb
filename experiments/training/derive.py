"""Jobs of a preset that trains what another preset trains (``trained_as``), started from its finished runs.

``samsum_lengths`` trains exactly what ``samsum`` trains; only what happens
after the last update differs (its length settings are chosen on
validation). Training it again would spend hours to make the same
checkpoints, so ``s2s-grid`` copies the finished ``samsum`` run folder of the
same model and seed (checkpoints, tokenizer, metrics.jsonl, validation
outputs; not its tests, results or W&B run) into the job's folder, and the job
resumes there: the resume finds nothing left to train, so it runs the final
tests under the new preset and writes its own results.json. Whether the two
really train the same is checked, key by key, against the copied run's
config (``resume.changes``: only what acts after training, where and how
fast, and the preset's name may differ), before anything is copied. A source
that is not finished, or whose checkpoints are gone (an exported copy keeps
none), leaves the job to train as usual, or to wait for its source when that
is still running.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from experiments.core.errors import ConfigError
from experiments.training import locks
from experiments.training.resume import recorded_changes, show

# What a derived job takes from its source: what resuming needs, and the record of training.
TAKEN = ("checkpoints", "tokenizer", "metrics.jsonl", "config.yaml")
VALIDATION_OUTPUTS = "valid-step*.txt"  # hyps/: the validations' outputs (the tests' are written again)


def state(source: Path) -> str:
    """``ready`` (finished, checkpoints kept), ``busy`` (being trained, or interrupted: wait for it), ``none``."""
    if (source / "results.json").exists() and (source / "checkpoints" / "last.pt").exists():
        return "ready"
    if locks.is_locked(source) or (source / "checkpoints" / "last.pt").exists():
        return "busy"
    return "none"


def check_same_training(source: Path, preset: Any) -> None:
    """Refuse a ``trained_as`` whose source trained otherwise than the preset asks: the copy would be a lie."""
    differ = recorded_changes(source / "config.yaml", preset)
    if differ:
        raise ConfigError(f"trained_as: {preset.trained_as} says this preset trains what {source} trained, but "
                          f"they differ in {show(differ)}: drop trained_as from conf/experiment/"
                          f"{preset.experiment}.yaml, or make the presets agree")


def copy_run(source: Path, target: Path) -> None:
    """Copy what resuming needs from ``source`` into ``target`` (whose lock the caller holds)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TAKEN:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source / name, target / name)
    (target / "hyps").mkdir(exist_ok=True)
    for path in (source / "hyps").glob(VALIDATION_OUTPUTS):
        shutil.copy2(path, target / "hyps" / path.name)
