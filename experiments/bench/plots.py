"""The report's plots: training throughput against the batch budget, and validation BLEU against updates.

Both read the report dict only (``--from-json`` draws them again), start their
y axis at 0, name the task, the batch budget and the machine in the title, and
give every line (JoeyNMT's reference and the targets included) a legend entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.core.atomic import atomic_path
from experiments.bench.targets import (JOEYNMT_ANCHOR_BATCH_TOKENS, JOEYNMT_TOKENS_PER_UPDATE, JOEYNMT_VERSION,
                                       SAMPLE_TARGET, SAMPLE_TOKENS_TARGET)
from experiments.bench.ttb import JOEYNMT_REFERENCE, ttb_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {"transformer": "C1", "gru": "C0"}  # one colour per model, in both plots


def machine(meta: dict[str, Any]) -> str:
    """The hardware line of a plot title: CPU, cores, GPU where one was used, torch."""
    gpu = f", {meta['gpu']}" if meta.get("gpu") else ""
    return f"{meta['cpu']}, {meta['cores']} cores{gpu}, torch {meta['torch']}"


def figure() -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.6))  # not pyplot's: nothing global to close
    return fig, fig.add_subplot()


def finish(fig: Figure, ax: Any, title: str, legend_at: str) -> Figure:
    """Title, grid, legend and a y axis from 0."""
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc=legend_at, fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig: Figure | None, path: Path) -> str | None:
    """Write ``fig`` atomically to ``path``; returns the file name (None, and nothing written, without a figure)."""
    if fig is None:
        return None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path.name


def scaling_figure(report: dict[str, Any]) -> Figure | None:
    """Our tok/s at each batch budget per model, JoeyNMT's at the budget it was measured at (None: no scaling runs)."""
    rows, meta = report["scaling"], report["meta"]
    if not rows:
        return None
    from matplotlib.ticker import ScalarFormatter

    fig, ax = figure()
    models = sorted({r["model"] for r in rows})
    for model in models:
        points = [r for r in rows if r["model"] == model]
        ax.plot([r["batch_tokens"] for r in points], [r["tokens_per_s"] for r in points], marker="o",
                color=COLOURS.get(model), label=f"{model} (ours)")
    joeynmt = {c["model"]: c for c in report["comparison"] if c.get("joeynmt_tokens_per_s")}
    for model in (m for m in models if m in joeynmt):
        c = joeynmt[model]
        measured = c["joeynmt_source"].startswith("measured")
        at = meta["batch_tokens"] if measured else JOEYNMT_ANCHOR_BATCH_TOKENS
        ax.plot([at], [c["joeynmt_tokens_per_s"]], linestyle="none", marker="X", markersize=9,
                color=COLOURS.get(model),
                label=f"JoeyNMT {JOEYNMT_VERSION} {model} ({'measured' if measured else 'anchor'}, {at} tokens)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["batch_tokens"] for r in rows}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_xlabel("batch budget (tokens per batch, log scale)")
    ax.set_ylabel("training throughput (target tokens per second)")
    title = (f"Training throughput against the batch budget: {meta['task']}\n"
             f"plain configuration (fp32, eager, length-sorted batches)\n{machine(meta)}")
    return finish(fig, ax, title, "lower left")


def ttb_figure(report: dict[str, Any], by: str = "step") -> Figure | None:
    """Validation BLEU of each time-to-BLEU run, JoeyNMT's curve and the target, against updates
    (``by="step"``) or real target tokens (``by="tokens"``); None: no such runs."""
    runs, meta = report["time_to_bleu"], report["meta"]
    curves = ttb_curves(runs, by)
    if not curves:
        return None
    scale = 1.0 if by == "step" else 1e6  # tokens in millions
    fig, ax = figure()
    for name, curve in curves.items():
        joey = name == JOEYNMT_REFERENCE
        colour = "grey" if joey else COLOURS.get(name.split(" ")[0])
        ax.plot([x / scale for x in curve], list(curve.values()), "--" if joey else "-", marker="o", color=colour,
                label=name)
    _, bleu, updates, tokens = SAMPLE_TARGET
    ax.axhline(bleu, color="black", lw=0.8, ls=":", label=f"target: validation BLEU {bleu:g} (JoeyNMT's best)")
    if by == "step":
        ax.axvline(updates, color="black", lw=0.8, ls="-.", label=f"target: within {updates} updates")
    else:
        budget = SAMPLE_TOKENS_TARGET[2] / scale
        ax.axvline(budget, color="black", lw=0.8, ls="-.", label=f"target: within JoeyNMT's {budget:.2f}M tokens")
    budgets = sorted({r["batch_tokens"] for r in runs if "batch_tokens" in r})
    batches = " / ".join(map(str, budgets)) + "-token batches" if budgets else "batches"
    ax.set_xlim(left=0)
    unit = "training updates" if by == "step" else "real (non-pad) target tokens trained on, millions"
    ax.set_xlabel(f"{unit} ({batches})")
    ax.set_ylabel("validation BLEU (greedy decoding, 0-100)")
    against = "training updates" if by == "step" else "real target tokens"
    joey = (f"JoeyNMT's curve: its own run at {tokens}-token batches" if by == "step" else
            f"JoeyNMT's curve: its updates x about {JOEYNMT_TOKENS_PER_UPDATE:.0f} real target tokens each")
    title = f"Validation BLEU against {against}: {meta['task']}, {batches}\n{joey}\n{machine(meta)}"
    return finish(fig, ax, title, "lower right")
