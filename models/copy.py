"""The pointer-generator's output distribution (See et al., 2017), the one both models use with ``copy=True``.

At every target position the decoder either generates from the vocabulary or
copies a source piece, gated by p_gen = sigmoid(g):

    P(y) = p_gen * softmax(logits)_y + (1 - p_gen) * sum over source positions i with x_i = y of a_i

The vocabulary is the joint subword vocabulary, so a source piece's copy
probability goes to its own id (a scatter-add over the source ids) and any
piece of the source can be produced, even one never seen as a target.
Padding positions have attention exactly 0 and add nothing.

Computed in log space, as log P = logaddexp(log p_gen + log_softmax(logits),
log(1 - p_gen) + log copy), with log p_gen and log(1 - p_gen) as
logsigmoid(+g) and logsigmoid(-g):

* every vocabulary entry keeps a finite log-probability however confident
  the model is (a product in probability space underflows to 0, and the
  label-smoothed loss, which averages log P over the vocabulary, would be
  infinite);
* at p_gen = 1 the copy term is -inf and the result is exactly
  log_softmax(logits): the model without copy.

The result is fp32 whatever the inputs' dtype (bf16 under autocast), or fp64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def copy_log_probs(logits: Tensor, gate: Tensor, attention: Tensor, src: Tensor) -> Tensor:
    """log P (..., V) of the mixture, in fp32 (or fp64).

    ``logits`` (..., V) of the vocabulary distribution; ``gate`` (..., 1) the
    pre-sigmoid p_gen; ``attention`` (..., S) the copy distribution over the
    source positions (sums to one, zero on padding); ``src`` (..., S) the
    source ids those positions hold. The leading axes are the same for all four.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32, or fp64 where the model is
    gate = gate.to(dtype)
    log_generate = torch.log_softmax(logits.to(dtype), dim=-1) + F.logsigmoid(gate)  # (..., V)
    copy = torch.zeros_like(log_generate).scatter_add_(-1, src, attention.to(dtype))  # (..., V), 0 off the source
    absent = copy == 0
    # log 0 = -inf without the NaN gradient log would give there (0 * 1/0): the log of 1, then -inf
    log_copy = copy.masked_fill(absent, 1.0).log().masked_fill_(absent, float("-inf")) + F.logsigmoid(-gate)
    return torch.logaddexp(log_generate, log_copy)  # (..., V)


def teacher_forced_copy(logits: Tensor, gate: Tensor, attention: Tensor, src: Tensor,
                        tgt_mask: Tensor | None = None) -> Tensor:
    """``copy_log_probs`` of a teacher-forced pass: ``attention`` (B, T, S) and ``src`` (B, S) taken to the
    positions ``logits`` and ``gate`` hold, all (B, T) or, with ``tgt_mask`` (B, T), only its N."""
    src = src.unsqueeze(1).expand_as(attention)  # (B, T, S)
    if tgt_mask is not None:
        attention, src = attention[tgt_mask], src[tgt_mask]  # (N, S)
    return copy_log_probs(logits, gate, attention, src)
