"""Token-budget batches with length bucketing, sharded across ranks, and their collation.

An epoch's batches are a pure function of ``(lengths, budget, seed, epoch)``:
shuffle all examples, cut them into pools, sort each pool by length, cut each
sorted pool greedily into batches whose padded size stays within the budget,
then shuffle the batches. Resuming mid-epoch therefore only needs the epoch and
the number of batches already consumed, and every rank of a distributed run
computes the same list and takes its own slice of it.

The padded size of a batch is ``n_sentences * max(longest source, longest
target)``, counting the eos (source) or bos/eos (target) token each side gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def batch_cost(n: int, longest: int) -> int:
    return n * longest


def cut_sorted(order: np.ndarray, longest: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Greedily cut ``order`` (already sorted by length) into batches within ``max_tokens``."""
    batches, start, running = [], 0, 0
    for i, idx in enumerate(order):
        width = max(running, int(longest[idx]))
        if i > start and batch_cost(i - start + 1, width) > max_tokens:
            batches.append(order[start:i])
            start, width = i, int(longest[idx])
        running = width
    if start < len(order):
        batches.append(order[start:])
    return batches


def make_batches(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    max_tokens: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    pool_size: int = 0,
    sort: bool = True,
) -> list[np.ndarray]:
    """The batches (arrays of example indices) of one epoch.

    ``pool_size`` is the number of examples sorted together; 0 sorts the whole
    split (least padding, least randomness). Without ``shuffle`` the split is
    sorted once and batches come in length order (for evaluation). Without
    ``sort`` (training only) the shuffled split is cut as it comes, JoeyNMT's
    token batches: the same budget holds about half the real tokens, since
    every batch pads to its longest example.
    """
    longest = np.maximum(src_lens, tgt_lens)
    too_long = int((longest > max_tokens).sum())
    if too_long:
        raise ValueError(
            f"{too_long} examples are longer than the batch budget of {max_tokens} tokens: "
            "raise trainer.batch_tokens or lower task.max_src_len / task.max_tgt_len"
        )
    n = len(longest)
    if not shuffle:
        return cut_sorted(np.lexsort((tgt_lens, src_lens)), longest, max_tokens)
    rng = np.random.default_rng([seed, epoch])
    permutation = rng.permutation(n)
    if not sort:
        return cut_sorted(permutation, longest, max_tokens)  # "sorted" in name only: cut in the shuffled order
    pool = pool_size or n
    batches: list[np.ndarray] = []
    for start in range(0, n, pool):
        chunk = permutation[start : start + pool]
        # Stable sort keeps the random order among equal lengths.
        chunk = chunk[np.lexsort((tgt_lens[chunk], src_lens[chunk]))]
        batches.extend(cut_sorted(chunk, longest, max_tokens))
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """Rank ``rank``'s batches: the same count on every rank, each example once across ranks.

    When the count is not a multiple of ``world_size`` the largest batches are
    split in two (which keeps them within the budget) until it is, so no rank
    waits at the end of an epoch and no example is dropped or repeated.
    """
    if world_size == 1:
        return batches
    batches = list(batches)
    while len(batches) % world_size:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            raise ValueError(f"cannot split {len(batches)} batches evenly over {world_size} ranks")
        half = len(batches[largest]) // 2
        batches[largest : largest + 1] = [batches[largest][:half], batches[largest][half:]]
    return batches[rank::world_size]


@dataclass
class Batch:
    src: Tensor  # (B, S) token ids, eos-terminated, padded
    src_mask: Tensor  # (B, S) True on real tokens
    tgt_in: Tensor  # (B, T) bos + target
    tgt_out: Tensor  # (B, T) target + eos, padded with pad_id
    indices: Tensor  # (B,) example indices in the split
    pad_id: int = 1

    @property
    def tgt_mask(self) -> Tensor:
        """(B, T) True on the real target positions (a prefix of each row), as models' ``forward`` takes it."""
        return self.tgt_out.ne(self.pad_id)

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_mask.sum())

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        moved = {
            name: getattr(self, name).pin_memory().to(device, non_blocking=True)
            for name in ("src", "src_mask", "tgt_in", "tgt_out", "indices")
        }
        return Batch(**moved, pad_id=self.pad_id)


def pad_rows(rows: list[list[int]], width: int, pad_id: int, prefix: list[int], suffix: list[int]) -> np.ndarray:
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        seq = prefix + row + suffix
        out[i, : len(seq)] = seq
    return out


def collate(
    src_rows: list[list[int]],
    tgt_rows: list[list[int]],
    indices: np.ndarray,
    *,
    max_src_len: int,
    max_tgt_len: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> Batch:
    """Pad a batch; sources and targets longer than the maxima are truncated here."""
    src_rows = [r[:max_src_len] for r in src_rows]
    tgt_rows = [r[:max_tgt_len] for r in tgt_rows]
    src = pad_rows(src_rows, max(map(len, src_rows)) + 1, pad_id, [], [eos_id])
    tgt_in = pad_rows(tgt_rows, max(map(len, tgt_rows)) + 1, pad_id, [bos_id], [])
    tgt_out = pad_rows(tgt_rows, tgt_in.shape[1], pad_id, [], [eos_id])
    src_t = torch.from_numpy(src)
    return Batch(
        src=src_t,
        src_mask=src_t.ne(pad_id),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        indices=torch.from_numpy(np.asarray(indices, dtype=np.int64)),
        pad_id=pad_id,
    )
