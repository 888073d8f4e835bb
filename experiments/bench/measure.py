"""One measurement: a Spec's trainer, then its timed updates, decoding, profile or time to BLEU.

After a training configuration's timed updates, the same worker measures the
matmul peak (``peak``) in the same thread setting and dtype, and the updates'
model FLOPs (``flops``) against it.

Memory is read without psutil: the peak resident set size from ``getrusage``
(this process) or ``wait4`` (a worker, see ``runner.run_measured``).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.bench.batches import batch_stream, epoch_plan, plan_padding
from experiments.bench.decode import decoding_model, measure_decoding
from experiments.bench.flops import model_shapes, training_flops
from experiments.bench.peak import SquarePeak, measure_peak, peak_dtype, utilisation
from experiments.bench.plan import Spec, compose, model_kind
from experiments.bench.ttb import recipe_settings, time_to_bleu
from experiments.data.pipeline import TaskData
from experiments.training.optim import fused_adamw

log = logging.getLogger(__name__)

MIN_MEASURED = 5  # updates measured at least, however long they take


def maxrss_mb(ru_maxrss: int) -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes)."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far."""
    return maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def row_head(spec: Spec) -> dict[str, Any]:
    """What a Spec's result row starts with: what was measured (a failed one adds ``error`` instead of numbers)."""
    return {"kind": spec.kind, "model": model_kind(spec.preset), "preset": spec.preset, "config": spec.name,
            "batching": spec.batching}


def measure(spec: Spec, data: TaskData | None = None) -> dict[str, Any]:
    """Run one Spec; returns its result row (with ``error`` set instead of numbers if it failed)."""
    started = time.perf_counter()
    result = row_head(spec)
    try:
        if spec.kind == "scaling":
            result["points"] = [measure_config(Spec("train", spec.preset, f"scale{tokens}",
                                                    [*spec.overrides, f"trainer.batch_tokens={tokens}"],
                                                    spec.batching, spec.warmup, spec.steps,
                                                    max_seconds=spec.max_seconds, seen_shapes=spec.seen_shapes,
                                                    run_dir=f"{spec.run_dir}/{tokens}"), data)
                                for tokens in spec.scaling or []]
        else:
            result.update(measure_config(spec, data))
    except Exception as e:  # noqa: BLE001 - one failed configuration must not stop the others
        log.exception("%s/%s failed", spec.preset, spec.name)
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    result["seconds_total"] = time.perf_counter() - started
    return result


def measure_config(spec: Spec, data: TaskData | None) -> dict[str, Any]:
    from experiments.training.trainer import Trainer

    cfg = compose(spec.overrides)
    data = data if data is not None and data.task == cfg.task else TaskData(cfg.task, cfg.cache_dir)
    trainer = Trainer(cfg, Path(spec.run_dir), data=data)
    tc = cfg.trainer
    result: dict[str, Any] = {
        "model": model_kind(spec.preset), "config": spec.name, "batching": spec.batching,
        "precision": trainer.precision, "compile": bool(tc.compile), "threads": trainer.threads,
        "batch_tokens": int(tc.batch_tokens), "pool_size": int(tc.pool_size), "device": trainer.device.type,
        "fused_adamw": fused_adamw(tc, trainer.device), "params": trainer.n_params}
    if spec.kind in ("ttb", "ttq"):
        result.update(time_to_bleu(trainer, spec.ttb or {}))
        if spec.kind == "ttq":  # the recipe's name, and what it came to in the config trained
            result.update(recipe=(spec.ttb or {}).get("recipe"), settings=recipe_settings(cfg))
    elif spec.kind == "profile":
        result.update(profile(trainer, data, cfg, spec))
    else:
        result.update(plan_padding(data, epoch_plan(data, cfg, spec.batching, 0)))
        result.update(train_steps(trainer, data, cfg, spec))
        if spec.peak:
            result.update(machine_limit(trainer, data, cfg, result, spec.peak))
        if tc.compile:
            result["dynamo"] = dynamo_stats()
        if spec.decode:
            model, decode_data, decode_cfg, device, autocast, source = decoding_model(trainer, data, cfg, spec.decode)
            result["decoding"] = measure_decoding(model, decode_data, decode_cfg, device, autocast, spec.decode)
            result["decoded_with"] = source
            result["peak_rss_mb_with_decoding"] = peak_rss_mb()
    return result


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """conf/model's keys as plain values (enums by their value), as ``flops`` reads them."""
    return {k: getattr(v, "value", v) for k, v in OmegaConf.to_container(cfg.model).items()}


