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
run's config.yaml holds the values it trained with.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.core.errors import ConfigError
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


def draw(search: DictConfig, model: str, rng: np.random.Generator) -> dict[str, Any]:
    """One draw of ``model``'s settings: the shared entries, then the model's own (which win where both set a key)."""
    if model not in search.space:
        raise ConfigError(f"search {search.name!r} has no space for model {model!r} (it has {sorted(search.space)})")
    drawn: dict[str, Any] = {}
    for name, spec in entries(search.space, model):
        drawn.update(draw_one(rng, name, spec))
    return drawn


def with_draws(cfg: DictConfig, drawn: dict[str, Any]) -> DictConfig:
    out = cfg.copy()
    with open_dict(out):
        for key, value in drawn.items():
            if OmegaConf.select(out, key, default="<missing>") == "<missing>":
                raise ConfigError(f"search.space sets {key!r}, which is not a config key of model "
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
