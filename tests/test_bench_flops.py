"""s2s-bench's model FLOPs and MFU: the shape count against torch's own count, its scaling, the peak, the arithmetic.

The reference is ``torch.utils.flop_counter.FlopCounterMode``, which counts
exactly the matmuls (mm, addmm, bmm and attention kernels, 2mkn each) and
nothing elementwise: the same convention as ``flops``, so the counts must be
equal, not close. Attention runs on SDPA's math backend here, because the
counter has no formula for the CPU flash kernel; the math backend computes
QK^T and AV as plain batched matmuls over the full (causal: T x T) score matrix,
which is what ``flops`` counts. No timing is asserted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from experiments.data.batching import Batch, collate
from experiments.bench import peak
from experiments.bench.flops import (Lengths, batch_lengths, forward_flops, mm, model_shapes, training_flops,
                                     update_lengths)
from models import MODELS

PAD, BOS, EOS, VOCAB = 1, 2, 3, 23

TRANSFORMER = {"name": "transformer", "d_model": 16, "heads": 2, "ff_size": 24, "enc_layers": 2, "dec_layers": 2,
               "dropout": 0.0, "tie_embeddings": True, "share_embeddings": False}
GRU = {"name": "gru", "emb_dim": 12, "hidden_size": 20, "enc_layers": 2, "dec_layers": 2, "dropout": 0.0,
       "attention": "bahdanau", "input_feeding": True, "tie_embeddings": True, "share_embeddings": False}
CONFIGS = {
    "transformer": TRANSFORMER,
    "transformer, post-norm, untied": {**TRANSFORMER, "norm": "post", "tie_embeddings": False, "enc_layers": 1},
    "gru, bahdanau, tied": GRU,  # auto: the batched recurrence on a CPU, over the padded source
    "gru, packed encoder": {**GRU, "recurrence": "packed"},  # nn.GRU over packed sequences: real tokens only
    "gru, luong_dot, untied": {**GRU, "attention": "luong_dot", "tie_embeddings": False, "enc_layers": 1},
    "gru, luong_general, no input feeding": {**GRU, "attention": "luong_general", "input_feeding": False,
                                             "dec_layers": 1},
}


def make_batch(src_lens: list[int], tgt_lens: list[int], seed: int = 0) -> Batch:
    """A collated batch of random sentences of these lengths (collation adds eos / bos: one position each)."""
    rng = np.random.default_rng(seed)
    rows = [[int(x) for x in rng.integers(4, VOCAB, n)] for n in (*src_lens, *tgt_lens)]
    return collate(rows[:len(src_lens)], rows[len(src_lens):], np.arange(len(src_lens)), max_src_len=99,
                   max_tgt_len=99, pad_id=PAD, bos_id=BOS, eos_id=EOS)


def build(cfg: dict[str, Any]) -> torch.nn.Module:
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    torch.manual_seed(0)
    return MODELS[cfg["name"]](src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, pad_id=PAD, **kwargs)


def counted_by_torch(model: torch.nn.Module, batch: Batch, backward: bool = False) -> int:
    """torch's count of a forward (and backward) as training and validation run them: logits of real positions."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        logits, _ = model(batch.src, batch.src_mask, batch.tgt_in, batch.tgt_mask)
        if backward:
            logits.sum().backward()
    return counter.get_total_flops()


BATCH = ([5, 2, 7], [3, 6, 1])  # ragged source and target lengths: padding on both sides


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_count_is_torchs_count_of_the_padded_batch(name: str) -> None:
    """With gradients, as training runs it (the GRU's decoder steps end with each sentence on a CPU); without,
    as validation does (the GRU's steps run over the whole padded width)."""
    cfg, batch = CONFIGS[name], make_batch(*BATCH)
    model = build(cfg).eval()
    assert forward_flops(cfg, VOCAB, update_lengths(cfg, batch)["padded"]) == counted_by_torch(model, batch)
    with torch.no_grad():
        no_grad = counted_by_torch(model, batch)
    full_steps = batch_lengths(batch, packed_encoder=cfg.get("recurrence") == "packed")["padded"]
    assert forward_flops(cfg, VOCAB, full_steps) == no_grad


@pytest.mark.parametrize("name", ["transformer", "gru, bahdanau, tied", "gru, packed encoder"])
def test_training_count_is_torchs_count_of_forward_and_backward(name: str) -> None:
    """Every matmul's backward is two matmuls as large (input and weight gradients): training = 3x forward.

    One exception, in nn.GRU's packed encoder: each direction's first recurrent
    matmul multiplies the zero initial state, whose gradient autograd never
    computes. Its rows: every sentence in the forward direction; in the backward
    direction, which starts at the last position, the sentences of the longest
    length. The batched recurrence's hand-written backward computes all of them.
    The GRU's decoder loop (hand-written on a CPU) runs no step past a
    sentence's end, and the padded count says so: it would differ by the
    padded target positions' share otherwise.
    """
    cfg, batch = CONFIGS[name], make_batch(*BATCH)
    model = build(cfg).train()
    skipped = 0
    if cfg.get("recurrence") == "packed":
        src = batch.src_mask.sum(dim=1)
        half = cfg["hidden_size"] // 2
        skipped = cfg["enc_layers"] * mm(len(src) + int((src == src.max()).sum()), half, 3 * half)
    assert training_flops(cfg, VOCAB, batch)["padded"] - skipped == counted_by_torch(model, batch, backward=True)


