"""Model construction and the precision it runs in: shared by training, evaluation, the bench and attention maps.

Kept apart from the trainer so that everything that only needs a model (and
not a training loop) imports it without importing the trainer.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from experiments.data.pipeline import TaskData
from models import MODELS


def build_model(model_cfg: DictConfig, data: TaskData) -> torch.nn.Module:
    kwargs = {k: (v.value if hasattr(v, "value") else v) for k, v in OmegaConf.to_container(model_cfg).items()}
    name = kwargs.pop("name")
    return MODELS[name](src_vocab_size=data.src_vocab_size, tgt_vocab_size=data.tgt_vocab_size,
                        pad_id=data.pad_id, **kwargs)


@cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AMX or AVX512-BF16); elsewhere torch emulates it slowly."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def resolve_precision(device: torch.device, precision: Any) -> str:
    """``auto`` -> bf16 where the device has native bf16 (CUDA with bf16, AMX/AVX512-BF16 CPUs), fp32 elsewhere."""
    name = str(getattr(precision, "value", precision))
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast_for(device: torch.device, precision: Any) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CPU or CUDA when asked for (``auto`` resolved for ``device``); fp32 otherwise."""
    enabled = resolve_precision(device, precision) == "bf16"
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
