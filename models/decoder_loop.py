"""The GRU decoder's teacher-forced loop (training), with a backward written by hand.

Why: under autograd, every decoder step records its own small operations, and
the backward then computes each weight's gradient step by step, as matmuls
whose inner dimension is the number of sentences in the batch (26 on SAMSum),
and adds the step's gradient of the encoder memory, a (B, S, H) tensor as long
as the source, into the memory's gradient: once per target position. Here:

* the embedding part of the first layer's input projection is one matmul over
  every position before the loop (under autograd, outside this module's
  Function);
* the loop runs without autograd and keeps what the backward needs;
* the backward walks the steps once, doing per step only what the recurrence
  needs (the gradients of the hidden states, of the fed-back attentional
  vector and of the attention's query); every weight's gradient, the memory's
  and, for the multiplicative scores, the keys' are one matmul over all steps
  at the end.

The computation is the one of ``GRUSeq2Seq._step`` (see models/gru.py), on the
model's own parameters, so checkpoints are the same whichever loop runs; the
dropout masks are drawn in the same order and the same way as ``nn.Dropout``
draws them there, so the two loops agree in training mode too (tests compare
them in fp64). The state and gates are kept in fp32 (or fp64), the matmuls run
in ``mm_dtype`` (bf16 under autocast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.attention import AdditiveAttention, Attention, MultiplicativeAttention


@dataclass(frozen=True)
class LoopSpec:
    layers: int
    input_feeding: bool
    additive: bool  # Bahdanau's score; else q^T k over the projected keys (Luong dot or general)
    dropout: float  # applied to the attentional vector and between decoder layers
    mm_dtype: torch.dtype


def _drop_mask(like: Tensor, p: float) -> Tensor | None:
    """The mask ``nn.Dropout`` would multiply ``like`` by (same draws from the generator), or None without dropout."""
    return torch.empty_like(like).bernoulli_(1 - p).div_(1 - p) if p > 0 else None


def _gru_gates(gi: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """nn.GRUCell from its input and hidden projections (B, 3H): the new state and [r; z], n, W_hn h + b_hn."""
    H = h.size(-1)
    rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
    ghn = gh[:, 2 * H:]
    n = torch.tanh(gi[:, 2 * H:] + rz[:, :H] * ghn)
    return n + rz[:, H:] * (h - n), rz, n, ghn  # (1 - z) * n + z * h


def _gru_gates_backward(dh: Tensor, h_prev: Tensor, rz: Tensor, n: Tensor, ghn: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of the input and hidden projections (B, 3H) from that of the new state."""
    H = dh.size(-1)
    r, z = rz[:, :H], rz[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)  # through n = tanh(a_n)
    d_rz = torch.cat([da_n * ghn, dh * (h_prev - n)], dim=-1) * rz * (1 - rz)
    return torch.cat([d_rz, da_n], dim=-1), torch.cat([d_rz, da_n * r], dim=-1)


@dataclass
class _Weights:
    """The loop's weights by role, from the flat list ``_DecoderLoop`` is given (see there)."""

    feed: Tensor | None
    hh: list[tuple[Tensor, Tensor]]  # per layer: W_hh, b_hh
    ih: list[tuple[Tensor, Tensor] | None]  # per layer above the first: W_ih, b_ih
    query: tuple[Tensor, Tensor, Tensor] | None  # W_q, b_q, v of the additive score
    combine: tuple[Tensor, Tensor]  # W_c, b_c

    @classmethod
    def unpack(cls, spec: LoopSpec, flat: list[Tensor]) -> _Weights:
        it = iter(flat)
        feed = next(it) if spec.input_feeding else None
        hh, ih = [], []
        for layer in range(spec.layers):
            hh.append((next(it), next(it)))
            ih.append((next(it), next(it)) if layer > 0 else None)
        query = (next(it), next(it), next(it)) if spec.additive else None
        return cls(feed, hh, ih, query, (next(it), next(it)))


