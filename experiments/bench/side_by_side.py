"""Two ``s2s-train`` runs side by side on a CPU, one thread each, as the grid trains: the A/B of one setting.

A pair is the same training (seed, batches, updates) run twice at once, the
two runs differing in one thing (the precision, or the environment they
start with: oneDNN's kernel cache, the malloc). Side by side, a drift in the
machine's speed (a fifth between runs one after the other, see gru_paths)
slows both runs of a pair alike, so the ratio of their speeds holds where
two separate measurements would not. What is compared is the trainer's own
figure, target tokens/s per logging window (validation and start-up
outside), and each run's peak resident memory; a setting that changes how
fast a run is and not what it computes must log the same losses as the first
run of its precision, and the report says whether it did.
Commands built on it: ``experiments.bench.onednn_cache``, ``experiments.bench.allocator``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from experiments.bench import other_work
from experiments.bench.markdown import save_report
from experiments.bench.plan import native_bf16
from experiments.bench.runner import run_measured
from experiments.core.errors import UserError
from experiments.core.runtime import cpu_name, git_commit


@dataclass(frozen=True)
class Arm:
    """One run of a pair: its label in the report, ``trainer.precision``, and its environment on top of ours."""

    label: str
    precision: str
    env: dict[str, str] = field(default_factory=dict)
    malloc: str | None = None  # the malloc the run must report (results.json's hardware.malloc), if it matters


Pairs = dict[str, tuple[Arm, Arm]]  # pair name -> (the baseline, the other)


def add_options(p: argparse.ArgumentParser, work_dir: str) -> None:
    """The options every side-by-side command shares."""
    p.add_argument("--models", default="gru,transformer")
    p.add_argument("--experiment", default="multi30k_de_en")
    p.add_argument("--steps", type=int, default=180, help="updates a run (an epoch of multi30k_de_en: 133)")
    p.add_argument("--log-every", type=int, default=45)
    p.add_argument("--timeout", type=float, default=3600, help="seconds a run may take")
    p.add_argument("--work-dir", type=Path, default=Path(work_dir))
    p.add_argument("--out", type=Path, help="also write the report to this Markdown file")
    p.add_argument("--readme", type=Path, help="also copy it into this file between <!-- table:NAME --> markers, "
                   "NAME the --out file's stem")
    p.add_argument("overrides", nargs="*", help="more s2s-train overrides for every run (tests: a tiny task)")


def command(main: Callable[[], None]) -> None:
    """Run ``main`` as a command: a user error is one line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.readme and not args.out:
        p.error("--readme needs --out (its file name names the README's markers)")
    return args


Report = Callable[[dict[str, dict[str, list[dict[str, Any]]]], str, str, dict[str, Any] | None], str]


def run(module: str, argv: list[str] | None, args: argparse.Namespace, pairs: Pairs, report: Report) -> None:
    """Measure ``pairs``, then print the report ``report(results, command, commit, other work)`` and save it
    where ``--out`` / ``--readme`` say."""
    command = " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])
    commit, start = git_commit(), other_work.mark()  # the code as the runs start
    results = measure(pairs, args)
    text = report(results, command, commit, other_work.between(start, other_work.mark()))
    print(text)
    save_report(text, args.out, args.readme)


def header(title: str, args: argparse.Namespace, command: str, commit: str, work: dict[str, Any] | None) -> list[str]:
    """The report's title, where, when and with what code it was measured, and what each run trains."""
    bf16 = "native" if native_bf16(torch.device("cpu")) else "emulated"
    return [f"# {title}", "",
            f"Measured by `{command}` on {cpu_name()} (bf16 {bf16}), torch {torch.__version__}, commit {commit}, "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}."
            + (f" Other work during the run: {other_work.describe(work)}." if work else ""), "",
            f"`{args.experiment}`, seed 1, {args.steps} updates a run, one thread each, the two runs of a pair side "
            "by side: target tokens/s as the trainer logs it for each window of updates (validation and start-up "
            "outside).", ""]


