"""Decoding measurements: greedy and beam search over a split, and the baselines of the two decoding fast paths.

The baselines exist only here: the Transformer without its self-attention KV
cache (``NoKVCache``), search one sentence at a time instead of in
length-sorted batches (``decode_one_at_a_time``), and beam search copying the
source-only cache entries with every reordering of the beams
(``CopiedSourceCache``), and searches that keep finished sentences in the batch
(``drop_finished=False``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from experiments.bench.plan import model_kind
from experiments.evaluation.builders import autocast_for, resolve_precision
from experiments.data.pipeline import TaskData
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import Decoded, decode_split, load_run, score
from models.interface import Cache


class Wrapped:
    """A trained model behind the decoding interface, for a baseline to change one thing of (``pad_id``,
    ``eval`` and ``encode`` passed through)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.pad_id = model.pad_id
        self.outputs_log_probs = model.outputs_log_probs

    def eval(self) -> Wrapped:
        self.model.eval()
        return self

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        return self.model.encode(src, src_mask)


class NoKVCache(Wrapped):
    """The Transformer decoded without its self-attention KV cache: the no-cache baseline of the bench.

    Every step re-runs the decoder over the whole prefix generated so far and
    keeps the last position's logits. The encoder output and what depends on
    the source alone (``source_cache_keys``: the cross-attention keys/values,
    and with copy the copy attention's keys) are still computed once per
    sentence, so the difference to the real model is exactly the self-attention
    cache. It implements the decoding interface, so greedy and beam search run
    on it unchanged (the prefix has the batch on dim 0 and is reordered with the
    beams).
    """

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, Cache]:
        memory, cache = self.model.encode(src, src_mask)
        return memory, {"prefix": src.new_zeros(src.size(0), 0),
                        **{key: cache[key] for key in self.model.source_cache_keys}}

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: Cache) -> tuple[torch.Tensor, Cache, torch.Tensor]:
        prefix = torch.cat([cache["prefix"], tokens.unsqueeze(1)], dim=1)  # (B, t + 1)
        layers = len(cache["cross_k"])
        empty = cache["cross_k"][0][:, :, :0]  # (B, h, 0, d_head)
        fresh = {"self_k": [empty] * layers, "self_v": [empty] * layers,
                 **{key: cache[key] for key in self.model.source_cache_keys}}
        logits, _, weights = self.model._decode(prefix, src_mask, fresh)  # (B, t + 1, V), (B, L, h, t + 1, S)
        return logits[:, -1], {**cache, "prefix": prefix}, weights[:, :, :, -1]


class CopiedSourceCache(Wrapped):
    """A model whose beam search copies every cache entry at every step: the baseline of ``source_cache_keys``.

    The same encode and decode_step; it only names no entry as source-only, so
    ``beam_search`` reorders the attention keys (GRU) or cross-attention keys
    and values (Transformer) with the beams, as it did before they were named.
    """

    source_cache_keys: tuple[str, ...] = ()

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                    cache: Cache) -> tuple[torch.Tensor, Cache, torch.Tensor]:
        return self.model.decode_step(tokens, memory, src_mask, cache)


def decode_one_at_a_time(model: Any, data: TaskData, split: str, decoding: DictConfig, device: torch.device,
                         autocast: Any, *, beam_size: int, limit: int) -> Decoded:
    """``decode_split`` over batches of one sentence each: the baseline of batched search."""
    one_each = [np.array([i]) for i in range(limit)]
    return decode_split(model, data, split, decoding, device, autocast, beam_size=beam_size, limit=limit,
                        plan=one_each)


