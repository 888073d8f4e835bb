"""What a resumed run may change (the settings that shape training must be the ones it started with), and what
it keeps of its metrics.jsonl.

A run resumed with another seed, learning rate, batch size or model would
record settings that most of its updates never used (``config.yaml``,
``results.json``) while it went on with state made under the old ones. So
``trainer.resume=true`` compares the settings asked for with the checkpoint's
and refuses any change to what shapes training. Settings that only say where
or how fast the run goes on (threads, device, data folder, logger, the
decoding of the final tests, the length settings tried on validation after
training) may change freely: a finished run resumed with length choices
chooses and is tested again. The budget
(``trainer.max_steps``, ``max_epochs``, ``max_tokens``) may change with
``trainer.change_budget=true``: the schedule does not depend on it, so the
updates already made stay the ones an uninterrupted run with the new budget
makes, and the change is recorded as a ``resume`` row in ``metrics.jsonl``.
``trainer.precision=auto`` goes on in the precision the run started in.
Every other key, including keys added later, counts as shaping training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.core.atomic import write_text
from experiments.core.config import MODEL_SCHEMAS, Config, validate
from experiments.core.errors import ConfigError

log = logging.getLogger(__name__)

# Where and how fast a run goes, and what it logs: the numbers it reports are the same under any of these.
ENVIRONMENT = ("trainer.resume", "trainer.overwrite", "trainer.change_budget", "trainer.progress",
               "trainer.num_threads", "trainer.device", "trainer.compile", "trainer.fused_adamw",
               "decoding.batch_tokens", "decoding.beam_batch_tokens", "logger", "cache_dir", "task.data_root",
               "task.download", "task.verify_checksums", "task.num_proc")
# What acts only after the last update: the tests, their decoding, the snapshots kept and averaged.
AFTER_TRAINING = ("trainer.test_after_training", "trainer.test_splits", "trainer.keep_checkpoints",
                  "trainer.average_checkpoints", "trainer.average_by", "decoding.beam_size", "decoding.n_best",
                  "decoding.length_penalty_choices", "decoding.min_len_choices")
# What names the run: a run resumed under a preset that trains the same (``trained_as``) is tested and recorded
# under that preset's name.
LABELS = ("experiment", "trained_as")
FREE = ENVIRONMENT + AFTER_TRAINING + LABELS
BUDGET = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_tokens")
TRAINING_SPLITS = ("task.splits.train", "task.splits.valid")  # the other splits are only tested after training


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def under(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def is_free(key: str) -> bool:
    """May change on resume: the environment, and what acts after training (the test splits included)."""
    if key.startswith("task.splits."):
        return key not in TRAINING_SPLITS
    return under(key, FREE)


def is_environment(key: str) -> bool:
    """Leaves a finished run's reported numbers as they are."""
    return under(key, ENVIRONMENT)


def defaults(model_name: str) -> dict[str, Any]:
    """The schema's defaults: what a checkpoint written before a key existed ran with."""
    schema = OmegaConf.structured(Config)
    if model_name in MODEL_SCHEMAS:
        schema.model = OmegaConf.structured(MODEL_SCHEMAS[model_name])
    return flatten(OmegaConf.to_container(schema, enum_to_str=True))


def changes(saved: Mapping[str, Any], asked: Mapping[str, Any],
            ignored: Callable[[str], bool] = is_free) -> dict[str, tuple[Any, Any]]:
    """The settings that differ, ``ignored`` keys left out (by default those a resume may change): key -> (saved,
    asked)."""
    old, new = flatten(saved), flatten(asked)
    fallback = defaults(str(new.get("model.name")))
    differ = {}
    for key in sorted(new):
        if ignored(key) or (key == "trainer.precision" and new[key] == "auto"):
            continue  # auto goes on in the precision the run started in (Trainer.restore)
        before = old.get(key, fallback.get(key, new[key]))  # a key the checkpoint predates: its default
        if before != new[key]:
            differ[key] = (before, new[key])
    return differ


def recorded_changes(config_yaml: Path, asked: Any, ignored: Callable[[str], bool] = is_free
                     ) -> dict[str, tuple[Any, Any]]:
    """``changes`` between the config a run recorded (its config.yaml, validated) and the config ``asked``."""
    saved = validate(OmegaConf.load(config_yaml))
    return changes(OmegaConf.to_container(saved, resolve=True, enum_to_str=True),
                   OmegaConf.to_container(asked, resolve=True, enum_to_str=True), ignored)


def show(differ: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {before!r} -> {after!r}" for key, (before, after) in differ.items())


def check(saved: Mapping[str, Any], asked: Mapping[str, Any], change_budget: bool, where: str) -> dict[str, Any]:
    """Refuse settings that differ from the checkpoint's in what shapes training; the budget changes allowed.

    Returns the allowed changes as ``{key: [saved, asked]}`` (empty when none).
    """
    differ = changes(saved, asked)
    shaping = {k: v for k, v in differ.items() if k not in BUDGET}
    budget = {k: v for k, v in differ.items() if k in BUDGET}
    if shaping:
        raise ConfigError(f"trainer.resume=true with settings other than those {where} was trained with: "
                          f"{show(shaping)}. Resume with its settings (its config.yaml), or train these settings "
                          "in another folder (hydra.run.dir=...)")
    if budget and not change_budget:
        raise ConfigError(f"trainer.resume=true with another budget than {where} was trained with: {show(budget)}. "
                          "Add trainer.change_budget=true to go on with the new budget (it is recorded in "
                          "metrics.jsonl), or resume with the old one")
    return {key: list(values) for key, values in budget.items()}


def keep_rows_until(metrics_file: Path, step: int, changed: dict[str, Any]) -> None:
    """Forget the events a run resumed at ``step`` logs again: training's after the checkpoint, and every final
    test's (they follow the last checkpoint, so a finished run resumed, or one killed in its tests, tests again).
    Budget changes allowed on this resume (``changed``) are recorded as a ``resume`` row."""
    kept, broken = [], 0
    lines = metrics_file.read_text().splitlines() if metrics_file.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
            if (row["step"] <= step and row["event"] in ("train", "valid")) or \
                    (row["event"] == "resume" and row["step"] < step):
                kept.append(line)
        except (json.JSONDecodeError, TypeError, KeyError):
            broken += 1  # a row cut short when the run was killed
    if broken:
        log.warning("%s: dropped %d unreadable rows (cut short when the run was killed)", metrics_file, broken)
    if changed:
        log.warning("resuming with trainer.change_budget=true: %s", show(changed))
        kept.append(json.dumps({"event": "resume", "step": step, "changed": changed}))
    if lines or changed:
        write_text(metrics_file, "".join(line + "\n" for line in kept))
