"""Random search as plain runs: trial ``k`` of a search is seed ``k`` of a preset, its settings drawn from ``search``.

A search preset (``conf/experiment/tune_*.yaml``) writes its space once, both
models side by side::

    search:
      name: tune_multi30k_de_en
      seed: 33                                  # with the model and the trial, fixes every draw
      param_budget: [6.82e6, 8.34e6]            # a drawn shape outside it is drawn again
      space:
        shared:                                 # drawn for every model, from the same distributions
          trainer.label_smoothing: {choice: [0.0, 0.1, 0.2]}
          batch: {choice: [{trainer.batch_tokens: 2048, trainer.eval_every: 250}, ...]}   # keys set together
        transformer:
          trainer.lr: {log_uniform: [1.0e-4, 2.0e-3]}
          model.dropout: {uniform: [0.1, 0.3]}

and sweeps ``seed: 1,...,N``: s2s-grid runs its trials like any grid's jobs
(two side by side, resumable, locked, exported to ``results/runs``), seeds
outermost, so both models always have the same number of finished trials.
Each trial draws its settings from ``numpy``'s generator seeded with
``(search.seed, model, trial)`` and trains with that seed: the trials are
independent, identically distributed draws of (settings, seed), which is what
the expected-maximum estimator (``experiments.reporting.expected_max``) assumes. Random
search rather than Optuna's TPE for that reason; and a trial as a run folder
rather than a trial of Hydra's Optuna sweeper, so that a search outlives a
session, splits over jobs and is exported like every other run.

The draws are applied before the config is validated (``train.run``), so the
run's config.yaml holds the values it trained with. The finished trials are
read back here too (``load_trials``: the expected-maximum report and
``s2s-tuned`` read them), and a tuned recipe, each model's best trial, is
applied to a run the way a trial's draws are (``apply_tuned``).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.core.config import validate
from experiments.core.errors import ConfigError, UserError
from models import MODELS, count_parameters

DISTRIBUTIONS = ("choice", "uniform", "log_uniform")
MAX_REDRAWS = 1000


def draw_one(rng: np.random.Generator, name: str, spec: Any) -> dict[str, Any]:
    """The config keys that one entry of the space sets: ``{name: value}``, or a chosen bundle's keys."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"search.space entry {name!r}: expected one of {{choice: [...]}}, {{uniform: [lo, hi]}}, "
                          f"{{log_uniform: [lo, hi]}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind == "choice":
        if not args:
            raise ConfigError(f"search.space entry {name!r}: choice needs at least one value")
        value = args[int(rng.integers(len(args)))]
        return dict(value) if isinstance(value, dict) else {name: value}
    lo, hi = (float(a) for a in args)
    if not 0 < lo < hi if kind == "log_uniform" else not lo < hi:
        raise ConfigError(f"search.space entry {name!r}: {kind} needs lo < hi{' and lo > 0' * (kind == 'log_uniform')}"
                          f", got {args}")
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if kind == "log_uniform" else rng.uniform(lo, hi)
    return {name: float(f"{value:.3g}")}  # three significant digits: what a config file would say


def entries(space: Any, model: str) -> list[tuple[str, Any]]:
    """``model``'s entries of the space in drawing order: the shared ones, then the model's own."""
    space = OmegaConf.to_container(space) if isinstance(space, DictConfig) else (space or {})
    return [item for part in ("shared", model) for item in (space.get(part) or {}).items()]


def space_keys(space: Any, model: str) -> list[str]:
    """The config keys a trial of ``model`` sets (a bundle's keys in its place), in the space's order."""
    keys: list[str] = []
    for name, spec in entries(space, model):
        bundle = next((o for o in spec.get("choice", []) if isinstance(o, dict)), None) if isinstance(spec, dict) else None
        keys += list(bundle) if bundle else [name]
    return keys


