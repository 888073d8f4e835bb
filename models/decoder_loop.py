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
* given the targets' lengths, a sentence's steps stop at its last target
  position, as packed sequences do: the batch is sorted by target length and
  each step runs only the sentences still going (on SAMSum 43% of the target
  positions are padding);
* the backward walks the steps once, doing per step only what the recurrence
  needs (the gradients of the hidden states, of the fed-back attentional
  vector and of the attention's query; the attention weights' own gradient
  joins there when the loss reads them, as a copy mechanism's does); every
  weight's gradient, the memory's and, for the multiplicative scores, the
  keys' are one matmul over all steps at the end.

The computation is the one of ``GRUSeq2Seq._step`` (see models/gru.py), on the
model's own parameters, so checkpoints are the same whichever loop runs; the
dropout masks are drawn in the same order and the same way as the model's
dropout draws them there (for the whole batch, finished sentences included), so the
two loops agree in training mode too (tests compare them in fp64). The state
and gates are kept in fp32 (or fp64), the matmuls run in ``mm_dtype`` (bf16
under autocast).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.attention import AdditiveAttention, Attention, MultiplicativeAttention, cpu_tanh_, matvec
from models.dropout import dropout_noise


@dataclass(frozen=True)
class LoopSpec:
    layers: int
    input_feeding: bool
    additive: bool  # Bahdanau's score; else q^T k over the projected keys (Luong dot or general)
    dropout: float  # applied to the attentional vector and between decoder layers
    masks: str  # how the dropout masks are drawn (models/dropout.py)
    mm_dtype: torch.dtype
    rows: tuple[int, ...]  # sentences still running at each step (a PackedSequence's batch_sizes)


def _drop_mask(like: Tensor, p: float, order: Tensor, masks: str) -> Tensor | None:
    """The rows of ``like`` (the first ``len(like)`` of the sorted batch) of the mask ``GRUSeq2Seq._step``'s
    dropout would multiply the whole (B, H) batch by: drawn for all B rows, in the caller's order, as that
    dropout draws it (models/dropout.py), so that both loops drop the same units; None without dropout."""
    if p == 0:
        return None
    full = dropout_noise((len(order), like.size(-1)), p, like, masks)
    return full[order[: like.size(0)]]


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
    """Attentional vectors (N, H) and attention weights (N, S) of the teacher-forced steps, step-major.

    The batch comes sorted by target length, longest first, so the sentences
    still running at step t are its first ``spec.rows[t]``, and every per-step
    tensor is a PackedSequence's ``data``: step 0's rows, then step 1's, ...
    (N = sum of the rows). A sentence's steps end with its target: the loop
    never computes a padded position.

    ``weights`` hold, in order: the first layer's feed part of W_ih (3H, H) when
    input feeding; per layer W_hh, b_hh and, above the first, W_ih, b_ih; the
    additive score's W_q, b_q, v; the combine layer's W_c, b_c.
    """

    @staticmethod
    def forward(ctx, spec: LoopSpec, order: Tensor, gates_emb: Tensor, memory: Tensor, keys: Tensor, mask: Tensor,
                h0: Tensor, *weights: Tensor) -> tuple[Tensor, Tensor]:
        # gates_emb (N, 3H): emb W_e^T + b_ih of the first layer, step-major; memory (B, S, H); keys (B, S, A);
        # mask (B, S); h0 (L, B, H): all sorted, ``order`` (B,) their rows in the caller's batch
        B, H, L, mm, p = memory.size(0), memory.size(-1), spec.layers, spec.mm_dtype, spec.dropout
        dtype = torch.promote_types(gates_emb.dtype, torch.float32)
        with torch.autocast(gates_emb.device.type, enabled=False):
            w = _Weights.unpack(spec, [t.to(mm) for t in weights])
            memory_mm, keys_mm = memory.to(mm), keys.to(mm)
            keys_fp = keys.to(dtype) if spec.additive else None  # the additive score's tanh runs in fp32
            padding = ~mask
            h = [h0[layer].to(dtype) for layer in range(L)]
            feed = memory.new_zeros(B, H, dtype=dtype)
            steps: dict[str, list] = {k: [] for k in ("feed", "alpha", "ctx", "q", "a", "drop", "P", "out")}
            layers: list[dict[str, list]] = [{k: [] for k in ("h", "rz", "n", "ghn", "inp", "drop")}
                                             for _ in range(L)]
            start = 0
            for rows in spec.rows:
                x = feed[:rows]
                for layer, saved in enumerate(layers):
                    if layer == 0:
                        gi = gates_emb[start:start + rows].to(dtype)
                        if spec.input_feeding:
                            steps["feed"].append(x)
                            gi = gi + (x.to(mm) @ w.feed.t()).to(dtype)
                    else:  # dropout between layers, as in GRUSeq2Seq._step
                        drop = _drop_mask(x, p, order, spec.masks)
                        inp = x if drop is None else x * drop
                        saved["drop"].append(drop)
                        saved["inp"].append(inp)
                        w_ih, b_ih = w.ih[layer]
                        gi = torch.addmm(b_ih, inp.to(mm), w_ih.t()).to(dtype)
                    w_hh, b_hh = w.hh[layer]
                    h_prev = h[layer][:rows]
                    gh = torch.addmm(b_hh, h_prev.to(mm), w_hh.t()).to(dtype)
                    saved["h"].append(h_prev)
                    h[layer], rz, n, ghn = _gru_gates(gi, gh, h_prev)
                    saved["rz"].append(rz)
                    saved["n"].append(n)
                    saved["ghn"].append(ghn)
                    x = h[layer]
                start += rows
                q = x  # (rows, H), the top layer's state
                if w.query is not None:
                    w_q, b_q, v = w.query
                    # tanh(k + u) (rows, S, A), kept in mm_dtype as under autocast
                    u = torch.addmm(b_q, q.to(mm), w_q.t()).to(dtype)
                    P = cpu_tanh_(torch.add(keys_fp[:rows], u[:, None])).to(mm)
                    scores = (P @ v.t()).squeeze(-1).to(dtype)  # (rows, S); a matmul, as nn.Linear runs it
                    steps["P"].append(P)
                else:  # row vector @ keys^T: see matvec
                    scores = matvec(keys_mm[:rows], q.to(mm)).to(dtype)
                alpha = scores.masked_fill(padding[:rows], float("-inf")).softmax(dim=-1)  # (rows, S)
                c = torch.bmm(alpha.to(mm)[:, None], memory_mm[:rows]).squeeze(1).to(dtype)  # (rows, H)
                w_c, b_c = w.combine
                a = torch.tanh(torch.addmm(b_c, torch.cat([c, q], dim=-1).to(mm), w_c.t()).to(dtype))
                drop = _drop_mask(a, p, order, spec.masks)
                feed = a if drop is None else a * drop
                for key, value in (("alpha", alpha), ("ctx", c), ("q", q), ("a", a), ("drop", drop), ("out", feed)):
                    steps[key].append(value)
        ctx.spec, ctx.dtypes = spec, (gates_emb.dtype, memory.dtype, keys.dtype, h0.dtype)
        ctx.steps, ctx.layers = steps, layers
        ctx.save_for_backward(memory, keys, *weights)
        return torch.cat(steps["out"]), torch.cat(steps["alpha"])  # (N, H), (N, S)

    @staticmethod
    def backward(ctx, d_out: Tensor, d_alphas: Tensor) -> tuple[Tensor | None, ...]:
        spec, steps, layers = ctx.spec, ctx.steps, ctx.layers
        memory, keys, *weights = ctx.saved_tensors
        B, H = memory.size(0), memory.size(-1)
        L, mm = spec.layers, spec.mm_dtype
        dtype = steps["a"][0].dtype
        with torch.autocast(d_out.device.type, enabled=False):
            w = _Weights.unpack(spec, [t.to(mm) for t in weights])
            memory_mm, keys_mm = memory.to(mm), keys.to(mm)
            # per step, recorded last step first: d(gates) of each layer, d(combine), d(context), d(query proj), d(scores)
            d_gi: list[list[Tensor]] = [[] for _ in range(L)]
            d_gh: list[list[Tensor]] = [[] for _ in range(L)]
            d_o, d_c, d_u, d_s = [], [], [], []
            # additive: sum over steps of ds_t (1 - P_t^2), (B, S, A); the keys' gradient is it times v
            d_pre_sum = torch.zeros_like(keys, dtype=dtype) if spec.additive else None
            d_v = d_out.new_zeros(keys.size(-1), dtype=dtype) if spec.additive else None
            # of each layer's state, from later steps: a sentence's row stays zero until the backward reaches
            # its last step (the running sentences are a prefix of the sorted batch)
            dh = [d_out.new_zeros(B, H, dtype=dtype) for _ in range(L)]
            d_feed = d_out.new_zeros(0, H, dtype=dtype)  # of a_t, from step t + 1's input: its rows only
            end = d_out.size(0)
            for t in reversed(range(len(spec.rows))):
                rows = spec.rows[t]
                end -= rows
                da = d_out[end:end + rows].to(dtype, copy=True)
                da[: d_feed.size(0)] += d_feed
                if steps["drop"][t] is not None:
                    da = da * steps["drop"][t]
                a = steps["a"][t]
                do = da * (1 - a * a)  # through a = tanh(W_c [c; q] + b_c)
                d_o.append(do)
                dcq = (do.to(mm) @ w.combine[0]).to(dtype)  # (rows, 2H)
                dc, dq = dcq[:, :H], dcq[:, H:]
                d_c.append(dc)
                alpha = steps["alpha"][t]
                # (rows, S): through the context, and from the loss if it reads the weights (a copy mechanism)
                d_alpha = matvec(memory_mm[:rows], dc.to(mm)).to(dtype) + d_alphas[end:end + rows].to(dtype)
                ds = alpha * (d_alpha - (alpha * d_alpha).sum(dim=-1, keepdim=True))  # through the softmax
                d_s.append(ds)
                if w.query is not None:
                    w_q, _, v = w.query
                    P = steps["P"][t]
                    ds_mm = ds.to(mm)
                    d_v += (ds_mm.reshape(1, -1) @ P.flatten(0, 1))[0].to(dtype)  # sum over b, s of ds * P
                    # d(scores)/d(k + u) = v (1 - P^2): the step's (rows, S, A) work is 1 - P^2, the query's
                    # gradient as one bmm and the running sum for the keys' (as many FLOPs as autograd's outer
                    # product ds v^T, which torch's FLOP counter counts)
                    G = torch.addcmul(P.new_ones(()), P, P, value=-1)
                    du = torch.bmm(ds_mm[:, None], G).squeeze(1).to(dtype) * v[0].to(dtype)  # (rows, A)
                    d_pre_sum[:rows].addcmul_(ds[:, :, None], G)
                    d_u.append(du)
                    dq = dq + (du.to(mm) @ w_q).to(dtype)
                else:
                    dq = dq + torch.bmm(ds.to(mm)[:, None], keys_mm[:rows]).squeeze(1).to(dtype)
                dh[L - 1][:rows] += dq
                for layer in reversed(range(L)):
                    saved = layers[layer]
                    gi_grad, gh_grad = _gru_gates_backward(dh[layer][:rows], saved["h"][t], saved["rz"][t],
                                                           saved["n"][t], saved["ghn"][t])
                    d_gi[layer].append(gi_grad)
                    d_gh[layer].append(gh_grad)
                    dh[layer][:rows] = (dh[layer][:rows] * saved["rz"][t][:, H:]
                                        + (gh_grad.to(mm) @ w.hh[layer][0]).to(dtype))
                    if layer > 0:
                        d_inp = (gi_grad.to(mm) @ w.ih[layer][0]).to(dtype)
                        drop = saved["drop"][t]
                        dh[layer - 1][:rows] += d_inp if drop is None else d_inp * drop
                    elif spec.input_feeding:
                        d_feed = (gi_grad.to(mm) @ w.feed).to(dtype)

            def weight_grad(last_first: list[Tensor], inputs: list[Tensor]) -> Tensor:
                """Sum over steps of grad_t^T input_t: one matmul over all N rows."""
                return (torch.cat(last_first[::-1]).to(mm).t() @ torch.cat(inputs).to(mm)).to(dtype)

            def bias_grad(last_first: list[Tensor]) -> Tensor:
                return torch.cat(last_first).sum(dim=0)

            def per_sentence(x: list[Tensor], y: list[Tensor]) -> Tensor:
                """Sum over each sentence's own steps of x_t^T y_t: (B, X, Y) from per-step rows in step order."""
                out = x[0].new_zeros(B, x[0].size(-1), y[0].size(-1), dtype=dtype)
                t = 0
                for n, run in groupby(spec.rows):  # one bmm per run of steps with the same sentences running
                    span = slice(t, t + len(list(run)))
                    t = span.stop
                    out[:n] += torch.bmm(torch.stack(x[span], dim=2).to(mm), torch.stack(y[span], dim=1).to(mm))
                return out

            d_memory = per_sentence(steps["alpha"], d_c[::-1])  # (B, S, H)
            if spec.additive:
                d_keys = d_pre_sum * w.query[2][0].to(dtype)  # (B, S, A) times v
            else:
                d_keys = per_sentence(d_s[::-1], steps["q"])  # (B, S, H)
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
        return (None, None, torch.cat(d_gi[0][::-1]).to(ge_dtype), d_memory.to(memory_dtype),
                d_keys.to(keys_dtype), None, torch.stack(dh).to(h0_dtype),
                *(g.to(p.dtype) for g, p in zip(grads, weights)))


def teacher_forced_loop(cells: nn.ModuleList, attention: Attention, combine: nn.Linear, emb: Tensor,
                        memory: Tensor, keys: Tensor, src_mask: Tensor, h0: list[Tensor], input_feeding: bool,
                        dropout: float, lengths: Tensor | None = None, masks: str = "auto") -> tuple[Tensor, Tensor]:
    """The decoder over the embedded target ``emb`` (B, T, E): attentional vectors (B, T, H), weights (B, T, S).

    ``cells`` are the decoder's ``nn.GRUCell`` stack, ``keys`` ``attention.project_keys(memory)``, ``h0``
    each layer's initial state (B, H), ``dropout`` the probability in force (0 in eval mode), ``masks`` how its
    masks are drawn (models/dropout.py). ``lengths`` (B,):
    each sentence's target positions (default: all T); the steps beyond them are not run, and their
    attentional vectors and weights come back as zeros.
    """
    if not isinstance(attention, (AdditiveAttention, MultiplicativeAttention)):
        raise TypeError(f"no hand-written decoder loop for {type(attention).__name__}")
    device = emb.device.type
    B, T, E = emb.shape
    first = cells[0]
    if lengths is None:
        lengths = torch.full((B,), T)
    # sorted by target length, longest first, and step-major: the running sentences of a step are a prefix
    packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices if packed.sorted_indices is not None else torch.arange(B, device=emb.device)
    # The first layer's input projection, embedding part, over every position at once (autograd records it).
    gates_emb = nn.functional.linear(packed.data, first.weight_ih[:, :E], first.bias_ih)  # (N, 3H)
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else first.weight_hh.dtype
    spec = LoopSpec(len(cells), input_feeding, isinstance(attention, AdditiveAttention), dropout, masks, mm_dtype,
                    tuple(packed.batch_sizes.tolist()))
    weights: list[Tensor] = [first.weight_ih[:, E:]] if input_feeding else []
    for layer, cell in enumerate(cells):
        weights += [cell.weight_hh, cell.bias_hh] + ([cell.weight_ih, cell.bias_ih] if layer > 0 else [])
    if spec.additive:
        weights += [attention.query_proj.weight, attention.query_proj.bias, attention.v.weight]
    weights += [combine.weight, combine.bias]
    out, alphas = _DecoderLoop.apply(spec, order, gates_emb, memory[order], keys[order], src_mask[order],
                                     torch.stack(h0)[:, order], *weights)  # (N, H), (N, S)

    def unpacked(data: Tensor) -> Tensor:  # step-major rows -> (B, T, ...) in the caller's order
        return pad_packed_sequence(packed._replace(data=data), batch_first=True, total_length=T)[0]

    return unpacked(out), unpacked(alphas)
