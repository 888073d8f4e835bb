"""The GRU encoder's recurrence over a padded batch, both directions of a layer advanced by one matmul a step.

Why not ``nn.GRU`` over packed sequences everywhere: on a GPU it runs cuDNN's
fused kernels and is the fastest path, but on a CPU torch steps a packed
sequence through a chain of small operations per direction and per time step,
input projection included, and autograd records every one of them; on long
sources the backward through those steps was most of the encoder's time.
Here, per layer:

* the input projections of every position and both directions are one batched
  matmul before the loop;
* the backward direction reads each sequence reversed within its own length,
  so both directions start on their first real token and padding only ever
  follows the real tokens (it never reaches a real position's state);
* the two directions' hidden states are stacked, so one ``baddbmm`` advances
  both per step, and the gates are a handful of elementwise operations;
* the backward pass through the steps is written by hand (``_Recurrence``).

The weights are ``nn.GRU``'s own (``weight_ih_l{k}``, ``..._reverse``), so
checkpoints are the same whichever path runs, and the packed path stays the
reference the tests compare this one with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.dropout import dropout


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Each sequence of ``x`` (B, S, D) reversed over its first ``lengths[b]`` positions; padding stays put."""
    S = x.size(1)
    t = torch.arange(S, device=x.device)
    lengths = lengths.to(x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, S)
    return x.gather(1, index[:, :, None].expand_as(x))


