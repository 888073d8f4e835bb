"""The one interface both models implement.

Training calls ``forward`` (teacher forcing). Greedy and beam search call only
``encode`` and ``decode_step``, so a single decoder in ``models/decoding.py``
serves both models and never branches on the model type.

Conventions shared by every model:

* ``src`` and ``tgt_in`` are ``LongTensor``s of token ids, batch first.
* ``src_mask`` is a ``BoolTensor`` (B, S), ``True`` on real tokens and
  ``False`` on padding.
* A decoding cache is a dict whose values are tensors (or lists of tensors)
  with the batch on dimension 0, so that beam search can reorder or expand it
  generically with ``index_select(0, ...)``. The entries named in
  ``source_cache_keys`` depend only on the source (attention keys computed
  once by ``encode``): ``decode_step`` returns them unchanged, and beam search
  does not copy them when it reorders the beams of a sentence.
* Cross-attention comes back from the very calls that produce the logits:
  GRU ``(B, T, S)``; Transformer ``(B, L, H, T, S)`` (layers, heads).
  ``decode_step`` returns the same with the ``T`` axis removed.
* What ``forward`` and ``decode_step`` return over the vocabulary is logits,
  unless the model's ``outputs_log_probs`` is True: then it is already
  normalised log-probabilities (a copy mechanism's mixture, models/copy.py,
  has no logits). Whoever needs log-probabilities calls ``log_probs(model,
  outputs)``; the training loss is told which it gets. That flag is the one
  place the difference lives.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

Cache = dict[str, Any]


class Seq2SeqModel(Protocol):
    pad_id: int
    source_cache_keys: tuple[str, ...]
    outputs_log_probs: bool  # False: the outputs are logits; True: log-probabilities (see ``log_probs``)

    def encode(self, src: Tensor, src_mask: Tensor) -> tuple[Tensor, Cache]:
        """Encode a source batch.

        Returns ``memory`` (B, S, D) and the initial decoder cache.
        """

    def decode_step(
        self, tokens: Tensor, memory: Tensor, src_mask: Tensor, cache: Cache
    ) -> tuple[Tensor, Cache, Tensor]:
        """One decoder step for ``tokens`` (B,), the previous output token.

        Returns logits (or log-probabilities) (B, V), the updated cache and the cross-attention of
        this step ((B, S) for the GRU, (B, L, H, S) for the Transformer).
        """

    def forward(
        self, src: Tensor, src_mask: Tensor, tgt_in: Tensor, tgt_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: logits (or log-probabilities) (B, T, V) and cross-attention.

        With ``tgt_mask`` (B, T), True on each sentence's real target positions
        (a prefix of its row, at least one), the logits are only those
        positions' (N, V), in row-major order, as ``tgt_out[tgt_mask]`` lists
        their targets: the output layer, and whatever else a model can leave
        out, skips the padding. Cross-attention keeps its (..., T, S) shape;
        at positions outside the mask it is unspecified.
        """


def target_lengths(tgt_mask: Tensor) -> Tensor:
    """Each sentence's target length (B,) from ``tgt_mask`` (B, T); a clear error if it is not a prefix mask."""
    lengths = tgt_mask.sum(dim=1)
    prefix = torch.arange(tgt_mask.size(1), device=tgt_mask.device) < lengths[:, None]
    if tgt_mask.dtype != torch.bool or not torch.equal(tgt_mask, prefix) or bool((lengths == 0).any()):
        raise ValueError("tgt_mask must be a bool (B, T) tensor, True on a non-empty prefix of each row "
                         "(the real target positions, as tgt_out != pad_id)")
    return lengths


def log_probs(model: Seq2SeqModel, outputs: Tensor) -> Tensor:
    """Log-probabilities (..., V) in fp32, a fresh tensor the caller may edit in place, of what ``model``'s
    ``forward`` or ``decode_step`` returned: their log-softmax, or themselves if ``model.outputs_log_probs``.

    A model that does not say (a test's stand-in) gives logits."""
    if getattr(model, "outputs_log_probs", False):
        return outputs.to(torch.float32, copy=True)
    return torch.log_softmax(outputs.float(), dim=-1)


def check_joint_vocabulary(src_vocab_size: int, tgt_vocab_size: int, copy: bool, share_embeddings: bool) -> None:
    """Copy and shared embeddings both index source and target pieces by one id space: refuse two vocabularies."""
    if src_vocab_size == tgt_vocab_size:
        return
    sizes = f"got src_vocab_size={src_vocab_size}, tgt_vocab_size={tgt_vocab_size}"
    if copy:
        raise ValueError(f"copy puts a source piece's probability on its own id: it needs one joint vocabulary, "
                         f"{sizes}")
    if share_embeddings:
        raise ValueError(f"share_embeddings needs one joint vocabulary, {sizes}")


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters (``parameters()`` already counts tied weights once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
