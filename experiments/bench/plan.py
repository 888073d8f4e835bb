"""The plan of a bench run: which configurations are measured, as Specs, composed like s2s-train's configs."""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from experiments.evaluation.builders import resolve_precision
from experiments.core.errors import UserError
from experiments.training.optim import FUSED_ADAMW_DEVICES
from experiments.training.resume import flatten
from experiments.core.runtime import usable_cores

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# name -> (trainer.num_threads or None for all cores, environment, busy processes beside)
LOAD_CONFIGS: dict[str, tuple[int | None, dict[str, str], int]] = {
    "idle, passive wait": (None, {"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "loaded, all cores": (None, {}, 1),
    "loaded, all cores, passive wait": (None, {"OMP_WAIT_POLICY": "PASSIVE"}, 1),
    "loaded, 1 thread": (1, {}, 1),
    "loaded, auto": (0, {}, 1),
}

# The GRU as it trained on a CPU before its own paths: nn.GRU packed, the autograd loop, logits at padded positions.
GRU_BEFORE_CPU_PATHS = ["model.recurrence=packed", "model.decoder_loop=autograd", "trainer.skip_target_padding=false"]
TINY_TASK = ["task=toy_reverse", "task.toy.train_size=2000", "task.toy.eval_size=40"]


@dataclass
class Spec:
    """One measurement, run by ``measure.measure`` (in a worker process unless --in-process)."""

    kind: str  # "train" | "scaling" | "profile" | "ttb" (time to BLEU) | "ttq" (time to quality: with a recipe)
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
    peak: dict[str, int] | None = None  # after the timed updates: matmul peak (size, repeats) and MFU
    max_seconds: float = 0.0  # the measured phase ends once past this (with at least MIN_MEASURED updates)
    run_dir: str = ""
    load: int = 0  # busy one-thread processes running beside the worker (--load)
    env: dict[str, str] | None = None  # the worker's extra environment (OMP_WAIT_POLICY=PASSIVE)
    seen_shapes: bool = False  # the timed batches run once first as the warm-up (measure.update_plan)


@dataclass
class Variant:
    overrides: list[str]
    batching: str = "sorted"
    reduced: bool = False  # measured with --slow-warmup / --slow-steps (bf16 emulated on this CPU)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: where the trainer's precision=auto picks bf16."""
    return resolve_precision(device, "auto") == "bf16"


def config_variants(model: str, device: torch.device, *, small_pool: int, compile_ok: bool,
                    wanted: list[str]) -> tuple[dict[str, Variant], list[str]]:
    """Name -> Variant of every configuration measured for ``model`` (gru|transformer), and notes on those left out.

    ``base`` is the plain path (``base_overrides``): fp32, eager, all usable
    cores, the whole split length-sorted into batches (trainer.pool_size=0),
    fused AdamW where torch has it (CUDA, CPU). Every other configuration changes one thing
    (bf16+compile two). ``wanted``: names to keep ("all", or names; "pool"
    matches any pool size).
    """
    native = native_bf16(device)
    variants = {"base": Variant([]), "bf16": Variant(["trainer.precision=bf16"], reduced=not native)}
    notes = []
    if model == "transformer" and compile_ok:
        variants["compile"] = Variant(["trainer.compile=true"])
        variants["bf16+compile"] = Variant(["trainer.precision=bf16", "trainer.compile=true"], reduced=not native)
    if model == "gru":  # the encoder recurrence and decoder loop auto does not pick here, and both together
        other = "batched" if device.type == "cuda" else "packed"
        variants[other] = Variant([f"model.recurrence={other}"])
        loop = "handwritten" if device.type == "cuda" else "autograd"
        variants[loop] = Variant([f"model.decoder_loop={loop}"])
        if device.type == "cpu":  # the paths the GRU trained with on a CPU before its own two
            variants["packed+autograd"] = Variant(GRU_BEFORE_CPU_PATHS)
    variants["padded-targets"] = Variant(["trainer.skip_target_padding=false"])
    if device.type == "cpu":  # the mask drawing of models/dropout.py against torch's bernoulli_
        variants["torch-dropout"] = Variant(["model.dropout_masks=torch"])
    if device.type == "cpu" and usable_cores() > 1:
        variants["threads1"] = Variant(["trainer.num_threads=1"])
    variants[f"pool{small_pool}"] = Variant([f"trainer.pool_size={small_pool}"])
    variants["random"] = Variant([], "random")
    if device.type in FUSED_ADAMW_DEVICES:
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
    from experiments.core.config import check_override_keys, validate
    from experiments.training.search import apply_tuned

    check_override_keys(overrides)
    groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0] or o[:1] in "+~")
    dotted = [o for o in overrides if o not in groups]
    # The key holds the environment the config reads (cache_dir: ${oc.env:S2S_CACHE_DIR,null}).
    cfg = OmegaConf.create(OmegaConf.to_container(_composed(groups, os.environ.get("S2S_CACHE_DIR"))))
    cfg = apply_tuned(cfg)  # a tuned recipe's settings, then the dotted overrides over them, as in s2s-train
    return validate(OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotted)) if dotted else cfg)