def _layer_weights(gru: nn.GRU, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Layer ``layer``'s weights of both directions stacked: W_ih (2, 3H, D), W_hh (2, 3H, H), b_ih, b_hh (2, 3H)."""
    names = [f"l{layer}", f"l{layer}_reverse"]
    w_ih, w_hh, b_ih, b_hh = (torch.stack([getattr(gru, f"{kind}_{n}") for n in names])
                              for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    return w_ih, w_hh, b_ih, b_hh


class _Recurrence(torch.autograd.Function):
    """h_t = GRU(gx_t, h_{t-1}) over precomputed input gates, with a backward written by hand.

    Autograd would record a dozen nodes a step and accumulate W_hh's gradient
    step by step; here the backward walks the steps once, with one small matmul
    each (dh_{t-1}), and W_hh's and b_hh's gradients are one matmul and one sum
    over all steps at the end. The state and the gates are kept in fp32 (or
    fp64), the matmuls run in ``mm_dtype`` (bf16 under autocast, as torch's
    own GRU would).
    """

    @staticmethod
    def forward(ctx, gates_x: Tensor, w_hh: Tensor, b_hh: Tensor, mm_dtype: torch.dtype) -> Tensor:
        # gates_x (D, B, S, 3H): x_t W_ih^T + b_ih of D independent directions; w_hh (D, 3H, H); b_hh (D, 3H)
        D, B, S, H3 = gates_x.shape
        H = H3 // 3
        dtype = torch.promote_types(gates_x.dtype, torch.float32)
        with torch.autocast(gates_x.device.type, enabled=False):
            w_t, b = w_hh.to(mm_dtype).transpose(1, 2), b_hh.to(mm_dtype)[:, None]  # (D, H, 3H), (D, 1, 3H)
            h = gates_x.new_zeros(D, B, H, dtype=dtype)
            states, rzs, ns, ghns = [], [], [], []
            for t in range(S):
                gx, gh = gates_x[:, :, t].to(dtype), torch.baddbmm(b, h.to(mm_dtype), w_t).to(dtype)  # (D, B, 3H)
                rz = torch.sigmoid(gx[..., : 2 * H] + gh[..., : 2 * H])  # [r; z]
                ghn = gh[..., 2 * H:]
                n = torch.tanh(gx[..., 2 * H:] + rz[..., :H] * ghn)
                h = n + rz[..., H:] * (h - n)  # (1 - z) * n + z * h
                states.append(h)
                rzs.append(rz)
                ns.append(n)
                ghns.append(ghn)
        out = torch.stack(states, dim=2)  # (D, B, S, H)
        ctx.save_for_backward(w_hh, out, torch.stack(rzs, 2), torch.stack(ns, 2), torch.stack(ghns, 2))
        ctx.mm_dtype, ctx.gates_dtype = mm_dtype, gates_x.dtype
        return out

    @staticmethod
    def backward(ctx, d_out: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        w_hh, out, rz_all, n_all, ghn_all = ctx.saved_tensors
        D, B, S, H = out.shape
        mm, dtype = ctx.mm_dtype, out.dtype
        with torch.autocast(out.device.type, enabled=False):
            w = w_hh.to(mm)  # (D, 3H, H)
            h_prev_all = torch.cat([out.new_zeros(D, B, 1, H), out[:, :, :-1]], dim=2)  # (D, B, S, H)
            d_gx, d_gh = out.new_empty(D, B, S, 3 * H), out.new_empty(D, B, S, 3 * H)
            dh = out.new_zeros(D, B, H)
            for t in reversed(range(S)):
                dh = dh + d_out[:, :, t].to(dtype)
                rz, n, ghn = rz_all[:, :, t], n_all[:, :, t], ghn_all[:, :, t]
                r, z = rz[..., :H], rz[..., H:]
                da_n = dh * (1 - z) * (1 - n * n)  # through n = tanh(a_n)
                d_rz = torch.cat([da_n * ghn, dh * (h_prev_all[:, :, t] - n)], dim=-1) * rz * (1 - rz)
                d_gx[:, :, t, : 2 * H] = d_rz
                d_gx[:, :, t, 2 * H:] = da_n
                d_gh[:, :, t, : 2 * H] = d_rz
                d_gh[:, :, t, 2 * H:] = da_n * r
                dh = dh * z + torch.bmm(d_gh[:, :, t].to(mm), w).to(dtype)  # (D, B, H)
            d_w = torch.bmm(d_gh.flatten(1, 2).transpose(1, 2).to(mm), h_prev_all.flatten(1, 2).to(mm))
        return d_gx.to(ctx.gates_dtype), d_w.to(w_hh.dtype), d_gh.sum(dim=(1, 2)).to(w_hh.dtype), None


def bidirectional_gru(gru: nn.GRU, x: Tensor, lengths: Tensor, masks: str = "auto") -> tuple[Tensor, Tensor]:
    """``gru`` (bidirectional, batch first, with biases) over padded ``x`` (B, S, D) with ``lengths`` (B,).

    Returns what ``nn.GRU`` returns for the packed batch, padded back: the last
    layer's outputs (B, S, 2H) with zeros at padded positions, and the final
    states (layers * 2, B, H), layer-major, the backward direction second.
    """
    if not (gru.bidirectional and gru.batch_first and gru.bias):
        raise ValueError("bidirectional_gru needs nn.GRU(bidirectional=True, batch_first=True, bias=True)")
    B, S, _ = x.shape
    H = gru.hidden_size
    device = x.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else gru.weight_hh_l0.dtype
    lengths = lengths.to(x.device)
    mask = (torch.arange(S, device=x.device) < lengths[:, None]).unsqueeze(-1)  # (B, S, 1)
    last = (lengths - 1).clamp(min=0)[None, :, None, None].expand(2, B, 1, H)  # each sequence's last real step
    finals = []
    for layer in range(gru.num_layers):
        w_ih, w_hh, b_ih, b_hh = _layer_weights(gru, layer)
        both = torch.stack([x, reverse_within_lengths(x, lengths)])  # (2, B, S, D)
        gates_x = torch.baddbmm(b_ih[:, None], both.flatten(1, 2), w_ih.transpose(1, 2))  # (2, B*S, 3H)
        out = _Recurrence.apply(gates_x.view(2, B, S, 3 * H), w_hh, b_hh, mm_dtype)  # (2, B, S, H)
        finals.append(out.gather(2, last).squeeze(2))  # (2, B, H); the backward direction's is at its end too
        x = torch.cat([out[0], reverse_within_lengths(out[1], lengths)], dim=-1) * mask  # (B, S, 2H)
        if layer < gru.num_layers - 1:
            x = dropout(x, gru.dropout, gru.training, masks)
    return x, torch.cat(finals)
