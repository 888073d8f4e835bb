"""The GRU encoder's batched recurrence (models/recurrence.py) against nn.GRU over packed sequences."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models import GRUSeq2Seq
from models.recurrence import _Recurrence, bidirectional_gru, reverse_within_lengths

LENGTHS = [9, 3, 7, 1, 5, 9]  # unsorted, one of length 1, the longest twice


def packed_reference(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, h_n = gru(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0], h_n


def outputs_and_grads(fn, gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    gru.zero_grad()
    x = x.detach().requires_grad_()
    out, h_n = fn(gru, x, lengths)
    # a loss that weighs every position and every final state differently
    (out.pow(2).mul(torch.linspace(0.5, 2, out.size(1))[:, None]).sum() + h_n.sin().sum()).backward()
    return [out, h_n, x.grad, *(p.grad for p in gru.parameters())]


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_batched_recurrence_equals_packed_gru_outputs_states_and_gradients(layers: int) -> None:
    torch.manual_seed(layers)
    gru = nn.GRU(6, 5, num_layers=layers, batch_first=True, bidirectional=True).double()
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(len(LENGTHS), max(LENGTHS), 6, dtype=torch.double)
    x[torch.arange(x.size(1))[None] >= lengths[:, None]] = 7.0  # padding that would show if it leaked in
    ours = outputs_and_grads(bidirectional_gru, gru, x, lengths)
    ref = outputs_and_grads(packed_reference, gru, x, lengths)
    for name, a, b in zip(["outputs", "final states", "input grad", *(n for n, _ in gru.named_parameters())], ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    assert ours[0][3, 1:].abs().max() == 0  # padded positions come back as zeros, as pad_packed_sequence gives


def test_hand_written_backward_passes_gradcheck() -> None:
    torch.manual_seed(0)
    gates = torch.randn(2, 3, 4, 9, dtype=torch.double, requires_grad=True)
    w_hh = torch.randn(2, 9, 3, dtype=torch.double, requires_grad=True)
    b_hh = torch.randn(2, 9, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, w, b: _Recurrence.apply(g, w, b, torch.double), (gates, w_hh, b_hh))


def test_reverse_within_lengths_leaves_padding_in_place() -> None:
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_within_lengths(x, torch.tensor([4, 2]))
    assert out.squeeze(-1).tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_within_lengths(out, torch.tensor([4, 2])), x)


def test_bf16_autocast_keeps_the_state_in_fp32_and_stays_near_fp32() -> None:
    torch.manual_seed(0)
    gru = nn.GRU(16, 32, num_layers=2, batch_first=True, bidirectional=True)
    lengths = torch.tensor([40, 25, 33])
    x = torch.randn(3, 40, 16)
    ref, ref_h = packed_reference(gru, x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = bidirectional_gru(gru, x, lengths)
    assert out.dtype == h_n.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 and (h_n - ref_h).abs().max() < 0.05  # bf16 matmuls, 40 steps


def test_gru_model_gives_the_same_logits_and_gradients_on_either_recurrence() -> None:
    torch.manual_seed(0)
    model = GRUSeq2Seq(src_vocab_size=30, tgt_vocab_size=30, pad_id=1, emb_dim=8, hidden_size=12, enc_layers=2,
                       dropout=0.0, share_embeddings=True, tie_embeddings=True).double()
    src = torch.randint(2, 30, (4, 11))
    src_mask = torch.arange(11)[None] < torch.tensor([11, 4, 8, 2])[:, None]
    src[~src_mask] = 1
    tgt = torch.randint(2, 30, (4, 6))
    results = {}
    for recurrence in ("packed", "batched"):
        model.recurrence = recurrence
        model.zero_grad()
        logits, attention = model(src, src_mask, tgt)
        logits.logsumexp(-1).sum().backward()
        results[recurrence] = [logits, attention, *(p.grad.clone() for p in model.parameters())]
    for a, b in zip(results["packed"], results["batched"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_auto_recurrence_and_bad_values() -> None:
    kwargs = {"src_vocab_size": 10, "tgt_vocab_size": 10, "pad_id": 0, "emb_dim": 4, "hidden_size": 6}
    assert GRUSeq2Seq(**kwargs).recurrence == "auto"
    with pytest.raises(ValueError, match="unknown recurrence 'scan'.*auto.*packed.*batched"):
        GRUSeq2Seq(**kwargs, recurrence="scan")
    with pytest.raises(ValueError, match="bidirectional"):
        bidirectional_gru(nn.GRU(4, 3, batch_first=True), torch.zeros(1, 2, 4), torch.tensor([2]))
