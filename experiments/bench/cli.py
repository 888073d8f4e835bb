"""``s2s-bench``: training and decoding speed of both models, their fast paths, and JoeyNMT beside them.

    s2s-bench                      # both models at table size on Multi30k de->en, every fast path on and off
    s2s-bench --joeynmt            # ... and JoeyNMT 2.3.0 on the same data, vocabulary and machine
    s2s-bench --tiny               # a toy run of the whole pipeline in well under a minute
    s2s-bench --profile traces/    # ... plus a torch.profiler chrome trace (open in https://ui.perfetto.dev)
    s2s-bench --time-to-bleu 30    # ... plus: train until validation BLEU >= 30, report steps and time
    s2s-bench --time-to-quality --joeynmt --configs none --no-decode --no-scaling
                                   # wall seconds to JoeyNMT's best BLEU (38.86), each model with its recipe,
                                   # against JoeyNMT's seconds per update here x the updates its curve needs
    s2s-bench --from-json results/benchmarks.json   # measure nothing: write the report and plots again

What is measured is described in ``experiments/bench/__init__.py``. The report
goes to ``outputs/bench/benchmarks.md`` and ``.json`` (``--out``; ``--out
results`` replaces the committed report) with the CPU, core count, GPU (where
one was used), torch version, commit and date.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from experiments.bench.analysis import analyse, rejudged_training_targets, scaling_rows
from experiments.bench.joeynmt import run_all as run_joeynmt
from experiments.bench import other_work
from experiments.bench.load import run_sweeps
from experiments.bench.plan import CONF_DIR, base_overrides, build_specs, compose, native_bf16
from experiments.bench.report import load_report, write_report
from experiments.bench.targets import JOEYNMT_BEST
from experiments.bench.runner import Runner, worker_main
from experiments.data.pipeline import TaskData
from experiments.core.errors import UserError
from experiments.core.outdirs import default_out, out_help, say_wrote
from experiments.core.runtime import ONEDNN_CACHE_CAPACITY, git_commit, hardware, pick_device


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it is not None (None: the help text names the full-run and --tiny values)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="s2s-bench", formatter_class=_Help,
        description="Training and decoding speed of the GRU and the Transformer, every fast path off and on, "
                    "optionally JoeyNMT beside them; writes OUT/benchmarks.md, OUT/benchmarks.json and "
                    "OUT/benchmarks_scaling.png (--report renames them).")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every configuration (model.dropout=0.2 ...)")
    p.add_argument("--tiny", action="store_true",
                   help="toy_reverse task, tiny models, a few steps, a few decoded sentences (tests)")
    p.add_argument("--task", default="multi30k_de_en",
                   help="conf/task preset to train on, at the models' table size: multi30k_de_en, or samsum for "
                        "summarization-length inputs (400-subword dialogues); --tiny uses the toy task")
    p.add_argument("--models", default="transformer,gru", help="comma-separated: transformer,gru")
    p.add_argument("--configs", default="all",
                   help="comma-separated subset of: base,bf16,compile,bf16+compile,threads1,pool,random,unfused,"
                        "padded-targets (logits at padded target positions too), torch-dropout (torch's dropout masks "
                        "on a CPU) "
                        "and, for the GRU, packed|batched (encoder recurrence), autograd|handwritten (decoder loop), "
                        "packed+autograd (all three as before the GRU's CPU paths); 'none' runs no training configuration (with --time-to-bleu, --time-to-quality or --profile alone)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile configurations")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-tokens", type=int, default=None, help="batch budget (default 4096; --tiny 512)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up updates per configuration (default 5; --tiny 2), "
                   "with --fresh-shapes")
    p.add_argument("--fresh-shapes", action="store_true",
                   help="time updates on batches no warm-up update has run (a run's first epoch: bf16 on a CPU then "
                        "pays a oneDNN kernel compilation per new matmul shape inside the timing); default: the "
                        "timed batches run once first as the warm-up, as a run's updates are from its second epoch on")
    p.add_argument("--compile-warmup", type=int, default=None,
                   help="warm-up updates of torch.compile configurations, which recompile for the first few "
                        "batch shapes (default 8; --tiny 2)")
    p.add_argument("--steps", type=int, default=None, help="measured updates per configuration (default 20; --tiny 3)")
    p.add_argument("--small-pool", type=int, default=None,
                   help="trainer.pool_size of the small-pool configuration (default 2000; --tiny 200)")
    p.add_argument("--slow-warmup", type=int, default=None,
                   help="warm-up updates of bf16 configurations where bf16 is emulated (default 2; --tiny 1)")
    p.add_argument("--slow-steps", type=int, default=None,
                   help="measured updates of bf16 configurations where bf16 is emulated (default 5; --tiny 2)")
    p.add_argument("--max-measure-seconds", type=float, default=45,
                   help="a configuration's measured phase stops once past this (after at least 5 updates); 0 = off")
    p.add_argument("--peak-size", type=int, default=None,
                   help="side of the square matmul whose rate, measured in each training configuration's worker "
                        "after its timed updates, is the peak of MFU (default 2048; --tiny 128)")
    p.add_argument("--peak-repeats", type=int, default=None,
                   help="timed repeats per matmul shape of the peak measurement, median taken (default 5; --tiny 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-decode", action="store_true", help="skip the decoding measurements")
    p.add_argument("--decode-split", default="test", help="split to decode (test = test_2016_flickr)")
    p.add_argument("--decode-sentences", type=int, default=None, help="0 = the whole split (default; --tiny 20)")
    p.add_argument("--beam", type=int, default=5, help="beam size of the beam-search measurement")
    p.add_argument("--decode-run", action="append", default=[], metavar="MODEL=RUN",
                   help="decode with a trained run folder or checkpoint instead of the bench's barely trained "
                        "model, e.g. transformer=multirun/.../seed1_1 (repeat per model)")
    p.add_argument("--ablation-sentences", type=int, default=None,
                   help="sentences for the no-KV-cache and one-at-a-time baselines (default 50; --tiny 6)")
    p.add_argument("--no-scaling", action="store_true", help="skip the batch-size scaling runs")
    p.add_argument("--scaling-batch-tokens", default=None, help="default 1024,2048,4096,8192 (--tiny 256,512)")
    p.add_argument("--scaling-warmup", type=int, default=None, help="default 2 (--tiny 1)")
    p.add_argument("--scaling-steps", type=int, default=None, help="default 6 (--tiny 2)")
    p.add_argument("--joeynmt", action="store_true", help="also train JoeyNMT 2.3.0 (own venv in WORK_DIR)")
    p.add_argument("--joeynmt-steps", type=int, default=50, help="JoeyNMT updates per model")
    p.add_argument("--joeynmt-log-every", type=int, default=10, help="JoeyNMT logging_freq (one tok/s window)")
    p.add_argument("--joeynmt-skip-windows", type=int, default=1, help="first log windows dropped as warm-up")
    p.add_argument("--joeynmt-pip-args", default="", help="extra pip arguments for JoeyNMT's venv")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="also write a torch.profiler chrome trace per model to DIR (open in Perfetto)")
    p.add_argument("--profile-steps", type=int, default=3, help="updates in the trace")
    p.add_argument("--time-to-bleu", type=float, metavar="THRESH", default=None,
                   help="long mode: also train each model until validation BLEU >= THRESH")
    p.add_argument("--time-to-quality", type=float, nargs="?", const=JOEYNMT_BEST, default=None, metavar="THRESH",
                   help=f"long mode: train each model with its recipe (--ttq-recipe) until validation BLEU >= "
                        f"THRESH (default: JoeyNMT's best, {JOEYNMT_BEST:g}) and time it, validation included and "
                        "apart, against JoeyNMT's seconds to it on this machine (needs --joeynmt for the ratio)")
    p.add_argument("--ttq-recipe", default=None, metavar="EXPERIMENT",
                   help="conf/experiment preset whose recipe --time-to-quality trains with (batch tokens, lr, "
                        "schedule, validation cadence, update limit; e.g. multi30k_de_en_parity); default: the "
                        "task's own preset (what s2s-train experiment=TASK uses), none for the toy task")
    p.add_argument("--ttb-config", default="base", help="configuration used for --time-to-bleu and "
                                                        "--time-to-quality")
    p.add_argument("--ttb-eval-every", type=int, default=None, help="default 250 (--tiny 2)")
    p.add_argument("--ttb-max-steps", type=int, default=None,
                   help="default 10000 (--tiny 4); --time-to-quality stops at this or the recipe's "
                        "trainer.max_steps, whichever is fewer")
    p.add_argument("--load", action="store_true",
                   help="also measure threads under load: the Transformer beside a busy one-thread process (all "
                        "cores, all cores with OMP_WAIT_POLICY=PASSIVE, 1 thread, auto) and a two-job sweep side "
                        "by side (Hydra's local launcher) against the same jobs one after the other")
    p.add_argument("--sweep-steps", type=int, default=None, help="updates per job of the --load sweeps "
                                                                 "(default 20; --tiny 2)")
    p.add_argument("--out", default=str(default_out("bench")), help=out_help("bench"))
    p.add_argument("--report", default="benchmarks",
                   help="report name: OUT/NAME.md, OUT/NAME.json, OUT/NAME_scaling.png, "
                        "OUT/NAME_curve.png (time to BLEU)")
    p.add_argument("--from-json", metavar="REPORT_JSON", default=None,
                   help="measure nothing: write the Markdown, plots and README tables again from a saved report")
    p.add_argument("--readme", type=Path, default=None,
                   help="also copy the headline sections into this file (docs/performance.md) between "
                        "<!-- table:NAME --> and <!-- /table:NAME --> (NAME = --report), so no document holds a "
                        "hand-typed number")
    p.add_argument("--work-dir", default=".bench", help="scratch folder (worker runs, JoeyNMT venv and data)")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process (faster start; peak RSS is then the whole process's)")
    p.add_argument("--keep-runs", action="store_true", help="keep the scratch run folders")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tiny = args.tiny
    # (full run, --tiny) defaults of the step counts and sizes
    defaults = {"batch_tokens": (4096, 512), "warmup": (5, 2), "compile_warmup": (8, 2), "steps": (20, 3),
                "small_pool": (2000, 200), "decode_sentences": (0, 20), "ablation_sentences": (50, 6),
                "scaling_batch_tokens": ("1024,2048,4096,8192", "256,512"), "scaling_warmup": (2, 1),
                "scaling_steps": (6, 2), "slow_warmup": (2, 1), "slow_steps": (5, 2), "ttb_eval_every": (250, 2),
                "ttb_max_steps": (10000, 4), "peak_size": (2048, 128), "peak_repeats": (5, 2),
                "sweep_steps": (20, 2)}
    for key, (full, small) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if tiny else full)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in ("gru", "transformer")]
    if bad:
        p.error(f"--models: unknown {bad}; choose from gru, transformer")
    args.decode_runs = {}
    for item in args.decode_run:
        model, _, path = item.partition("=")
        if model not in ("gru", "transformer") or not path:
            p.error(f"--decode-run {item!r}: expected gru=PATH or transformer=PATH")
        args.decode_runs[model] = str(Path(path).resolve())
    args.scaling_batch_tokens = [int(x) for x in str(args.scaling_batch_tokens).split(",") if x.strip()]
    tasks = sorted(f.stem for f in (Path(CONF_DIR) / "task").glob("*.yaml"))
    if args.task not in tasks:
        p.error(f"--task {args.task!r}: conf/task/ has no {args.task}.yaml; choose from {', '.join(tasks)}")
    if args.tiny:
        args.task = "toy_reverse"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        worker_main(*args.worker)
        return None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Measure every Spec of the plan (and JoeyNMT), judge the results, write the report."""
    if args.from_json:
        return rerender(args)
    commit = git_commit()  # the code measured: taken before the (possibly hour-long) runs
    load_before, started = load_average(), other_work.mark()
    device = pick_device(args.device, "--device")
    work_dir = Path(args.work_dir).resolve()
    out_dir = Path(args.out)
    runner = Runner(work_dir, args.in_process, args.keep_runs, args.timeout)
    runner.say(f"preparing data ({args.task}) ...")
    data = prepare_data(args, device)
    runner.data = data
    specs, notes = build_specs(args, device)
    results = [runner(spec) for spec in specs if spec.kind == "train"]
    scaled = [runner(spec) for spec in specs if spec.kind == "scaling"]
    joeynmt = run_joeynmt(args, data, device, runner) if args.joeynmt else {}
    profiles = [runner(s) for s in specs if s.kind == "profile"]
    ttb = [runner(s) for s in specs if s.kind == "ttb"]
    ttq = [runner(s) for s in specs if s.kind == "ttq"]
    sweeps = sweep_rows(args, device, runner) if args.load and device.type == "cpu" else []
    # --tiny stands in for the Multi30k bench: its targets are listed, none judged
    targets_of = "multi30k_de_en" if args.tiny else args.task
    analysis = analyse(results, joeynmt, device, args.batch_tokens, ttb, task=targets_of, comparable=not args.tiny,
                       ttq=ttq)
    meta = {**run_meta(args, argv, device, commit, notes, load_before),
            "other_work": other_work.between(started, other_work.mark())}
    report = {"meta": meta, "training": results, **analysis,
              "scaling": scaling_rows(results, scaled), "scaling_plot": None, "joeynmt": joeynmt,
              "profiles": profiles, "time_to_bleu": ttb, "ttb_plot": None, "sweeps": sweeps}
    write_report(report, args.report, out_dir, args.readme)
    say_written(out_dir, args.report)
    return report


