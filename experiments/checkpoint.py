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


def snapshot_path(ckpt_dir: Path, step: int) -> Path:
    return ckpt_dir / f"step{step:07d}.pt"


def snapshots(ckpt_dir: Path) -> dict[int, Path]:
    """The weight snapshots of a run folder's checkpoints/, by step."""
    return {int(p.stem.removeprefix("step")): p for p in sorted(ckpt_dir.glob("step*.pt"))
            if p.stem.removeprefix("step").isdigit()}


def choose_snapshots(scores: dict[int, float], n: int, how: str) -> list[int]:
    """The steps of the last ``n`` (``how='last'``) or the best ``n`` (``'best'``; ties to the later step)."""
    if how == "last":
        return sorted(scores)[-n:]
    if how == "best":
        return sorted(sorted(scores, key=lambda s: (scores[s], s))[-n:])
    raise ValueError(f"how must be 'last' or 'best', not {how!r}")


def prune_snapshots(ckpt_dir: Path, scores: dict[int, float], keep: int) -> None:
    """Delete the snapshots that are neither among the last ``keep`` nor the best ``keep`` by ``scores``."""
    have = snapshots(ckpt_dir)
    known = {s: v for s, v in scores.items() if s in have}
    wanted = set(choose_snapshots(known, keep, "last")) | set(choose_snapshots(known, keep, "best"))
    for step, path in have.items():
        if step not in wanted:
            path.unlink(missing_ok=True)
