"""Model FLOPs of one training batch, counted from its shapes: the numerator of MFU.

Convention (Kaplan et al., 2020, section 2.1; Chowdhery et al., 2022, appendix B):
a matmul of an (m x k) by a (k x n) matrix is 2mkn FLOPs, a multiply and an add
per term, and a training update is 3x the forward pass (the backward pass
computes, for each forward matmul, one as large for the input's gradient and one
for the weight's; autograd skips the few whose input needs no gradient, such as
the GRU encoder's first recurrent step against its zero initial state, which
3x still counts). Counted: every matmul of the forward pass, whatever the
precision it runs in:

* Transformer: the q, k, v and output projections of self- and cross-attention,
  QK^T and AV of every attention (the decoder's causal self-attention in full,
  T x T, as ``torch.utils.flop_counter`` counts it; a kernel that skips masked
  blocks does less), the feed-forward layers, the output layer over the vocabulary;
* GRU: the encoder's input and recurrent matmuls (both directions, every layer),
  the bridge to the decoder's first state, the decoder cells' input and
  recurrent matmuls, the attention (key and query projections and the
  ``v`` scoring of Bahdanau's score, or Luong's dot / bilinear score; the
  context, weights @ memory), the attentional layer W_c, the projection down to
  the embedding size of a tied output layer, the output layer.

Left out: elementwise work (activations, the GRU gates' sigmoids, tanh and
products, residual additions, biases, dropout), softmax, layer norm, embedding
lookups, the loss and the optimizer's update: small beside the matmuls at these
sizes, and not what a matmul peak measures.

Two counts per batch, from the per-sentence lengths of the collated batch:
``padded`` counts what a training update computes: every position of the
padded (B, S) and (B, T) tensors, except where the computation skips the
padding: the output layer (training asks the model for the real target
positions' logits only), the GRU's encoder where it runs nn.GRU over packed
sequences (on CUDA or with ``recurrence=packed``) and the GRU's hand-written
decoder loop (on a CPU), whose steps end with each sentence's target; ``real``
counts each sentence at its own source and target lengths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.data.batching import Batch
from models.gru import runs_handwritten_loop, runs_packed

Shape = tuple[int, int, int]  # (m, k, n) of an (m x k) @ (k x n) matmul


def mm(m: int, k: int, n: int) -> int:
    """Forward FLOPs of an (m x k) @ (k x n) matmul."""
    return 2 * int(m) * int(k) * int(n)


@dataclass(frozen=True)
class Lengths:
    """Positions per sentence that one count runs the model over."""

    src: np.ndarray  # source positions attended to (and run through the Transformer's encoder)
    tgt: np.ndarray  # target positions decoded
    encoder_src: np.ndarray  # source positions the GRU's encoder runs over (packed: only the real ones)
    output: np.ndarray  # target positions the output layer projects


def batch_lengths(batch: Batch, packed_encoder: bool = False, decoder_skips_padding: bool = False
                  ) -> dict[str, Lengths]:
    """``padded`` (every position of the batch's tensors a training update computes) and ``real`` (real tokens
    only) lengths.

    ``packed_encoder``: the GRU's encoder runs over packed sequences, and ``decoder_skips_padding``: the GRU's
    decoder steps stop at each sentence's end, so even the padded count has them over real tokens only.
    """
    src = batch.src_mask.sum(dim=1).numpy().astype(np.int64)
    tgt = batch.tgt_mask.sum(dim=1).numpy().astype(np.int64)  # bos + target = target + eos
    n, width_src, width_tgt = len(src), batch.src.size(1), batch.tgt_in.size(1)
    padded_src = np.full(n, width_src)
    padded = Lengths(padded_src, tgt if decoder_skips_padding else np.full(n, width_tgt),
                     src if packed_encoder else padded_src, tgt)
    return {"padded": padded, "real": Lengths(src, tgt, src, tgt)}


def transformer_forward(c: Mapping[str, Any], vocab: int, n: Lengths) -> int:
    d, f = c["d_model"], c["ff_size"]
    s, t = int(n.src.sum()), int(n.tgt.sum())
    ss, tt, ts = int((n.src * n.src).sum()), int((n.tgt * n.tgt).sum()), int((n.tgt * n.src).sum())
    per_token = 4 * mm(1, d, d) + mm(1, d, f) + mm(1, f, d)  # q, k, v, out projections; feed-forward
    per_pair = 2 * mm(1, d, 1)  # QK^T and AV per (query, key) pair, over all heads (heads x d_head = d)
    encoder = per_token * s + per_pair * ss
    self_attn = per_token * t + per_pair * tt
    cross = 2 * mm(t, d, d) + 2 * mm(s, d, d) + per_pair * ts  # q, out per target; k, v per source
    return c["enc_layers"] * encoder + c["dec_layers"] * (self_attn + cross) + mm(int(n.output.sum()), d, vocab)


def gru_forward(c: Mapping[str, Any], vocab: int, n: Lengths) -> int:
    e, h, layers = c["emb_dim"], c["hidden_size"], c["dec_layers"]
    half = h // 2  # units per encoder direction
    enc, s, t = int(n.encoder_src.sum()), int(n.src.sum()), int(n.tgt.sum())
    ts = int((n.tgt * n.src).sum())  # (decoder step, source position) pairs: mm(1, h, 1) each to score, or to sum
    encoder = sum(2 * (mm(enc, e if i == 0 else h, 3 * half) + mm(enc, half, 3 * half))
                  for i in range(c["enc_layers"]))
    bridge = mm(len(n.tgt), c["enc_layers"] * h, layers * h)
    first_input = e + (h if c["input_feeding"] else 0)
    cells = sum(mm(t, first_input if i == 0 else h, 3 * h) + mm(t, h, 3 * h) for i in range(layers))
    if c["attention"] == "bahdanau":  # key_proj once per source, query_proj per step, v per (step, source)
        attention = mm(s, h, h) + mm(t, h, h) + mm(1, h, 1) * ts
    else:  # luong_general's W_a on the keys; both score with q^T k
        attention = (mm(s, h, h) if c["attention"] == "luong_general" else 0) + mm(1, h, 1) * ts
    context = mm(1, h, 1) * ts  # weights @ memory
    combine = mm(t, 2 * h, h)  # W_c [c_t; h_t]
    tied, o = c["tie_embeddings"], int(n.output.sum())
    pre_output = mm(o, h, e) if tied and e != h else 0
    output = mm(o, e if tied else h, vocab)
    return encoder + bridge + cells + attention + context + combine + pre_output + output


FORWARD = {"transformer": transformer_forward, "gru": gru_forward}


def forward_flops(model_cfg: Mapping[str, Any], vocab: int, lengths: Lengths) -> int:
    """Matmul FLOPs of one forward pass over ``lengths`` (``model_cfg``: conf/model's keys, ``vocab``: target side)."""
    return FORWARD[model_cfg["name"]](model_cfg, vocab, lengths)


def training_flops(model_cfg: Mapping[str, Any], vocab: int, batch: Batch, device_type: str = "cpu") -> dict[str, int]:
    """Model FLOPs of one update on ``batch`` (3x forward) on a ``device_type`` device, ``padded`` and over
    ``real`` tokens only."""
    return {kind: 3 * forward_flops(model_cfg, vocab, n) for kind, n in update_lengths(model_cfg, batch,
                                                                                        device_type).items()}


def update_lengths(model_cfg: Mapping[str, Any], batch: Batch, device_type: str = "cpu") -> dict[str, Lengths]:
    """``batch_lengths`` as a training update on a ``device_type`` device runs ``model_cfg``'s model."""
    gru = model_cfg["name"] == "gru"
    packed = gru and runs_packed(model_cfg.get("recurrence", "auto"), device_type)
    skips = gru and runs_handwritten_loop(model_cfg.get("decoder_loop", "auto"), device_type)
    return batch_lengths(batch, packed, skips)


def model_shapes(model_cfg: Mapping[str, Any], vocab: int, sentences: int, tgt_width: int) -> dict[str, Shape]:
    """The model's dominant matmuls at a batch of ``sentences`` x ``tgt_width`` target positions, by name."""
    tokens = sentences * tgt_width
    if model_cfg["name"] == "transformer":
        d = model_cfg["d_model"]
        return {"feed-forward": (tokens, d, model_cfg["ff_size"]), "output layer": (tokens, d, vocab)}
    h = model_cfg["hidden_size"]
    width = model_cfg["emb_dim"] if model_cfg["tie_embeddings"] else h
    return {"decoder step": (sentences, h, 3 * h), "output layer": (tokens, width, vocab)}
