"""``s2s-bench``: training and decoding speed of both models, their fast paths, and JoeyNMT beside them.

    s2s-bench                      # both models at table size on Multi30k de->en, every fast path on and off
    s2s-bench --joeynmt            # ... and JoeyNMT 2.3.0 on the same data, vocabulary and machine
    s2s-bench --tiny               # a toy run of the whole pipeline in well under a minute
    s2s-bench --profile traces/    # ... plus a torch.profiler chrome trace (open in https://ui.perfetto.dev)
    s2s-bench --time-to-bleu 30    # ... plus: train until validation BLEU >= 30, report steps and time

What is measured (each training configuration in a fresh worker process, so
that its peak memory, thread setting and compile caches are its own):

* training: ``Trainer.train_step`` over real token-budget batches of the
  training split, ``--warmup`` updates first, then ``--steps`` measured ones;
  throughput is real (non-pad) target tokens per second of wall time, batch
  collation included (JoeyNMT's "Tokens per Sec" counts its data loading too);
  step time; peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a
  GPU); the padding of a whole epoch's batches;
* decoding: greedy and beam search over the test split with the model as it is
  after the measured updates of the plain configuration (barely trained, so
  its outputs tend to run to the length limit: the report gives their mean
  length beside the references');
* the fast paths, each measured off and on: bf16 autocast, ``torch.compile``
  (Transformer), the CPU thread count, sorted token-budget batches (against a
  small sorting pool and unsorted random batches), fused AdamW (CUDA only),
  the Transformer's KV cache (against re-running the decoder over the whole
  prefix at every step, a baseline that exists only here) and batched beam
  search (against one sentence at a time);
* a scaling plot: tokens/s against the batch budget;
* JoeyNMT (``--joeynmt``, see ``experiments/joeynmt_bench.py``): its own
  "Tokens per Sec" log lines, for a config matched to ours.

The report goes to ``results/benchmarks.md`` and ``results/benchmarks.json``
(``--out``) with the CPU, core count, GPU (where one was used), torch version,
commit and date.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.atomic import atomic_path, write_text
from experiments.batching import cut_sorted
from experiments.data import TaskData
from experiments.errors import UserError
from experiments.evaluate import decode_split, load_run, score, search
from experiments.runtime import git_commit, hardware, pick_device, usable_cores
from models.interface import Cache

log = logging.getLogger(__name__)

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# JoeyNMT 2.3.0 on this project's 2-core CPU machine (shared/peers/joeynmt/README.md):
# used for the target ratios when JoeyNMT is not measured in the same run.
JOEYNMT_ANCHORS = {"transformer": 770.0, "gru": 750.0}

# The targets: training speed as a multiple of JoeyNMT's, decoding time on a CPU.
TRAIN_TARGETS = [
    # (model, which of ours, minimum ratio to JoeyNMT)
    ("transformer", "best", 5.0),
    ("transformer", "fp32", 2.5),
    ("gru", "best", 3.0),
]
DECODE_TARGETS = [("transformer", "greedy", 5.0), ("transformer", "beam5", 20.0)]  # seconds, CPU

# JoeyNMT 2.3.0's validation BLEU (greedy, sacreBLEU) against updates of 4096-token batches with
# joey_transformer.yaml (shared/peers/joeynmt/README.md). Updates do not depend on the hardware, so this
# curve is the sample-efficiency reference on any machine.
JOEYNMT_CURVE = {500: 10.5, 1000: 28.6, 1500: 34.8, 2000: 37.4, 2500: 38.9}
# The sample-efficiency target: (model, JoeyNMT's best validation BLEU, at most this many updates, batch tokens).
SAMPLE_TARGET = ("transformer", JOEYNMT_CURVE[max(JOEYNMT_CURVE)], 2000, 4096)

MULTI30K = ["task=multi30k_de_en"]
TINY_TASK = ["task=toy_reverse", "task.toy.train_size=2000", "task.toy.eval_size=40"]


# ---------------------------------------------------------------------------
# configurations


@dataclass
class Spec:
    """One measurement, run by ``measure`` (in a worker process unless --in-process)."""

    kind: str  # "train" | "scaling" | "profile" | "ttb" (time to BLEU)
    preset: str  # conf/model/<preset>.yaml
    name: str  # configuration name: base, bf16, compile, ...
    overrides: list[str]  # Hydra overrides, composed like s2s-train's
    batching: str = "sorted"  # sorted (trainer.pool_size) | random (unsorted, like JoeyNMT)
    warmup: int = 10
    steps: int = 30
    decode: dict[str, Any] | None = None
    profile_dir: str | None = None
    ttb: dict[str, Any] | None = None
    scaling: list[int] | None = None  # batch budgets measured one after another in one worker
    max_seconds: float = 0.0  # the measured phase ends once past this (with at least MIN_MEASURED updates)
    run_dir: str = ""


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively (CPU: AVX512-BF16 / AMX through oneDNN; CUDA: Ampere or later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Variant:
    overrides: list[str]
    batching: str = "sorted"
    reduced: bool = False  # measured with --slow-warmup / --slow-steps (bf16 emulated on this CPU)


def config_variants(model: str, device: torch.device, *, small_pool: int, compile_ok: bool,
                    wanted: list[str]) -> tuple[dict[str, Variant], list[str]]:
    """Name -> Variant of every configuration measured for ``model`` (gru|transformer), and notes on those left out.

    ``base`` is the plain path: fp32, eager, all usable cores, the whole split
    length-sorted into batches (trainer.pool_size=0), fused AdamW where CUDA has
    it. Every other configuration changes one thing (bf16+compile two).
    ``wanted``: names to keep ("all", or names; "pool" matches any pool size).
    """
    native = bf16_native(device)
    variants = {"base": Variant([]), "bf16": Variant(["trainer.precision=bf16"], reduced=not native)}
    notes = []
    if model == "transformer" and compile_ok:
        variants["compile"] = Variant(["trainer.compile=true"])
        variants["bf16+compile"] = Variant(["trainer.precision=bf16", "trainer.compile=true"], reduced=not native)
    if device.type == "cpu" and usable_cores() > 1:
        variants["threads1"] = Variant(["trainer.num_threads=1"])
    variants[f"pool{small_pool}"] = Variant([f"trainer.pool_size={small_pool}"])
    variants["random"] = Variant([], "random")
    if device.type == "cuda":
        variants["unfused"] = Variant(["trainer.fused_adamw=false"])
    if "all" in wanted:
        if not native and "bf16+compile" in variants and "bf16+compile" not in wanted:
            del variants["bf16+compile"]  # minutes of emulated bf16 under compilation, to learn what bf16 shows
            notes.append(f"{model}: bf16+compile left out (this {device.type} has no native bf16: bf16 alone is "
                         "measured; ask for it with --configs all,bf16+compile)")
        return variants, notes
    unknown = [w for w in wanted if w not in variants and w not in ("pool", "none")]
    if unknown:
        notes.append(f"{model}: {', '.join(unknown)} not available here")
    return {k: v for k, v in variants.items() if k in wanted or (k.startswith("pool") and "pool" in wanted)}, notes


def compose(overrides: list[str]) -> DictConfig:
    """The validated config for ``overrides``, composed from conf/ as s2s-train composes it.

    Hydra composes the group choices and undotted keys (task=..., model=...,
    seed=...) once per distinct set; dotted ``key=value`` overrides are merged
    onto a copy and validated against the schema, which is what Hydra would do
    with them here (no experiment preset is involved) at a fraction of the cost.
    """
    from experiments.config import check_override_keys, validate

    check_override_keys(overrides)
    groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0] or o[:1] in "+~")
    dotted = [o for o in overrides if o not in groups]
    # The key holds the environment the config reads (cache_dir: ${oc.env:S2S_CACHE_DIR,null}).
    cfg = OmegaConf.create(OmegaConf.to_container(_composed(groups, os.environ.get("S2S_CACHE_DIR"))))
    return validate(OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotted)) if dotted else cfg)


@functools.lru_cache(maxsize=16)
def _composed(groups: tuple[str, ...], cache_env: str | None) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.config import validate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return validate(hydra_compose(config_name="config", overrides=list(groups)))


def model_kind(preset: str) -> str:
    return "transformer" if preset.startswith("transformer") else "gru" if preset.startswith("gru") else preset


# ---------------------------------------------------------------------------
# batches


def epoch_plan(data: TaskData, cfg: DictConfig, batching: str, epoch: int) -> list[np.ndarray]:
    """One epoch of training batches: the trainer's (sorted within trainer.pool_size) or unsorted random ones.

    Random batches shuffle the split and cut it greedily at the same token
    budget without sorting (JoeyNMT's token batches): the padding baseline.
    """
    tc = cfg.trainer
    if batching == "random":
        split = data.split("train")
        longest = np.maximum(split.src_lens, split.tgt_lens)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(longest))
        return cut_sorted(order, longest, tc.batch_tokens)
    return data.plan("train", tc.batch_tokens, shuffle=True, seed=cfg.seed, epoch=epoch, pool_size=tc.pool_size)


def batch_stream(data: TaskData, cfg: DictConfig, batching: str):
    epoch = 0
    while True:
        yield from data.batches("train", epoch_plan(data, cfg, batching, epoch))
        epoch += 1


def plan_padding(data: TaskData, plan: list[np.ndarray]) -> dict[str, float]:
    """Padding of a whole epoch's batches, from the lengths alone (eos / bos included, as collated)."""
    split = data.split("train")
    src_real = src_all = tgt_real = tgt_all = sentences = 0
    for idx in plan:
        src, tgt = split.src_lens[idx], split.tgt_lens[idx]
        src_real, src_all = src_real + int(src.sum()), src_all + len(idx) * int(src.max())
        tgt_real, tgt_all = tgt_real + int(tgt.sum()), tgt_all + len(idx) * int(tgt.max())
        sentences += len(idx)
    return {
        "pad_src": 1 - src_real / src_all,
        "pad_tgt": 1 - tgt_real / tgt_all,
        "pad_all": 1 - (src_real + tgt_real) / (src_all + tgt_all),
        "batches_per_epoch": len(plan),
        "tgt_tokens_per_batch": tgt_real / len(plan),
        "sentences_per_batch": sentences / len(plan),
    }


# ---------------------------------------------------------------------------
# memory


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


# ---------------------------------------------------------------------------
# decoding baselines (measurement only)


class NoKVCache:
    """The Transformer decoded without its self-attention KV cache: the no-cache baseline of the bench.

    Every step re-runs the decoder over the whole prefix generated so far and
    keeps the last position's logits. The encoder output and the
    cross-attention keys/values are still computed once per sentence, so the
    difference to the real model is exactly the self-attention cache. It
    implements the decoding interface, so greedy and beam search run on it
    unchanged (the prefix has the batch on dim 0 and is reordered with the beams).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.pad_id = model.pad_id

    def eval(self) -> NoKVCache:
        self.model.eval()
        return self

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        memory, cache = self.model.encode(src, src_mask)
        return memory, {"prefix": src.new_zeros(src.size(0), 0), "cross_k": cache["cross_k"],
                        "cross_v": cache["cross_v"]}

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: Cache) -> tuple[torch.Tensor, Cache, torch.Tensor]:
        prefix = torch.cat([cache["prefix"], tokens.unsqueeze(1)], dim=1)  # (B, t + 1)
        layers = len(cache["cross_k"])
        empty = cache["cross_k"][0][:, :, :0]  # (B, h, 0, d_head)
        fresh = {"self_k": [empty] * layers, "self_v": [empty] * layers,
                 "cross_k": cache["cross_k"], "cross_v": cache["cross_v"]}
        logits, _, weights = self.model._decode(prefix, src_mask, fresh)  # (B, t + 1, V), (B, L, h, t + 1, S)
        return logits[:, -1], {**cache, "prefix": prefix}, weights[:, :, :, -1]


@torch.inference_mode()
def decode_one_at_a_time(model: Any, data: TaskData, split: str, decoding: Any, device: torch.device,
                         autocast: Any, *, beam_size: int, limit: int) -> tuple[list[list[int]], float]:
    """Search sentence by sentence (batch of one): the baseline of batched search."""
    model.eval()
    out = []
    start = time.perf_counter()
    for batch in data.batches(split, [np.array([i]) for i in range(limit)]):
        out.append(search(model, batch.to(device), data, decoding, autocast, beam_size).tokens[0])
    return out, time.perf_counter() - start


def decoding_model(trainer: Any, data: TaskData, cfg: DictConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
    """What to decode with: the bench's model as trained so far, or a trained run (``spec["run"]``, fp32)."""
    from experiments.trainer import autocast_for

    if not spec.get("run"):
        return (trainer.model, data, cfg, trainer.device, trainer.autocast,
                f"the bench's model after {trainer.progress.step} updates")
    run = load_run(spec["run"], [f"trainer.device={trainer.device}"])
    if run.cfg.model.name != cfg.model.name:
        raise UserError(f"--decode-run {spec['run']} holds a {run.cfg.model.name}, not a {cfg.model.name}")
    return (run.model, run.data, run.cfg, run.device, autocast_for(run.device, "fp32"),
            f"{spec['run']} (step {run.step}, fp32)")


def measure_decoding(model: Any, data: TaskData, cfg: DictConfig, device: torch.device, autocast: Any,
                     spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Greedy and beam search over the split; for the Transformer the KV-cache and batching baselines too."""
    split, limit, subset = spec["split"], spec["limit"], spec["ablation"]
    n = min(limit or len(data.split(split)), len(data.split(split)))
    limit = n
    subset = min(subset, n)
    tgt_lens = data.split(split).tgt_lens

    def row(search: str, sentences: int, seconds: float, tokens: list[list[int]], hyps: list[str] | None,
            **extra: Any) -> dict[str, Any]:
        result = {"search": search, "sentences": sentences, "seconds": seconds,
                  "sentences_per_s": sentences / seconds if seconds else float("nan"),
                  "mean_output_len": float(np.mean([len(t) for t in tokens])),
                  "mean_ref_len": float(tgt_lens[:sentences].mean() - 1), **extra}
        if hyps is not None:
            result["bleu"] = score(data, split, hyps).get("bleu")
        return result

    rows = []
    for beam in spec["beams"]:
        decoded = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=beam, limit=limit)
        rows.append(row("greedy" if beam == 1 else f"beam{beam}", n, decoded.seconds, decoded.token_ids,
                        decoded.hypotheses, split=split))
    if not subset:
        return rows
    ablation_beam = max(spec["beams"])
    batched = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=ablation_beam, limit=subset)
    single, seconds = decode_one_at_a_time(model, data, split, cfg.decoding, device, autocast,
                                           beam_size=ablation_beam, limit=subset)
    same = sum(a == b for a, b in zip(batched.token_ids, single))
    name = "greedy" if ablation_beam == 1 else f"beam{ablation_beam}"
    rows.append(row(f"{name} batched", subset, batched.seconds, batched.token_ids, None, ablation="batching"))
    rows.append(row(f"{name} one sentence at a time", subset, seconds, single, None, ablation="batching",
                    same_outputs=same))
    if model_kind(cfg.model.name) == "transformer":
        cached = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=1, limit=subset)
        uncached = decode_split(NoKVCache(model), data, split, cfg.decoding, device, autocast, beam_size=1,
                                limit=subset)
        same = sum(a == b for a, b in zip(cached.token_ids, uncached.token_ids))
        rows.append(row("greedy, KV cache", subset, cached.seconds, cached.token_ids, None, ablation="kv_cache"))
        rows.append(row("greedy, no KV cache", subset, uncached.seconds, uncached.token_ids, None,
                        ablation="kv_cache", same_outputs=same))
    return rows


# ---------------------------------------------------------------------------
# one measurement


def measure(spec: Spec, data: TaskData | None = None) -> dict[str, Any]:
    """Run one Spec; returns its result row (with ``error`` set instead of numbers if it failed)."""
    started = time.perf_counter()
    result: dict[str, Any] = {"kind": spec.kind, "model": model_kind(spec.preset), "preset": spec.preset,
                              "config": spec.name, "batching": spec.batching}
    try:
        if spec.kind == "scaling":
            result["points"] = [measure_config(Spec("train", spec.preset, f"scale{tokens}",
                                                    [*spec.overrides, f"trainer.batch_tokens={tokens}"],
                                                    spec.batching, spec.warmup, spec.steps,
                                                    max_seconds=spec.max_seconds,
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
    from experiments.trainer import Trainer

    cfg = compose(spec.overrides)
    data = data if data is not None and data.task == cfg.task else TaskData(cfg.task, cfg.cache_dir)
    trainer = Trainer(cfg, Path(spec.run_dir), data=data)
    tc = cfg.trainer
    result: dict[str, Any] = {
        "model": model_kind(spec.preset), "config": spec.name, "batching": spec.batching,
        "precision": str(tc.precision.value), "compile": bool(tc.compile), "threads": trainer.threads,
        "batch_tokens": int(tc.batch_tokens), "pool_size": int(tc.pool_size), "device": trainer.device.type,
        "fused_adamw": bool(tc.fused_adamw and trainer.device.type == "cuda"), "params": trainer.n_params}
    if spec.kind == "ttb":
        result.update(time_to_bleu(trainer, data, spec.ttb or {}))
    elif spec.kind == "profile":
        result.update(profile(trainer, data, cfg, spec))
    else:
        result.update(plan_padding(data, epoch_plan(data, cfg, spec.batching, 0)))
        result.update(train_steps(trainer, data, cfg, spec))
        if tc.compile:
            result["dynamo"] = dynamo_stats()
        if spec.decode:
            model, decode_data, decode_cfg, device, autocast, source = decoding_model(trainer, data, cfg, spec.decode)
            result["decoding"] = measure_decoding(model, decode_data, decode_cfg, device, autocast, spec.decode)
            result["decoded_with"] = source
            result["peak_rss_mb_with_decoding"] = peak_rss_mb()
    return result


def dynamo_stats() -> dict[str, Any]:
    """What torch.compile made of the model: graphs compiled, graph breaks and their reasons."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    return {"unique_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "break_reasons": [str(reason).splitlines()[0][:200] for reason in list(breaks)[:5]]}


MIN_MEASURED = 5


def train_steps(trainer: Any, data: TaskData, cfg: DictConfig, spec: Spec) -> dict[str, Any]:
    """``spec.warmup`` updates, then up to ``spec.steps`` timed ones, through ``Trainer.train_step``.

    The timed phase stops early once it has run ``spec.max_seconds`` (and at
    least MIN_MEASURED updates), so that one slow configuration cannot hold the
    whole bench up; the report gives the number of updates measured.
    """
    cuda = trainer.device.type == "cuda"
    stream = batch_stream(data, cfg, spec.batching)
    rss_before = current_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    fetch, step, tokens, losses = [], [], [], []
    measured = 0.0
    cpu_start = 0.0
    for i in range(spec.warmup + spec.steps):
        if i == spec.warmup:
            cpu_start = time.process_time()
        t0 = time.perf_counter()
        batch = next(stream)
        t1 = time.perf_counter()
        loss, n_tokens = trainer.train_step([batch])
        if cuda:
            torch.cuda.synchronize(trainer.device)
        t2 = time.perf_counter()
        trainer.progress.step += 1
        fetch.append(t1 - t0)
        step.append(t2 - t1)
        tokens.append(n_tokens)
        losses.append(loss)
        if i >= spec.warmup:
            measured += t2 - t0
            if spec.max_seconds and measured > spec.max_seconds and i + 1 - spec.warmup >= MIN_MEASURED:
                break
    cpu = time.process_time() - cpu_start
    w = spec.warmup
    n = len(step) - w
    wall = sum(fetch[w:]) + sum(step[w:])
    result = {
        "warmup_steps": w,
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
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return result


def profile(trainer: Any, data: TaskData, cfg: DictConfig, spec: Spec) -> dict[str, Any]:
    """A chrome trace of ``spec.steps`` updates after ``spec.warmup`` unprofiled ones."""
    from torch.profiler import ProfilerActivity, record_function, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    out = Path(spec.profile_dir or ".") / f"{spec.preset}-{spec.name}-trace.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    stream = batch_stream(data, cfg, spec.batching)
    for _ in range(spec.warmup):
        trainer.train_step([next(stream)])
    with torch.profiler.profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=spec.steps),
                                on_trace_ready=lambda p: p.export_chrome_trace(str(out)),
                                record_shapes=True) as prof:
        for _ in range(spec.steps + 1):
            with record_function("next_batch"):
                batch = next(stream)
            with record_function("train_step"):
                trainer.train_step([batch])
            prof.step()
    return {"trace": str(out), "steps": spec.steps}