class _DecoderLoop(torch.autograd.Function):
    """Attentional vectors (B, T, H) and attention weights (B, T, S) of the teacher-forced steps.

    ``weights`` hold, in order: the first layer's feed part of W_ih (3H, H) when
    input feeding; per layer W_hh, b_hh and, above the first, W_ih, b_ih; the
    additive score's W_q, b_q, v; the combine layer's W_c, b_c.
    """

    @staticmethod
    def forward(ctx, spec: LoopSpec, gates_emb: Tensor, memory: Tensor, keys: Tensor, mask: Tensor,
                h0: Tensor, *weights: Tensor) -> tuple[Tensor, Tensor]:
        # gates_emb (B, T, 3H): emb_t W_e^T + b_ih of the first layer; memory (B, S, H); keys (B, S, A); h0 (L, B, H)
        B, T, _ = gates_emb.shape
        H, L, mm, p = memory.size(-1), spec.layers, spec.mm_dtype, spec.dropout
        dtype = torch.promote_types(gates_emb.dtype, torch.float32)
        with torch.autocast(gates_emb.device.type, enabled=False):
            w = _Weights.unpack(spec, [t.to(mm) for t in weights])
            memory_mm, keys_mm = memory.to(mm), keys.to(mm)
            padding = ~mask
            h = [h0[layer].to(dtype) for layer in range(L)]
            feed = memory.new_zeros(B, H, dtype=dtype)
            steps: dict[str, list] = {k: [] for k in ("feed", "alpha", "ctx", "q", "a", "drop", "P", "out")}
            layers: list[dict[str, list]] = [{k: [] for k in ("h", "rz", "n", "ghn", "inp", "drop")}
                                             for _ in range(L)]
            for t in range(T):
                x = feed
                for layer, saved in enumerate(layers):
                    if layer == 0:
                        gi = gates_emb[:, t].to(dtype)
                        if spec.input_feeding:
                            steps["feed"].append(feed)
                            gi = gi + (feed.to(mm) @ w.feed.t()).to(dtype)
                    else:  # dropout between layers, as nn.Dropout in GRUSeq2Seq._step
                        drop = _drop_mask(x, p)
                        inp = x if drop is None else x * drop
                        saved["drop"].append(drop)
                        saved["inp"].append(inp)
                        w_ih, b_ih = w.ih[layer]
                        gi = torch.addmm(b_ih, inp.to(mm), w_ih.t()).to(dtype)
                    w_hh, b_hh = w.hh[layer]
                    gh = torch.addmm(b_hh, h[layer].to(mm), w_hh.t()).to(dtype)
                    saved["h"].append(h[layer])
                    h[layer], rz, n, ghn = _gru_gates(gi, gh, h[layer])
                    saved["rz"].append(rz)
                    saved["n"].append(n)
                    saved["ghn"].append(ghn)
                    x = h[layer]
                q = x  # (B, H), the top layer's state
                if w.query is not None:
                    w_q, b_q, v = w.query
                    # (B, S, A) in mm_dtype, as under autocast: the largest tensor of a step on long sources
                    P = torch.tanh(keys_mm + torch.addmm(b_q, q.to(mm), w_q.t())[:, None])
                    scores = (P @ v.t()).squeeze(-1).to(dtype)  # (B, S); a matmul, as nn.Linear runs it
                    steps["P"].append(P)
                else:
                    scores = torch.bmm(keys_mm, q.to(mm)[:, :, None]).squeeze(-1).to(dtype)
                alpha = scores.masked_fill(padding, float("-inf")).softmax(dim=-1)  # (B, S)
                c = torch.bmm(alpha.to(mm)[:, None], memory_mm).squeeze(1).to(dtype)  # (B, H)
                w_c, b_c = w.combine
                a = torch.tanh(torch.addmm(b_c, torch.cat([c, q], dim=-1).to(mm), w_c.t()).to(dtype))
                drop = _drop_mask(a, p)
                feed = a if drop is None else a * drop
                for key, value in (("alpha", alpha), ("ctx", c), ("q", q), ("a", a), ("drop", drop), ("out", feed)):
                    steps[key].append(value)
        ctx.spec, ctx.dtypes = spec, (gates_emb.dtype, memory.dtype, keys.dtype, h0.dtype)
        ctx.steps, ctx.layers = steps, layers
        ctx.save_for_backward(memory, keys, *weights)
        alphas = torch.stack(steps["alpha"], dim=1)  # (B, T, S)
        ctx.mark_non_differentiable(alphas)
        return torch.stack(steps["out"], dim=1), alphas  # (B, T, H), (B, T, S)

    @staticmethod
    def backward(ctx, d_out: Tensor, _: Tensor) -> tuple[Tensor | None, ...]:
        spec, steps, layers = ctx.spec, ctx.steps, ctx.layers
        memory, keys, *weights = ctx.saved_tensors
        B, T, H = d_out.shape
        L, mm = spec.layers, spec.mm_dtype
        dtype = steps["a"][0].dtype
        with torch.autocast(d_out.device.type, enabled=False):
            w = _Weights.unpack(spec, [t.to(mm) for t in weights])
            memory_mm, keys_mm = memory.to(mm), keys.to(mm)
            # per step, recorded last step first: d(gates) of each layer, d(combine), d(context), d(query proj), d(scores)
            d_gi: list[list[Tensor]] = [[] for _ in range(L)]
            d_gh: list[list[Tensor]] = [[] for _ in range(L)]
            d_o, d_c, d_u, d_s = [], [], [], []
            d_keys = torch.zeros_like(keys, dtype=dtype) if spec.additive else None
            d_v = d_out.new_zeros(keys.size(-1), dtype=dtype) if spec.additive else None
            dh = [d_out.new_zeros(B, H, dtype=dtype) for _ in range(L)]  # of each layer's state, from later steps
            d_feed = d_out.new_zeros(B, H, dtype=dtype)  # of a_t, from step t + 1's input
            for t in reversed(range(T)):
                da = d_out[:, t].to(dtype) + d_feed
                if steps["drop"][t] is not None:
                    da = da * steps["drop"][t]
                a = steps["a"][t]
                do = da * (1 - a * a)  # through a = tanh(W_c [c; q] + b_c)
                d_o.append(do)
                dcq = (do.to(mm) @ w.combine[0]).to(dtype)  # (B, 2H)
                dc, dq = dcq[:, :H], dcq[:, H:]
                d_c.append(dc)
                alpha = steps["alpha"][t]
                d_alpha = torch.bmm(memory_mm, dc.to(mm)[:, :, None]).squeeze(-1).to(dtype)  # (B, S)
                ds = alpha * (d_alpha - (alpha * d_alpha).sum(dim=-1, keepdim=True))  # through the softmax
                d_s.append(ds)
                if w.query is not None:
                    w_q, _, v = w.query
                    P = steps["P"][t]
                    ds_mm = ds.to(mm)
                    d_v += (ds_mm.reshape(1, -1) @ P.flatten(0, 1))[0].to(dtype)  # sum over b, s of ds * P
                    d_P = (ds_mm.reshape(-1, 1) @ v).view_as(P)  # (B, S, A), the two matmuls autograd would run
                    d_pre = torch.ops.aten.tanh_backward(d_P, P)  # * (1 - P^2)
                    d_keys += d_pre
                    du = d_pre.sum(dim=1)  # (B, A), accumulated in fp32 (in mm_dtype)
                    d_u.append(du)
                    dq = dq + (du.to(mm) @ w_q).to(dtype)
                else:
                    dq = dq + torch.bmm(ds.to(mm)[:, None], keys_mm).squeeze(1).to(dtype)
                dh[L - 1] = dh[L - 1] + dq
                for layer in reversed(range(L)):
                    saved = layers[layer]
                    gi_grad, gh_grad = _gru_gates_backward(dh[layer], saved["h"][t], saved["rz"][t],
                                                           saved["n"][t], saved["ghn"][t])
                    d_gi[layer].append(gi_grad)
                    d_gh[layer].append(gh_grad)
                    dh[layer] = dh[layer] * saved["rz"][t][:, H:] + (gh_grad.to(mm) @ w.hh[layer][0]).to(dtype)
                    if layer > 0:
                        d_inp = (gi_grad.to(mm) @ w.ih[layer][0]).to(dtype)
                        drop = saved["drop"][t]
                        dh[layer - 1] = dh[layer - 1] + (d_inp if drop is None else d_inp * drop)
                    elif spec.input_feeding:
                        d_feed = (gi_grad.to(mm) @ w.feed).to(dtype)

            def by_step(last_first: list[Tensor]) -> Tensor:  # (B, T, ...)
                return torch.stack(last_first[::-1], dim=1)

            def weight_grad(last_first: list[Tensor], inputs: list[Tensor]) -> Tensor:
                """Sum over steps of grad_t^T input_t: one matmul over (T * B) rows."""
                return (torch.cat(last_first[::-1]).to(mm).t() @ torch.cat(inputs).to(mm)).to(dtype)

            def bias_grad(last_first: list[Tensor]) -> Tensor:
                return torch.stack(last_first).sum(dim=(0, 1))

            alphas = torch.stack(steps["alpha"], dim=1)  # (B, T, S)
            d_memory = torch.bmm(alphas.transpose(1, 2).to(mm), by_step(d_c).to(mm)).to(dtype)  # (B, S, H)
            if not spec.additive:
                d_keys = torch.bmm(by_step(d_s).transpose(1, 2).to(mm),
                                   torch.stack(steps["q"], dim=1).to(mm)).to(dtype)  # (B, S, H)
            grads = [weight_grad(d_gi[0], steps["feed"])] if spec.input_feeding else []
            for layer in range(L):
                grads += [weight_grad(d_gh[layer], layers[layer]["h"]), bias_grad(d_gh[layer])]
                if layer > 0:
                    grads += [weight_grad(d_gi[layer], layers[layer]["inp"]), bias_grad(d_gi[layer])]
            if spec.additive:
                grads += [weight_grad(d_u, steps["q"]), bias_grad(d_u), d_v[None]]
            grads += [weight_grad(d_o, [torch.cat([c, q], dim=-1) for c, q in zip(steps["ctx"], steps["q"])]),
                      bias_grad(d_o)]
        ctx.steps = ctx.layers = None
        ge_dtype, memory_dtype, keys_dtype, h0_dtype = ctx.dtypes
        return (None, by_step(d_gi[0]).to(ge_dtype), d_memory.to(memory_dtype), d_keys.to(keys_dtype), None,
                torch.stack(dh).to(h0_dtype), *(g.to(p.dtype) for g, p in zip(grads, weights)))


