"""oneDNN's kernel cache in bf16 training on a CPU: ``python -m experiments.bench.onednn_cache``.

Trains the same run (``s2s-train``, bf16, the same seed and batches) with
oneDNN's default cache of 1024 matmul kernels and with the wider one the
trainer now asks for (``runtime.widen_onednn_cache``), one after the other,
each in a process of its own, and once in fp32 (the baseline bf16 is judged
against: its matmuls compile no kernels), and prints target tokens/s per
logging window (the trainer's own figure, epoch by epoch) and the peak
resident memory of each. Both bf16 runs must log the same losses: the cache changes how fast a matmul
starts, not what it computes. Sorted batching cuts the same batches every
epoch, so from the second epoch on every shape has been seen once: what a
cache that holds them all saves shows there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from experiments.bench import other_work
from experiments.bench.plan import native_bf16
from experiments.bench.runner import run_measured
from experiments.core.atomic import write_text
from experiments.core.errors import UserError
from experiments.core.outdirs import say_wrote
from experiments.core.runtime import ONEDNN_CACHE_CAPACITY, cpu_name, git_commit

DEFAULT_CAPACITY = 1024  # oneDNN's own


def train_once(model: str, capacity: int, args: argparse.Namespace, precision: str = "bf16") -> dict[str, Any]:
    """One ``s2s-train`` run with ``capacity`` kernels cached: its logged windows, peak RSS and wall seconds."""
    run_dir = args.work_dir / f"{model}-{precision}-cache{capacity}"
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch: a fresh run each time
    cmd = [sys.executable, "-m", "experiments.training.train", f"experiment={args.experiment}", f"model={model}",
           "seed=1", f"trainer.max_steps={args.steps}", f"trainer.log_every={args.log_every}",
           f"trainer.eval_every={args.steps + 1}", "trainer.test_after_training=false", f"trainer.precision={precision}",
           f"trainer.num_threads={args.threads}", "trainer.device=cpu", "trainer.progress=false", "logger=none",
           f"hydra.run.dir={run_dir}", *args.overrides]
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(capacity)}
    code, seconds, peak = run_measured(cmd, log_path=run_dir.with_suffix(".log"), timeout=args.timeout, env=env)
    if code:
        raise UserError(f"{model} with a cache of {capacity} failed (exit {code}): see {run_dir.with_suffix('.log')}")
    windows = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if e.get("event") == "train"]
    return {"windows": windows, "peak_mb": peak, "seconds": seconds}


def report(results: dict[str, dict[Any, dict[str, Any]]], args: argparse.Namespace, command: str, commit: str,
           work: dict[str, Any] | None) -> str:
    small, wide = DEFAULT_CAPACITY, args.capacity
    lines = [
        "# oneDNN's kernel cache in bf16 training", "",
        f"Measured by `{command}` on {cpu_name()} (bf16 {'native' if native_bf16(torch.device('cpu')) else 'emulated'}"
        f"), {args.threads} thread(s), torch {torch.__version__}, commit {commit}, "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}."
        + (f" Other work during the run: {other_work.describe(work)}." if work else ""), "",
        f"`{args.experiment}`, seed 1, {args.steps} updates a run, one run after the other: bf16 autocast with each "
        "cache, and fp32 (whose matmuls do not compile kernels) as the baseline bf16 is judged against; target "
        "tokens/s as the trainer logs it for each window of updates (validation and start-up outside).", "",
        f"| model | updates | epoch at its end | fp32 | bf16, cache {small} | bf16, cache {wide} | "
        f"cache {wide} / {small} | bf16 (cache {wide}) / fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, runs in results.items():
        previous = 0
        for f, a, b in zip(runs["fp32"]["windows"], runs[small]["windows"], runs[wide]["windows"]):
            tok = [w["tokens_per_s"] for w in (f, a, b)]
            lines.append(f"| {model} | {previous + 1}-{a['step']} | {a['epoch'] + 1} | {tok[0]:.0f} | {tok[1]:.0f} | "
                         f"{tok[2]:.0f} | {tok[2] / tok[1]:.2f}x | {tok[2] / tok[0]:.2f}x |")
            previous = a["step"]
    lines += ["", f"| model | run | peak RSS MiB | wall s | same losses as bf16 with cache {small} |",
              "| --- | --- | --- | --- | --- |"]
    for model, runs in results.items():
        losses = {c: [w["loss"] for w in runs[c]["windows"]] for c in runs}
        for key, name in (("fp32", "fp32"), (small, f"bf16, cache {small}"), (wide, f"bf16, cache {wide}")):
            same = "–" if key != wide else ("yes" if losses[small] == losses[wide] else "**no**")
            lines.append(f"| {model} | {name} | {runs[key]['peak_mb']:.0f} | {runs[key]['seconds']:.0f} | {same} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gru,transformer")
    p.add_argument("--experiment", default="multi30k_de_en")
    p.add_argument("--steps", type=int, default=200, help="updates a run (an epoch of multi30k_de_en: 133)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--capacity", type=int, default=ONEDNN_CACHE_CAPACITY, help="the wide cache")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a run may take")
    p.add_argument("--work-dir", type=Path, default=Path("outputs/onednn_cache"))
    p.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    p.add_argument("--readme", type=Path, help="also copy it into this file between <!-- table:NAME --> markers, "
                   "NAME the --out file's stem")
    p.add_argument("overrides", nargs="*", help="more s2s-train overrides for both runs (tests: a tiny task)")
    args = p.parse_args(argv)
    if args.readme and not args.out:
        p.error("--readme needs --out (its file name names the README's markers)")
    command = " ".join(["python -m experiments.bench.onednn_cache", *(sys.argv[1:] if argv is None else argv)])
    commit, start = git_commit(), other_work.mark()  # the code as the runs start
    results = {model: {"fp32": train_once(model, DEFAULT_CAPACITY, args, "fp32"),
                       **{c: train_once(model, c, args) for c in (DEFAULT_CAPACITY, args.capacity)}}
               for model in args.models.split(",")}
    text = report(results, args, command, commit, other_work.between(start, other_work.mark()))
    print(text)
    if args.out:
        write_text(args.out, text)
        say_wrote(args.out.parent, [args.out])
    if args.readme:
        from experiments.reporting.tables import embed

        embed(args.readme, args.out.stem, text)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
