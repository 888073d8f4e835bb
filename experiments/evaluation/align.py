"""Word alignments from cross-attention: the library under ``s2s-align`` (experiments/analysis/align_command.py).

The attention is the decoder's while it scores the given target (teacher
forcing, as ``s2s-score``): row t is the step that predicts target piece t.
Pieces are merged back into words (a SentencePiece piece starting with "▁"
starts a word; the words are the whitespace-separated tokens of the text): a
source word's weight is the sum over its pieces, a target word's row the mean
of its pieces' rows, and the eos row and column are dropped. Each target word
is then linked to the source word it attends to most: ``i-j`` with i the source
and j the target word, from 0. Maps: the GRU's one map (``attention``); for the
Transformer ``mean`` (over every decoder layer and head, the default) or
``L<l>H<h>`` (layer l, head h, from 1).
"""

from __future__ import annotations


import numpy as np
from torch import Tensor

from experiments.evaluation.evaluate import LoadedRun
from experiments.evaluation.score import check_source_lengths, forced_decode

Links = set[tuple[int, int]]  # (source word, target word)


def word_ids(pieces: list[str]) -> list[int]:
    """The word of each piece: a piece starting with "▁" (SentencePiece's space) begins a new word."""
    ids, word = [], -1
    for k, piece in enumerate(pieces):
        word += k == 0 or piece.startswith("\u2581")
        ids.append(word)
    return ids


def _one_hot(ids: list[int]) -> np.ndarray:
    return np.eye(ids[-1] + 1)[ids]  # (pieces, words)


def word_links(weights: np.ndarray, src_pieces: list[str], tgt_pieces: list[str]) -> Links:
    """Hard word alignment from one piece-level map (T + 1, S + 1): eos row and column last, dropped."""
    if not src_pieces or not tgt_pieces:
        return set()
    w = weights[: len(tgt_pieces), : len(src_pieces)]
    src, tgt = _one_hot(word_ids(src_pieces)), _one_hot(word_ids(tgt_pieces))
    words = (tgt.T @ (w @ src)) / tgt.sum(axis=0)[:, None]  # (target words, source words)
    return {(int(i), j) for j, i in enumerate(words.argmax(axis=1))}


def pharaoh(links: Links) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def parse_pharaoh(line: str) -> Links:
    return {(int(i), int(j)) for i, j in (link.split("-") for link in line.split())}


def named_maps(weights: Tensor) -> dict[str, np.ndarray]:
    """One model's maps by name: GRU (T, S) -> ``attention``; Transformer (L, H, T, S) -> ``mean`` and ``L<l>H<h>``."""
    w = weights.float().numpy()
    if w.ndim == 2:
        return {"attention": w}
    maps = {"mean": w.mean(axis=(0, 1))}
    maps.update({f"L{layer + 1}H{head + 1}": w[layer, head] for layer, head in np.ndindex(*w.shape[:2])})
    return maps


def member_weights(run: LoadedRun, label: str, weights: Tensor) -> dict[str, Tensor]:
    """A hypothesis's attention by model: an ensemble's split into its members', a single run's under ``label``."""
    split = getattr(run.model, "split_attention", None)
    return split(weights) if split else {label: weights}


def attention_links(run: LoadedRun, sources: list[str], targets: list[str], where: str) -> list[dict[str, Links]]:
    """Per pair, the word links of every map of ``run`` (one model) for the given target."""
    tok = run.data.tokenizer
    src_ids, tgt_ids = tok.encode_src(sources), tok.encode_tgt(targets)
    check_source_lengths(where, src_ids, run.cfg.task.max_src_len)
    forced = forced_decode(run, src_ids, tgt_ids, return_attention=True)
    out = []
    for s, t, weights in zip(src_ids, tgt_ids, forced.attention):
        src_pieces, tgt_pieces = tok.src_pieces(s), tok.tgt_pieces(t)
        out.append({name: word_links(w, src_pieces, tgt_pieces) for name, w in named_maps(weights).items()})
    return out
