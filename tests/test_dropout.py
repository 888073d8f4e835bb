"""models/dropout.py: the CPU mask keeps each unit with probability 1 - p (to 2**-17), in every lane of its draws,
scales the kept ones so the expectation is exact, follows torch's seed, and is what both models drop with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import GRUSeq2Seq, TransformerSeq2Seq
from models.dropout import LEVELS, Dropout, dropout, dropout_noise

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_each_of_the_four_lanes_keeps_a_unit_with_probability_one_minus_p(p: float) -> None:
    """Four units share a 64-bit draw: each lane's keep rate is 1 - p. A draw without the sign bit (random_()
    alone) keeps the top lane's units at 0.8 instead of 0.9 for p = 0.1: 200 standard errors off."""
    torch.manual_seed(0)
    kept = dropout_noise((N,), p, torch.empty(0)) > 0
    keep = round((1 - p) * LEVELS) / LEVELS
    se = (keep * (1 - keep) / (N // 4)) ** 0.5
    for lane in range(4):
        assert kept[lane::4].float().mean().item() == pytest.approx(keep, abs=5 * se)
    assert abs(keep - (1 - p)) <= 1 / (2 * LEVELS)


def test_kept_units_are_scaled_so_the_expectation_is_exact() -> None:
    torch.manual_seed(1)  # the mean's 5-standard-error bound, for one fixed draw
    noise = dropout_noise((N,), 0.1, torch.empty(0, dtype=torch.float64))
    keep = round(0.9 * LEVELS)
    assert noise.dtype == torch.float64
    assert set(noise.unique().tolist()) == {0.0, LEVELS / keep}
    assert noise.mean().item() == pytest.approx(1.0, abs=5 * (0.1 / 0.9 / N) ** 0.5)


def test_the_seed_fixes_the_mask_and_the_gradient_is_the_mask() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(7)
    y = dropout(x, 0.25, True)
    torch.manual_seed(7)
    again = dropout(x, 0.25, True)
    assert torch.equal(y, again)
    y.sum().backward()
    assert torch.equal(x.grad, torch.where(y != 0, torch.full_like(x, LEVELS / round(0.75 * LEVELS)), 0.0))


def test_eval_mode_and_p_0_leave_the_input_as_it_is_and_p_1_drops_everything() -> None:
    x = torch.randn(8, 5)
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    module = Dropout(0.3).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="between 0 and 1, got -0.1"):
        dropout(x, -0.1, True)


@pytest.mark.parametrize("masks", ["auto", "torch"])
@pytest.mark.parametrize("model", ["gru", "transformer"])
def test_both_models_drop_with_it_and_their_option_picks_the_masks(model: str, masks: str) -> None:
    """Every dropout module of both models is this one, drawing its masks as ``dropout_masks`` says."""
    kwargs = {"src_vocab_size": 20, "tgt_vocab_size": 20, "pad_id": 0, "dropout_masks": masks}
    net = GRUSeq2Seq(**kwargs, enc_layers=2, dec_layers=2) if model == "gru" else TransformerSeq2Seq(**kwargs)
    modules = [m for m in net.modules() if "Dropout" in type(m).__name__]
    assert modules and {type(m) for m in modules} == {Dropout} and {m.masks for m in modules} == {masks}
    with pytest.raises(ValueError, match="unknown dropout_masks 'fast'"):
        (GRUSeq2Seq if model == "gru" else TransformerSeq2Seq)(**{**kwargs, "dropout_masks": "fast"})


def test_torch_masks_are_torchs_own_dropout() -> None:
    x = torch.randn(32, 17)
    torch.manual_seed(3)
    ours = Dropout(0.3, "torch").train()(x)
    torch.manual_seed(3)
    assert torch.equal(ours, F.dropout(x, 0.3, True))
    torch.manual_seed(3)
    assert not torch.equal(Dropout(0.3).train()(x), ours)  # auto draws its own way
