"""The fused label-smoothed cross-entropy equals F.cross_entropy, value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experiments.evaluation.loss import sequence_loss

PAD = 1


def reference(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=PAD,
                           label_smoothing=eps, reduction="sum")


def batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 7, 50, generator=g) * 3).to(dtype)
    target = torch.randint(2, 50, (4, 7), generator=g)
    target[0, 5:] = PAD  # padded rows must give neither loss nor gradient
    target[3, 1:] = PAD
    return logits, target


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_value_and_gradient_match_cross_entropy(eps: float) -> None:
    logits, target = batch()
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours, ref = sequence_loss(ours_in, target, PAD, eps, log_probs=False), reference(ref_in, target, eps)
    upstream = torch.tensor(0.37)  # the trainer divides by the token count
    (ours * upstream).backward()
    (ref * upstream).backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-6)
    assert ours_in.grad[0, 5:].abs().max() == 0 and ours_in.grad[3, 1:].abs().max() == 0


def test_bf16_logits_get_a_bf16_gradient_close_to_fp32() -> None:
    logits, target = batch(torch.bfloat16)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.float().requires_grad_()
    ours, ref = sequence_loss(ours_in, target, PAD, 0.1, log_probs=False), reference(ref_in, target, 0.1)
    ours.backward()
    ref.backward()
    assert ours.dtype == torch.float32 and ours_in.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours_in.grad.float(), ref_in.grad, rtol=1e-2, atol=1e-2)


def test_no_grad_evaluation_gives_the_same_value() -> None:
    logits, target = batch()
    with torch.inference_mode():
        value = sequence_loss(logits, target, PAD, 0.0, log_probs=False)
    torch.testing.assert_close(value, reference(logits, target, 0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_log_probabilities_are_used_as_they_are(eps: float) -> None:
    """Given a model's log-probabilities (the copy mixture's), the loss is the smoothed NLL of them, value and
    gradient, as autograd computes it: no softmax of its own."""
    logits, target = batch()
    logp = torch.log_softmax(logits, dim=-1)
    ours_in, ref_in = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    ours = sequence_loss(ours_in, target, PAD, eps, log_probs=True)
    keep = target != PAD
    ref = -((1 - eps) * ref_in.gather(-1, target[..., None]).squeeze(-1) + eps * ref_in.mean(-1))[keep].sum()
    (ours * 0.37).backward()
    (ref * 0.37).backward()
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours, reference(logits, target, eps), rtol=1e-5, atol=1e-5)  # the same loss
