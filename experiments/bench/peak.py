"""The machine's limit: torch's matmul rate here, in the calling process's thread setting, and MFU against it.

The rate is measured, not read off a data sheet: a large square matmul is the
fastest arithmetic torch gets out of this device (the denominator of MFU), and
the model's own dominant shapes show how much of that its matmuls can reach at
all (the GRU's per-step matmuls have as many rows as the batch has sentences).
Each rate is the median of ``repeats`` timed repeats after one warm-up call;
a repeat runs the matmul often enough to last ``min_repeat_s``, so that small
shapes are not timed at the clock's resolution.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from experiments.bench.flops import Shape, mm
from experiments.bench.plan import native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def peak_dtype(device: torch.device, precision: str) -> str:
    """The dtype whose peak bounds a configuration: bf16 where it runs bf16 natively, fp32 otherwise.

    An emulated bf16 configuration is held against the fp32 peak: the machine
    has no faster matmul to offer it.
    """
    return "bf16" if precision == "bf16" and native_bf16(device) else "fp32"


def matmul_gflops(shape: Shape, dtype: str, device: torch.device, *, repeats: int = 5,
                  min_repeat_s: float = 0.05) -> float:
    """GFLOP/s of ``torch.mm`` at ``shape`` (m, k, n): the median over ``repeats`` timed repeats."""
    m, k, n = shape
    a = torch.randn(m, k, device=device).to(DTYPES[dtype])
    b = torch.randn(k, n, device=device).to(DTYPES[dtype])
    out = torch.empty(m, n, device=device, dtype=DTYPES[dtype])

    def seconds(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    calls = max(1, math.ceil(min_repeat_s / max(seconds(1), 1e-9)))  # the warm-up call sizes a repeat
    per_call = statistics.median(seconds(calls) / calls for _ in range(repeats))
    return mm(m, k, n) / per_call / 1e9


def measure_peak(shapes: dict[str, Shape], dtype: str, device: torch.device, *, size: int = 2048,
                 repeats: int = 5) -> dict[str, Any]:
    """Matmul GFLOP/s at a ``size``-cubed square and at each of the model's ``shapes``, with the setting measured."""
    def rate(shape: Shape) -> dict[str, Any]:
        return {"shape": list(shape), "gflops": matmul_gflops(shape, dtype, device, repeats=repeats)}

    return {"dtype": dtype, "threads": torch.get_num_threads(), "square": rate((size, size, size)),
            "shapes": {name: rate(shape) for name, shape in shapes.items()}}


def utilisation(flops: dict[str, float], seconds: float, peak: dict[str, Any]) -> dict[str, float]:
    """Model GFLOP/s of ``flops`` (``padded``, ``real``) done in ``seconds``, and each as a share of the square peak."""
    out = {}
    for kind in ("padded", "real"):
        achieved = flops[kind] / seconds / 1e9 if seconds > 0 else float("nan")
        out[f"model_gflops_{kind}"] = achieved
        out[f"mfu_{kind}"] = achieved / peak["square"]["gflops"]
    return out
