"""``s2s-score``: the log-probabilities of given outputs under a run or an ensemble (forced decoding).

    s2s-score RUN --src test.de --tgt test.en > scores.jsonl
    s2s-score GRU_RUN TRANSFORMER_RUN --src test.de --tgt contrastive.en --out scores.jsonl

Each target line is tokenized with the run's tokenizer and fed to the decoder as
its previous tokens (teacher forcing). One JSON object per line pair: ``index``
(from 0), ``score`` (natural-log probability of the pieces and the final eos),
``n_tokens``, ``mean`` (score / n_tokens), ``pieces`` and ``token_logprobs``.
A summary (total, per token, perplexity) goes to stderr. These are the
log-probabilities beam and greedy search add up, so the score of a model's own
greedy output is greedy search's score (tested); scoring a reference against a
contrastive variant of it is contrastive evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from experiments.core.atomic import write_report
from experiments.data.batching import collate, make_batches
from experiments.evaluation.builders import autocast_for
from experiments.core.errors import DataError, UserError
from experiments.evaluation.ensemble import load_models
from experiments.evaluation.evaluate import LoadedRun
from experiments.data.textfiles import TextFile, read_lines
from models.interface import log_probs


@dataclass
class Forced:
    token_logprobs: list[list[float]]  # per pair: one per target piece, then eos
    # Per pair, if asked for: the cross-attention of each target step (eos included) over the real
    # source positions, as Hypotheses.attention: GRU (T+1, S), Transformer (L, H, T+1, S), ensemble (N, T+1, S).
    attention: list[Tensor]


def check_source_lengths(where: str, src_ids: list[list[int]], limit: int) -> None:
    """A source longer than the run's ``task.max_src_len`` is an error, not a silent truncation."""
    for number, ids in enumerate(src_ids, start=1):
        if len(ids) > limit:
            raise DataError(f"{where}, line {number}: {len(ids)} pieces, more than the model's limit of {limit} "
                            "(task.max_src_len of the run): shorten or split the line")


@torch.inference_mode()
def forced_decode(run: LoadedRun, src_ids: list[list[int]], tgt_ids: list[list[int]],
                  return_attention: bool = False) -> Forced:
    """Teacher-forced log-probabilities of every target piece (and eos) given its source, batched by length."""
    data, model = run.data, run.model
    src_lens = np.array([len(s) + 1 for s in src_ids])
    tgt_lens = np.array([len(t) + 1 for t in tgt_ids])
    budget = max(run.cfg.decoding.batch_tokens, int(np.maximum(src_lens, tgt_lens).max()))
    autocast = autocast_for(run.device, run.cfg.trainer.precision)
    logprobs: list[list[float]] = [[] for _ in src_ids]
    attention: list[Tensor] = [torch.empty(0) for _ in src_ids] if return_attention else []
    model.eval()
    for indices in make_batches(src_lens, tgt_lens, budget, shuffle=False):
        batch = collate([src_ids[i] for i in indices], [tgt_ids[i] for i in indices], indices,
                        max_src_len=int(src_lens.max()), max_tgt_len=int(tgt_lens.max()),
                        pad_id=data.pad_id, bos_id=data.bos_id, eos_id=data.eos_id).to(run.device)
        with autocast():
            outputs, weights = model(batch.src, batch.src_mask, batch.tgt_in)  # (B, T, V), (B, [..,] T, S)
        logp = log_probs(model, outputs).gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(indices.tolist()):
            n = int(tgt_lens[i])
            logprobs[i] = logp[row, :n].tolist()
            if return_attention:
                attention[i] = weights[row][..., :n, :][..., batch.src_mask[row]].float().cpu()
    return Forced(logprobs, attention)


def read_pairs(src: Path, tgt: Path) -> tuple[list[str], list[str]]:
    """Line-aligned source and target files of valid UTF-8 text; a target line may be empty (an empty output)."""
    for path in (src, tgt):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    sources, targets = read_lines(src), [text for _, text in TextFile(tgt)]
    if len(sources) != len(targets):
        raise DataError(f"{src} has {len(sources)} lines but {tgt} has {len(targets)}: give line-aligned files")
    return sources, targets


def score_files(targets: list[str], src: Path, tgt: Path) -> tuple[list[dict], dict]:
    """Per-pair records and the corpus summary."""
    run, members = load_models(targets)
    sources, outputs = read_pairs(src, tgt)
    tokenizer = run.data.tokenizer
    src_ids = tokenizer.encode_src(sources)
    check_source_lengths(str(src), src_ids, run.cfg.task.max_src_len)
    tgt_ids = tokenizer.encode_tgt(outputs)
    forced = forced_decode(run, src_ids, tgt_ids)
    records = []
    for i, (ids, logprobs) in enumerate(zip(tgt_ids, forced.token_logprobs)):
        total = sum(logprobs)
        records.append({"index": i, "score": total, "n_tokens": len(logprobs), "mean": total / len(logprobs),
                        "pieces": tokenizer.tgt_pieces(ids + [run.data.eos_id]), "token_logprobs": logprobs})
    total = sum(r["score"] for r in records)
    tokens = sum(r["n_tokens"] for r in records)
    summary = {"runs": targets, "sentences": len(records), "tokens": tokens, "total_logprob": total,
               "per_token": total / tokens, "perplexity": math.exp(-total / tokens)}
    return records, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-score", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder or checkpoint; several: an ensemble")
    parser.add_argument("--src", type=Path, required=True, help="source sentences, one a line")
    parser.add_argument("--tgt", type=Path, required=True, help="the outputs to score, line-aligned with --src")
    parser.add_argument("--out", type=Path, help="JSON-lines file to write (default or -: standard output)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        records, summary = score_files(args.runs, args.src, args.tgt)
        write_report(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    summary["command"] = shlex.join(["s2s-score", *(sys.argv[1:] if argv is None else argv)])
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