def machine_limit(trainer: Any, data: TaskData, cfg: DictConfig, result: dict[str, Any],
                  peak_args: dict[str, int]) -> dict[str, Any]:
    """The matmul peak in this process's setting (sampled between and right after the timed updates) and their MFU
    against it.

    The model's shapes are taken at the median measured batch; the peak's dtype
    is the configuration's where it is native (``peak.peak_dtype``).
    """
    shapes = model_shapes(model_config(cfg), data.tgt_vocab_size, result["batch_sentences"], result["batch_tgt_width"])
    peak = measure_peak(shapes, peak_dtype(trainer.device, trainer.precision), trainer.device, **peak_args,
                        square_samples=result.pop("square_samples"))
    return {"peak": peak, **utilisation(result["model_flops"], result["measured_s"], peak)}


def dynamo_stats() -> dict[str, Any]:
    """What torch.compile made of the model: graphs compiled, graph breaks and their reasons."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    return {"unique_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "break_reasons": [str(reason).splitlines()[0][:200] for reason in list(breaks)[:5]]}


def fetched(stream: Iterator[Any]) -> tuple[Any, float]:
    """The stream's next batch and the seconds it took to make (collation included)."""
    t0 = time.perf_counter()
    batch = next(stream)
    return batch, time.perf_counter() - t0


def update_plan(stream: Iterator[Any], warmup: int, steps: int,
                seen_shapes: bool) -> tuple[Iterator[tuple[Any, float]], int]:
    """The (batch, seconds to make it) of each update to run, and how many of them warm up.

    Fresh shapes: ``warmup`` batches, then ``steps`` new ones timed, as in a
    run's first epoch. Seen shapes: the ``steps`` timed batches run once as
    the warm-up, then again timed, each counted with the time it took to make,
    so that no timed update meets a batch shape for the first time. That is
    what a run's updates are from its second epoch on, and what its tokens per
    second mostly are: bf16 on a CPU compiles a oneDNN kernel for every new
    matmul shape (kept in its cache after), which fresh shapes pay inside the
    timing and fp32 does not.
    """
    if not seen_shapes:
        return (fetched(stream) for _ in range(warmup + steps)), warmup

    def twice() -> Iterator[tuple[Any, float]]:
        first = []
        for _ in range(steps):
            first.append(fetched(stream))
            yield first[-1]
        yield from first

    return twice(), steps


