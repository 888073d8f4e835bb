"""Dropout for both models, with a CPU mask four times cheaper to draw than torch's.

On a CPU torch draws a dropout mask with ``bernoulli_``: one Mersenne Twister
draw and one comparison per element, on one thread. In a bf16 Transformer
update on a 2-core Xeon that was 11% of the CPU time (the profile's
``aten::bernoulli_`` in results/benchmarks_amx.md). Here one 64-bit draw gives
four elements a 16-bit uniform integer each, and an element is kept when its
integer is below ``keep = round((1 - p) * 2**16)``: kept with probability
``keep / 2**16`` (within 2**-17 of ``1 - p``) and scaled by its inverse, so
the expectation is exact. The draws come from torch's default generator, so a
seed (and a resumed run's saved generator state) fixes the masks as before.

``dropout_masks="torch"`` (both models' option) keeps torch's dropout
everywhere, for comparison (``s2s-bench``'s ``torch-dropout`` row). Off the
CPU, torch's own dropout runs (on CUDA a fused kernel with its own
counter-based generator), and under ``torch.compile`` too (inductor draws the
mask inside the kernel it fuses around it; ``random_`` would break the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEVELS = 1 << 16  # a kept unit's probability is a multiple of 1 / LEVELS
MASKS = ("auto", "torch")  # auto: the 16-bit masks on a CPU, torch's elsewhere; torch: torch's everywhere


def check_probability(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be between 0 and 1, got {p}")
    return float(p)


def check_masks(masks: str) -> str:
    if masks not in MASKS:
        raise ValueError(f"unknown dropout_masks {masks!r}; expected one of {MASKS}")
    return masks


def dropout_noise(shape: tuple[int, ...] | torch.Size, p: float, like: Tensor, masks: str = "auto") -> Tensor:
    """What dropout multiplies by, of ``like``'s dtype and device: 0 for a dropped unit, 1 / P(kept) for a kept one."""
    keep = round((1 - p) * LEVELS)
    if keep == 0:
        return like.new_zeros(shape)
    if masks == "torch" or like.device.type != "cpu":
        return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)
    n = torch.Size(shape).numel()
    # the whole int64 range: random_() alone leaves the sign bit 0, and with it the top 16-bit lane half-ranged
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    lanes = draws.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    return (lanes < keep - LEVELS // 2).to(like.dtype).mul_(LEVELS / keep)


def dropout(x: Tensor, p: float, training: bool, masks: str = "auto") -> Tensor:
    """``F.dropout(x, p, training)``, drawing its mask with ``dropout_noise`` on a CPU (``masks="auto"``)."""
    if not training or check_probability(p) == 0.0:
        return x
    if masks == "torch" or x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, True)  # compiled, inductor draws the mask inside its fused kernel
    return x * dropout_noise(x.shape, p, x)


class Dropout(nn.Module):
    """``nn.Dropout`` (no parameters, so checkpoints are unchanged) through ``dropout``."""

    def __init__(self, p: float, masks: str = "auto") -> None:
        super().__init__()
        self.p = check_probability(p)
        self.masks = check_masks(masks)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.masks)

    def extra_repr(self) -> str:
        return f"p={self.p}, masks={self.masks}"
