"""The optimizer and the learning-rate schedules, from ``conf/trainer``.

AdamW; a linear warmup to the peak lr, then constant (``schedule=plateau``,
where ReduceLROnPlateau lowers it when the validation metric stalls) or
1/sqrt decay (``schedule=inverse_sqrt``, the Transformer's).
"""

from __future__ import annotations

import math
from typing import Any

import torch


# Where torch has a fused (single-kernel) AdamW step: CUDA, and CPUs since torch 2.4 (about 4x faster a step for
# our 7.6M parameters on 2 CPU threads: tests/test_benchmark.py checks it takes the same step as the loop).
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def fused_adamw(cfg: Any, device: torch.device) -> bool:
    """Whether the optimizer uses torch's fused AdamW: asked for (trainer.fused_adamw) and available on ``device``."""
    return bool(cfg.fused_adamw) and device.type in FUSED_ADAMW_DEVICES


def make_optimizer(model: torch.nn.Module, cfg: Any, device: torch.device) -> torch.optim.Optimizer:
    fused = fused_adamw(cfg, device)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                             fused=fused)


def lr_factor(step: int, cfg: Any) -> float:
    """Multiplier of the peak lr after ``step`` updates: linear warmup, then constant or 1/sqrt decay."""
    step = max(step, 1)
    warmup = max(cfg.warmup_steps, 1)
    if step < warmup:
        return step / warmup
    if cfg.schedule == "inverse_sqrt":
        return math.sqrt(warmup / step)
    return 1.0


def make_schedules(optimizer: torch.optim.Optimizer, cfg: Any) -> tuple[torch.optim.lr_scheduler.LambdaLR,
                                                                       torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """The per-update warmup/decay schedule and the per-validation plateau schedule (used by ``schedule=plateau``)."""
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.plateau_factor,
                                                         patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    return warmup, plateau
