"""The test metric by source-length bucket, with each bucket's size and a 95% bootstrap interval.

The point estimate is ``metrics.length_buckets`` (a corpus score over the
bucket's sentences). The interval resamples the bucket's sentences with
replacement (1000 times, fixed seed) and takes the 2.5/97.5 percentiles: BLEU
from per-sentence sacreBLEU statistics summed per resample (each resample a
true corpus BLEU), ROUGE as the mean of per-sentence scores. A bucket of four
sentences gets the wide interval it deserves.
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sacrebleu.metrics import BLEU

from experiments.core.plotting import plt, save_figure
from experiments.evaluation import metrics

N_SAMPLES = 1000


def per_sentence(kind: str, hyps: Sequence[str], refs: metrics.Refs) -> tuple[np.ndarray, Any]:
    """Per-sentence statistics to resample, and how to turn a sum of them into the corpus score."""
    if kind == "translation":
        bleu = BLEU()
        stats = np.asarray(bleu._extract_corpus_statistics(list(hyps), metrics._ref_streams(refs)), dtype=np.int64)
        return stats, lambda total, n: bleu._compute_score_from_stats(list(total)).score
    scores = metrics._rouge_table(hyps, refs).mean(axis=1)[:, None]
    return scores, lambda total, n: float(total[0] / n)


def interval(stats: np.ndarray, to_score: Any, members: list[int], seed: int = 12345) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(members), size=(N_SAMPLES, len(members)))
    chosen = stats[np.asarray(members)]
    samples = np.sort([to_score(chosen[row].sum(0), len(members)) for row in picks])
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def by_length(kind: str, lengths: list[int], runs_hyps: list[list[str]], refs: metrics.Refs,
              edges: Sequence[int]) -> list[dict[str, Any]]:
    """Buckets with their count and, averaged over the seeds' outputs, the score and the interval ends."""
    per_seed = []
    for hyps in runs_hyps:
        buckets = metrics.length_buckets(lengths, kind, hyps, refs, edges=edges)
        stats, to_score = per_sentence(kind, hyps, refs)
        for lo, hi, bucket in zip((0, *edges), (*edges, None), buckets):
            members = [i for i, n in enumerate(lengths) if n >= lo and (hi is None or n < hi)]
            bucket["low"], bucket["high"] = interval(stats, to_score, members) if members else (None, None)
        per_seed.append(buckets)
    out = []
    for i, bucket in enumerate(per_seed[0]):
        if bucket["score"] is None:
            out.append({**bucket, "low": None, "high": None})
            continue
        out.append({**bucket, **{k: statistics.fmean(s[i][k] for s in per_seed) for k in ("score", "low", "high")}})
    return out


def plot_lengths(title: str, kind: str, lengths: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{b['bucket']}\n(n={b['count']})" for b in next(iter(lengths.values()))]
    width = 0.8 / max(len(lengths), 1)
    for k, (model, rows) in enumerate(lengths.items()):
        xs = [i + (k - (len(lengths) - 1) / 2) * width for i, b in enumerate(rows) if b["score"] is not None]
        ys = [b["score"] for b in rows if b["score"] is not None]
        errors = [[b["score"] - b["low"] for b in rows if b["score"] is not None],
                  [b["high"] - b["score"] for b in rows if b["score"] is not None]]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, linestyle="-", label=model)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("source length in words (n = test sentences in the bucket)")
    ax.set_ylabel(f"test {metrics.PRIMARY[kind]}")
    ax.set_ylim(bottom=0)
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=9)  # a study's long title would run off the figure
    ax.legend(title="mean over seeds; bars: 95% bootstrap", title_fontsize=8, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