def distributions(space: Any, model: str) -> dict[str, tuple[str, list[Any]]]:
    """Each config key a trial of ``model`` sets, with what it is drawn from: ``("choice", [values])`` (a
    bundle's keys each with their values across its bundles), ``("uniform", [lo, hi])`` or ``("log_uniform", ...)``."""
    out: dict[str, tuple[str, list[Any]]] = {}
    for name, spec in entries(space, model):
        (kind, args), = spec.items()
        bundles = [o for o in args if isinstance(o, dict)] if kind == "choice" else []
        if bundles:
            out.update({key: ("choice", [b[key] for b in bundles]) for key in bundles[0]})
        else:
            out[name] = (kind, list(args))
    return out


def draw(search: DictConfig, model: str, rng: np.random.Generator) -> dict[str, Any]:
    """One draw of ``model``'s settings: the shared entries, then the model's own (which win where both set a key)."""
    if model not in search.space:
        raise ConfigError(f"search {search.name!r} has no space for model {model!r} (it has {sorted(search.space)})")
    drawn: dict[str, Any] = {}
    for name, spec in entries(search.space, model):
        drawn.update(draw_one(rng, name, spec))
    return drawn


def with_draws(cfg: DictConfig, drawn: dict[str, Any], source: str = "search.space") -> DictConfig:
    out = cfg.copy()
    with open_dict(out):
        for key, value in drawn.items():
            if OmegaConf.select(out, key, default="<missing>") == "<missing>":
                raise ConfigError(f"{source} sets {key!r}, which is not a config key of model "
                                  f"{cfg.model.name!r} (check the key's spelling and that it belongs to this model)")
            OmegaConf.update(out, key, value, merge=False)
    return out


def parameters(cfg: DictConfig) -> int:
    """The parameter count of ``cfg.model`` on the task's subword vocabulary, built on the meta device (no memory)."""
    vocab = int(cfg.task.tokenizer.vocab_size)
    kwargs = {k: (v.value if hasattr(v, "value") else v) for k, v in OmegaConf.to_container(cfg.model).items()}
    name = kwargs.pop("name")
    with torch.device("meta"):
        model = MODELS[name](src_vocab_size=vocab, tgt_vocab_size=vocab, pad_id=1, **kwargs)
    return count_parameters(model)


def apply_trial(cfg: DictConfig) -> DictConfig:
    """``cfg`` with its search trial's draws (the trial is ``cfg.seed``); unchanged where there is no search.

    A draw whose model falls outside ``search.param_budget`` is drawn again from
    the same generator, so the trial stays a pure function of its seed.
    """
    search = cfg.get("search")
    if not search or not search.get("name"):
        return cfg
    model, trial = str(cfg.model.name), int(cfg.seed)
    budget = list(search.get("param_budget") or [])
    rng = np.random.default_rng([int(search.seed), zlib.crc32(model.encode()), trial])
    for _ in range(MAX_REDRAWS):
        out = with_draws(cfg, draw(search, model, rng))
        if not budget or budget[0] <= parameters(out) <= budget[1]:
            return out
    raise ConfigError(f"search {search.name!r}: no draw of {model}'s space in {MAX_REDRAWS} fell within "
                      f"param_budget {budget}; widen the budget or the shape choices")


def apply_tuned(cfg: DictConfig, keep: frozenset[str] = frozenset()) -> DictConfig:
    """``cfg`` with its model's tuned settings (``tuned.settings.<model>``: the best trial of a search, which
    ``s2s-tuned`` writes into conf/tuned/); unchanged where the run has no tuned recipe.

    They are the recipe, so they win over the presets, as a trial's draws do;
    a key in ``keep`` (one set on the command line) stays as given, so a
    researcher can vary one setting of a tuned recipe. The run's config.yaml
    records the values it trained with beside ``tuned``, which names the trial.
    """
    tuned = cfg.get("tuned")
    if not tuned or not tuned.get("search"):
        return cfg
    model = str(cfg.model.name)
    settings = (tuned.get("settings") or {}).get(model)
    if settings is None:
        raise ConfigError(f"the tuned recipe of search {tuned.search!r} has no settings for model {model!r} (it has "
                          f"{sorted(tuned.get('settings') or {})}); write it again with s2s-tuned once {model}'s "
                          "trials have finished")
    settings = OmegaConf.to_container(settings) if isinstance(settings, DictConfig) else dict(settings)
    return with_draws(cfg, {k: v for k, v in settings.items() if k not in keep}, f"tuned.settings.{model}")


