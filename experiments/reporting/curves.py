"""Compute-matched learning curves: validation metric against updates, real target tokens and training seconds.

Which model is ahead at equal compute is the question a comparison table
cannot answer on its own; these curves answer it from the runs' committed
metrics.jsonl (validation rows carry the updates, the real (non-pad) target
tokens and the training seconds so far). Several seeds: the mean, with a
band from the lowest to the highest seed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.errors import UserError
from experiments.core.plotting import plt, save_figure

AXES = {"step": "updates", "tokens": "real target tokens (millions)", "train_seconds": "training hours"}
SCALE = {"step": 1.0, "tokens": 1e-6, "train_seconds": 1 / 3600}


def valid_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation rows of a run's metrics.jsonl; a missing or damaged file is a ``UserError`` naming it."""
    path = Path(run["run_dir"]) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}): the run folder is incomplete; export it again from the run") \
            from None
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if row["event"] == "valid":
                rows.append(row)
        except (json.JSONDecodeError, TypeError, KeyError):
            raise UserError(f"{path}:{number} is not an event row: cut short or damaged; resume the run "
                            "(trainer.resume=true drops a cut row) or export it again") from None
    return rows


def curves(runs: list[dict[str, Any]], metric: str) -> dict[str, list[list[dict[str, Any]]]]:
    """Model -> one list of validation rows per seed (rows without compute counts are left out)."""
    out: dict[str, list] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r["model"], r["seed"])):
        rows = [r for r in valid_rows(run) if metric in r and "tokens" in r]
        if rows:
            out[run["model"]].append(rows)
    return dict(out)


def on_grid(seeds: list[list[dict[str, Any]]], axis: str, metric: str, grid: np.ndarray) -> np.ndarray:
    """(seeds, len(grid)): each seed's metric interpolated at ``grid`` (NaN outside the range it covers)."""
    values = []
    for rows in seeds:
        x = np.array([r[axis] for r in rows], dtype=float)
        y = np.array([r[metric] for r in rows], dtype=float)
        values.append(np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan))
    return np.array(values)


def matched_table(by_model: dict[str, list], metric: str, axis: str = "tokens", points: int = 4) -> list[list[str]]:
    """Rows of (budget, each model's mean metric) at evenly spaced budgets every model's seeds all reached.

    A cell is "–" where some seed has no validation at or before that budget yet.
    """
    if len(by_model) < 2:
        return []
    reached = min(rows[-1][axis] for seeds in by_model.values() for rows in seeds)
    grid = np.linspace(reached / points, reached, points)
    values = [on_grid(seeds, axis, metric, grid) for seeds in by_model.values()]
    table = []
    for i, budget in enumerate(grid):
        cells = [f"{v[:, i].mean():.2f}" if not np.any(np.isnan(v[:, i])) else "–" for v in values]
        table.append([f"{budget * SCALE[axis]:.2f}"] + cells)
    return table


def plot(by_model: dict[str, list], metric: str, title: str, hardware: str, path: Path,
         threshold: float | None = None) -> None:
    """Validation ``metric`` of each curve against updates, real target tokens and hours; ``threshold``, if
    given, is drawn as a dashed line (a target the curves are read against)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, axis in zip(axes, AXES):
        for model, seeds in by_model.items():
            top = max(rows[-1][axis] for rows in seeds)
            grid = np.linspace(0, top, 200)
            values = on_grid(seeds, axis, metric, grid)
            keep = ~np.any(np.isnan(values), axis=0)  # only where every seed has a value: no jumps where one ends
            x = grid[keep] * SCALE[axis]
            mean = values[:, keep].mean(axis=0)
            label = f"{model} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
            line, = ax.plot(x, mean, label=label)
            if len(seeds) > 1:
                ax.fill_between(x, values[:, keep].min(axis=0), values[:, keep].max(axis=0),
                                color=line.get_color(), alpha=0.2, linewidth=0)
        if threshold is not None:
            ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1,
                       label=f"{metric} {threshold:g}" if ax is axes[0] else None)
        ax.set_xlabel(AXES[axis])
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation {metric} (greedy)")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(loc="lower right", title="mean; band: min-max over seeds", title_fontsize=8, fontsize=8)
    axes[2].set_title(hardware, fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
