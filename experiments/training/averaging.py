"""Checkpoint averaging: the element-wise mean of several snapshots' weights, a checkpoint like any other.

    s2s-average RUN --by best --n 5          # RUN/checkpoints/average-best5.pt from its 5 best snapshots
    s2s-average RUN --by last --n 5 --out avg.pt
    s2s-average a.pt b.pt c.pt --out avg.pt  # any snapshots of one model shape

Averaging the weights of the last (or best) few checkpoints of one run is a
cheap ensemble that costs nothing at decoding time (Junczys-Dowmunt et al.,
2016; Vaswani et al., 2017 average the last 5 or 20). The snapshots come from
``trainer.keep_checkpoints`` (checkpoints/stepN.pt, weights only); the
averaged file holds the first snapshot's config, so ``s2s-eval``,
``s2s-attention`` and the other commands load it as they load best.pt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments.evaluation import checkpoint
from experiments.core.config import MODEL_SCHEMAS
from experiments.core.errors import CheckpointError, UserError


def average_weights(states: list[dict[str, torch.Tensor]], names: list[str]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over ``states`` (accumulated in float64); other tensors must agree."""
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise CheckpointError(f"{name} holds other weights than {names[0]} (different model or size): "
                                  "average snapshots of one model only")
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = sum(state[key].to(torch.float64) for state in states)
            out[key] = (total / len(states)).to(value.dtype)
        else:
            if any(not torch.equal(state[key], value) for state in states[1:]):
                raise CheckpointError(f"integer tensor {key!r} differs between {names[0]} and the others")
            out[key] = value.clone()
    return out


def model_config(state: dict[str, Any]) -> str:
    """A snapshot's ``config.model`` with the schema's defaults filled in, as sorted JSON: a run resumed at a
    later commit saves its later snapshots with model options that did not exist before (at their defaults,
    so the same model), and those must still average with the earlier ones."""
    section = state["config"]["model"]
    schema = MODEL_SCHEMAS.get(section.get("name"))
    if schema is not None:
        section = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), section), enum_to_str=True)
    return json.dumps(section, sort_keys=True)


def average_files(paths: list[Path], out: Path, averaged: dict[str, Any]) -> dict[str, Any]:
    """Average the checkpoints at ``paths`` into ``out`` (written atomically); returns the state written."""
    if len(paths) < 1:
        raise CheckpointError("nothing to average: give at least one checkpoint")
    states = [checkpoint.load(p) for p in paths]
    models = {model_config(s) for s in states}
    if len(models) > 1:
        raise CheckpointError(f"{', '.join(map(str, paths))} are not snapshots of one model config "
                              "(their config.model sections differ): average one run's snapshots")
    first = states[0]
    state = {
        "model": average_weights([s["model"] for s in states], [str(p) for p in paths]),
        "config": first["config"],
        "params": first.get("params"),
        "trainer": {**max((s["trainer"] for s in states), key=lambda t: t["step"])},
        "averaged": {**averaged, "steps": [s["trainer"]["step"] for s in states],
                     "files": [str(p) for p in paths]},
        "world_size": first.get("world_size", 1),
    }
    checkpoint.save(state, out)
    return state


def valid_scores(run_dir: Path) -> dict[int, float]:
    """The primary validation metric by step, from the run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no metrics.jsonl: pass a run folder written by s2s-train")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    valid = [r for r in rows if r["event"] == "valid"]
    key = next((k for k in ("bleu", "rouge_mean") if valid and k in valid[0]), None)
    return {r["step"]: r[key] for r in valid} if key else {}


def average_run(run_dir: Path, n: int, by: str, out: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Average a run's ``n`` best (``by='best'``) or last (``'last'``) kept snapshots."""
    have = checkpoint.snapshots(run_dir / "checkpoints")
    if not have:
        raise CheckpointError(f"{run_dir}/checkpoints has no stepN.pt snapshots: train with "
                              "trainer.keep_checkpoints=N (N >= the number to average)")
    scores = {s: v for s, v in valid_scores(run_dir).items() if s in have}
    steps = checkpoint.choose_snapshots(scores, n, by)
    if len(steps) < n:
        raise CheckpointError(f"{run_dir} keeps {len(steps)} snapshot(s) with a validation score "
                              f"({sorted(scores)}), fewer than --n {n}")
    out = out or run_dir / "checkpoints" / f"average-{by}{n}.pt"
    state = average_files([have[s] for s in steps], out, {"by": by, "n": n})
    return out, state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-average", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("inputs", nargs="+", type=Path, help="one run folder, or several checkpoint files")
    parser.add_argument("--by", choices=["best", "last"], default="best",
                        help="with a run folder: the best N snapshots by validation metric, or the last N")
    parser.add_argument("--n", type=int, default=5, help="with a run folder: how many snapshots (default 5)")
    parser.add_argument("--out", type=Path, help="output file (default RUN/checkpoints/average-<by><n>.pt)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n}: average at least 1 snapshot")
    try:
        if len(args.inputs) == 1 and args.inputs[0].is_dir():
            out, state = average_run(args.inputs[0], args.n, args.by, args.out)
        else:
            if not args.out:
                raise CheckpointError("several checkpoint files need --out FILE")
            out = args.out
            state = average_files(args.inputs, out, {"by": "files", "n": len(args.inputs)})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{out}: mean of {len(state['averaged']['steps'])} snapshot(s) at steps {state['averaged']['steps']}")


if __name__ == "__main__":
    main()