def time_to_bleu(trainer: Any, data: TaskData, ttb: dict[str, Any]) -> dict[str, Any]:
    """Train (Trainer.train_step, validating with Trainer.validate) until validation BLEU >= the threshold."""
    threshold, eval_every, max_steps = ttb["threshold"], ttb["eval_every"], ttb["max_steps"]
    p = trainer.progress
    stream = trainer.batch_stream()
    start = time.perf_counter()
    train_seconds = 0.0
    history = []
    reached = False
    while p.step < max_steps:
        try:
            position, batch = next(stream)
        except StopIteration:
            break  # trainer.max_epochs reached
        p.batch_in_epoch = position
        t0 = time.perf_counter()
        _, tokens = trainer.train_step([batch])
        train_seconds += time.perf_counter() - t0
        p.step += 1
        p.tokens += tokens
        if p.step % eval_every == 0 or p.step == max_steps:
            trainer.validate()
            value = json.loads(trainer.metrics_file.read_text().splitlines()[-1]).get(trainer.primary)
            history.append({"step": p.step, "bleu": value, "train_s": train_seconds,
                            "wall_s": time.perf_counter() - start})
            log.warning("time to BLEU: step %d  BLEU %.2f  (%.0f s)", p.step, value, time.perf_counter() - start)
            if value >= threshold:
                reached = True
                break
    return {"threshold": threshold, "reached": reached, "steps_to_bleu": p.step if reached else None,
            "train_s": train_seconds, "wall_s": time.perf_counter() - start, "best_bleu": p.best,
            "eval_every": eval_every, "max_steps": max_steps, "history": history,
            "tokens_per_s": p.tokens / train_seconds if train_seconds else float("nan")}