def decoding_model(trainer: Any, data: TaskData, cfg: DictConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
    """What to decode with: the bench's model as trained so far, or a trained run (``spec["run"]``, in fp32
    unless a row says otherwise). A run keeps its own length rules and beam settings; how many sentences
    share a batch is a speed setting, taken from the bench's config so that every row batches alike."""
    if not spec.get("run"):
        return (trainer.model, data, cfg, trainer.device, trainer.autocast,
                f"the bench's model after {trainer.progress.step} updates")
    run = load_run(spec["run"], [f"trainer.device={trainer.device}",
                                 f"decoding.batch_tokens={cfg.decoding.batch_tokens}",
                                 f"decoding.beam_batch_tokens={cfg.decoding.beam_batch_tokens}"])
    if run.cfg.model.name != cfg.model.name:
        raise UserError(f"--decode-run {spec['run']} holds a {run.cfg.model.name}, not a {cfg.model.name}")
    return (run.model, run.data, run.cfg, run.device, autocast_for(run.device, "fp32"),
            f"{spec['run']} (step {run.step})")


def measure_decoding(model: Any, data: TaskData, cfg: DictConfig, device: torch.device, autocast: Any,
                     spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Greedy and beam search over the split, and their baselines: finished sentences kept in the batch,
    the source cache copied (beam), one sentence at a time, and for the Transformer no KV cache (greedy);
    where bf16 is native and the model decodes in fp32, greedy and beam search again under bf16 autocast
    (a fast path that may change outputs: its BLEU and the outputs it shares with fp32 are recorded)."""
    split = spec["split"]
    n = min(spec["limit"] or len(data.split(split)), len(data.split(split)))
    subset = min(spec["ablation"], n)
    tgt_lens = data.split(split).tgt_lens

    def row(search: str, decoded: Decoded, with_bleu: bool = False, **extra: Any) -> dict[str, Any]:
        sentences, seconds = len(decoded.token_ids), decoded.seconds
        result = {"search": search, "sentences": sentences, "seconds": seconds,
                  "sentences_per_s": sentences / seconds if seconds else float("nan"),
                  "mean_output_len": float(np.mean([len(t) for t in decoded.token_ids])),
                  "mean_ref_len": float(tgt_lens[:sentences].mean() - 1), **extra}
        if with_bleu:
            result["bleu"] = score(data, split, decoded.hypotheses).get("bleu")
        return result

    def same(a: Decoded, b: Decoded) -> int:
        return sum(x == y for x, y in zip(a.token_ids, b.token_ids))

    rows, plain = [], {}
    for beam in spec["beams"]:
        decoded = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=beam, limit=n)
        rows.append(row("greedy" if beam == 1 else f"beam{beam}", decoded, with_bleu=True, split=split))
        plain[beam] = decoded
    widest = max(plain)
    if subset:  # greedy and the widest beam again over the same sentences, one fast path off or on each time
        with autocast():
            in_fp32 = not torch.is_autocast_enabled(device.type)
        # where bf16 is native and the model decodes in fp32: the same searches under bf16 autocast too
        bf16 = autocast_for(device, "bf16") if in_fp32 and resolve_precision(device, "auto") == "bf16" else None
        for beam in sorted({1, widest} & set(plain)):
            name, kind = ("greedy", "greedy") if beam == 1 else (f"beam{beam}", "beam")
            kept = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=beam, limit=n,
                                drop_finished=False)
            rows.append(row(f"{name}, finished sentences kept in the batch", kept, against=name,
                            ablation=f"drop_finished_{kind}", same_outputs=same(plain[beam], kept)))
            if bf16 is not None:
                fast = decode_split(model, data, split, cfg.decoding, device, bf16, beam_size=beam, limit=n)
                rows.append(row(f"{name}, bf16 autocast", fast, with_bleu=True, split=split, against=name,
                                ablation=f"bf16_{kind}", same_outputs=same(plain[beam], fast)))
        if widest > 1:
            copied = decode_split(CopiedSourceCache(model), data, split, cfg.decoding, device, autocast,
                                  beam_size=widest, limit=n)
            rows.append(row(f"beam{widest}, source cache copied every step", copied, ablation="source_cache",
                            against=f"beam{widest}", same_outputs=same(plain[widest], copied)))
    if not subset:
        return rows
    beam = max(spec["beams"])
    name = "greedy" if beam == 1 else f"beam{beam}"
    batched = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=beam, limit=subset)
    single = decode_one_at_a_time(model, data, split, cfg.decoding, device, autocast, beam_size=beam, limit=subset)
    rows.append(row(f"{name} batched", batched, ablation="batching"))
    rows.append(row(f"{name} one sentence at a time", single, ablation="batching", same_outputs=same(batched, single)))
    if model_kind(cfg.model.name) == "transformer":
        cached = decode_split(model, data, split, cfg.decoding, device, autocast, beam_size=1, limit=subset)
        uncached = decode_split(NoKVCache(model), data, split, cfg.decoding, device, autocast, beam_size=1,
                                limit=subset)
        rows.append(row("greedy, KV cache", cached, ablation="kv_cache"))
        rows.append(row("greedy, no KV cache", uncached, ablation="kv_cache", same_outputs=same(cached, uncached)))
    return rows
