"""Views of a cross-attention map, word-level merging and per-head diagnostics.

Shared by the PNGs (``experiments.analysis.attention_plots``) and the HTML page
(``experiments.analysis.attention_page``, whose script computes the same views in the
browser). A Transformer map is (L, H, T, S): decoder layers, heads, output
steps, source positions; a GRU map is (T, S). Every row sums to 1.

Views, named as on the command line (``--views``) and in file names, layers
and heads counted from 1:

    last-layer    mean over the heads of the last decoder layer (the default picture)
    all-layers    mean over all layers and heads
    layerN        mean over the heads of layer N
    layerN-headM  one head
    grid          every layer x head, as small multiples
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from experiments.core.errors import UserError

EOS = "</s>"
WORD_START = "\u2581"  # SentencePiece's "▁": the piece starts a new word
_VIEW = re.compile(r"last-layer|all-layers|grid|layer(\d+)(?:-head(\d+))?")


@dataclass(frozen=True)
class View:
    kind: str  # "last-layer", "all-layers", "layer", "head" or "grid"
    layer: int | None = None  # 0-based, for "layer" and "head"
    head: int | None = None  # 0-based, for "head"

    @property
    def name(self) -> str:
        """The command-line and file-name form, 1-based."""
        if self.kind == "layer":
            return f"layer{self.layer + 1}"
        if self.kind == "head":
            return f"layer{self.layer + 1}-head{self.head + 1}"
        return self.kind

    def describe(self, layers: int, heads: int) -> str:
        if self.kind == "last-layer":
            return f"last layer ({layers} of {layers}), mean of its {heads} heads"
        if self.kind == "all-layers":
            return f"mean of all {layers} layers x {heads} heads"
        if self.kind == "layer":
            return f"layer {self.layer + 1} of {layers}, mean of its {heads} heads"
        if self.kind == "head":
            return f"layer {self.layer + 1} of {layers}, head {self.head + 1} of {heads}"
        return f"{layers} layers x {heads} heads"


def parse_view(text: str) -> View:
    match = _VIEW.fullmatch(text)
    if not match or (match[1] and int(match[1]) < 1) or (match[2] and int(match[2]) < 1):
        raise UserError(f"unknown view {text!r}: use last-layer, all-layers, grid, layerN or layerN-headM "
                        "(N, M counted from 1)")
    if match[2]:
        return View("head", int(match[1]) - 1, int(match[2]) - 1)
    if match[1]:
        return View("layer", int(match[1]) - 1)
    return View(text)


def check_view(view: View, layers: int, heads: int) -> None:
    """A clear error for a layer or head the model does not have."""
    if view.layer is not None and view.layer >= layers:
        raise UserError(f"view {view.name}: the Transformer has {layers} decoder layers")
    if view.head is not None and view.head >= heads:
        raise UserError(f"view {view.name}: the Transformer has {heads} heads per layer")


def select(weights: np.ndarray, view: View) -> np.ndarray:
    """(T, S) for a single view of (L, H, T, S) weights; the grid view is the weights themselves."""
    if view.kind == "grid":
        return weights
    if view.kind == "all-layers":
        return weights.mean(axis=(0, 1))
    if view.kind == "head":
        return weights[view.layer, view.head]
    return weights[-1 if view.kind == "last-layer" else view.layer].mean(axis=0)


def head_stats(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entropy in bits and share of mass on the source ``</s>`` (last column), each the mean over output rows.

    For (..., T, S) weights the results are (...): one value per head of an (L, H, T, S) map. A head
    near the maximum entropy (log2 S, uniform) or with most of its mass on ``</s>`` attends to nothing
    in particular.
    """
    w = weights.astype(np.float64)
    entropy = -(w * np.log2(np.where(w > 0, w, 1.0))).sum(axis=-1)  # (..., T)
    return entropy.mean(axis=-1), w[..., -1].mean(axis=-1)


def word_groups(pieces: list[str]) -> tuple[list[int], list[str]]:
    """The word index of every piece (a word starts at a "▁" piece and at ``</s>``) and the words.

    ``["▁Ein", "▁Spiel", "haus", ".", "</s>"]`` -> ``[0, 1, 1, 1, 2]``, ``["Ein", "Spielhaus.", "</s>"]``.
    """
    groups: list[int] = []
    words: list[str] = []
    for piece in pieces:
        if not words or piece.startswith(WORD_START) or piece == EOS:
            words.append("")
        groups.append(len(words) - 1)
        words[-1] += piece
    return groups, [w.removeprefix(WORD_START) or WORD_START for w in words]


def merge_words(matrix: np.ndarray, tgt_groups: list[int], src_groups: list[int]) -> np.ndarray:
    """Word-level (T_words, S_words) map of a (T, S) piece map: summed over a source word's pieces,
    averaged over an output word's pieces (rows still sum to 1)."""
    src = np.zeros((matrix.shape[1], max(src_groups) + 1))
    src[np.arange(len(src_groups)), src_groups] = 1.0  # (S, S_words): one-hot word of each piece
    tgt = np.zeros((max(tgt_groups) + 1, matrix.shape[0]))
    tgt[tgt_groups, np.arange(len(tgt_groups))] = 1.0  # (T_words, T)
    tgt /= tgt.sum(axis=1, keepdims=True)
    return tgt @ matrix @ src
