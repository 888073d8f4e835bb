"""Decode a split and score it: shared by validation, the final test and ``s2s-eval``.

``s2s-eval <run dir or checkpoint> split=test decoding.beam_size=5`` decodes
a split with a trained model and writes the hypotheses and a metrics JSON
(with the sacreBLEU signature) beside the checkpoint's run folder.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments import checkpoint, metrics
from experiments.atomic import write_text
from experiments.data import TaskData
from experiments.errors import ConfigError, UserError
from experiments.loss import sequence_loss
from experiments.batching import Batch
from models import Hypotheses, beam_search, greedy_search

log = logging.getLogger(__name__)


@torch.inference_mode()
def split_loss(model: torch.nn.Module, data: TaskData, split: str, batch_tokens: int, device: torch.device,
               autocast: Any) -> dict[str, float]:
    """Teacher-forced cross-entropy per target token (no smoothing) and perplexity."""
    model.eval()
    total, tokens = 0.0, 0
    plan = data.plan(split, batch_tokens, shuffle=False)
    for batch in data.batches(split, plan):
        batch = batch.to(device)
        with autocast():
            logits, _ = model(batch.src, batch.src_mask, batch.tgt_in)
        total += float(sequence_loss(logits, batch.tgt_out, data.pad_id, 0.0))
        tokens += batch.n_tgt_tokens
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": float(torch.tensor(loss).exp())}


@dataclass
class Decoded:
    hypotheses: list[str]  # detokenized, in split order
    token_ids: list[list[int]]
    seconds: float


def search(model: torch.nn.Module, batch: Batch, data: TaskData, decoding: Any, autocast: Any,
           beam: int, return_attention: bool = False) -> Hypotheses:
    """Greedy (``beam`` 1) or beam search over one batch under ``autocast``, with the ``decoding`` length rules."""
    common = dict(bos_id=data.bos_id, eos_id=data.eos_id, max_len_a=decoding.max_len_a,
                  max_len_b=decoding.max_len_b, min_len=decoding.min_len, return_attention=return_attention)
    with autocast():
        if beam == 1:
            return greedy_search(model, batch.src, batch.src_mask, **common)
        return beam_search(model, batch.src, batch.src_mask, beam_size=beam,
                           length_penalty=decoding.length_penalty, **common)


@torch.inference_mode()
def decode_split(model: torch.nn.Module, data: TaskData, split: str, decoding: Any, device: torch.device,
                 autocast: Any, *, beam_size: int | None = None, limit: int = 0) -> Decoded:
    """Greedy (beam 1) or beam search over a split, batched by length; outputs back in split order."""
    model.eval()
    beam = beam_size or decoding.beam_size
    n = limit or len(data.split(split))
    out: list[list[int]] = [[] for _ in range(n)]
    start = time.perf_counter()
    plan = data.plan(split, max(decoding.batch_tokens // beam, 1), shuffle=False, limit=limit)
    for batch in data.batches(split, plan):
        hyps = search(model, batch.to(device), data, decoding, autocast, beam)
        for i, tokens in zip(batch.indices.tolist(), hyps.tokens):
            out[i] = tokens
    seconds = time.perf_counter() - start
    return Decoded(data.tokenizer.decode_tgt(out), out, seconds)


def score(data: TaskData, split: str, hypotheses: list[str]) -> dict[str, Any]:
    refs = data.split(split).references()[: len(hypotheses)]
    return metrics.task_metrics(str(data.task.kind.value), hypotheses, refs)


# ---------------------------------------------------------------------------
# s2s-eval


@dataclass
class LoadedRun:
    """A trained model with the config, data and tokenizer of its run, ready to decode."""

    cfg: Any
    data: TaskData
    model: torch.nn.Module
    device: torch.device
    run_dir: Path
    step: int


def load_run(target: str | Path, overrides: list[str] | None = None) -> LoadedRun:
    """Rebuild a run from a run folder (its best.pt) or a checkpoint file, with ``key=value`` overrides."""
    from experiments.config import validate
    from experiments.runtime import pick_device
    from experiments.trainer import build_model  # the trainer imports this module

    state = checkpoint.load(target)
    cfg = OmegaConf.create(state["config"])
    overrides = overrides or []
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors name the key
        raise ConfigError(f"bad override in {overrides}: {e}") from None
    cfg = validate(cfg)
    run_dir = Path(target) if Path(target).is_dir() else Path(target).resolve().parent.parent
    data = TaskData(cfg.task, cfg.cache_dir, tokenizer_dir=run_dir / "tokenizer")
    device = pick_device(cfg.trainer.device)
    model = build_model(cfg.model, data).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(cfg, data, model, device, run_dir, state["trainer"]["step"])


def evaluate_checkpoint(target: str, overrides: list[str]) -> dict[str, Any]:
    from experiments.trainer import autocast_for

    split = next((o.split("=", 1)[1] for o in overrides if o.startswith("split=")), "test")
    run = load_run(target, [o for o in overrides if not o.startswith("split=")])
    cfg, data, model, device, run_dir = run.cfg, run.data, run.model, run.device, run.run_dir
    data.split(split)  # unknown split names fail here, listing the valid ones
    autocast = autocast_for(device, cfg.trainer.precision)
    decoded = decode_split(model, data, split, cfg.decoding, device, autocast)
    result = {
        "split": split,
        "checkpoint": str(target),
        "step": run.step,
        "beam_size": cfg.decoding.beam_size,
        "length_penalty": cfg.decoding.length_penalty,
        "min_len": cfg.decoding.min_len,
        "decode_seconds": decoded.seconds,
        **score(data, split, decoded.hypotheses),
    }
    out = run_dir / "eval"
    stem = f"{split}-beam{cfg.decoding.beam_size}"
    write_text(out / f"{stem}.txt", "\n".join(decoded.hypotheses) + "\n")
    write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: s2s-eval RUN_DIR_OR_CHECKPOINT [split=test] [decoding.beam_size=5] [key=value ...]")
        sys.exit(0 if args else 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = evaluate_checkpoint(args[0], args[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, indent=2))