def train_steps(trainer: Any, data: TaskData, cfg: DictConfig, spec: Spec) -> dict[str, Any]:
    """Warm-up updates, then up to ``spec.steps`` timed ones, through ``Trainer.train_step`` (``update_plan``).

    The timed phase stops early once it has run ``spec.max_seconds`` (and at
    least MIN_MEASURED updates), so that one slow configuration cannot hold the
    whole bench up; the report gives the number of updates measured.
    """
    cuda = trainer.device.type == "cuda"
    updates, w = update_plan(batch_stream(data, cfg, spec.batching), spec.warmup, spec.steps, spec.seen_shapes)
    rss_before = current_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    fetch, step, tokens, losses = [], [], [], []
    model_cfg, vocab = model_config(cfg), data.tgt_vocab_size
    flops = {"padded": 0, "real": 0}  # model FLOPs of the measured updates
    sentences, widths = [], []  # the measured batches' shapes
    measured = 0.0
    cpu_start = 0.0
    # The square peak, sampled between timed updates so that its maximum sees the machine as the updates did.
    sampler = SquarePeak(spec.peak["size"], peak_dtype(trainer.device, trainer.precision), trainer.device,
                         every=spec.steps // max(1, spec.peak["repeats"])) if spec.peak else None
    for i, (batch, fetch_s) in enumerate(updates):
        if i == w:
            cpu_start = time.process_time()
        t1 = time.perf_counter()
        loss, n_tokens = trainer.train_step([batch])
        if cuda:
            torch.cuda.synchronize(trainer.device)
        t2 = time.perf_counter()
        trainer.progress.step += 1
        fetch.append(fetch_s)
        step.append(t2 - t1)
        tokens.append(n_tokens)
        losses.append(loss)
        if i >= w:
            measured += fetch_s + t2 - t1
            for kind, count in training_flops(model_cfg, vocab, batch, trainer.device.type).items():
                flops[kind] += count
            sentences.append(batch.src.size(0))
            widths.append(batch.tgt_in.size(1))
            if sampler:
                sampler.after_update(i + 1 - w)
            if spec.max_seconds and measured > spec.max_seconds and i + 1 - w >= MIN_MEASURED:
                break
    cpu = time.process_time() - cpu_start  # seen shapes: the timed batches were made in the warm-up, off this clock
    n = len(step) - w
    wall = sum(fetch[w:]) + sum(step[w:])
    result = {
        "warmup_steps": w,
        "seen_shapes": spec.seen_shapes,
        "steps": n,
        "steps_asked": spec.steps,
        "warmup_s": sum(fetch[:w]) + sum(step[:w]),
        "measured_s": wall,
        "tokens": int(sum(tokens[w:])),
        "tokens_per_s": sum(tokens[w:]) / wall if wall else float("nan"),
        "step_s": wall / n if n else float("nan"),
        "step_s_median": float(np.median(np.add(fetch[w:], step[w:]))) if n else float("nan"),
        "data_s_per_step": float(np.mean(fetch[w:])) if n else float("nan"),
        # CPU seconds (all threads) per update: steadier than wall time on a shared machine
        "cpu_s_per_step": cpu / n if n else float("nan"),
        "model_flops": flops,
        "batch_sentences": int(np.median(sentences)) if n else 0,
        "batch_tgt_width": int(np.median(widths)) if n else 0,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "square_samples": sampler.samples if sampler else [],
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return result


TOP_OPERATORS = 12


def profile(trainer: Any, data: TaskData, cfg: DictConfig, spec: Spec) -> dict[str, Any]:
    """A chrome trace of ``spec.steps`` updates after ``spec.warmup`` unprofiled ones."""
    from torch.profiler import ProfilerActivity, record_function, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    out = Path(spec.profile_dir or ".") / f"{spec.preset}-{spec.name}-trace.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    updates, w = update_plan(batch_stream(data, cfg, spec.batching), spec.warmup, spec.steps + 1, spec.seen_shapes)
    for _ in range(w):
        trainer.train_step([next(updates)[0]])
    with torch.profiler.profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=spec.steps),
                                on_trace_ready=lambda p: p.export_chrome_trace(str(out)),
                                record_shapes=True, acc_events=True) as prof:
        for _ in range(spec.steps + 1):
            with record_function("next_batch"):
                batch, _ = next(updates)
            with record_function("train_step"):
                trainer.train_step([batch])
            prof.step()
    averages = prof.key_averages()
    return {"trace": str(out), "steps": spec.steps, "top_ops": top_operators(averages, spec.steps),
            "op_classes": op_classes(averages, spec.steps)}


# The operators whose self time is the matrix products themselves: what bf16's hardware speeds up.
MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_addmm_activation"})


def profiled_ops(averages: Any) -> list[Any]:
    """A profile's operators that took time, without the profiler's own step markers."""
    return [a for a in averages if a.self_cpu_time_total > 0 and not a.key.startswith("ProfilerStep")]


def op_classes(averages: Any, steps: int) -> dict[str, float]:
    """Self CPU seconds per update of matrix products, copies (``aten::copy_``: dtype casts, slice writes,
    contiguous copies) and everything else: how an update's time splits, to compare fp32 with bf16."""
    out = {"matmul": 0.0, "copies": 0.0, "rest": 0.0}
    for a in profiled_ops(averages):
        key = "matmul" if a.key in MATMUL_OPS else "copies" if a.key == "aten::copy_" else "rest"
        out[key] += a.self_cpu_time_total / 1e6 / steps
    return out


def top_operators(averages: Any, steps: int, n: int = TOP_OPERATORS) -> list[dict[str, Any]]:
    """The ``n`` operators with the most self CPU time of a profile, per update: where an update's time goes."""
    ops = profiled_ops(averages)
    total = sum(a.self_cpu_time_total for a in ops) or 1
    ops.sort(key=lambda a: a.self_cpu_time_total, reverse=True)
    return [{"op": a.key, "self_s_per_step": a.self_cpu_time_total / 1e6 / steps,
             "share": a.self_cpu_time_total / total, "calls_per_step": a.count / steps} for a in ops[:n]]
