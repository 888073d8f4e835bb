"""Encoder-decoder Transformer (Vaswani et al., 2017), pre- or post-norm.

Self-attention goes through ``F.scaled_dot_product_attention``. Cross-attention
is computed explicitly (softmax(QK^T / sqrt(d_head)) then weights @ V) because
its weights are part of the model's output; the weights returned are exactly
the ones that multiplied V.

``forward`` and ``decode_step`` share ``_decode``: teacher forcing is decoding
all target positions at once from an empty self-attention cache, incremental
decoding is one position at a time from a filled one.

With ``copy`` (a pointer-generator, See et al., 2017) the output is the mixture
of models/copy.py, log-probabilities. p_gen = sigmoid(w_g x_t + b_g) reads the
decoder's top state x_t, as the output layer does. The copy distribution is a
dedicated single-head attention, softmax(x_t^T W_k m_i / sqrt(d)) over the
memory, rather than the last layer's cross-attention averaged over heads,
because (1) the mixture must sum to one, and cross-attention weights are
dropped out in training (``attention_dropout``); (2) it is queried with x_t,
the state that also decides between generating and copying, whereas the last
cross-attention is queried before its layer's feed-forward, and its heads,
trained to gather context, average to a blur of several alignments rather
than a pointer. It costs a d x d key projection once per source (``copy_keys``
in the cache) and a (T, S) score matrix. The returned cross-attention (the
attention page's) stays that of the layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import masked_softmax
from models.copy import teacher_forced_copy
from models.dropout import Dropout, dropout
from models.interface import Cache, check_joint_vocabulary


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, is_causal: bool) -> Tensor:
    """``F.scaled_dot_product_attention``, in fp32 when the inputs are bf16 on a CPU.

    Torch's CPU flash-attention backward in bf16 is about 15x slower than in
    fp32 (torch 2.13, ``s2s-bench --profile``), and at these sequence lengths
    attention is a small share of the work: under CPU bf16 autocast the
    projections around it stay bf16 and attention itself runs in fp32.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            )
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, attention_dropout: float, masks: str) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.masks = masks  # how the explicit attention's dropout draws its masks (models/dropout.py)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # (B, h, T, d_head)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, h, S, d_head) of the sequence ``x`` (B, S, D) being attended."""
        return self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))

    def forward(
        self,
        x: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from queries ``x`` (B, T, D) over ``k``, ``v`` (B, h, S, d_head).

        ``mask`` broadcasts to (B, h, T, S), True where attending is allowed.
        With ``need_weights`` the attention is computed explicitly and its
        weights (B, h, T, S) are returned (after attention dropout, in training);
        otherwise SDPA does the work and the weights are None.
        """
        q = self._split_heads(self.q_proj(x))  # (B, h, T, d_head)
        p = self.attention_dropout if self.training else 0.0
        if need_weights:
            if is_causal:
                raise ValueError("need_weights is only implemented without a causal mask")
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, T, S)
            weights = dropout(masked_softmax(scores, mask), p, True, self.masks)  # p is 0 in eval mode
            out = weights @ v  # (B, h, T, d_head)
        else:
            weights = None
            out = attend(q, k, v, mask, p, is_causal)
        B, _, T, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, -1)), weights  # (B, T, D)


class Residual(nn.Module):
    """Residual connection around a sub-layer f, run by the caller between the two calls.

    pre-norm: ``x + dropout(f(LN(x)))``; post-norm: ``LN(x + dropout(f(x)))``.
    """

    def __init__(self, d_model: int, dropout: float, pre_norm: bool, masks: str) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout, masks)

    def normed(self, x: Tensor) -> Tensor:
        """The sub-layer's input."""
        return self.norm(x) if self.pre_norm else x

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        """Combine the residual stream ``x`` with the sub-layer's output ``y``."""
        x = x + self.dropout(y)
        return x if self.pre_norm else self.norm(x)


def feed_forward(d_model: int, ff_size: int, activation_dropout: float, masks: str) -> nn.Sequential:
    """Linear, ReLU then dropout on the hidden units, Linear.

    ReLU and its dropout share one slot so that the parameters keep the names
    (``ff.0``, ``ff.2``) of checkpoints saved before this dropout existed.
    """
    act = nn.Sequential(nn.ReLU(), Dropout(activation_dropout, masks))
    return nn.Sequential(nn.Linear(d_model, ff_size), act, nn.Linear(ff_size, d_model))


class EncoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, ff_size: int, dropout: float, attention_dropout: float,
        activation_dropout: float, pre_norm: bool, masks: str,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, attention_dropout, masks)
        self.self_res = Residual(d_model, dropout, pre_norm, masks)
        self.ff = feed_forward(d_model, ff_size, activation_dropout, masks)
        self.ff_res = Residual(d_model, dropout, pre_norm, masks)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.self_res.normed(x)
        y, _ = self.self_attn(h, *self.self_attn.project_kv(h), mask=mask)
        x = self.self_res.add(x, y)
        return self.ff_res.add(x, self.ff(self.ff_res.normed(x)))  # (B, S, D)


class DecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, ff_size: int, dropout: float, attention_dropout: float,
        activation_dropout: float, pre_norm: bool, masks: str,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, heads, attention_dropout, masks)
        self.self_res = Residual(d_model, dropout, pre_norm, masks)
        self.cross_attn = MultiHeadAttention(d_model, heads, attention_dropout, masks)
        self.cross_res = Residual(d_model, dropout, pre_norm, masks)
        self.ff = feed_forward(d_model, ff_size, activation_dropout, masks)
        self.ff_res = Residual(d_model, dropout, pre_norm, masks)

    def forward(
        self,
        x: Tensor,
        past_kv: tuple[Tensor, Tensor],
        cross_kv: tuple[Tensor, Tensor],
        src_mask: Tensor,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
        """Decode the T new positions ``x`` (B, T, D) after the t cached ones in ``past_kv``.

        Returns the output (B, T, D), self-attention keys/values (B, h, t + T, d_head)
        for the cache, and the cross-attention weights (B, h, T, S). T > 1 is
        only supported from an empty cache (t = 0), where the causal mask applies.
        """
        h = self.self_res.normed(x)
        k, v = self.self_attn.project_kv(h)
        k = torch.cat([past_kv[0], k], dim=2)
        v = torch.cat([past_kv[1], v], dim=2)
        # A branch, not is_causal=x.size(1) > 1: under torch.compile with dynamic shapes the comparison is a
        # symbolic bool, which SDPA rejects (a graph break); branching on it specialises the graph instead.
        causal = True if x.size(1) > 1 else False  # noqa: SIM210
        y, _ = self.self_attn(h, k, v, is_causal=causal)
        x = self.self_res.add(x, y)

        h = self.cross_res.normed(x)
        y, weights = self.cross_attn(h, *cross_kv, mask=src_mask, need_weights=True)
        x = self.cross_res.add(x, y)

        x = self.ff_res.add(x, self.ff(self.ff_res.normed(x)))
        return x, (k, v), weights


class PositionalEncoding(nn.Module):
    """Absolute positions, fixed sinusoids or learned, as a (T, D) table slice."""

    def __init__(self, kind: str, max_positions: int, d_model: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.learned = kind == "learned"
        if self.learned:
            self.table = nn.Embedding(max_positions, d_model)
        elif kind == "sinusoidal":
            pos = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
            inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2) / d_model)
            table = torch.zeros(max_positions, d_model)
            table[:, 0::2] = torch.sin(pos * inv_freq)
            table[:, 1::2] = torch.cos(pos * inv_freq[: d_model // 2])
            self.register_buffer("sinusoids", table, persistent=False)
        else:
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {kind!r}")

    def forward(self, start: int, length: int) -> Tensor:
        if start + length > self.max_positions:
            raise ValueError(
                f"position {start + length - 1} is beyond max_positions={self.max_positions}"
            )
        if self.learned:
            return self.table.weight[start : start + length]  # (T, D)
        return self.sinusoids[start : start + length]  # (T, D)


class TransformerSeq2Seq(nn.Module):
    def __init__(
        self,
        *,
        src_vocab_size: int,
        tgt_vocab_size: int,
        pad_id: int,
        d_model: int = 256,
        heads: int = 4,
        ff_size: int = 1024,
        enc_layers: int = 3,
        dec_layers: int = 3,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        embedding_dropout: float | None = None,
        positions: str = "sinusoidal",
        norm: str = "pre",
        share_embeddings: bool = False,
        tie_embeddings: bool = True,
        max_positions: int = 1024,
        embed_init: str = "normal",
        dropout_masks: str = "auto",
        copy: bool = False,
    ) -> None:
        super().__init__()
        if embed_init not in ("normal", "xavier"):
            raise ValueError(f"embed_init must be 'normal' or 'xavier', got {embed_init!r}")
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        check_joint_vocabulary(src_vocab_size, tgt_vocab_size, copy, share_embeddings)
        self.pad_id = pad_id
        self.d_model = d_model
        self.heads = heads
        self.embed_init = embed_init
        self.copy = copy
        self.outputs_log_probs = copy  # the copy mixture has no logits (models/interface.py)
        pre_norm = norm == "pre"

        self.src_emb = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_id)
        self.tgt_emb = (
            self.src_emb
            if share_embeddings
            else nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_id)
        )
        self.positions = PositionalEncoding(positions, max_positions, d_model)
        self.dropout = Dropout(dropout if embedding_dropout is None else embedding_dropout, dropout_masks)
        layer_args = (d_model, heads, ff_size, dropout, attention_dropout, activation_dropout, pre_norm, dropout_masks)
        self.encoder = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(dec_layers))
        # Pre-norm leaves the residual stream unnormalised: normalise once at the top.
        self.enc_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.dec_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.output = nn.Linear(d_model, tgt_vocab_size, bias=False)
        if tie_embeddings:
            self.output.weight = self.tgt_emb.weight
        if copy:
            self.copy_keys = nn.Linear(d_model, d_model, bias=False)  # W_k of the copy attention
            self.copy_gate = nn.Linear(d_model, 1)  # x_t -> the pre-sigmoid p_gen

        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform linears; embeddings N(0, d^-1/2) (unit scale after the sqrt(d) factor) or, with
        ``embed_init="xavier"``, xavier-uniform over (vocab, d) as JoeyNMT does (std ~0.016 for 8000 x 256:
        4x smaller, so the positional encodings dominate the input at the start).

        Embeddings go second so that a tied output layer ends up with the embedding init.
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                if self.embed_init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=self.d_model**-0.5)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()

    def _embed(self, emb: nn.Embedding, tokens: Tensor, start: int) -> Tensor:
        x = emb(tokens) * math.sqrt(self.d_model) + self.positions(start, tokens.size(1))
        return self.dropout(x)  # (B, T, D)

    @property
    def source_cache_keys(self) -> tuple[str, ...]:
        """The cache entries computed once per source: cross-attention keys/values, and with copy the copy
        attention's keys and the source ids its distribution scatters to."""
        return ("cross_k", "cross_v", "copy_keys", "src") if self.copy else ("cross_k", "cross_v")

    def encode(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Cache]:
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(self.src_emb, src, 0)
        for layer in self.encoder:
            x = layer(x, mask)
        memory = self.enc_norm(x)  # (B, S, D)

        # Cross-attention keys/values depend only on the memory: computed once here.
        cross = [layer.cross_attn.project_kv(memory) for layer in self.decoder]
        empty = memory.new_zeros(src.size(0), self.heads, 0, self.d_model // self.heads)
        cache: Cache = {
            "self_k": [empty] * len(self.decoder),  # grows to (B, h, t, d_head)
            "self_v": [empty] * len(self.decoder),
            "cross_k": [k for k, _ in cross],  # (B, h, S, d_head)
            "cross_v": [v for _, v in cross],
        }
        if self.copy:
            cache["copy_keys"] = self.copy_keys(memory)  # (B, S, D)
            cache["src"] = src
        return memory, cache

    def _decode(
        self, tokens: Tensor, src_mask: Tensor, cache: Cache, positions: Tensor | None = None
    ) -> tuple[Tensor, Cache, Tensor]:
        """Decode ``tokens`` (B, T) following the positions already in ``cache``.

        Returns logits (B, T, V) (or (N, V) at the ``positions`` (B, T) mask selects; with copy,
        log-probabilities), the extended cache and cross-attention (B, L, h, T, S).
        """
        start = cache["self_k"][0].size(2)
        if tokens.size(1) > 1 and start > 0:
            raise ValueError("several new positions can only be decoded from an empty cache")
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self._embed(self.tgt_emb, tokens, start)
        new_cache: Cache = {**cache, "self_k": [], "self_v": []}
        weights = []
        for i, layer in enumerate(self.decoder):
            past = (cache["self_k"][i], cache["self_v"][i])
            cross = (cache["cross_k"][i], cache["cross_v"][i])
            x, (k, v), w = layer(x, past, cross, mask)
            new_cache["self_k"].append(k)
            new_cache["self_v"].append(v)
            weights.append(w)
        x = self.dec_norm(x)  # (B, T, D)
        top = x if positions is None else x[positions]  # (B, T, D) or (N, D)
        out = self.output(top)  # logits
        if self.copy:  # log-probabilities instead
            scores = x @ cache["copy_keys"].transpose(1, 2) / math.sqrt(self.d_model)  # (B, T, S)
            copy_attention = masked_softmax(scores.float(), mask[:, 0])  # (B, T, S)
            out = teacher_forced_copy(out, self.copy_gate(top), copy_attention, cache["src"], positions)
        return out, new_cache, torch.stack(weights, dim=1)

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        """``memory`` is unused: its cross-attention keys/values are in ``cache``."""
        out, cache, weights = self._decode(tokens.unsqueeze(1), src_mask, cache)
        return out.squeeze(1), cache, weights.squeeze(3)  # (B, V), _, (B, L, h, S)

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, tgt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        _, cache = self.encode(src, src_mask)
        out, _, weights = self._decode(tgt_in, src_mask, cache, tgt_mask)
        return out, weights  # (B, T, V) or (N, V), (B, L, h, T, S)