def train_once(model: str, arm: Arm, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One ``s2s-train`` run of ``arm``: its logged training windows, peak RSS (MiB) and wall seconds."""
    run_dir = args.work_dir / f"{model}-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)  # the bench's own scratch: a fresh run each time
    cmd = [sys.executable, "-m", "experiments.training.train", f"experiment={args.experiment}", f"model={model}",
           "seed=1", f"trainer.max_steps={args.steps}", f"trainer.log_every={args.log_every}",
           f"trainer.eval_every={args.steps + 1}", "trainer.test_after_training=false",
           f"trainer.precision={arm.precision}", "trainer.num_threads=1", "trainer.device=cpu",
           "trainer.progress=false", "logger=none", f"hydra.run.dir={run_dir}", *args.overrides]
    code, seconds, peak, faults = run_measured(cmd, log_path=run_dir.with_suffix(".log"), timeout=args.timeout,
                                               env={**os.environ, **arm.env})
    if code:
        raise UserError(f"{model} ({arm.label}) failed (exit {code}): see {run_dir.with_suffix('.log')}")
    windows = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if e.get("event") == "train"]
    malloc = json.loads((run_dir / "results.json").read_text())["hardware"].get("malloc", "?")
    if arm.malloc and malloc != arm.malloc:
        raise UserError(f"{model} ({arm.label}) ran on the {malloc} malloc, not {arm.malloc}: see "
                        f"{run_dir / 'results.json'}")
    return {"windows": windows, "peak_mb": peak, "seconds": seconds, "malloc": malloc, "faults": faults}


def measure(pairs: Pairs, args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """model -> pair -> its two runs (label, windows, peak, seconds), each pair's two side by side."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for model in args.models.split(","):
        results[model] = {}
        for pair, arms in pairs.items():
            with ThreadPoolExecutor(len(arms)) as pool:
                futures = [pool.submit(train_once, model, arm, f"{pair}-{i}", args) for i, arm in enumerate(arms)]
                results[model][pair] = [{"label": arm.label, **f.result()} for arm, f in zip(arms, futures)]
    return results


def speed_tables(results: dict[str, dict[str, list[dict[str, Any]]]], pairs: Pairs,
                 questions: dict[str, str]) -> list[str]:
    """Per pair: tokens/s of its two runs window by window, their ratio, and the mean ratio over the windows."""
    lines = []
    for pair, question in questions.items():
        base, other = (arm.label for arm in pairs[pair])
        lines += [f"Side by side, {question}:", "",
                  f"| model | updates | epoch at its end | {base} | {other} | ratio |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for model, measured in results.items():
            previous, ratios = 0, []
            for a, b in zip(*(run["windows"] for run in measured[pair])):
                ratios.append(b["tokens_per_s"] / a["tokens_per_s"])
                lines.append(f"| {model} | {previous + 1}-{a['step']} | {a['epoch'] + 1} | {a['tokens_per_s']:.0f} | "
                             f"{b['tokens_per_s']:.0f} | {ratios[-1]:.2f}x |")
                previous = a["step"]
            if len(ratios) > 1:
                lines.append(f"| {model} | mean of the windows | | | | {sum(ratios) / len(ratios):.2f}x |")
        lines.append("")
    return lines


def run_table(results: dict[str, dict[str, list[dict[str, Any]]]], pairs: Pairs, losses_header: str) -> list[str]:
    """Every run's peak RSS and wall time, whether it logged the losses of the first run of its precision (``–``
    on that run itself), its malloc, and its minor page faults (start-up included: the pages the kernel mapped in
    and zeroed, which a malloc that keeps freed memory spares the updates)."""
    lines = [f"| model | pair | run | peak RSS MiB | wall s | {losses_header} | malloc | minor page faults |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, measured in results.items():
        references: dict[str, list[float]] = {}
        for pair, runs in measured.items():
            for arm, run in zip(pairs[pair], runs):
                losses = [w["loss"] for w in run["windows"]]
                reference = references.setdefault(arm.precision, losses)
                same = "–" if reference is losses else "the same" if losses == reference else "**different**"
                lines.append(f"| {model} | {pair} | {run['label']} | {run['peak_mb']:.0f} | {run['seconds']:.0f} | "
                             f"{same} | {run['malloc']} | {run['faults']:,} |")
    return lines
