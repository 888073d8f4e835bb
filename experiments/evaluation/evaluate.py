"""Decode a split and score it: shared by validation, the final test and ``s2s-eval``.

``s2s-eval <run dir or checkpoint> split=test decoding.beam_size=5`` decodes
a split with a trained model and writes the hypotheses and a metrics JSON
(with the sacreBLEU signature) beside the checkpoint's run folder;
``decoding.n_best=N`` also writes the N best of every sentence as TSV;
``'decoding.length_penalty_choices=[0.6,1.0,1.5]'`` (and ``decoding.min_len_choices``)
first chooses the length settings on the validation split (experiments/evaluation/lengths.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.evaluation import checkpoint, lengths, metrics
from experiments.core.atomic import write_text
from experiments.evaluation.builders import autocast_for, build_model
from experiments.data.pipeline import TaskData
from experiments.core.errors import ConfigError, UserError
from experiments.evaluation.loss import sequence_loss
from experiments.data.batching import Batch
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
            tgt_mask = batch.tgt_mask
            outputs, _ = model(batch.src, batch.src_mask, batch.tgt_in, tgt_mask)  # (N, V)
        total += float(sequence_loss(outputs, batch.tgt_out[tgt_mask], data.pad_id, 0.0,
                                     log_probs=model.outputs_log_probs))
        tokens += batch.n_tgt_tokens
    loss = total / max(tokens, 1)
    return {"loss": loss, "ppl": float(torch.tensor(loss).exp())}


@dataclass
class Decoded:
    hypotheses: list[str]  # detokenized, in split order
    token_ids: list[list[int]]
    seconds: float
    # With n_best > 1: per sentence, its n best (score, detokenized hypothesis), best first.
    n_best: list[list[tuple[float, str]]] = field(default_factory=list)


def search(model: torch.nn.Module, batch: Batch, data: TaskData, decoding: Any, autocast: Any,
           beam: int, return_attention: bool = False, n_best: int = 1, drop_finished: bool = True) -> Hypotheses:
    """Greedy (``beam`` 1) or beam search over one batch under ``autocast``, with the ``decoding`` length rules.

    ``n_best`` > 1 (beam search only) returns each sentence's n best hypotheses, best first.
    """
    common = dict(bos_id=data.bos_id, eos_id=data.eos_id, max_len_a=decoding.max_len_a,
                  max_len_b=decoding.max_len_b, min_len=decoding.min_len, return_attention=return_attention,
                  drop_finished=drop_finished)
    with autocast():
        if beam == 1:
            return greedy_search(model, batch.src, batch.src_mask, **common)
        return beam_search(model, batch.src, batch.src_mask, beam_size=beam,
                           length_penalty=decoding.length_penalty, n_best=n_best, **common)


def batch_tokens_key(beam: int) -> str:
    """The decoding key that sizes batches at this beam: ``batch_tokens`` (greedy) or ``beam_batch_tokens``."""
    return "batch_tokens" if beam == 1 else "beam_batch_tokens"


def source_tokens_per_batch(decoding: Any, beam: int) -> int:
    """Padded source tokens a decoding batch may hold: the batch key's tokens shared by the ``beam`` rows of
    every sentence."""
    return max(decoding[batch_tokens_key(beam)] // beam, 1)


@torch.inference_mode()
def decode_split(model: torch.nn.Module, data: TaskData, split: str, decoding: Any, device: torch.device,
                 autocast: Any, *, beam_size: int | None = None, limit: int = 0, n_best: int = 1,
                 plan: list[Any] | None = None, drop_finished: bool = True) -> Decoded:
    """Greedy (beam 1) or beam search over a split, batched by length; outputs back in split order.

    ``plan``: other batches (arrays of example indices below ``limit``) instead of the length-sorted ones.
    ``drop_finished=False``: finished sentences stay in the batch (the bench's baseline; the same outputs).
    """
    model.eval()
    beam = beam_size or decoding.beam_size
    n = min(limit, len(data.split(split))) if limit else len(data.split(split))
    out: list[list[int]] = [[] for _ in range(n)]
    ranked: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    start = time.perf_counter()
    if plan is None:
        plan = data.plan(split, source_tokens_per_batch(decoding, beam), shuffle=False, limit=limit)
    for batch in data.batches(split, plan):
        hyps = search(model, batch.to(device), data, decoding, autocast, beam, n_best=n_best,
                      drop_finished=drop_finished)
        scores = hyps.scores.tolist()
        for j, i in enumerate(batch.indices.tolist()):
            out[i] = hyps.tokens[j * n_best]
            ranked[i] = [(scores[k], hyps.tokens[k]) for k in range(j * n_best, (j + 1) * n_best)]
    seconds = time.perf_counter() - start
    decoded = Decoded(data.tokenizer.decode_tgt(out), out, seconds)
    if n_best > 1:
        texts = iter(data.tokenizer.decode_tgt([tokens for entries in ranked for _, tokens in entries]))
        decoded.n_best = [[(score, next(texts)) for score, _ in entries] for entries in ranked]
    return decoded


def n_best_tsv(index: int, entries: list[tuple[float, str]]) -> str:
    """Lines ``index<TAB>rank<TAB>score<TAB>hypothesis`` (rank from 1, best first) of one sentence's n best."""
    return "".join(f"{index}\t{rank}\t{score:.6f}\t{text}\n" for rank, (score, text) in enumerate(entries, start=1))


def score(data: TaskData, split: str, hypotheses: list[str]) -> dict[str, Any]:
    refs = data.split(split).references()[: len(hypotheses)]
    return metrics.task_metrics(str(data.task.kind.value), hypotheses, refs)


def choose_lengths(model: torch.nn.Module, data: TaskData, decoding: Any, device: torch.device, autocast: Any,
                   primary: str, hyps_dir: Path, suffix: str = "") -> tuple[Any, dict[str, Any]]:
    """The decoding settings the test splits get, and the record of the choice (empty when there was none):
    each listed length setting decodes the validation split (experiments/evaluation/lengths.py).

    ``suffix`` tells apart the outputs of another checkpoint of the same run (``-average``).
    """
    tried_settings = lengths.settings(decoding)
    if len(tried_settings) == 1:
        return decoding, {}
    beam = decoding.beam_size
    tried: list[dict[str, Any]] = []
    for n, (length_penalty, min_len) in enumerate(tried_settings, start=1):
        decoded = decode_split(model, data, "valid", lengths.with_lengths(decoding, length_penalty, min_len), device,
                               autocast)
        name = lengths.output_name(beam, length_penalty, min_len, suffix)
        write_text(hyps_dir / name, "\n".join(decoded.hypotheses) + "\n")
        value = score(data, "valid", decoded.hypotheses)[primary]
        tried.append({"length_penalty": length_penalty, "min_len": min_len, f"valid_{primary}": value,
                      "hyps": name, "decode_seconds": decoded.seconds})
        log.info("length choice %d/%d: beam %d, length_penalty %g, min_len %d: valid %s %.2f", n,
                 len(tried_settings), beam, length_penalty, min_len, primary, value)
    best = max(tried, key=lambda row: row[f"valid_{primary}"])  # max keeps the first of equal scores
    log.info("length choice: length_penalty %g, min_len %d decode the test splits", best["length_penalty"],
             best["min_len"])
    record = {"beam_size": beam, "length_penalty": best["length_penalty"], "min_len": best["min_len"],
              "tried": tried}
    return lengths.with_lengths(decoding, best["length_penalty"], best["min_len"]), record


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
    from experiments.core.config import validate
    from experiments.core.runtime import pick_device, set_threads, widen_onednn_cache

    state = checkpoint.load(target)
    cfg = OmegaConf.create(state["config"])
    overrides = overrides or []
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    sections = [o for o in overrides if isinstance(cfg.get(o.split("=", 1)[0]), DictConfig)]
    if sections:
        raise ConfigError(f"{sections[0]}: a checkpoint is evaluated with the config it was trained with; override "
                          "single keys (decoding.beam_size=5, model.dropout=0), not whole groups")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors name the key
        raise ConfigError(f"bad override in {overrides}: {e}") from None
    cfg = validate(cfg)
    run_dir = Path(target) if Path(target).is_dir() else Path(target).resolve().parent.parent
    data = TaskData(cfg.task, cfg.cache_dir, tokenizer_dir=run_dir / "tokenizer")
    device = pick_device(cfg.trainer.device)
    if device.type == "cpu":
        set_threads(cfg.trainer.num_threads)  # as the trainer does: torch's default leaves cores idle
        widen_onednn_cache()
    model = build_model(cfg.model, data).to(device)
    checkpoint.load_model(model, state, cfg.model, checkpoint.resolve(target))
    model.eval()
    return LoadedRun(cfg, data, model, device, run_dir, state["trainer"]["step"])


def evaluate_checkpoint(target: str, overrides: list[str]) -> dict[str, Any]:
    split = next((o.split("=", 1)[1] for o in overrides if o.startswith("split=")), "test")
    run = load_run(target, [o for o in overrides if not o.startswith("split=")])
    cfg, data, model, device, run_dir = run.cfg, run.data, run.model, run.device, run.run_dir
    data.split(split)  # unknown split names fail here, listing the valid ones
    autocast = autocast_for(device, cfg.trainer.precision)
    out = run_dir / "eval"
    decoding, choice = choose_lengths(model, data, cfg.decoding, device, autocast,
                                      metrics.PRIMARY[str(data.task.kind.value)], out)
    decoded = decode_split(model, data, split, decoding, device, autocast, n_best=decoding.n_best)
    result = {
        "split": split,
        "checkpoint": str(target),
        "step": run.step,
        "beam_size": decoding.beam_size,
        "length_penalty": decoding.length_penalty,
        "min_len": decoding.min_len,
        **({"length_choice": choice} if choice else {}),
        "n_best": decoding.n_best,
        "decode_seconds": decoded.seconds,
        **score(data, split, decoded.hypotheses),
    }
    stem = f"{split}-beam{cfg.decoding.beam_size}"
    write_text(out / f"{stem}.txt", "\n".join(decoded.hypotheses) + "\n")
    if decoded.n_best:
        write_text(out / f"{stem}.nbest.tsv", "".join(n_best_tsv(i, e) for i, e in enumerate(decoded.n_best)))
    write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    written = [f"{stem}.txt", *([f"{stem}.nbest.tsv"] if decoded.n_best else []), f"{stem}.json"]
    log.info("wrote %s/: %s", out, ", ".join(written))
    return result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: s2s-eval RUN_DIR_OR_CHECKPOINT [split=test] [decoding.beam_size=5] [decoding.n_best=1] "
              "[key=value ...]\n\nDecodes the split, writes <run>/eval/<split>-beam<K>.txt and .json (the metrics); "
              "decoding.n_best=N > 1 also writes <split>-beam<K>.nbest.tsv\n(sentence index, rank, score, "
              "hypothesis; N <= decoding.beam_size).\n'decoding.length_penalty_choices=[0.6,1.0,1.5]' "
              "'decoding.min_len_choices=[0,4]': decode the validation split with each pair first and use the best "
              "(eval/valid-beam<K>-lp<A>-min<M>.txt).")
        sys.exit(0 if args else 2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = evaluate_checkpoint(args[0], args[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, indent=2))

