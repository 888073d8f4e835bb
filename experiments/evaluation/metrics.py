"""Evaluation metrics: sacreBLEU for translation, rouge-score for summarization.

References are given per sentence: ``refs[i]`` is the list of references for
hypothesis ``i`` (one or more; the count may differ between sentences, e.g. an
AESLC dev/test email has its subject plus three annotated subjects).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric, Score, Signature
from sacrebleu.significance import PairedTest

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

Refs = Sequence[Sequence[str]]

# Metric used for early stopping, model selection and significance tests.
PRIMARY = {"translation": "bleu", "summarization": "rouge_mean"}

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
ROUGE_SIGNATURE = (
    f"rouge-score {version('rouge-score')}|stem:yes|lsum-split:[.!?]+space"
    "|multiref:max-f1|agg:mean-f1"
)


def _check(hyps: Sequence[str], refs: Refs) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} reference lists")
    if not hyps:
        raise ValueError("cannot score an empty corpus")
    missing = [i for i, r in enumerate(refs) if not r]
    if missing:
        raise ValueError(f"sentences without any reference: {missing[:10]}")


def _ref_streams(refs: Refs) -> list[list[str | None]]:
    """Transpose per-sentence references into sacreBLEU's reference streams.

    sacreBLEU needs equally long streams, so sentences with fewer references are
    padded with None, which sacreBLEU drops per sentence (its supported way to
    have variable reference counts; the signature then says ``nrefs:var``). An
    empty string would instead count as a real, empty reference and skew the
    brevity penalty.
    """
    width = max(map(len, refs))
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


def corpus_bleu(hyps: Sequence[str], refs: Refs) -> dict:
    """Standard detokenized sacreBLEU (mixed case, 13a tokenizer) plus chrF."""
    _check(hyps, refs)
    streams = _ref_streams(refs)
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hyps, streams).score
    chrf_score = chrf.corpus_score(hyps, streams).score
    return {
        "bleu": float(bleu_score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf": float(chrf_score),
        "chrf_signature": str(chrf.get_signature()),
    }


def _split_sentences(text: str) -> str:
    """Put one sentence per line, since rougeLsum takes newlines as sentence ends.

    A boundary is whitespace after '.', '!' or '?'; existing newlines stay. This
    avoids nltk's punkt data; abbreviations such as "Mr." split spuriously, which
    only affects rougeLsum and does so equally for every system.
    """
    return _SENTENCE_END.sub("\n", text.strip())


def rouge_scorer() -> RougeScorer:
    """rouge-score's scorer for ``ROUGE_TYPES``.

    Imported on first use: rouge-score pulls in nltk and scipy, 3 seconds of
    every process's start, which translation never needs.
    """
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _rouge_table(hyps: Sequence[str], refs: Refs) -> np.ndarray:
    """Per-sentence F1 x 100, shape (n, len(ROUGE_TYPES)).

    ``score_multi`` takes, per ROUGE type, the reference with the highest F1; with
    a single reference it equals ``score``.
    """
    _check(hyps, refs)
    scorer = rouge_scorer()
    rows = []
    for hyp, sent_refs in zip(hyps, refs):
        scores = scorer.score_multi(
            [_split_sentences(r) for r in sent_refs], _split_sentences(hyp)
        )
        rows.append([scores[t].fmeasure for t in ROUGE_TYPES])
    return 100.0 * np.asarray(rows)


def rouge(hyps: Sequence[str], refs: Refs) -> dict:
    """Sentence-averaged ROUGE F1 (x100) and ``rouge_mean``, the mean of the three."""
    means = _rouge_table(hyps, refs).mean(axis=0)
    out: dict = {t: float(m) for t, m in zip(ROUGE_TYPES, means)}
    out["rouge_mean"] = float(means.mean())
    out["rouge_signature"] = ROUGE_SIGNATURE
    return out


_TASKS: dict[str, Callable[[Sequence[str], Refs], dict]] = {
    "translation": corpus_bleu,
    "summarization": rouge,
}


def _check_kind(kind: str) -> None:
    if kind not in _TASKS:
        raise ValueError(f"unknown task kind {kind!r}; valid kinds: {', '.join(_TASKS)}")


def task_metrics(kind: str, hyps: Sequence[str], refs: Refs) -> dict:
    """All metrics of a task kind ("translation" or "summarization")."""
    _check_kind(kind)
    return _TASKS[kind](hyps, refs)


class RougeSignature(Signature):
    """sacreBLEU's signature class, saying what our ROUGE computes instead of sacreBLEU's metric settings."""

    def __init__(self, args: dict) -> None:
        super().__init__(args)
        self.info = {"nrefs": self.info["nrefs"], "bs": self.info["bs"], "seed": self.info["seed"], "stem": True,
                     "lsum-split": "[.!?]+space", "multiref": "max-f1", "agg": "mean-f1",
                     "version": f"rouge-score-{version('rouge-score')}"}
        self._abbr.update({k: k for k in self.info})


class RougeMean(Metric):
    """``rouge_mean`` as a sacreBLEU metric, so that sacreBLEU's own significance tests resample it.

    A sentence's statistics are its three F1 scores (x100) and a count; a
    corpus score is the mean over sentences of their mean, as ``rouge``.
    """

    _SIGNATURE_TYPE = RougeSignature

    def __init__(self) -> None:
        super().__init__()
        self._scorer = rouge_scorer()

    def _preprocess_segment(self, sent: str) -> str:
        return _split_sentences(sent)

    def _extract_reference_info(self, refs: Sequence[str]) -> dict:
        return {"refs": list(refs)}

    def _compute_segment_statistics(self, hypothesis: str, ref_kwargs: dict) -> list[float]:
        scores = self._scorer.score_multi(ref_kwargs["refs"], hypothesis)
        return [100.0 * scores[t].fmeasure for t in ROUGE_TYPES] + [1.0]

    def _compute_score_from_stats(self, stats: Sequence[float]) -> Score:
        stats = np.asarray(stats, dtype=np.float64)
        return Score("ROUGE-mean", float(stats[:-1].mean() / stats[-1]))

    def _aggregate_and_compute(self, stats: list[list[float]]) -> Score:
        return self._compute_score_from_stats(np.sum(np.asarray(stats, dtype=np.float64), axis=0))


# The metrics each task's paired test compares, as sacreBLEU metric objects.
SIGNIFICANCE_METRICS: dict[str, dict[str, Callable[[], Metric]]] = {
    "translation": {"bleu": BLEU, "chrf": CHRF},
    "summarization": {"rouge_mean": RougeMean},
}
SIGNIFICANCE_TEST = "sacreBLEU's paired bootstrap resampling (its PairedTest, as `sacrebleu --paired-bs`)"


@contextlib.contextmanager
def _sacrebleu_run(seed: int | None) -> Iterator[None]:
    """One quiet sacreBLEU test: it reads its seed from SACREBLEU_SEED (default 12345) and logs every step."""
    before = os.environ.get("SACREBLEU_SEED")
    if seed is not None:
        os.environ["SACREBLEU_SEED"] = str(seed)
    sacrelogger = logging.getLogger("sacrebleu")
    level = sacrelogger.level
    sacrelogger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sacrelogger.setLevel(level)
        if before is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = before


def paired_bootstrap(
    kind: str,
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    refs: Refs,
    n_samples: int = 1000,
    seed: int | None = None,
) -> dict:
    """sacreBLEU's paired bootstrap test (Koehn, 2004) of system B against baseline A, on every metric of the task.

    BLEU and chrF are sacreBLEU's own metrics and the test is sacreBLEU's
    ``PairedTest`` (what ``sacrebleu REF -i A B -m bleu chrf --paired-bs``
    runs), so scores, bootstrap means, 95% intervals and p-values are the
    ones it prints; ROUGE (``rouge_mean``) goes through the same code as a
    sacreBLEU metric (``RougeMean``). ``seed``: sacreBLEU's resampling seed
    (None: ``$SACREBLEU_SEED``, else 12345, as the command line).

    The p-value is sacreBLEU's: with d_k = |B_k - A_k| on resample k and
    d = |B - A|, p = (#{k: d_k - mean(d_k) > d} + 1) / (n_samples + 1), the
    chance of a difference this large if both systems came from one process.
    It is two-sided, and its smallest value is 1 / (n_samples + 1), which it
    also takes for two identical systems (every d_k is 0): read it together
    with the delta.
    """
    _check_kind(kind)
    if len(hyps_a) != len(hyps_b):
        raise ValueError(f"system A has {len(hyps_a)} hypotheses but B has {len(hyps_b)}")
    _check(hyps_a, refs)
    names = list(SIGNIFICANCE_METRICS[kind])
    metrics = {name: make() for name, make in SIGNIFICANCE_METRICS[kind].items()}
    with _sacrebleu_run(seed):
        test = PairedTest([("A", list(hyps_a)), ("B", list(hyps_b))], metrics, _ref_streams(refs), test_type="bs",
                          n_samples=n_samples)
        signatures, results = test()
    score_names = [k for k in results if k != "System"]  # sacreBLEU's names (BLEU, chrF2), in our order
    out: dict = {"test": SIGNIFICANCE_TEST, "n_samples": n_samples, "sentences": len(refs),
                 "seed": signatures[score_names[0]].info["seed"], "metrics": {}}
    for name, score_name in zip(names, score_names):
        a, b = results[score_name]
        out["metrics"][name] = {
            "a": float(a.score), "b": float(b.score), "delta": float(a.score - b.score), "p_value": float(b.p_value),
            "a_mean": float(a.mean), "a_ci": float(a.ci), "b_mean": float(b.mean), "b_ci": float(b.ci),
            "signature": str(signatures[score_name]),
        }
    return out


def length_buckets(
    src_lengths: Sequence[int],
    kind: str,
    hyps: Sequence[str],
    refs: Refs,
    edges: Sequence[int] = (10, 20, 30, 40, 50),
) -> list[dict]:
    """``PRIMARY[kind]`` per source-length bucket (corpus-level within each bucket).

    ``edges`` are increasing exclusive upper bounds: the default gives buckets
    0-9, 10-19, ..., 40-49, 50+. Lengths are in whatever unit the caller counts;
    summarization sources need larger edges. Empty buckets are kept, with score
    None, so that tables of different systems line up.
    """
    _check_kind(kind)
    _check(hyps, refs)
    if len(src_lengths) != len(hyps):
        raise ValueError(f"got {len(src_lengths)} source lengths but {len(hyps)} hypotheses")
    if any(e <= prev for prev, e in zip((0, *edges), edges)):
        raise ValueError(f"edges must be positive and strictly increasing, got {edges}")
    metric = PRIMARY[kind]
    buckets = []
    for lo, hi in zip((0, *edges), (*edges, None)):
        label = f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
        members = [i for i, n in enumerate(src_lengths) if n >= lo and (hi is None or n < hi)]
        result = (
            task_metrics(kind, [hyps[i] for i in members], [refs[i] for i in members])[metric]
            if members
            else None
        )
        buckets.append({"bucket": label, "count": len(members), "metric": metric, "score": result})
    return buckets