@functools.lru_cache(maxsize=16)
def _composed(groups: tuple[str, ...], cache_env: str | None) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from experiments.core.config import validate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return validate(hydra_compose(config_name="config", overrides=list(groups)))


def model_kind(preset: str) -> str:
    return "transformer" if preset.startswith("transformer") else "gru" if preset.startswith("gru") else preset


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


def base_overrides(args: argparse.Namespace, device: torch.device, preset: str) -> list[str]:
    """The Hydra overrides of the plain configuration of model ``preset`` (the other configurations add to them).

    fp32 is pinned: the trainer's default precision (auto) is bf16 where the
    hardware has it, and only the bf16 configurations are meant to measure that.
    So are the threads on a CPU (every usable core): the trainer's default
    (``num_threads=0``) takes the cores other processes leave free at its start,
    so a configuration measured a moment after a busy one would run on fewer.
    """
    task = TINY_TASK if args.tiny else [f"task={args.task}"]
    threads = [f"trainer.num_threads={usable_cores()}"] if device.type == "cpu" else []
    return [*task, f"model={preset}", "logger=none", "trainer.progress=false", f"trainer.device={device}",
            "trainer.precision=fp32", f"trainer.batch_tokens={args.batch_tokens}", f"seed={args.seed}",
            *threads, *args.overrides]


def build_specs(args: argparse.Namespace, device: torch.device) -> tuple[list[Spec], list[str]]:
    """Every measurement of the run in order (training configurations, scaling, profiles, time to BLEU), and notes."""
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
                              decode, max_seconds=args.max_measure_seconds,
                              peak={"size": args.peak_size, "repeats": args.peak_repeats}))
        if not args.no_scaling:
            points = [t for t in args.scaling_batch_tokens if not (t == args.batch_tokens and "base" in variants)]
            if points:
                specs.append(Spec("scaling", preset, "scaling", base, "sorted", args.scaling_warmup,
                                  args.scaling_steps, scaling=points, max_seconds=args.max_measure_seconds))
        if args.profile:
            # bf16 beside fp32 where bf16 is native: where its time goes is the question bf16's speed-up asks
            for name, extra in [("base", [])] + [("bf16", ["trainer.precision=bf16"])] * native_bf16(device):
                specs.append(Spec("profile", preset, name, [*base, *extra], "sorted", 2, args.profile_steps,
                                  profile_dir=str(Path(args.profile).resolve())))
        if args.time_to_bleu is not None:
            specs.append(ttb_spec(args, device, preset, base, compile_ok))
        if args.time_to_quality is not None:
            specs.append(ttq_spec(args, device, preset, compile_ok))
        if args.load and model == "transformer" and device.type == "cpu":
            specs += load_specs(preset, base, args.warmup, args.steps, args.max_measure_seconds)
    if args.load and device.type != "cpu":
        notes.append("--load measures CPU thread counts: not measured on a GPU")
    if not native_bf16(device) and any(s.kind == "train" and "trainer.precision=bf16" in s.overrides for s in specs):
        notes.append(f"This {device.type} has no native bf16 (no AVX512-BF16 / AMX): bf16 autocast is emulated and "
                     f"slow here, so bf16 configurations are measured with {args.slow_warmup} warm-up + "
                     f"{args.slow_steps} updates.")
    if not args.fresh_shapes:
        specs = [replace(s, seen_shapes=True) if s.kind in ("train", "scaling", "profile") else s for s in specs]
    return specs, notes


def load_specs(preset: str, base: list[str], warmup: int, steps: int, max_seconds: float) -> list[Spec]:
    """--load: the Transformer's plain configuration (``base``, model ``preset``) under each of LOAD_CONFIGS."""
    specs = []
    for name, (threads, env, busy) in LOAD_CONFIGS.items():
        count = usable_cores() if threads is None else threads
        kept = [o for o in base if not o.startswith("trainer.num_threads=")]  # the thread count is what varies
        specs.append(Spec("train", preset, name, [*kept, f"trainer.num_threads={count}"], "sorted", warmup,
                          steps, max_seconds=max_seconds, load=busy, env=env))
    return specs


def ttb_spec(args: argparse.Namespace, device: torch.device, preset: str, base: list[str], compile_ok: bool) -> Spec:
    """--time-to-bleu: configuration ``--ttb-config`` trained with full-split greedy validation every few updates."""
    overrides = [*base, *ttb_config(args, device, preset, base, compile_ok, "--time-to-bleu"),
                 f"trainer.eval_every={args.ttb_eval_every}", *TTB_FIXED, f"trainer.max_steps={args.ttb_max_steps}"]
    return Spec("ttb", preset, args.ttb_config, overrides,
                ttb={"threshold": args.time_to_bleu, "eval_every": args.ttb_eval_every,
                     "max_steps": args.ttb_max_steps})


