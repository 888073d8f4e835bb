"""The machine's limit: torch's matmul rate here, in the calling process's thread setting, and MFU against it.

The rate is measured, not read off a data sheet: a large square matmul is the
fastest arithmetic torch gets out of this device (the denominator of MFU), and
the model's own dominant shapes show how much of that its matmuls can reach at
all (the GRU's per-step matmuls have as many rows as the batch has sentences).
A repeat runs the matmul often enough to last ``min_repeat_s`` (so that small
shapes are not timed at the clock's resolution), after one warm-up call. The
limit is the fastest repeat, not the median: a rate can only be lowered by
what else the machine does (one bench run read a bf16 square at 2202 GFLOP/s,
another an hour later at 720), so the maximum over several repeats, spread
over the timed updates (``SquarePeak``, sampled between them), is the steadiest
estimate of what the hardware gives; the spread says how noisy the machine was.
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


class MatmulTimer:
    """Times ``torch.mm`` at one shape: each ``sample()`` is one repeat's GFLOP/s."""

    def __init__(self, shape: Shape, dtype: str, device: torch.device, min_repeat_s: float = 0.05) -> None:
        m, k, n = shape
        self.shape, self.device = shape, device
        self.a = torch.randn(m, k, device=device).to(DTYPES[dtype])
        self.b = torch.randn(k, n, device=device).to(DTYPES[dtype])
        self.out = torch.empty(m, n, device=device, dtype=DTYPES[dtype])
        self.calls = max(1, math.ceil(min_repeat_s / max(self.seconds(1), 1e-9)))  # the warm-up call sizes a repeat

    def seconds(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            torch.mm(self.a, self.b, out=self.out)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def sample(self) -> float:
        return mm(*self.shape) / (self.seconds(self.calls) / self.calls) / 1e9


def rate_summary(shape: Shape, samples: list[float]) -> dict[str, Any]:
    """The limit at ``shape`` (the fastest sample) and the spread of the samples."""
    return {"shape": list(shape), "gflops": max(samples), "min": min(samples),
            "median": statistics.median(samples), "samples": len(samples)}


def matmul_gflops(shape: Shape, dtype: str, device: torch.device, *, repeats: int = 5,
                  min_repeat_s: float = 0.05) -> float:
    """GFLOP/s of ``torch.mm`` at ``shape`` (m, k, n): the fastest of ``repeats`` timed repeats."""
    timer = MatmulTimer(shape, dtype, device, min_repeat_s)
    return max(timer.sample() for _ in range(repeats))


def measure_peak(shapes: dict[str, Shape], dtype: str, device: torch.device, *, size: int = 2048,
                 repeats: int = 5, square_samples: list[float] | None = None) -> dict[str, Any]:
    """Matmul GFLOP/s at a ``size``-cubed square and at each of the model's ``shapes``, with the setting measured.

    ``square_samples``: rates of the square taken earlier (between the timed
    updates, ``SquarePeak``); the ``repeats`` taken here are added to them.
    """
    def rate(shape: Shape, earlier: list[float]) -> dict[str, Any]:
        timer = MatmulTimer(shape, dtype, device)
        return rate_summary(shape, earlier + [timer.sample() for _ in range(repeats)])

    return {"dtype": dtype, "threads": torch.get_num_threads(),
            "square": rate((size, size, size), list(square_samples or [])),
            "shapes": {name: rate(shape, []) for name, shape in shapes.items()}}


class SquarePeak:
    """Samples the square matmul's rate every ``every`` timed updates, between them (not inside their timing)."""

    def __init__(self, size: int, dtype: str, device: torch.device, every: int) -> None:
        self.timer = MatmulTimer((size, size, size), dtype, device)
        self.every = max(1, every)
        self.samples: list[float] = []

    def after_update(self, measured: int) -> None:
        if measured % self.every == 0:
            self.samples.append(self.timer.sample())


def utilisation(flops: dict[str, float], seconds: float, peak: dict[str, Any]) -> dict[str, float]:
    """Model GFLOP/s of ``flops`` (``padded``, ``real``) done in ``seconds``, and each as a share of the square peak."""
    out = {}
    for kind in ("padded", "real"):
        achieved = flops[kind] / seconds / 1e9 if seconds > 0 else float("nan")
        out[f"model_gflops_{kind}"] = achieved
        out[f"mfu_{kind}"] = achieved / peak["square"]["gflops"]
    return out
