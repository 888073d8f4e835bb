"""An ensemble of trained models behind the same interface, so greedy and beam search decode it unchanged.

Members may be different architectures (a GRU with a Transformer): they only
share the target vocabulary (the caller checks that their tokenizers are one).

* Combination: at every step the mean of the members' log-probabilities
  (a product of experts, i.e. the normalised geometric mean of their
  distributions), each member's from its own outputs (``log_probs``: logits,
  or a copy mixture's log-probabilities). ``decode_step`` returns that mean as
  its logits (``outputs_log_probs`` is False: it does not sum to one); the
  searches' ``log_softmax`` renormalises it. (fairseq averages probabilities,
  log-mean-exp, instead; the geometric mean gives a token only as much
  probability as all members agree to give it.)
* Memory: the members' memories concatenated on the feature axis,
  (B, S, sum of D_i); all come from the same source batch, so they share B and
  S, and beam search expands them as one tensor. ``decode_step`` splits them
  back.
* Cache: member i's cache entries under the keys ``"<i>.<key>"``, so the
  searches' generic reordering (``index_select`` on dim 0) reaches every
  member's own cache.
* Attention: each member's cross-attention flattened to (B, n_i, S) (n = 1 for
  the GRU, layers x heads for the Transformer) and concatenated, (B, sum n_i, S).
  ``split_attention`` turns one hypothesis's (sum n_i, T, S) back into each
  member's own shape, labelled with the member's name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.interface import Cache, log_probs


def _member_cache(cache: Cache, i: int) -> Cache:
    prefix = f"{i}."
    return {key[len(prefix):]: value for key, value in cache.items() if key.startswith(prefix)}


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        pads = {m.pad_id for m in members}
        if len(pads) > 1:
            raise ValueError(f"the members use different pad ids {sorted(pads)}: they must share one vocabulary")
        names = list(names) if names is not None else [f"member{i + 1}" for i in range(len(members))]
        if len(names) != len(members):
            raise ValueError(f"{len(members)} members but {len(names)} names")
        self.members = nn.ModuleList(members)
        self.names = names
        self.pad_id = members[0].pad_id
        self.outputs_log_probs = False  # the mean of log-probabilities is a logit vector (see above)
        # Per member, fixed by its architecture: the memory width (D_i) and the attention shape
        # between batch and source axes (() for the GRU, (L, H) for the Transformer). Recorded by
        # encode / decode_step, read by decode_step / split_attention.
        self._widths: list[int] = []
        self._attention_shapes: list[tuple[int, ...]] = []

    @property
    def source_cache_keys(self) -> tuple[str, ...]:
        return tuple(f"{i}.{key}" for i, m in enumerate(self.members) for key in getattr(m, "source_cache_keys", ()))

    def encode(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Cache]:
        memories, cache = [], {}
        for i, member in enumerate(self.members):
            memory, member_cache = member.encode(src, src_mask)
            memories.append(memory)
            cache.update({f"{i}.{key}": value for key, value in member_cache.items()})
        self._widths = [m.size(-1) for m in memories]
        return torch.cat(memories, dim=-1), cache  # (B, S, sum D_i), in the widest member dtype

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        """Mean of the members' log-probabilities (B, V) in float32, every member's cache, attention (B, N, S)."""
        member_log_probs, new_cache, attention = [], {}, []
        for i, (member, member_memory) in enumerate(zip(self.members, memory.split(self._widths, dim=-1))):
            logits, member_cache, weights = member.decode_step(tokens, member_memory, src_mask,
                                                               _member_cache(cache, i))
            member_log_probs.append(log_probs(member, logits))
            new_cache.update({f"{i}.{key}": value for key, value in member_cache.items()})
            attention.append(weights.float())
        self._attention_shapes = [tuple(w.shape[1:-1]) for w in attention]
        flat = [w.reshape(w.size(0), -1, w.size(-1)) for w in attention]  # (B, n_i, S)
        return torch.stack(member_log_probs).mean(dim=0), new_cache, torch.cat(flat, dim=1)

    def split_attention(self, weights: Tensor) -> dict[str, Tensor]:
        """One hypothesis's ensemble attention (N, T, S) -> each member's, by name: (T, S) or (L, H, T, S)."""
        out, start = {}, 0
        T, S = weights.shape[-2:]
        for name, shape in zip(self.names, self._attention_shapes):
            n = 1
            for size in shape:
                n *= size
            out[name] = weights[start:start + n].reshape(*shape, T, S)
            start += n
        return out

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, tgt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass, step by step through ``decode_step``: mean log-probabilities (B, T, V), or at
        ``tgt_mask``'s positions only (N, V), and attention."""
        memory, cache = self.encode(src, src_mask)
        steps, attention = [], []
        for t in range(tgt_in.size(1)):
            logits, cache, weights = self.decode_step(tgt_in[:, t], memory, src_mask, cache)
            steps.append(logits)
            attention.append(weights)
        logits = torch.stack(steps, dim=1)  # (B, T, V)
        return logits if tgt_mask is None else logits[tgt_mask], torch.stack(attention, dim=-2)  # _, (B, N, T, S)