def teacher_forced_loop(cells: nn.ModuleList, attention: Attention, combine: nn.Linear, emb: Tensor,
                        memory: Tensor, keys: Tensor, src_mask: Tensor, h0: list[Tensor], input_feeding: bool,
                        dropout: float) -> tuple[Tensor, Tensor]:
    """The decoder over the embedded target ``emb`` (B, T, E): attentional vectors (B, T, H), weights (B, T, S).

    ``cells`` are the decoder's ``nn.GRUCell`` stack, ``keys`` ``attention.project_keys(memory)``, ``h0``
    each layer's initial state (B, H), ``dropout`` the probability in force (0 in eval mode).
    """
    if not isinstance(attention, (AdditiveAttention, MultiplicativeAttention)):
        raise TypeError(f"no hand-written decoder loop for {type(attention).__name__}")
    device = emb.device.type
    first = cells[0]
    E = emb.size(-1)
    # The first layer's input projection, embedding part, over every position at once (autograd records it).
    gates_emb = nn.functional.linear(emb, first.weight_ih[:, :E], first.bias_ih)  # (B, T, 3H)
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else first.weight_hh.dtype
    spec = LoopSpec(len(cells), input_feeding, isinstance(attention, AdditiveAttention), dropout, mm_dtype)
    weights: list[Tensor] = [first.weight_ih[:, E:]] if input_feeding else []
    for l, cell in enumerate(cells):
        weights += [cell.weight_hh, cell.bias_hh] + ([cell.weight_ih, cell.bias_ih] if l > 0 else [])
    if spec.additive:
        weights += [attention.query_proj.weight, attention.query_proj.bias, attention.v.weight]
    weights += [combine.weight, combine.bias]
    return _DecoderLoop.apply(spec, gates_emb, memory, keys, src_mask, torch.stack(h0), *weights)
