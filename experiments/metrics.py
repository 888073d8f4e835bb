"""Evaluation metrics: sacreBLEU for translation, rouge-score for summarization.

References are given per sentence: ``refs[i]`` is the list of references for
hypothesis ``i`` (one or more; the count may differ between sentences, e.g. an
AESLC dev/test email has its subject plus three annotated subjects).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib.metadata import version

import numpy as np
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU, CHRF

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


def _rouge_table(hyps: Sequence[str], refs: Refs) -> np.ndarray:
    """Per-sentence F1 x 100, shape (n, len(ROUGE_TYPES)).

    ``score_multi`` takes, per ROUGE type, the reference with the highest F1; with
    a single reference it equals ``score``.
    """
    _check(hyps, refs)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
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


def _ci(samples: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, with the same order statistics as sacreBLEU."""
    samples = np.sort(samples)
    low = len(samples) // 40
    return float(samples[low]), float(samples[len(samples) - low - 1])


def paired_bootstrap(
    kind: str,
    hyps_a: Sequence[str],
    hyps_b: Sequence[str],
    refs: Refs,
    n_samples: int = 1000,
    seed: int = 12345,
) -> dict:
    """Paired bootstrap test (Koehn, 2004) of system A vs B on ``PRIMARY[kind]``.

    Both systems are scored on the same ``n_samples`` resamples of sentence
    indices, drawn exactly as sacreBLEU's ``PairedTest`` draws them, so for the
    same seed the BLEU intervals match ``sacrebleu --paired-bs``.

    ``p_value`` is the fraction of resamples in which the observed winner does
    not win: mean(sign(delta) * delta_k <= 0), with delta = a - b. A small value
    means the observed difference, in whichever direction, is reliable;
    identical systems give 1.0; 0.0 means below 1 / n_samples. It is one-sided in
    the direction of the winner, i.e. about half a two-sided p-value.

    BLEU resamples sacreBLEU's per-sentence sufficient statistics, so each
    resample is a true corpus BLEU, but does not use ``PairedTest``'s p-value:
    that one counts |delta_k| - mean|delta_k| > |delta| and so returns
    1 / (n_samples + 1) for two identical systems, which is not comparable to
    the ROUGE p-value. ROUGE resamples per-sentence ``rouge_mean`` scores (the
    corpus score is their mean).
    """
    _check_kind(kind)
    if len(hyps_a) != len(hyps_b):
        raise ValueError(f"system A has {len(hyps_a)} hypotheses but B has {len(hyps_b)}")
    _check(hyps_a, refs)
    n = len(refs)
    idxs = np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)
    # counts[k, i]: how often sentence i is drawn in resample k.
    counts = np.stack([np.bincount(row, minlength=n) for row in idxs])

    if kind == "translation":
        bleu, streams = BLEU(), _ref_streams(refs)

        def score(hyps: Sequence[str]) -> tuple[float, np.ndarray]:
            stats = np.asarray(bleu._extract_corpus_statistics(hyps, streams), dtype=np.int64)
            resampled = [bleu._compute_score_from_stats(s).score for s in counts @ stats]
            return bleu._compute_score_from_stats(stats.sum(0)).score, np.asarray(resampled)
    else:

        def score(hyps: Sequence[str]) -> tuple[float, np.ndarray]:
            per_sentence = _rouge_table(hyps, refs).mean(axis=1)
            return per_sentence.mean(), counts @ per_sentence / n

    a, samples_a = score(hyps_a)
    b, samples_b = score(hyps_b)
    delta = a - b
    p_value = np.mean(np.sign(delta) * (samples_a - samples_b) <= 0)
    return {
        "metric": PRIMARY[kind],
        "a": float(a),
        "b": float(b),
        "delta": float(delta),
        "p_value": float(p_value),
        "a_ci": _ci(samples_a),
        "b_ci": _ci(samples_b),
    }


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