@pytest.mark.parametrize("name", CONFIGS)
def test_real_count_is_the_sum_over_sentences_alone(name: str) -> None:
    """Each sentence run alone (no padding) costs its share of the real count; the padded count is above it."""
    cfg, batch = CONFIGS[name], make_batch(*BATCH)
    counts = training_flops(cfg, VOCAB, batch)
    alone = [training_flops(cfg, VOCAB, make_batch([s], [t]))["padded"] for s, t in zip(*BATCH)]
    # the GRU's bridge runs once per sentence either way, so the sum of singles is exact for both models
    assert counts["real"] == sum(alone) < counts["padded"]


@pytest.mark.parametrize("name", CONFIGS)
def test_count_is_linear_in_the_batch_and_quadratic_only_through_self_attention(name: str) -> None:
    cfg = CONFIGS[name]
    one = training_flops(cfg, VOCAB, make_batch([6], [4]))["padded"]
    assert training_flops(cfg, VOCAB, make_batch([6] * 8, [4] * 8))["padded"] == 8 * one

    def at(src: int, tgt: int) -> int:
        return forward_flops(cfg, VOCAB, Lengths(np.array([src]), np.array([tgt]), np.array([src]), np.array([tgt])))

    # second differences in each length: the Transformer's self-attention (QK^T and AV, 2 * 2 * d_model per
    # query-key pair and layer) is its only square term; the GRU (one decoder step per target position,
    # attention over each source position) is linear in either length with the other fixed
    transformer = cfg["name"] == "transformer"
    square = {"src": 8 * cfg["d_model"] * cfg["enc_layers"] if transformer else 0,
              "tgt": 8 * cfg["d_model"] * cfg["dec_layers"] if transformer else 0}
    for side, count in (("src", lambda n: at(n, 7)), ("tgt", lambda n: at(7, n))):
        assert count(10) - count(9) > 0
        assert count(11) - 2 * count(10) + count(9) == square[side]
        assert count(12) - 3 * count(11) + 3 * count(10) - count(9) == 0


def test_transformer_count_by_hand() -> None:
    """One sentence of 3 source and 2 target positions through a 1+1-layer Transformer, term by term."""
    d, f, v = 8, 12, 10
    cfg = {"name": "transformer", "d_model": d, "ff_size": f, "enc_layers": 1, "dec_layers": 1}
    s, t = 3, 2
    enc = s * (4 * 2 * d * d + 2 * 2 * d * f) + 2 * 2 * s * s * d
    dec = t * (4 * 2 * d * d + 2 * 2 * d * f) + 2 * 2 * t * t * d + 2 * 2 * t * d * d + 2 * 2 * s * d * d \
        + 2 * 2 * t * s * d
    one = np.array([s]), np.array([t]), np.array([s]), np.array([t])
    assert forward_flops(cfg, v, Lengths(*one)) == enc + dec + 2 * t * d * v


def test_model_shapes_name_the_dominant_matmuls() -> None:
    assert model_shapes(TRANSFORMER, VOCAB, 4, 5) == {"feed-forward": (20, 16, 24), "output layer": (20, 16, VOCAB)}
    assert model_shapes(GRU, VOCAB, 4, 5) == {"decoder step": (4, 20, 60), "output layer": (20, 12, VOCAB)}


def test_peak_is_a_positive_finite_rate_at_a_tiny_shape() -> None:
    rate = peak.matmul_gflops((8, 16, 4), "fp32", torch.device("cpu"), repeats=2, min_repeat_s=0.001)
    assert math.isfinite(rate) and rate > 0
    measured = peak.measure_peak({"tiny": (4, 8, 4)}, "fp32", torch.device("cpu"), size=16, repeats=1,
                                 square_samples=[1e-3, 1e6])
    assert measured["dtype"] == "fp32" and measured["threads"] == torch.get_num_threads()
    assert measured["square"]["shape"] == [16, 16, 16] and measured["shapes"]["tiny"]["shape"] == [4, 8, 4]
    assert all(r["gflops"] > 0 for r in (measured["square"], measured["shapes"]["tiny"]))
    # the limit is the fastest sample, earlier ones (taken between timed updates) included; the spread is kept
    assert measured["square"]["gflops"] == 1e6 and measured["square"]["min"] == 1e-3
    assert measured["square"]["samples"] == 3 and measured["shapes"]["tiny"]["samples"] == 1


def test_bf16_peak_only_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(peak, "native_bf16", lambda device: True)
    assert (peak.peak_dtype(cpu, "bf16"), peak.peak_dtype(cpu, "fp32")) == ("bf16", "fp32")
    monkeypatch.setattr(peak, "native_bf16", lambda device: False)
    assert peak.peak_dtype(cpu, "bf16") == "fp32"  # emulated bf16 is held against the fp32 peak


def test_mfu_of_a_fixed_row() -> None:
    """3e11 padded and 2.4e11 real FLOPs in 2 s against a 500 GFLOP/s square peak."""
    row = {"model_flops": {"padded": 3e11, "real": 2.4e11}, "measured_s": 2.0,
           "peak": {"square": {"shape": [2048] * 3, "gflops": 500.0}}}
    out = peak.utilisation(row["model_flops"], row["measured_s"], row["peak"])
    assert out == pytest.approx({"model_gflops_padded": 150.0, "model_gflops_real": 120.0, "mfu_padded": 0.3,
                                 "mfu_real": 0.24})
