"""Time to BLEU (``--time-to-bleu``): train until validation BLEU reaches a threshold, and the BLEU-by-update curves."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from experiments.bench.targets import JOEYNMT_CURVE, JOEYNMT_TOKENS_PER_UPDATE, JOEYNMT_VERSION

log = logging.getLogger(__name__)

JOEYNMT_REFERENCE = f"JoeyNMT {JOEYNMT_VERSION} (reference)"  # its curve's name in the table and the plot


def time_to_bleu(trainer: Any, ttb: dict[str, Any]) -> dict[str, Any]:
    """Train (Trainer.train_step, validating with Trainer.validate) until validation BLEU >= the threshold.

    ``train_s`` is the time in ``train_step``, ``val_s`` the time in ``validate`` (greedy decoding of the
    split, scoring and the checkpoints it writes), ``wall_s`` all of it with the batches' collation between.
    """
    threshold, eval_every, max_steps = ttb["threshold"], ttb["eval_every"], ttb["max_steps"]
    p = trainer.progress
    stream = trainer.batch_stream()
    start = time.perf_counter()
    train_seconds = val_seconds = 0.0
    history = []
    reached = False
    while p.step < max_steps:
        try:
            position, batch = next(stream)
        except StopIteration:
            break  # trainer.max_epochs reached
        p.batch_in_epoch = position
        t0 = time.perf_counter()
        _, tokens = trainer.train_step([batch])
        train_seconds += time.perf_counter() - t0
        p.step += 1
        p.tokens += tokens
        if p.step % eval_every == 0 or p.step == max_steps:
            t0 = time.perf_counter()
            trainer.validate()
            val_seconds += time.perf_counter() - t0
            value = json.loads(trainer.metrics_file.read_text().splitlines()[-1]).get(trainer.primary)
            history.append({"step": p.step, "bleu": value, "tokens": p.tokens, "train_s": train_seconds,
                            "val_s": val_seconds, "wall_s": time.perf_counter() - start})
            log.warning("time to BLEU: step %d  BLEU %.2f  (%.0f s)", p.step, value, time.perf_counter() - start)
            if value >= threshold:
                reached = True
                break
    return {"threshold": threshold, "reached": reached, "steps_to_bleu": p.step if reached else None,
            "tokens_to_bleu": p.tokens if reached else None, "tokens": p.tokens,
            "train_s": train_seconds, "val_s": val_seconds, "wall_s": time.perf_counter() - start,
            "best_bleu": p.best,
            "eval_every": eval_every, "max_steps": max_steps, "history": history,
            "tokens_per_s": p.tokens / train_seconds if train_seconds else float("nan")}


# What the report says a time-to-quality run trained with (the composed config's values, recipe or not).
RECIPE_SETTINGS = ("trainer.batch_tokens", "trainer.accum_steps", "trainer.lr", "trainer.schedule",
                   "trainer.warmup_steps", "trainer.label_smoothing", "trainer.clip_norm", "trainer.batching",
                   "trainer.precision", "trainer.eval_every", "model.dropout")


def recipe_settings(cfg: Any) -> dict[str, Any]:
    """RECIPE_SETTINGS' values in ``cfg`` (enums by value; a key the model has not, e.g. no dropout, left out)."""
    out = {}
    for key in RECIPE_SETTINGS:
        group, name = key.split(".")
        value = cfg[group].get(name)
        if value is not None:
            out[key] = getattr(value, "value", value)
    return out


def ttb_curves(runs: list[dict[str, Any]], by: str = "step") -> dict[str, dict[float, float]]:
    """Validation BLEU by update (``by="step"``) or by real target tokens (``by="tokens"``): each
    time-to-BLEU run's, then JoeyNMT's reference curve (none without runs; a run saved before
    tokens were recorded has no tokens curve)."""
    curves = {f"{r['model']} ({r['config']})": {h[by]: h["bleu"] for h in r["history"]}
              for r in runs if "error" not in r and r.get("history") and all(by in h for h in r["history"])}
    if curves:
        curves[JOEYNMT_REFERENCE] = (dict(JOEYNMT_CURVE) if by == "step" else
                                     {step * JOEYNMT_TOKENS_PER_UPDATE: bleu for step, bleu in JOEYNMT_CURVE.items()})
    return curves
