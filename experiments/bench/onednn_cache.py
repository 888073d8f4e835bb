"""oneDNN's kernel cache in bf16 training on a CPU: ``python -m experiments.bench.onednn_cache``.

Trains the same run (``s2s-train``: the same seed, batches and updates) as
two pairs of processes, the two of a pair side by side with one thread each,
as the grid trains: bf16 with oneDNN's default cache of 1024 matmul kernels
beside bf16 with the wider one the trainer now asks for
(``runtime.widen_onednn_cache``), then fp32 (whose matmuls compile no
kernels) beside bf16 with the wide cache, the baseline bf16 is judged
against. Side by side, a drift in the machine's speed (a fifth between runs
one after the other, see gru_paths) slows both of a pair alike. It prints
target tokens/s per logging window (the trainer's own figure, epoch by
epoch) and the peak resident memory of each run. The two bf16 runs of the
first pair must log the same losses: the cache changes how soon a matmul
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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from experiments.bench import other_work
from experiments.bench.markdown import save_report
from experiments.bench.plan import native_bf16
from experiments.bench.runner import run_measured
from experiments.core.errors import UserError
from experiments.core.runtime import ONEDNN_CACHE_CAPACITY, cpu_name, git_commit

DEFAULT_CAPACITY = 1024  # oneDNN's own


def train_once(model: str, precision: str, capacity: int, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``s2s-train`` run with ``capacity`` kernels cached: its logged windows, peak RSS and wall seconds."""
    run_dir = args.work_dir / f"{model}-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch: a fresh run each time
    cmd = [sys.executable, "-m", "experiments.training.train", f"experiment={args.experiment}", f"model={model}",
           "seed=1", f"trainer.max_steps={args.steps}", f"trainer.log_every={args.log_every}",
           f"trainer.eval_every={args.steps + 1}", "trainer.test_after_training=false", f"trainer.precision={precision}",
           "trainer.num_threads=1", "trainer.device=cpu", "trainer.progress=false", "logger=none",
           f"hydra.run.dir={run_dir}", *args.overrides]
    env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(capacity)}
    code, seconds, peak = run_measured(cmd, log_path=run_dir.with_suffix(".log"), timeout=args.timeout, env=env)
    if code:
        raise UserError(f"{model} ({name}) failed (exit {code}): see {run_dir.with_suffix('.log')}")
    windows = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if e.get("event") == "train"]
    return {"windows": windows, "peak_mb": peak, "seconds": seconds}


def pairs(wide: int) -> dict[str, tuple[tuple[str, str, int], tuple[str, str, int]]]:
    """Pair name -> its two runs (label, precision, cache capacity), the baseline first."""
    return {"cache": ((f"bf16, cache {DEFAULT_CAPACITY}", "bf16", DEFAULT_CAPACITY), (f"bf16, cache {wide}", "bf16", wide)),
            "precision": (("fp32", "fp32", DEFAULT_CAPACITY), (f"bf16, cache {wide}", "bf16", wide))}


def measure_pair(model: str, pair: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The pair's two runs, side by side."""
    runs = pairs(args.capacity)[pair]
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [pool.submit(train_once, model, precision, capacity, f"{pair}-{i}", args)
                   for i, (_, precision, capacity) in enumerate(runs)]
        return [{"label": label, **f.result()} for (label, _, _), f in zip(runs, futures)]


def report(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace, command: str,
           commit: str, work: dict[str, Any] | None) -> str:
    lines = [
        "# oneDNN's kernel cache in bf16 training", "",
        f"Measured by `{command}` on {cpu_name()} (bf16 {'native' if native_bf16(torch.device('cpu')) else 'emulated'}"
        f"), torch {torch.__version__}, commit {commit}, {datetime.now(timezone.utc).isoformat(timespec='seconds')}."
        + (f" Other work during the run: {other_work.describe(work)}." if work else ""), "",
        f"`{args.experiment}`, seed 1, {args.steps} updates a run, one thread each, the two runs of a pair side by "
        "side: target tokens/s as the trainer logs it for each window of updates (validation and start-up outside).",
        ""]
    for pair, question in (("cache", "what the wider cache buys bf16"), ("precision", "bf16 (wide cache) against "
                                                                                      "fp32")):
        base, other = (label for label, _, _ in pairs(args.capacity)[pair])
        lines += [f"Side by side, {question}:", "",
                  f"| model | updates | epoch at its end | {base} | {other} | ratio |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for model, measured in results.items():
            previous = 0
            for a, b in zip(*(run["windows"] for run in measured[pair])):
                lines.append(f"| {model} | {previous + 1}-{a['step']} | {a['epoch'] + 1} | {a['tokens_per_s']:.0f} | "
                             f"{b['tokens_per_s']:.0f} | {b['tokens_per_s'] / a['tokens_per_s']:.2f}x |")
                previous = a["step"]
        lines.append("")
    lines += [f"| model | pair | run | peak RSS MiB | wall s | losses as bf16 with cache {DEFAULT_CAPACITY} |",
              "| --- | --- | --- | --- | --- | --- |"]
    for model, measured in results.items():
        reference = [w["loss"] for w in measured["cache"][0]["windows"]]
        for pair, runs in measured.items():
            for run in runs:
                same = ("–" if run["label"] == "fp32" or run is measured["cache"][0] else
                        "the same" if [w["loss"] for w in run["windows"]] == reference else "**different**")
                lines.append(f"| {model} | {pair} | {run['label']} | {run['peak_mb']:.0f} | {run['seconds']:.0f} | "
                             f"{same} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gru,transformer")
    p.add_argument("--experiment", default="multi30k_de_en")
    p.add_argument("--steps", type=int, default=180, help="updates a run (an epoch of multi30k_de_en: 133)")
    p.add_argument("--log-every", type=int, default=45)
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
    results = {model: {pair: measure_pair(model, pair, args) for pair in pairs(args.capacity)}
               for model in args.models.split(",")}
    text = report(results, args, command, commit, other_work.between(start, other_work.mark()))
    print(text)
    save_report(text, args.out, args.readme)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
