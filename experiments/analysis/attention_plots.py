"""PNG heatmaps of an attention map: one picture per view, all on one colour scale (0 to 1, viridis).

Rows are the output pieces (ending in ``</s>``), columns the source pieces; with
``words`` both are merged into words (see ``attention_views.merge_words``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from experiments.core.atomic import atomic_path
from experiments.analysis.attention_views import View, head_stats, merge_words, select, word_groups

if TYPE_CHECKING:
    from experiments.analysis.attention import AttentionMap

CMAP = "viridis"
FONT = 9  # points; at 100 dpi about 12.5 px, legible at full size
CELL = (0.32, 0.28)  # inches per source column and per output row of a single map
SMALL_CELL = 0.16  # inches per cell of a grid panel


def wrapped(text: str, width_in: float) -> str:
    """``text`` with each line wrapped to a figure ``width_in`` inches wide (titles are not wrapped otherwise)."""
    chars = max(int(width_in * 72 / (0.6 * FONT)), 20)  # an average character is about 0.6 em wide
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def stats_text(weights: np.ndarray) -> str:
    entropy, eos = head_stats(weights)
    return f"{float(entropy):.2f} bits, {float(eos):.0%} on </s>"


def _labels(amap: AttentionMap, words: bool) -> tuple[list[str], list[str], list[int] | None, list[int] | None]:
    """Row and column labels, and the word groups to merge by (None for pieces)."""
    if not words:
        return amap.tgt_labels, amap.src_labels, None, None
    tgt_groups, tgt_words = word_groups(amap.tgt_labels)
    src_groups, src_words = word_groups(amap.src_labels)
    return tgt_words, src_words, tgt_groups, src_groups


def _draw(ax, matrix: np.ndarray, rows: list[str], cols: list[str]):
    image = ax.imshow(matrix, cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=FONT)
    ax.set_yticks(range(len(rows)), rows, fontsize=FONT)
    ax.tick_params(length=2, pad=2)
    return image


def _colorbar(fig: Figure, image, axes) -> None:
    bar = fig.colorbar(image, ax=axes, fraction=0.04, pad=0.02, aspect=30)
    bar.set_label("attention weight (each row sums to 1)", fontsize=FONT)
    bar.ax.tick_params(labelsize=FONT)


def single(matrix: np.ndarray, rows: list[str], cols: list[str], title: str) -> Figure:
    """One (T, S) map with every piece labelled, output down the side and source along the bottom."""
    fig = Figure(figsize=(2.6 + CELL[0] * len(cols), 2.2 + CELL[1] * len(rows)), layout="constrained")
    ax = fig.subplots()
    image = _draw(ax, matrix, rows, cols)
    ax.set_xlabel("source", fontsize=FONT)
    ax.set_ylabel("output", fontsize=FONT)
    ax.set_title(wrapped(f"{title}\n{stats_text(matrix)}", fig.get_figwidth() - 1.5), fontsize=FONT)
    _colorbar(fig, image, ax)
    return fig


def grid(weights: np.ndarray, rows: list[str], cols: list[str], title: str) -> Figure:
    """Every layer x head of (L, H, T, S) weights: shared axes (``subplots`` labels the outer panels only),
    one colour bar."""
    L, H, T, S = weights.shape
    fig = Figure(figsize=(1.6 + H * (0.3 + SMALL_CELL * S), 1.6 + L * (0.5 + SMALL_CELL * T)), layout="constrained")
    axes = fig.subplots(L, H, squeeze=False, sharex=True, sharey=True)
    fig.suptitle(wrapped(title, fig.get_figwidth() - 1.5), fontsize=FONT + 1)
    image = None
    for layer, head in np.ndindex(L, H):
        ax = axes[layer, head]
        image = _draw(ax, weights[layer, head], rows, cols)
        ax.set_title(f"layer {layer + 1} head {head + 1}\n{stats_text(weights[layer, head])}", fontsize=FONT - 1)
    fig.supxlabel("source", fontsize=FONT)
    fig.supylabel("output", fontsize=FONT)
    _colorbar(fig, image, axes)
    return fig


def figures(amap: AttentionMap, title: str, views: list[View], words: bool = False) -> dict[str, Figure]:
    """Figures by file-name suffix: ``{"": map}`` for the GRU, one per view for the Transformer
    (``{"last-layer": ..., "grid": ...}``); with ``words`` every suffix ends in ``words``."""
    rows, cols, tgt_groups, src_groups = _labels(amap, words)

    def merged(matrix: np.ndarray) -> np.ndarray:
        if not words:
            return matrix
        return np.stack([merge_words(m, tgt_groups, src_groups) for m in matrix.reshape(-1, *matrix.shape[-2:])]
                        ).reshape(*matrix.shape[:-2], len(rows), len(cols))

    tail = "words" if words else ""
    if amap.weights.ndim == 2:
        return {tail: single(merged(amap.weights), rows, cols, title)}
    L, H = amap.weights.shape[:2]
    figs = {}
    for view in views:
        heading = f"{title}\n{view.describe(L, H)}"
        matrix = merged(select(amap.weights, view))
        figs["_".join(filter(None, (view.name, tail)))] = (
            grid(matrix, rows, cols, heading) if view.kind == "grid" else single(matrix, rows, cols, heading))
    return figs


def save(figs: dict[str, Figure], out: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>[_<suffix>].png`` per figure; returns the paths by suffix."""
    paths = {}
    for suffix, fig in figs.items():
        paths[suffix] = out / (f"{stem}_{suffix}.png" if suffix else f"{stem}.png")
        with atomic_path(paths[suffix]) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return paths
