"""Checkpoints that load with ``weights_only=True`` and are written atomically.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
model and optimizer state, the scheduler and trainer counters, the RNG state
and the resolved config, so a killed run resumes exactly where it stopped.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from experiments.atomic import atomic_path
from experiments.errors import CheckpointError

FORMAT = "s2s-compare/1"


def save(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt" if (path / "checkpoints").is_dir() else path / "best.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: pass a run folder or a .pt file written by s2s-train")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first}). It may be truncated (a copy cut short) "
            "or not written by s2s-train; use another checkpoint, e.g. last.pt or best.pt of the run."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not an s2s-compare checkpoint (format {FORMAT!r} expected); "
            "pass a checkpoint written by s2s-train."
        )
    return state
