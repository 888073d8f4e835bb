"""The pointer-generator's output distribution (See et al., 2017), the one both models use with ``copy=True``.

At every target position the decoder either generates from the vocabulary or
copies a source piece, gated by p_gen = sigmoid(g):

    P(y) = p_gen * softmax(logits)_y + (1 - p_gen) * sum over source positions i with x_i = y of a_i

The vocabulary is the joint subword vocabulary, so a source piece's copy
probability goes to its own id (a scatter-add over the source ids) and any
piece of the source can be produced, even one never seen as a target.
Padding positions have attention exactly 0 and add nothing.

Computed in log space, with log p_gen and log(1 - p_gen) as logsigmoid(+g)
and logsigmoid(-g): log G = log p_gen + log_softmax(logits) everywhere, and
for a piece of the source, whose copy probability C is the attention on all
the positions holding it,

    log P = logaddexp(log G, log(1 - p_gen) + log C) = log G + softplus(log(1 - p_gen) + log C - log G)

so that

* every vocabulary entry keeps a finite log-probability however confident
  the model is (a product in probability space underflows to 0, and the
  label-smoothed loss, which averages log P over the vocabulary, would be
  infinite);
* at p_gen = 1 (g = +inf) log(1 - p_gen) is -inf, the softplus 0, and the
  result exactly log_softmax(logits): the model without copy;
* only the (..., S) source positions get more than the (..., V) log G: the
  correction is scatter-added there, each of a piece's k positions adding a
  k-th of it (so that its gradient is counted once, not k times). A logaddexp
  over the whole vocabulary made the mixture 15x slower than the loss itself
  on a CPU (N = 384 positions, V = 8000); this way it is 3x.

Adding the correction to log G loses a few ulps of |log G| where log G is far
below log C (2e-5 at log G = -3000), and the gate must be finite (p_gen = 0
exactly would make log G -inf everywhere).

The result is fp32 whatever the inputs' dtype (bf16 under autocast), or fp64.

To show the mechanism (the attention page's p_gen and copy distribution),
``copy_terms`` runs a model's teacher-forced ``forward`` inside
``recording_copy``, which has ``copy_log_probs`` keep what it mixed: both
models reach the mixture only through it, so what ``forward`` and
``decode_step`` return to the searches, ensembles and scorers stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class CopyTerms(NamedTuple):
    """What one mixture was made of, in fp32: ``p_gen`` (...), the probability of generating from the vocabulary
    (1 - p_gen is copied), and ``attention`` (..., S), the copy distribution over the source positions."""

    p_gen: Tensor
    attention: Tensor


# The list of the innermost open ``recording_copy`` block, per thread: a thread training beside it records nothing.
_RECORD: ContextVar[list[CopyTerms] | None] = ContextVar("copy_record", default=None)


@contextmanager
def recording_copy() -> Iterator[list[CopyTerms]]:
    """Within the block, every ``copy_log_probs`` call appends its ``CopyTerms`` (detached) to the list yielded."""
    records: list[CopyTerms] = []
    token = _RECORD.set(records)
    try:
        yield records
    finally:
        _RECORD.reset(token)


def copy_log_probs(logits: Tensor, gate: Tensor, attention: Tensor, src: Tensor) -> Tensor:
    """log P (..., V) of the mixture, in fp32 (or fp64).

    ``logits`` (..., V) of the vocabulary distribution; ``gate`` (..., 1) the
    pre-sigmoid p_gen; ``attention`` (..., S) the copy distribution over the
    source positions (sums to one, zero on padding); ``src`` (..., S) the
    source ids those positions hold. The leading axes are the same for all four.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32, or fp64 where the model is
    gate = gate.to(dtype)
    # Compiled code never records (the attention page runs eager): dynamo reading the ContextVar would
    # specialize a compiled forward's dynamic shapes.
    records = None if torch.compiler.is_compiling() else _RECORD.get()
    if records is not None:
        records.append(CopyTerms(torch.sigmoid(gate.detach().squeeze(-1)), attention.detach().to(dtype)))
    log_generate = torch.log_softmax(logits.to(dtype), dim=-1) + F.logsigmoid(gate)  # (..., V)

    def per_piece(values: Tensor) -> Tensor:
        """For each source position (..., S), the sum of ``values`` (..., S) over the positions holding its piece."""
        return torch.zeros_like(log_generate).scatter_add_(-1, src, values).gather(-1, src)

    copied = per_piece(attention.to(dtype))  # (..., S) C of each position's piece
    repeats = per_piece(torch.ones_like(copied))  # (..., S) k
    copies = copied > 0  # False on padding, whose attention is 0
    # log C, with log 1 where C = 0: no -inf, whose gradient would be NaN (0 * 1/0); masked out below
    log_copy = copied.masked_fill(~copies, 1.0).log() + F.logsigmoid(-gate)  # (..., S)
    gain = F.softplus(log_copy - log_generate.gather(-1, src)) / repeats  # (..., S)
    return log_generate.scatter_add(-1, src, gain.masked_fill(~copies, 0.0))  # (..., V)


def teacher_forced_copy(logits: Tensor, gate: Tensor, attention: Tensor, src: Tensor,
                        tgt_mask: Tensor | None = None) -> Tensor:
    """``copy_log_probs`` of a teacher-forced pass: ``attention`` (B, T, S) and ``src`` (B, S) taken to the
    positions ``logits`` and ``gate`` hold, all (B, T) or, with ``tgt_mask`` (B, T), only its N."""
    src = src.unsqueeze(1).expand_as(attention)  # (B, T, S)
    if tgt_mask is not None:
        attention, src = attention[tgt_mask], src[tgt_mask]  # (N, S)
    return copy_log_probs(logits, gate, attention, src)


def copy_terms(model: torch.nn.Module, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> CopyTerms:
    """p_gen (B, T) and the copy distribution (B, T, S) of a copy model's teacher-forced pass over ``tgt_in``
    (B, T): at each position, those of the mixture that predicted the next token. Run under the caller's
    grad mode, autocast and ``model.eval()``."""
    with recording_copy() as records:
        model(src, src_mask, tgt_in)
    if len(records) != 1:
        raise ValueError(f"expected one copy mixture from the forward pass of a model with copy, got {len(records)}")
    return records[0]
