"""Matplotlib without a display, and figures saved atomically: shared by every command that draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.core.atomic import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig: "matplotlib.figure.Figure", path: Path, dpi: int = 120) -> None:
    """Write ``fig`` as a PNG at ``path`` (never a half-written file) and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