def given_keys(overrides: list[str]) -> frozenset[str]:
    """The keys ``key=value`` overrides set (``+key``/``~key`` included): those a tuned recipe leaves as given."""
    return frozenset(o.split("=", 1)[0].lstrip("+~") for o in overrides)


def as_trained(cfg: DictConfig, given: frozenset[str] = frozenset()) -> DictConfig:
    """The config s2s-train trains with: a trial's draws and a tuned recipe applied (``given`` keys kept), validated.

    The grid composes the same from a preset to compare it with what a run recorded."""
    return validate(apply_tuned(apply_trial(cfg), keep=given))


# ---- a search's finished trials, read back from their run folders (exported copies included)


@dataclass
class Trial:
    """A finished trial: its best validation score, what it cost, the settings it drew, its results.json and its
    validation rows (metrics.jsonl's ``valid`` events, read once for the report's curves and early ranking)."""

    model: str
    trial: int
    score: float
    metric: str
    best_step: int
    steps: int
    tokens: int
    hours: float  # wall time of its updates, pauses and waits for a shared core included
    cpu_hours: float | None  # its process's CPU time in them (neither counted); None where the run did not record it
    params: int
    budget: int  # trainer.max_tokens: the real target tokens every trial of the search may train on
    settings: dict[str, Any]
    run: dict[str, Any]
    space: dict[str, Any] = field(default_factory=dict)  # the search's space as its config.yaml holds it
    validations: list[dict[str, Any]] = field(default_factory=list)


def load_trial(folder: Path) -> Trial:
    def read(name: str) -> Any:
        path = folder / name
        try:
            text = path.read_text()
            return OmegaConf.to_container(OmegaConf.create(text)) if name.endswith(".yaml") else (
                json.loads(text) if name.endswith(".json") else [json.loads(x) for x in text.splitlines() if x])
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read it ({e}); export the trial again from its run folder") from None

    run, cfg, events = read("results.json"), read("config.yaml"), read("metrics.jsonl")
    run["run_dir"] = str(folder)
    search = cfg.get("search") or {}
    if not search.get("name"):
        raise UserError(f"{folder}: not a search trial (its config.yaml has no search.name); pass the folder of a "
                        "search preset's runs, e.g. results/runs/tune_multi30k_de_en")
    metric = next(k.removeprefix("valid_") for k in run if k.startswith("valid_") and k != "valid_average")
    flat = OmegaConf.create(cfg)
    settings = {k: OmegaConf.select(flat, k) for k in space_keys(search.get("space"), run["model"])}
    validations = [e for e in events if e.get("event") == "valid"]
    tokens = max((e.get("tokens", 0) for e in validations), default=0)
    cpu = run.get("train_cpu_seconds")
    return Trial(run["model"], int(run["seed"]), float(run[f"valid_{metric}"]), metric, int(run["best_step"]),
                 int(run["steps"]), int(tokens), float(run["train_seconds"]) / 3600,
                 None if cpu is None else float(cpu) / 3600, int(run["params"]),
                 int(cfg["trainer"]["max_tokens"]), settings, run, search.get("space") or {}, validations)


def load_trials(root: Path) -> tuple[dict[str, list[Trial]], dict[str, int]]:
    """Finished trials by model (in trial order), and the count of unfinished ones by model."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass a search's runs, e.g. results/runs/tune_multi30k_de_en")
    trials: dict[str, list[Trial]] = {}
    unfinished: dict[str, int] = {}
    # seed<k> only: a <seed>.replaced-<time> beside it is a run trainer.overwrite=true moved aside, not a trial
    for folder in sorted(p for p in root.glob("*/seed*") if p.is_dir() and re.fullmatch(r"seed\d+", p.name)):
        if (folder / "results.json").exists():
            trial = load_trial(folder)
            trials.setdefault(trial.model, []).append(trial)
        else:
            unfinished[folder.parent.name] = unfinished.get(folder.parent.name, 0) + 1
    if not trials:
        raise UserError(f"no finished trial (results.json) under {root}/<model>/seed<k>: have the trials finished?")
    for model in trials:
        trials[model].sort(key=lambda t: t.trial)
    return trials, unfinished
