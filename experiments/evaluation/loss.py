"""The training loss of both models: label-smoothed cross-entropy over the non-pad target tokens.

A model's outputs are logits, or log-probabilities where the model says so
(``outputs_log_probs``, models/interface.py: the copy mixture); the caller
passes that flag as ``log_probs``, and log-probabilities are used as they are.

``F.cross_entropy(..., label_smoothing=eps)`` builds its gradient from three
(N, V) tensors (the log-softmax backward, the NLL scatter and the smoothing
term) and adds them: with N ~ 3,500 target positions and V = 8,000 pieces each
is 112 MB, fresh from the allocator at every step. On a CPU that memory
traffic is a sixth of a Transformer update. The gradient has a closed form,

    d loss / d logits = softmax(logits) - (1 - eps) * onehot(target) - eps / V,

so the backward here overwrites the saved log-probabilities in place: one
(N, V) tensor in the forward, none more in the backward. The value and the
gradient are those of ``F.cross_entropy`` (tested to 1e-5). Given
log-probabilities, the loss is linear in them and the gradient is the same
without the softmax: nothing is saved.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class SmoothedCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed cross-entropy of logits (or log-probabilities) (N, V) against target (N,), pad rows
    left out."""

    @staticmethod
    def forward(ctx: Any, outputs: Tensor, target: Tensor, pad_id: int, eps: float, log_probs: bool) -> Tensor:
        # (N, V), fp32 whatever the outputs' dtype
        logp = outputs.float() if log_probs else torch.log_softmax(outputs, dim=-1, dtype=torch.float32)
        weight = (target != pad_id).to(logp.dtype)  # (N,) 0 on padding
        nll = -logp.gather(1, target.unsqueeze(1)).squeeze(1)  # (N,)
        loss = (1.0 - eps) * nll
        if eps:
            loss = loss - eps * logp.mean(dim=-1)  # the uniform share: eps * mean over the vocabulary of -log p
        ctx.save_for_backward(None if log_probs else logp, target, weight)
        ctx.eps, ctx.shape, ctx.outputs_dtype = eps, logp.shape, outputs.dtype
        return (loss * weight).sum()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logp, target, weight = ctx.saved_tensors
        eps, vocab = ctx.eps, ctx.shape[-1]
        scale = (weight * grad_out).unsqueeze(1)  # (N, 1)
        # softmax, in the saved buffer (backward runs once); of log-probabilities, no such term
        grad = weight.new_zeros(ctx.shape) if logp is None else logp.exp_()
        if eps:
            grad.sub_(eps / vocab)
        grad.mul_(scale)
        grad.scatter_add_(1, target.unsqueeze(1), scale * -(1.0 - eps))
        return grad.to(ctx.outputs_dtype), None, None, None, None


def sequence_loss(outputs: Tensor, target: Tensor, pad_id: int, label_smoothing: float, *,
                  log_probs: bool) -> Tensor:
    """Summed (label-smoothed) cross-entropy over non-pad target tokens. outputs (..., V), target (...): (B, T, V)
    and (B, T), or only the real positions' (N, V) and (N,); ``log_probs``: the outputs are log-probabilities
    (the model's ``outputs_log_probs``), else logits."""
    return SmoothedCrossEntropy.apply(outputs.reshape(-1, outputs.size(-1)), target.reshape(-1), pad_id,
                                      float(label_smoothing), log_probs)