# ---------------------------------------------------------------------------
# running the measurements


def run_measured(cmd: list[str], *, log_path: Path, timeout: float, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """Run ``cmd`` (output to ``log_path``); returns exit code, wall seconds and the child's peak RSS in MiB.

    The peak comes from ``wait4`` for this child alone, without psutil. The
    child gets its own process group so that a timeout ends it and whatever it started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill()
            raise
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return proc.returncode, time.perf_counter() - start, rss


class Runner:
    """Runs Specs in worker processes (or in this one) and reports progress."""

    def __init__(self, work_dir: Path, in_process: bool, keep_runs: bool, timeout: float) -> None:
        self.work_dir = work_dir
        self.in_process = in_process
        self.keep_runs = keep_runs
        self.timeout = timeout
        self.started = time.perf_counter()
        self.data: TaskData | None = None

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def __call__(self, spec: Spec) -> dict[str, Any]:
        slug = f"{spec.kind}-{spec.preset}-{spec.name}".replace("+", "_").replace("/", "_")
        spec.run_dir = str(self.work_dir / "runs" / slug)
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        self.say(f"{spec.kind} {spec.preset} {spec.name} ...")
        if self.in_process:
            result = measure(spec, self.data)
        else:
            spec_file = self.work_dir / "runs" / f"{slug}.spec.json"
            out_file = self.work_dir / "runs" / f"{slug}.result.json"
            spec_file.parent.mkdir(parents=True, exist_ok=True)
            spec_file.write_text(json.dumps(asdict(spec)))
            out_file.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "experiments.benchmark", "--worker", str(spec_file), str(out_file)]
            timeout = self.timeout if spec.kind != "ttb" else 7 * 24 * 3600
            rc, _, rss = run_measured(cmd, log_path=self.work_dir / "runs" / f"{slug}.log", timeout=timeout)
            if out_file.exists():
                result = json.loads(out_file.read_text())
                result["worker_peak_rss_mb"] = rss
            else:
                tail = (self.work_dir / "runs" / f"{slug}.log").read_text()[-2000:]
                result = {"kind": spec.kind, "model": model_kind(spec.preset), "preset": spec.preset,
                          "config": spec.name, "batching": spec.batching,
                          "error": f"worker exited with {rc} (timeout {timeout:.0f}s?): {tail.strip()[-500:]}"}
        if not self.keep_runs:
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        if "error" in result:
            self.say(f"  FAILED: {result['error']}")
        elif spec.kind == "scaling":
            for point in result.get("points", []):
                self.say(f"  {point['batch_tokens']} tokens: {point['tokens_per_s']:.0f} tok/s, "
                         f"{point['step_s']:.3f} s/step")
        elif spec.kind == "train":
            self.say(f"  {result['tokens_per_s']:.0f} tok/s, {result['step_s']:.3f} s/step, "
                     f"warm-up {result['warmup_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MiB")
            for row in result.get("decoding", []):
                self.say(f"  decode {row['search']}: {row['sentences']} sentences in {row['seconds']:.2f} s "
                         f"(mean output length {row['mean_output_len']:.1f})")
        return result


def jsonable(value: Any) -> Any:
    """NaN and infinities as null (strict JSON), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def worker_main(spec_file: str, out_file: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = Spec(**json.loads(Path(spec_file).read_text()))
    result = measure(spec)
    Path(out_file).write_text(json.dumps(jsonable(result)))


def compile_usable() -> tuple[bool, str]:
    """Whether torch.compile can build kernels here (inductor needs a C++ compiler on a CPU)."""
    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile"
    if sys.platform == "win32":
        return False, "torch.compile is not supported on Windows here"
    if torch.cuda.is_available():
        return True, ""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return False, "no C++ compiler (g++/clang++) found: inductor cannot build CPU kernels"
    return True, ""


# ---------------------------------------------------------------------------
# the plan of a run


def base_overrides(args: argparse.Namespace, device: torch.device, preset: str) -> list[str]:
    """The Hydra overrides of the plain configuration of model ``preset`` (the other configurations add to them)."""
    task = TINY_TASK if args.tiny else MULTI30K
    return [*task, f"model={preset}", "logger=none", "trainer.progress=false", f"trainer.device={device}",
            f"trainer.batch_tokens={args.batch_tokens}", f"seed={args.seed}", *args.overrides]


def build_specs(args: argparse.Namespace, device: torch.device) -> tuple[list[Spec], list[str]]:
    compile_ok, why = compile_usable()
    notes: list[str] = []
    if args.no_compile:
        compile_ok, why = False, "turned off with --no-compile"
    if why:
        notes.append(f"torch.compile not measured: {why}")
    specs: list[Spec] = []
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    for model in args.models:
        preset = f"{model}_tiny" if args.tiny else model
        base = base_overrides(args, device, preset)
        variants, left_out = config_variants(model_kind(preset), device, small_pool=args.small_pool,
                                             compile_ok=compile_ok, wanted=wanted)
        notes += left_out
        for i, (name, variant) in enumerate(variants.items()):
            decode = None
            if i == 0 and not args.no_decode:
                decode = {"split": args.decode_split, "limit": args.decode_sentences, "beams": [1, args.beam],
                          "ablation": args.ablation_sentences, "run": args.decode_runs.get(model)}
            warmup, steps = (args.slow_warmup, args.slow_steps) if variant.reduced else (args.warmup, args.steps)
            if "trainer.compile=true" in variant.overrides:
                warmup = max(warmup, args.compile_warmup)  # the first shapes compile, then recompile as dynamic
            specs.append(Spec("train", preset, name, [*base, *variant.overrides], variant.batching, warmup, steps,
                              decode, max_seconds=args.max_measure_seconds))
        if not args.no_scaling:
            points = [t for t in args.scaling_batch_tokens if not (t == args.batch_tokens and "base" in variants)]
            if points:
                specs.append(Spec("scaling", preset, "scaling", base, "sorted", args.scaling_warmup,
                                  args.scaling_steps, scaling=points, max_seconds=args.max_measure_seconds))
        if args.profile:
            specs.append(Spec("profile", preset, "base", base, "sorted", 2, args.profile_steps,
                              profile_dir=str(Path(args.profile).resolve())))
        if args.time_to_bleu is not None:
            every, _ = config_variants(model_kind(preset), device, small_pool=args.small_pool,
                                       compile_ok=compile_ok, wanted=["all", "bf16+compile"])
            if args.ttb_config not in every:
                raise UserError(f"--ttb-config {args.ttb_config!r} is not a configuration of {model} here; "
                                f"choose from {sorted(every)}")
            extra = every[args.ttb_config].overrides
            overrides = [*base, *extra, f"trainer.eval_every={args.ttb_eval_every}",
                         f"trainer.max_steps={args.ttb_max_steps}", "trainer.val_beam_size=1",
                         "trainer.eval_max_sentences=0", "trainer.early_stopping_patience=0"]
            specs.append(Spec("ttb", preset, args.ttb_config, overrides,
                              ttb={"threshold": args.time_to_bleu, "eval_every": args.ttb_eval_every,
                                   "max_steps": args.ttb_max_steps}))
    if not bf16_native(device) and any(s.kind == "train" and "trainer.precision=bf16" in s.overrides for s in specs):
        notes.append(f"This {device.type} has no native bf16 (no AVX512-BF16 / AMX): bf16 autocast is emulated and "
                     f"slow here, so bf16 configurations are measured with {args.slow_warmup} warm-up + "
                     f"{args.slow_steps} updates.")
    return specs, notes


def prepare_data(args: argparse.Namespace, device: torch.device) -> TaskData:
    """Load (or build and cache) the task's splits and tokenizer once, before any worker starts."""
    preset = f"{args.models[0]}_tiny" if args.tiny else args.models[0]
    cfg = compose(base_overrides(args, device, preset))
    data = TaskData(cfg.task, cfg.cache_dir)
    for split in ("train", "valid", args.decode_split):
        data.split(split)
    return data


# ---------------------------------------------------------------------------
# the report


def fmt(value: Any, spec: str = ".0f", missing: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: Any, b: Any) -> float | None:
    if not a or not b or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return None
    return a / b


def analyse(training: list[dict[str, Any]], joeynmt: dict[str, Any], device: torch.device,
            batch_tokens: int, ttb: list[dict[str, Any]] | None = None, *, comparable: bool = True) -> dict[str, Any]:
    """Fast-path pairs, the comparison with JoeyNMT and the targets, from the measured rows.

    ``comparable``: whether the rows are the table-size models on Multi30k, the
    setting of JoeyNMT's numbers; otherwise (--tiny) no training target is judged.
    """
    ok = [r for r in training if "error" not in r and not r["config"].startswith("scale")]
    by = {(r["model"], r["config"]): r for r in ok}
    models = sorted({r["model"] for r in training}, key=lambda m: (m != "transformer", m))

    fast_paths = []

    def pair(path: str, model: str, off: str, on: str, note: str = "") -> None:
        a, b = by.get((model, off)), by.get((model, on))
        if a and b:
            fast_paths.append({"fast_path": path, "model": model, "off": off, "on": on,
                               "off_value": a["tokens_per_s"], "on_value": b["tokens_per_s"], "unit": "tok/s",
                               "speedup": ratio(b["tokens_per_s"], a["tokens_per_s"]), "note": note})

    for model in models:
        pair("bf16 autocast", model, "base", "bf16")
        if model == "transformer":
            pair("torch.compile", model, "base", "compile")
            pair("bf16 + torch.compile", model, "base", "bf16+compile")
        base, one = by.get((model, "base")), by.get((model, "threads1"))
        if base and one:
            pair(f"threads ({one['threads']} vs {base['threads']})", model, "threads1", "base")
        pool = next((c for (m, c) in by if m == model and c.startswith("pool")), None)
        pair("sorted batches (whole split vs unsorted random)", model, "random", "base",
             "padding, target side: " + " vs ".join(fmt(by.get((model, c), {}).get("pad_tgt"), ".0%")
                                                   for c in ("random", "base")))
        if pool:
            pair(f"sorted batches (whole split vs pools of {by[(model, pool)]['pool_size']})", model, pool, "base",
                 "padding, target side: " + " vs ".join(fmt(by[(model, c)].get("pad_tgt"), ".0%")
                                                       for c in (pool, "base")))
        if device.type == "cuda":
            pair("fused AdamW", model, "unfused", "base")
        else:
            fast_paths.append({"fast_path": "fused AdamW", "model": model, "speedup": None,
                               "note": "n/a on CPU (fused AdamW is CUDA only)"})
        if model == "gru":
            fast_paths.append({"fast_path": "packed sequences (encoder)", "model": model, "speedup": None,
                               "note": "always on (not switchable): padding never enters the recurrence"})
        decoding = (by.get((model, "base")) or next((r for r in ok if r["model"] == model and r.get("decoding")),
                                                    {})).get("decoding", [])
        for ablation, path, off_word in (("kv_cache", "KV cache (greedy decoding)", "no KV cache"),
                                         ("batching", "batched search (decoding)", "one sentence at a time")):
            rows = [r for r in decoding if r.get("ablation") == ablation]
            if len(rows) == 2:
                on, off = (rows[0], rows[1]) if off_word not in rows[0]["search"] else (rows[1], rows[0])
                fast_paths.append({"fast_path": path, "model": model, "off": off["search"], "on": on["search"],
                                   "off_value": off["sentences_per_s"], "on_value": on["sentences_per_s"],
                                   "unit": "sentences/s", "speedup": ratio(on["sentences_per_s"],
                                                                           off["sentences_per_s"]),
                                   "note": f"{on['sentences']} sentences; same outputs: "
                                           f"{off.get('same_outputs', '?')}/{off['sentences']}"})

    comparison = []
    for model in models:
        theirs = joeynmt.get(model, {})
        measured = theirs.get("tokens_per_s") if "error" not in theirs else None
        reference = measured or JOEYNMT_ANCHORS.get(model)
        base = by.get((model, "base"), {})
        random_ = by.get((model, "random"), {})
        candidates = [r for (m, _), r in by.items() if m == model and r.get("batch_tokens") == batch_tokens]
        best = max(candidates, key=lambda r: r["tokens_per_s"], default={})
        comparison.append({
            "model": model,
            "joeynmt_tokens_per_s": reference,
            "joeynmt_source": "measured in this run" if measured else
                              "anchor (shared/peers/joeynmt, not measured in this run)",
            "joeynmt_step_s": theirs.get("step_s"),
            "joeynmt_params": theirs.get("params"),
            "params": base.get("params") or best.get("params"),
            "fp32_tokens_per_s": base.get("tokens_per_s"),
            "fp32_random_batches_tokens_per_s": random_.get("tokens_per_s"),
            "best_config": best.get("config"),
            "best_tokens_per_s": best.get("tokens_per_s"),
            "fp32_ratio": ratio(base.get("tokens_per_s"), reference),
            "fp32_random_batches_ratio": ratio(random_.get("tokens_per_s"), reference),
            "best_ratio": ratio(best.get("tokens_per_s"), reference),
        })

    targets = []
    comp = {c["model"]: c for c in comparison}
    for model, which, minimum in TRAIN_TARGETS:
        if model not in models:
            continue
        value = comp.get(model, {}).get(f"{which}_ratio")
        targets.append({"target": f"{model} training ({'fp32' if which == 'fp32' else 'fast paths'}) "
                                  f">= {minimum:g}x JoeyNMT", "value": value, "unit": "x",
                        "met": None if value is None or not comparable else value >= minimum,
                        "against": comp.get(model, {}).get("joeynmt_source") if comparable else
                                   "not judged: not the table-size models on Multi30k"})
    for model, search, seconds in DECODE_TARGETS:
        if model not in models:
            continue
        rows = (by.get((model, "base")) or {}).get("decoding", [])
        row = next((r for r in rows if r["search"] == search and "ablation" not in r), None)
        full = row is not None and row["sentences"] >= 1000
        value = row["seconds"] if row else None
        source = (by.get((model, "base")) or {}).get("decoded_with", "")
        targets.append({"target": f"{model} {search} over the test split <= {seconds:g} s (CPU)",
                        "value": value, "unit": "s",
                        "met": None if value is None or device.type != "cpu" or not full else value <= seconds,
                        "against": f"decoded with {source}" + ("" if full else "; not the full 1000-sentence split")
                        if row else None})
    targets += sample_targets(ttb or [])
    return {"fast_paths": fast_paths, "comparison": comparison, "targets": targets}


def sample_targets(ttb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Updates to JoeyNMT's best validation BLEU, judged only for a run that can answer it.

    The first validation at or above the threshold counts, so the figure is
    rounded up to the validation cadence. A run with another batch size, or one
    that stopped early below the bar, leaves the target unjudged.
    """
    model, bleu, updates, tokens = SAMPLE_TARGET
    rows = []
    for run in ttb:
        if run.get("model") != model or "error" in run:
            continue
        first = next((h["step"] for h in run["history"] if h["bleu"] >= bleu), None)
        judged = run.get("batch_tokens") == tokens and (first is not None or run["max_steps"] >= updates)
        rows.append({"target": f"{model} validation BLEU >= {bleu:g} in <= {updates} updates of {tokens} tokens",
                     "value": first, "unit": " updates", "format": "d",
                     "met": (first is not None and first <= updates) if judged else None,
                     "against": f"JoeyNMT 2.3.0: {bleu:g} after {max(JOEYNMT_CURVE)} updates; ours validated "
                                f"every {run['eval_every']} updates, best {fmt(run['best_bleu'], '.2f')}"})
    return rows


def scaling_rows(training: list[dict[str, Any]], scaled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput against the batch budget: the scaling workers' points and the base runs (none without the former)."""
    if not scaled:
        return []
    points = [r for r in training if r["config"] == "base"]
    for result in scaled:
        points += result.get("points", [])
    rows = [{"model": r["model"], "batch_tokens": r["batch_tokens"], "tokens_per_s": r["tokens_per_s"],
             "step_s": r["step_s"], "steps": r["steps"], "config": r["config"]}
            for r in points if "error" not in r]
    return sorted(rows, key=lambda r: (r["model"], r["batch_tokens"]))


def figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def save_figure(fig: Any, ax: Any, path: Path, title: str) -> None:
    """Title, grid and legend, then an atomic PNG write."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def plot_scaling(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    if not rows:
        return False
    from matplotlib.ticker import ScalarFormatter

    fig, ax = figure()
    for model in sorted({r["model"] for r in rows}):
        points = [r for r in rows if r["model"] == model]
        ax.plot([r["batch_tokens"] for r in points], [r["tokens_per_s"] for r in points], marker="o", label=model)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["batch_tokens"] for r in rows}))
    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.set_xlabel("batch budget (tokens)")
    ax.set_ylabel("training throughput (target tokens/s)")
    save_figure(fig, ax, path, title)
    return True


def ttb_curves(runs: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Validation BLEU by update: each time-to-BLEU run's, then JoeyNMT's reference curve."""
    curves = {f"{r['model']} ({r['config']})": {h["step"]: h["bleu"] for h in r["history"]}
              for r in runs if "error" not in r and r.get("history")}
    if curves:
        curves["JoeyNMT 2.3.0 (reference)"] = dict(JOEYNMT_CURVE)
    return curves


def ttb_curve(runs: list[dict[str, Any]], plot: str | None, image_prefix: str) -> list[str]:
    """The curve table (and plot link) under the time-to-BLEU summary."""
    curves = ttb_curves(runs)
    if not curves:
        return []
    steps = sorted({step for curve in curves.values() for step in curve})
    rows = [[step, *(fmt(curve.get(step), ".2f") for curve in curves.values())] for step in steps]
    out = ["Validation BLEU (greedy) by update; JoeyNMT's curve is its `joey_transformer.yaml` run at the same "
           "4096-token batches (shared/peers/joeynmt/README.md), which does not depend on the hardware.", "",
           md_table(["updates", *curves], rows), ""]
    if plot:
        out += [f"![validation BLEU against updates]({image_prefix}{plot})", ""]
    return out


def plot_ttb(runs: list[dict[str, Any]], path: Path, title: str) -> bool:
    curves = ttb_curves(runs)
    if not curves:
        return False
    fig, ax = figure()
    for name, curve in curves.items():
        style = "--" if name.startswith("JoeyNMT") else "-"
        ax.plot(list(curve), list(curve.values()), style, marker="o", label=name)
    _, bleu, updates, _ = SAMPLE_TARGET
    ax.axhline(bleu, color="grey", lw=0.8)
    ax.axvline(updates, color="grey", lw=0.8)
    ax.set_xlabel("updates (4096-token batches)" if all(r.get("batch_tokens") == 4096 for r in runs) else "updates")
    ax.set_ylabel("validation BLEU (greedy)")
    save_figure(fig, ax, path, title)
    return True


SECTIONS = ("header", "training", "fast_paths", "decoding", "comparison", "targets", "scaling", "time_to_bleu",
            "profiles")
README_SECTIONS = ("comparison", "targets", "fast_paths", "scaling", "time_to_bleu")


def render_markdown(report: dict[str, Any], sections: tuple[str, ...] = SECTIONS, image_prefix: str = "") -> str:
    """The report as Markdown: ``sections`` in their order; images linked as ``image_prefix + file name``."""
    meta = report["meta"]
    parts: dict[str, list[str]] = {}
    out = parts["header"] = ["# Speed benchmark", ""]
    hw = [["date", meta["date"]], ["commit", meta["commit"]], ["CPU", meta["cpu"]],
          ["cores (usable by this process)", meta["cores"]]]
    if meta.get("gpu"):
        hw.append(["GPU", meta["gpu"]])
    hw += [["torch", meta["torch"]], ["device", meta["device"]], ["task", meta["task"]],
           ["command", f"`{meta['command']}`"]]
    out += [md_table(["", ""], hw), ""]
    if not meta.get("gpu"):
        out += ["No GPU was used in this run: every number below is from the CPU.", ""]
    where = "in its own process" if meta["isolated_workers"] else "in the bench's process (--in-process)"
    out += [f"Training: each configuration {where}, {meta['warmup']} warm-up update(s), then up to "
            f"{meta['steps']} measured (updates = warm-up + measured); tokens/s counts real (non-pad) target "
            "tokens per second of wall time, "
            "batch collation included; s/step is that wall time per update (CPU s/step: CPU time of all threads, steadier "
            "on a shared machine); padding is over a whole epoch's "
            "batches. Peak RSS is the worker process's (Python, torch, the data and the model included).", ""]
    for note in meta.get("notes", []):
        out += [f"- {note}"]
    if meta.get("notes"):
        out += [""]

    training = [r for r in report["training"] if not r["config"].startswith("scale")]
    out = parts["training"] = []
    if training:
        out += ["## Training throughput", ""]
        rows = []
        for r in training:
            if "error" in r:
                rows.append([r["model"], r["config"], *["–"] * 11, f"failed: {r['error']}"])
                continue
            memory = fmt(r.get("peak_gpu_mb"), ".0f") + " (GPU)" if "peak_gpu_mb" in r else fmt(r["peak_rss_mb"])
            batches = "random (unsorted)" if r["batching"] == "random" else (
                "sorted, whole split" if not r["pool_size"] else f"sorted in pools of {r['pool_size']}")
            rows.append([r["model"], r["config"], r["precision"], "yes" if r["compile"] else "no", r["threads"],
                         batches, f"{r['warmup_steps']}+{r['steps']}", fmt(r["tokens_per_s"]),
                         fmt(r["step_s"], ".3f"), fmt(r.get("cpu_s_per_step"), ".3f"), fmt(r["warmup_s"], ".1f"),
                         memory, f"{r['pad_src']:.0%} / {r['pad_tgt']:.0%}", fmt(r["tgt_tokens_per_batch"])])
        out += [md_table(["model", "config", "precision", "compile", "threads", "batches", "updates", "tok/s", "s/step",
                          "CPU s/step", "warm-up s", "peak MiB", "padding src / tgt", "tgt tokens / batch"], rows), ""]

    out = parts["fast_paths"] = []
    if report["fast_paths"]:
        out += ["## Fast paths, off and on", ""]
        rows = [[f["fast_path"], f["model"], f.get("off", "–"), f.get("on", "–"),
                 fmt(f.get("off_value"), ".1f") if "off_value" in f else "–",
                 fmt(f.get("on_value"), ".1f") if "on_value" in f else "–", f.get("unit", ""),
                 fmt(f.get("speedup"), ".2f") + ("x" if f.get("speedup") else ""), f.get("note", "")]
                for f in report["fast_paths"]]
        out += [md_table(["fast path", "model", "off", "on", "off", "on", "unit", "speedup", "note"], rows), ""]

    out = parts["decoding"] = []
    decoding = [(r["model"], d) for r in training if "error" not in r for d in r.get("decoding", [])]
    if decoding:
        out += ["## Decoding", ""]
        for r in training:
            if r.get("decoded_with"):
                out += [f"- {r['model']}: decoded with {r['decoded_with']}"]
        out += [""]
        if any(r.get("decoded_with", "").startswith("the bench's model") for r in training):
            out += ["The bench's own model is barely trained (the base configuration's updates only), so its "
                    "outputs tend to run to the length limit (compare the mean output length with the "
                    "references'): its times are an upper bound for the same search on a trained model, and its "
                    "BLEU is no quality figure. `--decode-run MODEL=RUN` decodes with a trained run instead.", ""]
        rows = [[m, d["search"], d["sentences"], fmt(d["seconds"], ".2f"), fmt(d["sentences_per_s"], ".1f"),
                 fmt(d["mean_output_len"], ".1f"), fmt(d["mean_ref_len"], ".1f"), fmt(d.get("bleu"), ".2f"),
                 fmt(d.get("same_outputs"), "d")] for m, d in decoding]
        out += [md_table(["model", "search", "sentences", "seconds", "sentences/s", "mean output length",
                          "mean reference length", "BLEU", "same outputs as the fast path"], rows), ""]

    out = parts["comparison"] = []
    if report["comparison"]:
        out += ["## Against JoeyNMT", ""]
        joey = report.get("joeynmt") or {}
        rows = []
        for c in report["comparison"]:
            rows.append([c["model"], fmt(c["params"], ","), fmt(c["joeynmt_params"], ","),
                         fmt(c["joeynmt_tokens_per_s"]) + ("" if c["joeynmt_source"].startswith("measured")
                                                           else " (anchor)"),
                         fmt(c["joeynmt_step_s"], ".2f"), fmt(c["fp32_tokens_per_s"]),
                         fmt(c["fp32_ratio"], ".2f") + "x" * (c["fp32_ratio"] is not None),
                         fmt(c["fp32_random_batches_tokens_per_s"]),
                         fmt(c["fp32_random_batches_ratio"], ".2f")
                         + "x" * (c["fp32_random_batches_ratio"] is not None),
                         f"{fmt(c['best_tokens_per_s'])} ({c['best_config']})",
                         fmt(c["best_ratio"], ".2f") + "x" * (c["best_ratio"] is not None)])
        out += [md_table(["model", "params (ours)", "params (JoeyNMT)", "JoeyNMT tok/s", "JoeyNMT s/step",
                          "ours fp32", "ratio", "ours fp32, random batches", "ratio", "ours best (config)",
                          "ratio"], rows), ""]
        if not any(c["joeynmt_source"].startswith("measured") for c in report["comparison"]):
            out += ["JoeyNMT was not run (`--joeynmt`): the ratios are against the anchor numbers measured on "
                    "this project's 2-core CPU machine (shared/peers/joeynmt/README.md).", ""]
        for model, j in joey.items():
            if "error" in j:
                out += [f"- JoeyNMT {model}: failed: {j['error']}"]
            else:
                out += [f"- JoeyNMT {model}: {j['steps']} updates, the first {j['skipped_windows']} "
                        f"window(s) of {j['log_every']} updates skipped as warm-up, then "
                        f"{j['measured_steps']} measured from its own \"Tokens per Sec\" log lines; "
                        f"{j['threads']} threads (OMP_NUM_THREADS); peak RSS {fmt(j.get('peak_rss_mb'))} MiB; "
                        f"config `{j['config']}`"]
                for note in j.get("mapping_notes", []):
                    out += [f"  - {note}"]
        if joey:
            out += [""]

    out = parts["targets"] = []
    if report["targets"]:
        out += ["## Targets", ""]
        rows = [[t["target"], fmt(t["value"], t.get("format", ".2f")) + (t["unit"] if t["value"] is not None else ""),
                 {True: "yes", False: "**no**", None: "–"}[t["met"]], t.get("against") or ""]
                for t in report["targets"]]
        out += [md_table(["target", "measured", "met", "against"], rows), ""]

    out = parts["scaling"] = []
    if report["scaling"]:
        out += ["## Scaling with the batch budget", "",
                f"Plain configuration (fp32, eager, sorted batches); the {meta['batch_tokens']}-token point is "
                "the base run above, the others "
                f"{meta['scaling_warmup']} warm-up + {meta['scaling_steps']} measured updates.", ""]
        rows = [[r["model"], r["batch_tokens"], fmt(r["tokens_per_s"]), fmt(r["step_s"], ".3f")]
                for r in report["scaling"]]
        out += [md_table(["model", "batch tokens", "tok/s", "s/step"], rows), ""]
        if report.get("scaling_plot"):
            out += [f"![tokens/s against batch tokens]({image_prefix}{report['scaling_plot']})", ""]

    out = parts["time_to_bleu"] = []
    if report.get("time_to_bleu"):
        out += ["## Time to BLEU", ""]
        rows = []
        for r in report["time_to_bleu"]:
            if "error" in r:
                rows.append([r["model"], r["config"], "–", "–", "–", "–", "–", f"failed: {r['error']}"])
                continue
            rows.append([r["model"], r["config"], fmt(r["threshold"], ".1f"),
                         fmt(r["steps_to_bleu"], "d") if r["reached"] else f"not reached in {r['max_steps']}",
                         fmt(r["train_s"], ".0f"), fmt(r["wall_s"], ".0f"), fmt(r["best_bleu"], ".2f"),
                         f"validation (greedy, full split) every {r['eval_every']} updates"])
        out += [md_table(["model", "config", "BLEU threshold", "updates", "training s", "wall s (with validation)",
                          "best BLEU", "note"], rows), ""]
        out += ttb_curve(report["time_to_bleu"], report.get("ttb_plot"), image_prefix)

    out = parts["profiles"] = []
    if report.get("profiles"):
        out += ["## Profiles", ""]
        out += [f"- {p['model']}: `{p.get('trace', p.get('error'))}` (open in https://ui.perfetto.dev)"
                for p in report["profiles"]]
        out += [""]
    return "\n".join(line for name in sections for line in parts.get(name, []))


# ---------------------------------------------------------------------------
# command line


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
    p.add_argument("--models", default="transformer,gru", help="comma-separated: transformer,gru")
    p.add_argument("--configs", default="all",
                   help="comma-separated subset of: base,bf16,compile,bf16+compile,threads1,pool,random,unfused; "
                        "'none' runs no training configuration (with --time-to-bleu or --profile alone)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile configurations")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-tokens", type=int, default=None, help="batch budget (default 4096; --tiny 512)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up updates per configuration (default 5; --tiny 2)")
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
    p.add_argument("--ttb-config", default="base", help="configuration used for --time-to-bleu")
    p.add_argument("--ttb-eval-every", type=int, default=None, help="default 250 (--tiny 2)")
    p.add_argument("--ttb-max-steps", type=int, default=None, help="default 10000 (--tiny 4)")
    p.add_argument("--out", default="results", help="report folder")
    p.add_argument("--report", default="benchmarks",
                   help="report name: OUT/NAME.md, OUT/NAME.json, OUT/NAME_scaling.png, OUT/NAME_curve.png (time to BLEU)")
    p.add_argument("--from-json", metavar="REPORT_JSON", default=None,
                   help="measure nothing: write the Markdown, plots and README tables again from a saved report")
    p.add_argument("--readme", type=Path, default=None,
                   help="also copy the headline sections into this file between <!-- table:NAME --> and "
                        "<!-- /table:NAME --> (NAME = --report), so the README holds no hand-typed number")
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
                "ttb_max_steps": (10000, 4)}
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
    if args.from_json:
        return rerender(args)
    commit = git_commit()  # the code measured: taken before the (possibly hour-long) runs
    device = pick_device(args.device)
    work_dir = Path(args.work_dir).resolve()
    out_dir = Path(args.out)
    runner = Runner(work_dir, args.in_process, args.keep_runs, args.timeout)
    runner.say(f"preparing data ({'toy_reverse' if args.tiny else 'multi30k_de_en'}) ...")
    data = prepare_data(args, device)
    runner.data = data
    specs, notes = build_specs(args, device)
    results = [runner(spec) for spec in specs if spec.kind == "train"]
    scaled = [runner(spec) for spec in specs if spec.kind == "scaling"]

    joeynmt: dict[str, Any] = {}
    if args.joeynmt:
        from experiments import joeynmt_bench

        joeynmt = joeynmt_bench.run_all(args, data, device, runner)

    profiles = [runner(s) for s in specs if s.kind == "profile"]
    ttb = [runner(s) for s in specs if s.kind == "ttb"]

    analysis = analyse(results, joeynmt, device, args.batch_tokens, ttb, comparable=not args.tiny)
    scaling = scaling_rows(results, scaled)
    info = hardware(device)
    command = "s2s-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu": info["cpu"],
        "cores": info["cores"],
        "gpu": info.get("gpu"),
        "torch": info["torch"],
        "python": sys.version.split()[0],
        "device": str(device),
        "task": "toy_reverse (tiny)" if args.tiny else "multi30k_de_en",
        "command": command.strip(),
        "warmup": args.warmup,
        "steps": args.steps,
        "batch_tokens": args.batch_tokens,
        "scaling_warmup": args.scaling_warmup,
        "scaling_steps": args.scaling_steps,
        "isolated_workers": not args.in_process,
        "notes": [],
    }
    meta["notes"] += notes
    if args.in_process:
        meta["notes"].append("--in-process: peak RSS is the whole bench process's, not each configuration's")
    if device.type == "cpu" and not args.tiny:
        meta["notes"].append("On a machine shared with other work the timings are noisy: compare rows of one run.")
    report = {"meta": meta, "training": results, **analysis, "scaling": scaling,
              "scaling_plot": None, "joeynmt": joeynmt, "profiles": profiles, "time_to_bleu": ttb, "ttb_plot": None}
    write_report(report, args.report, out_dir, args.readme)
    runner.say(f"wrote {out_dir / args.report}.md and .json")
    return report


REPORT_KEYS = {"meta", "training", "fast_paths", "comparison", "targets", "scaling", "joeynmt", "profiles",
               "time_to_bleu"}


def rerender(args: argparse.Namespace) -> dict[str, Any]:
    """--from-json: plots, Markdown and README tables again from a saved report, nothing measured."""
    path = Path(args.from_json)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--from-json {path}: not a readable s2s-bench report ({e})") from None
    missing = REPORT_KEYS - set(report) if isinstance(report, dict) else REPORT_KEYS
    if missing:
        raise UserError(f"--from-json {path}: not a readable s2s-bench report (no {sorted(missing)})")
    write_report(report, args.report, Path(args.out), args.readme)
    return report


def write_report(report: dict[str, Any], name: str, out_dir: Path, readme: Path | None) -> None:
    """NAME.md, NAME.json and the plots in ``out_dir``; the headline tables into ``readme`` when given."""
    meta, scaling, ttb = report["meta"], report["scaling"], report["time_to_bleu"]
    machine = f"{meta['cpu']}, {meta['cores']} cores, torch {meta['torch']}"
    plot = out_dir / f"{name}_scaling.png"
    report["scaling_plot"] = plot.name if plot_scaling(scaling, plot, f"{meta['task']}, fp32 eager, sorted "
                                                                        f"batches\n{machine}") else None
    plot = out_dir / f"{name}_curve.png"
    report["ttb_plot"] = plot.name if plot_ttb(ttb, plot, f"{meta['task']}, time to BLEU\n{machine}") else None
    markdown = render_markdown(report)
    write_text(out_dir / f"{name}.md", markdown + "\n")
    write_text(out_dir / f"{name}.json", json.dumps(jsonable(report), indent=2) + "\n")
    print(markdown)
    if readme:
        embed_in_readme(report, readme, name, out_dir)


def embed_in_readme(report: dict[str, Any], readme: Path, name: str, out_dir: Path) -> None:
    """Copy the report's headline sections between ``<!-- table:NAME -->`` markers in ``readme``."""
    from experiments.tables import embed

    meta = report["meta"]
    prefix = os.path.relpath(out_dir.resolve(), readme.resolve().parent) + "/"
    provenance = (f"Measured by `{meta['command']}` on {meta['cpu']} ({meta['cores']} cores"
                  f"{', ' + meta['gpu'] if meta.get('gpu') else ', no GPU'}), torch {meta['torch']}, commit "
                  f"{meta['commit']}, {meta['date']}; the whole report: `{prefix}{name}.md`.")
    body = ("\n" + render_markdown(report, README_SECTIONS, prefix)).replace("\n## ", "\n#### ").strip()
    embed(readme, name, f"# {name}\n\n{provenance}\n\n{body}\n")


def cli() -> None:
    """The ``s2s-bench`` console script: ``main`` without its return value, which would become the exit status."""
    main()


if __name__ == "__main__":
    cli()