# What time to BLEU (and to quality) fixes whatever the recipe says: greedy validation over the whole split
# (JoeyNMT's curve is greedy), and no early stop (the run ends at the threshold or its update limit).
TTB_FIXED = ["trainer.val_beam_size=1", "trainer.eval_max_sentences=0", "trainer.early_stopping_patience=0"]


def ttb_config(args: argparse.Namespace, device: torch.device, preset: str, base: list[str], compile_ok: bool,
               flag: str) -> list[str]:
    """The overrides of configuration ``--ttb-config`` (base, threads1, bf16 ...) for ``flag``'s runs,
    which need a translation task (BLEU)."""
    kind = str(compose(base).task.kind.value)
    if kind != "translation":
        raise UserError(f"{flag} needs a translation task; --task {args.task} is {kind} (its validation "
                        "metric is ROUGE, not BLEU)")
    every, _ = config_variants(model_kind(preset), device, small_pool=args.small_pool, compile_ok=compile_ok,
                               wanted=["all", "bf16+compile"])
    if args.ttb_config not in every:
        raise UserError(f"--ttb-config {args.ttb_config!r} is not a configuration of {model_kind(preset)} here; "
                        f"choose from {sorted(every)}")
    return every[args.ttb_config].overrides


def ttq_recipe(args: argparse.Namespace) -> str | None:
    """The conf/experiment preset whose recipe --time-to-quality trains with: --ttq-recipe, else the task's own
    (``s2s-train experiment=TASK``'s), else None (the toy task has none: conf/recipe/<model> alone)."""
    if args.ttq_recipe:
        if not (Path(CONF_DIR) / "experiment" / f"{args.ttq_recipe}.yaml").exists():
            raise UserError(f"--ttq-recipe {args.ttq_recipe!r}: conf/experiment/ has no {args.ttq_recipe}.yaml")
        from experiments.core.config_groups import check_tuned

        check_tuned(args.ttq_recipe, Path(CONF_DIR))
        return args.ttq_recipe
    return args.task if (Path(CONF_DIR) / "experiment" / f"{args.task}.yaml").exists() else None


def preset_keys(name: str) -> set[str]:
    """The dotted config keys conf/experiment/NAME.yaml sets, those of the presets it builds on included
    (its defaults list; ``override /group`` entries and the hydra block are no config keys)."""
    from experiments.core.config_groups import tuned_recipes

    body = yaml.safe_load((Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()) or {}
    keys: set[str] = set()
    for entry in body.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_":
            keys |= preset_keys(entry)
        for recipe in tuned_recipes(entry):  # a tuned recipe sets each model's drawn keys
            tuned = yaml.safe_load((Path(CONF_DIR) / "tuned" / f"{recipe}.yaml").read_text()) or {}
            keys |= {k for settings in (tuned.get("settings") or {}).values() for k in settings}
    body.pop("hydra", None)
    return keys | set(flatten(body))


def ttq_spec(args: argparse.Namespace, device: torch.device, preset: str, compile_ok: bool) -> Spec:
    """--time-to-quality: time to BLEU with the model's training recipe (``ttq_recipe``).

    The bench's own settings (batch tokens, precision, threads ...) give way
    where the recipe sets the same key (compose() merges dotted overrides after
    the preset, so they are left out rather than overridden); the overrides on
    the command line, ``--ttb-config``'s and the fixed time-to-BLEU ones
    (``TTB_FIXED``) still win. Validation runs at the recipe's
    ``trainer.eval_every`` (which also drives the GRU's plateau schedule), up to
    the recipe's ``trainer.max_steps`` or ``--ttb-max-steps``, whichever is fewer.
    """
    recipe = ttq_recipe(args)
    user = list(args.overrides)
    own = base_overrides(args, device, preset)[:-len(user) or None]  # the bench's, without the command line's
    if recipe:
        taken = preset_keys(recipe)
        own = [o for o in own if o.split("=", 1)[0] not in taken]
    recipe_cfg = [*own, *([f"experiment={recipe}"] if recipe else []), *user]
    variant = ttb_config(args, device, preset, recipe_cfg, compile_ok, "--time-to-quality")
    composed = compose([*recipe_cfg, *variant])
    max_steps = min(int(composed.trainer.max_steps), args.ttb_max_steps)
    every = int(composed.trainer.eval_every)
    name = recipe or f"recipe/{preset}"
    return Spec("ttq", preset, args.ttb_config, [*recipe_cfg, *variant, *TTB_FIXED, f"trainer.max_steps={max_steps}"],
                ttb={"threshold": args.time_to_quality, "eval_every": every, "max_steps": max_steps,
                     "recipe": name})