def sweep_rows(args: argparse.Namespace, device: torch.device, runner: Runner) -> list[dict[str, Any]]:
    """--load: the two-job sweeps (experiments/bench/load.py), on the bench's task and plain fp32 settings."""
    models = "gru_tiny,transformer_tiny" if args.tiny else "gru,transformer"
    overrides = [o for o in base_overrides(args, device, "transformer")
                 if not o.startswith(("model=", "trainer.num_threads="))]  # the sweep sets both
    return run_sweeps(models, overrides, runner.work_dir, args.sweep_steps, args.timeout, runner.say)


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the system has none): other work sharing the machine."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_meta(args: argparse.Namespace, argv: list[str] | None, device: torch.device, commit: str,
             notes: list[str], load_before: list[float] | None) -> dict[str, Any]:
    """What the report says about where, how and with what code it was measured (called after the measurements)."""
    info = hardware(device)
    command = "s2s-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    notes = list(notes)
    if args.in_process:
        notes.append("--in-process: peak RSS is the whole bench process's, not each configuration's")
    if device.type == "cpu" and not args.tiny:
        notes.append("On a machine shared with other work the timings are noisy: compare rows of one run.")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu": info["cpu"],
        "cores": info["cores"],
        "gpu": info.get("gpu"),
        "torch": info["torch"],
        "python": sys.version.split()[0],
        "device": str(device),
        "native_bf16": native_bf16(device),
        # what the workers' trainers run with (runtime.widen_onednn_cache): bf16 matmul kernels kept compiled
        "onednn_cache": int(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY))
        if device.type == "cpu" else None,
        "malloc": info["malloc"],  # the workers inherit this process's environment, LD_PRELOAD included
        "load_before": load_before,
        "load_after": load_average(),
        "task": "toy_reverse (tiny)" if args.tiny else args.task,
        "command": command.strip(),
        "warmup": args.warmup,
        "seen_shapes": not args.fresh_shapes,
        "steps": args.steps,
        "batch_tokens": args.batch_tokens,
        "scaling_warmup": args.scaling_warmup,
        "scaling_steps": args.scaling_steps,
        "peak_size": args.peak_size,
        "peak_repeats": args.peak_repeats,
        "isolated_workers": not args.in_process,
        "notes": notes,
    }


def rerender(args: argparse.Namespace) -> dict[str, Any]:
    """--from-json: plots, Markdown and README tables again from a saved report, nothing measured."""
    report = load_report(Path(args.from_json))
    report["targets"] = rejudged_training_targets(report)
    write_report(report, args.report, Path(args.out), args.readme)
    say_written(Path(args.out), args.report)
    return report


def say_written(out_dir: Path, name: str) -> None:
    """Name the folder and the report's files (a plot is left out where the report had nothing to plot)."""
    files = [f"{name}{end}" for end in (".md", ".json", "_scaling.png", "_curve.png", "_curve_tokens.png")]
    say_wrote(out_dir, [f for f in files if (out_dir / f).exists()])


def prepare_data(args: argparse.Namespace, device: torch.device) -> TaskData:
    """Load (or build and cache) the task's splits and tokenizer once, before any worker starts."""
    preset = f"{args.models[0]}_tiny" if args.tiny else args.models[0]
    cfg = compose(base_overrides(args, device, preset))
    data = TaskData(cfg.task, cfg.cache_dir)
    for split in ("train", "valid", args.decode_split):
        data.split(split)
    return data


def cli() -> None:
    """The ``s2s-bench`` console script: ``main`` without its return value, which would become the exit status."""
    main()
