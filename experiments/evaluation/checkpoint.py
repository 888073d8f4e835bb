"""Checkpoints that load with ``weights_only=True`` and are written atomically.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
model and optimizer state, the scheduler and trainer counters, the RNG state
and the resolved config, so a killed run resumes exactly where it stopped.
Loading weights goes through ``load_model``, which compares the model the
checkpoint holds (its config) with the one asked for before any tensor is
copied, so a mismatch names both instead of failing in ``load_state_dict``.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.core.atomic import atomic_path
from experiments.core.errors import CheckpointError

FORMAT = "s2s-compare/1"


def write_durably(path: Path, data: memoryview) -> None:
    """Write and fsync ``data``: a full disk is an ``OSError`` here, where torch.save would only fail obscurely."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` atomically; a full disk or read-only folder is a ``StorageError`` and the old file stays."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    with atomic_path(path) as tmp:
        write_durably(tmp, buffer.getbuffer())


def resolve(path: str | Path) -> Path:
    """The checkpoint file meant by ``path``: the file itself, or a run folder's best.pt."""
    path = Path(path)
    if path.is_dir():
        return path / "checkpoints" / "best.pt" if (path / "checkpoints").is_dir() else path / "best.pt"
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = resolve(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: pass a run folder or a .pt file written by s2s-train")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of files it then refuses
            state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        found = re.search(r"GLOBAL (\S+)", str(e))  # the weights-only unpickler refused to import a name
        if found:
            raise CheckpointError(
                f"{path} is not a checkpoint this repo wrote: it holds Python objects ({found.group(1)}) that "
                "s2s-train never writes, and unpickling them could run code, so it was not loaded. "
                "Pass a checkpoint written by s2s-train (a run folder's checkpoints/best.pt or last.pt)."
            ) from None
        first = reason(e)
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first}): it is truncated or damaged (a copy cut short?), or not "
            "written by s2s-train; use another checkpoint, e.g. last.pt or best.pt of the run."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not an s2s-compare checkpoint (format {FORMAT!r} expected); "
            "pass a checkpoint written by s2s-train."
        )
    return state


def reason(error: BaseException) -> str:
    """torch's reason a file did not load, in a few words: without its advice to load with weights_only=False, which
    would run whatever code the file holds and is never the fix for a damaged checkpoint."""
    text = str(error).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    if unpickler:
        return f"unpickling stopped: {unpickler.group(1)}"
    return text.splitlines()[0] if text else type(error).__name__


def describe(model_cfg: Mapping[str, Any], keys: list[str] | None = None) -> str:
    """``transformer (d_model=256, heads=4, ...)``: the name and the integer sizes (or only ``keys``)."""
    sizes = [f"{k}={v}" for k, v in model_cfg.items() if k != "name" and (k in keys if keys is not None else
                                                                           type(v) is int)]
    return f"{model_cfg.get('name', '?')} ({', '.join(sizes)})" if sizes else str(model_cfg.get("name", "?"))


def load_model(model: torch.nn.Module, state: dict[str, Any], asked: Mapping[str, Any] | DictConfig,
               path: str | Path) -> None:
    """Copy the checkpoint's weights into ``model`` (built from the config ``asked``), after checking they fit.

    A different model or size is a ``CheckpointError`` that says which model
    and sizes the checkpoint holds and which were asked for; equal configs with
    other parameter shapes mean another vocabulary (tokenizer).
    """
    if isinstance(asked, DictConfig):
        asked = OmegaConf.to_container(asked, resolve=True, enum_to_str=True)
    held = (state.get("config") or {}).get("model") or {}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state["model"].items()}
    if held and (held.get("name") != asked.get("name") or ours != theirs):
        if held.get("name") != asked.get("name"):
            what = f"a {describe(held)} model, but a {describe(asked)} model was asked for"
        else:
            differ = [k for k in held.keys() | asked.keys() if held.get(k) != asked.get(k)]
            what = (f"a {describe(held, sorted(differ))} model, but a {describe(asked, sorted(differ))} model was "
                    "asked for" if differ else None)
        if what:
            raise CheckpointError(f"{path} holds {what}. Evaluate or resume it with the model settings it was "
                                  f"trained with (model={held.get('name')} and those sizes), or use a checkpoint of "
                                  "the model you asked for.")
    if ours != theirs:
        name = next((k for k in ours if k in theirs and ours[k] != theirs[k]), None)
        if name is None:
            missing, extra = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
            raise CheckpointError(f"{path}: its weights are not this model's (missing {missing[:3]}, unexpected "
                                  f"{extra[:3]}); it was written by another version of the model code")
        raise CheckpointError(f"{path}: {name} has shape {list(theirs[name])} in the checkpoint but "
                              f"{list(ours[name])} in the model built here, so the vocabulary differs: decode it "
                              "with the tokenizer/ of the run that wrote it")
    model.load_state_dict(state["model"])


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
