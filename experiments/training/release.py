"""``s2s-release``: a trained model a reader can use right after a clone, in half the bytes of its weights.

    s2s-release ~/s2s-runs/multi30k_de_en/gru/seed1 results/models/multi30k_de_en-gru-seed1

A release is a run folder cut down to what decoding needs: ``config.yaml``,
``tokenizer/`` and ``checkpoints/best.pt`` holding the best checkpoint's
weights in fp16 (or bf16), the config they trained with and their update
count, but no optimizer, scheduler or RNG state (about 15 MB for a 7.6M-parameter
model instead of ~90 MB). It is shaped like a run folder, so ``s2s-eval``,
``s2s-translate``, ``s2s-score``, ``s2s-attention`` and ``s2s-ensemble`` load it
unchanged: ``load_model`` copies the half-precision tensors into the model's
fp32 parameters. fp16 is the default: its 10-bit mantissa keeps more of each
weight than bf16's 7 bits, and trained weights are far inside its range.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from experiments.evaluation import checkpoint
from experiments.core.atomic import atomic_path, write_text
from experiments.core.errors import UserError
from experiments.training.runs import shown_path

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def release_state(state: dict[str, Any], dtype: str, source: str) -> dict[str, Any]:
    """The weights-only state of checkpoint ``state``, floating tensors cast to ``dtype``.

    Tied weights (the shared embedding and output matrix: three names, one
    tensor) stay one tensor: casting each name on its own would store the
    8000 x emb_dim matrix three times, about half as many bytes again as the
    model itself.
    """
    cast: dict[tuple[int, torch.dtype, tuple[int, ...]], torch.Tensor] = {}

    def half(v: torch.Tensor) -> torch.Tensor:
        if not v.is_floating_point():
            return v
        key = (v.data_ptr(), v.dtype, tuple(v.shape))
        if key not in cast:
            cast[key] = v.to(DTYPES[dtype])
        return cast[key]

    weights = {k: half(v) for k, v in state["model"].items()}
    return {"model": weights, "config": state["config"], "trainer": {"step": state["trainer"]["step"]},
            "release": {"dtype": dtype, "from": source}}


def release(run_dir: Path, out: Path, dtype: str = "fp16") -> list[Path]:
    """Write the release of ``run_dir``'s best checkpoint into ``out``; returns the files written."""
    for needed in ("config.yaml", "tokenizer"):
        if not (run_dir / needed).exists():
            raise UserError(f"{run_dir / needed} is missing: pass a run folder written by s2s-train")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new folder (a release is never written over)")
    state = checkpoint.load(run_dir)
    checkpoint.save(release_state(state, dtype, shown_path(run_dir)), out / "checkpoints" / "best.pt")
    write_text(out / "config.yaml", (run_dir / "config.yaml").read_text())
    with atomic_path(out / "tokenizer") as tmp:
        shutil.copytree(run_dir / "tokenizer", tmp)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-release", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder (its checkpoints/best.pt is released)")
    parser.add_argument("out", type=Path, help="the release folder to write (new or empty)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="the weights' precision (default fp16)")
    args = parser.parse_args(argv)
    try:
        files = release(args.run, args.out, args.dtype)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    size = sum(f.stat().st_size for f in files) / 2**20
    print(f"wrote {args.out}/: {len(files)} files, {size:.1f} MiB; load it as a run folder (s2s-eval {args.out} ...)")


if __name__ == "__main__":
    main()
