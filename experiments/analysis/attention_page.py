"""The self-contained HTML page of ``s2s-attention --html``: data as JSON, drawn by a plain script.

The page is ``web/attention.html`` with ``web/attention.css``, ``web/attention.js``
and the JSON built here pasted in: no network, no CDN, it opens from disk. The
script draws every map in the browser from the raw weights (views and word
merging as in ``experiments.analysis.attention_views``); the per-head diagnostics and the
sentence scores come from here.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from sacrebleu import sentence_bleu, sentence_chrf

from experiments.evaluation import metrics
from experiments.analysis.attention_plots import CMAP
from experiments.analysis.attention_views import head_stats, word_groups

if TYPE_CHECKING:
    from experiments.analysis.attention import AttentionMap, Example

WEB = Path(__file__).with_name("web")
DIGITS = 3  # weights are rounded to this many decimals in the page


@dataclass
class PageRun:
    """What the page says about a run."""

    title: str  # "GRU (bahdanau attention), seed 1"
    tag: str  # the file-name tag, "gru-seed1-step1000"
    path: str  # the run folder or checkpoint given on the command line
    step: int
    max_steps: int
    layers: int  # decoder layers x heads of a Transformer; 0 x 0 for the GRU
    heads: int
    beam: int  # 1: greedy
    decoding: str  # "beam 5, length penalty 1.0, ..."


def sentence_scores(kind: str, hypothesis: str, refs: list[str]) -> dict[str, float]:
    """Sentence-level sacreBLEU and chrF (translation) or ROUGE F1 (summarization), x 100; {} without references."""
    if not refs:
        return {}
    if kind == "translation":
        return {"BLEU": sentence_bleu(hypothesis, refs).score, "chrF": sentence_chrf(hypothesis, refs).score}
    rouge = metrics.rouge([hypothesis], [refs])
    return {"R-1": rouge["rouge1"], "R-2": rouge["rouge2"], "R-Lsum": rouge["rougeLsum"]}


def _rounded(array: np.ndarray) -> Any:
    return np.round(array.astype(np.float64), DIGITS).tolist()


def output_data(amap: AttentionMap, kind: str, refs: list[str]) -> dict[str, Any]:
    """One run's output for one example: hypothesis, scores, pieces, word groups, weights, per-head diagnostics,
    and with copy p_gen and the Transformer's copy distribution."""
    entropy, eos = head_stats(amap.weights)
    src_groups, src_words = word_groups(amap.src_labels)
    tgt_groups, tgt_words = word_groups(amap.tgt_labels)
    data = {
        "hyp": amap.hypothesis,
        "scores": {k: round(v, 1) for k, v in sentence_scores(kind, amap.hypothesis, refs).items()},
        "src": amap.src_labels,
        "tgt": amap.tgt_labels,
        "srcWords": {"groups": src_groups, "words": src_words},
        "tgtWords": {"groups": tgt_groups, "words": tgt_words},
        "w": _rounded(amap.weights),  # GRU [T][S]; Transformer [L][H][T][S]
        "entropy": _rounded(entropy),  # bits; a number (GRU) or [L][H]
        "eos": _rounded(eos),  # share of the weight on the source </s>
    }
    if amap.p_gen is not None:  # a run with copy; without, the data is as before copy was shown
        data["pgen"] = _rounded(amap.p_gen)  # [T]: probability of generating from the vocabulary
    if amap.copy is not None:
        data["copy"] = _rounded(amap.copy)  # [T][S]: the Transformer's copy attention
    return data


def colormap(n: int = 64) -> list[str]:
    """The PNGs' colour map as ``n`` hex colours for weights 0..1, so that the page and the PNGs agree."""
    return [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps[CMAP](np.linspace(0.0, 1.0, n))]


def page_data(task: Any, split: dict[str, Any] | None, runs: list[PageRun], items: list[Example],
              maps: list[list[AttentionMap]], note: str, command: str) -> dict[str, Any]:
    """Everything the page shows; ``maps[r][i]`` is run r's map of example i."""
    kind = str(getattr(task.kind, "value", task.kind))
    where = split["name"] if split else "given text"
    return {
        "title": f"Cross-attention: {task.name}, {where}",
        "note": note,
        "command": command,
        "colormap": colormap(),
        "task": {"name": task.name, "kind": kind},
        "split": split,
        "runs": [{"title": r.title, "tag": r.tag, "path": r.path, "step": r.step, "maxSteps": r.max_steps,
                  "layers": r.layers, "heads": r.heads, "beam": r.beam, "decoding": r.decoding} for r in runs],
        "examples": [{"name": ex.name, "label": ex.label, "src": ex.src, "refs": ex.refs,
                      "outputs": [output_data(run_maps[i], kind, ex.refs) for run_maps in maps]}
                     for i, ex in enumerate(items)],
    }


def script_json(data: dict[str, Any]) -> str:
    """JSON that is safe inside ``<script>``: every ``<`` escaped, so no ``</script>`` and no ``<!--``."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def render(data: dict[str, Any]) -> str:
    """The page: the template with its style, script and data pasted in (in one pass, so nothing is re-expanded)."""
    parts = {
        "TITLE": html.escape(data["title"]),
        "CSS": (WEB / "attention.css").read_text(encoding="utf-8"),
        "JS": (WEB / "attention.js").read_text(encoding="utf-8"),
        "DATA": script_json(data),
    }
    template = (WEB / "attention.html").read_text(encoding="utf-8")
    return re.sub(r"@@(TITLE|CSS|JS|DATA)@@", lambda m: parts[m[1]], template)
