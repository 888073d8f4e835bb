"""Greedy and beam search for any model implementing ``models.interface.Seq2SeqModel``.

Only ``encode`` and ``decode_step`` are used, and the decoding cache is handled
generically (every tensor in it has the batch on dim 0), so the same code
decodes the GRU and the Transformer.

Length rule, shared by both searches: sentence i may emit at most
``max_len_i = min(floor(max_len_a * src_len_i + max_len_b), max_len_cap)``
tokens besides eos, where ``src_len_i`` counts its real source tokens; at step
``max_len_i`` eos is forced (with the model's own log-probability for it), so
every hypothesis ends in eos.

Call ``model.eval()`` first; the searches do not change the model's mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.interface import Cache, Seq2SeqModel, log_probs


@dataclass
class Hypotheses:
    """Decoded output.

    tokens: one token list per hypothesis, without bos and eos.
    scores: (N,) log-probability of tokens + eos (float32); divided by the
        length penalty for beam search.
    attention: per hypothesis, the cross-attention of every decoder step that
        emitted a token, the eos step included, restricted to the real source
        positions: GRU (len(tokens) + 1, S_real), Transformer
        (L, heads, len(tokens) + 1, S_real). Empty if not requested.

    N is the batch size, or batch size * n_best for beam search, in which case
    hypotheses j * n_best ... (j + 1) * n_best - 1 are sentence j's, best first.
    """

    tokens: list[list[int]]
    scores: Tensor
    attention: list[Tensor]


def _max_lengths(src_mask: Tensor, a: float, b: float, cap: int | None) -> Tensor:
    lengths = (a * src_mask.sum(dim=1) + b).long()  # (B,), floor
    return lengths if cap is None else lengths.clamp(max=cap)


def _log_probs(model: Seq2SeqModel, outputs: Tensor, step: int, max_len: Tensor, eos_id: int,
               min_len: int) -> Tensor:
    """Log-probabilities (float32) of the model's outputs (N, V): eos is the only choice at a row's max length
    and, before that, forbidden for the first ``min_len`` tokens."""
    logp = log_probs(model, outputs)  # a fresh tensor, edited in place below
    # Only the rows at their max length and the eos column change: editing them in place spares two passes
    # over the whole (N, V) tensor a step (a tenth of a CPU beam search's time, measured on Multi30k).
    at_max = (step >= max_len).nonzero().squeeze(1)  # (M,)
    eos_at_max = logp[at_max, eos_id]
    if step < min_len:
        logp[:, eos_id] = float("-inf")
    logp[at_max] = float("-inf")
    logp[at_max, eos_id] = eos_at_max
    return logp


def _rows(value: Tensor | list[Tensor], index: Tensor) -> Tensor | list[Tensor]:
    return [t.index_select(0, index) for t in value] if isinstance(value, list) else value.index_select(0, index)


def _select(cache: Cache, index: Tensor, keep: frozenset[str] = frozenset()) -> Cache:
    """Rows ``index`` of every cache tensor (batch on dim 0): expands, reorders and drops rows.

    Entries named in ``keep`` are passed through as they are: beam search names
    the model's ``source_cache_keys`` there when it reorders the beams of each
    sentence among themselves, which leaves what depends only on the source the
    same; copying them would cost a copy of the attention keys, as long as the
    source, every step (within noise on Multi30k: results/benchmarks_decoding.md).
    """
    return {key: value if key in keep else _rows(value, index) for key, value in cache.items()}


def _scatter_rows(value: Tensor, rows: Tensor, n: int, fill: float | int = 0) -> Tensor:
    """``value`` (R, ...) placed at rows ``rows`` of an (n, ...) tensor filled with ``fill``.

    The searches drop finished sentences from the batch; what they record per
    step goes back to the rows of the whole batch, so that backtracking and the
    outputs need not know when a sentence left.
    """
    full = value.new_full((n, *value.shape[1:]), fill)
    full[rows] = value
    return full


def _hypotheses(
    tokens: Tensor,
    lengths: Tensor,
    scores: Tensor,
    attention: Tensor | None,
    src_mask: Tensor,
) -> Hypotheses:
    """Cut padded outputs down to lists.

    tokens (N, T) with eos at position ``lengths`` (N,); attention (N, [L, h,] T, S)
    or None; ``src_mask`` (N, S) is the source mask of each hypothesis's sentence.
    """
    return Hypotheses(
        tokens=[row[:n].tolist() for row, n in zip(tokens.cpu(), lengths.tolist())],
        scores=scores,
        attention=[]
        if attention is None
        else [a[..., : n + 1, :][..., m] for a, n, m in zip(attention, lengths.tolist(), src_mask)],
    )


@torch.inference_mode()
def greedy_search(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 1.2,
    max_len_b: float = 10,
    max_len_cap: int | None = None,
    min_len: int = 0,
    return_attention: bool = True,
    drop_finished: bool = True,
) -> Hypotheses:
    """Most probable next token at every step; ``scores`` are unnormalised log-probabilities.

    Outputs have at most ``max_len_a * source length + max_len_b`` tokens before
    eos (capped by ``max_len_cap``) and, where that allows, at least ``min_len``.
    A sentence leaves the batch at its eos, so the later steps compute only the unfinished ones
    (``drop_finished=False`` keeps it there, masked: the same outputs, the baseline of the bench).
    """
    B = src.size(0)
    max_len = _max_lengths(src_mask, max_len_a, max_len_b, max_len_cap)  # (B,)
    memory, cache = model.encode(src, src_mask)

    active = torch.arange(B, device=src.device)  # (A,) the sentences still decoding; the others have left
    mask = src_mask
    tokens = src.new_full((B,), bos_id)
    scores = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)  # (A,); all False while finished ones leave
    out_tokens, out_attention = [], []
    for step in range(int(max_len.max()) + 1):
        logits, cache, attention = model.decode_step(tokens, memory, mask, cache)
        logp = _log_probs(model, logits, step, max_len[active], eos_id, min_len)  # (A, V)
        tokens = logp.argmax(dim=-1)  # (A,)
        scores[active] += logp.gather(1, tokens.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0)
        out_tokens.append(_scatter_rows(tokens, active, B, fill=eos_id))
        if return_attention:
            out_attention.append(_scatter_rows(attention, active, B))
        finished |= tokens == eos_id
        if finished.all():
            break
        if drop_finished and finished.any():  # finished sentences leave the batch
            keep = (~finished).nonzero().squeeze(1)
            active, tokens, memory, mask, finished = (t[keep] for t in (active, tokens, memory, mask, finished))
            cache = _select(cache, keep)

    out = torch.stack(out_tokens, dim=1)  # (B, T)
    lengths = (out == eos_id).int().argmax(dim=1)  # first eos
    # (B, [L, h,] T, S)
    attention = torch.stack(out_attention, dim=-2) if return_attention else None
    return _hypotheses(out, lengths, scores, attention, src_mask)


@torch.inference_mode()
def beam_search(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: float = 10,
    max_len_cap: int | None = None,
    min_len: int = 0,
    n_best: int = 1,
    return_attention: bool = True,
    drop_finished: bool = True,
) -> Hypotheses:
    """Batched beam search: the B sentences x K beams run as one batch of B*K rows.

    Every step ranks the 2K best expansions of each sentence by raw log-probability.
    Those ending in eos and ranked within the top K become finished hypotheses,
    scored ``logp / lp`` with the GNMT penalty ``lp = ((5 + n) / 6) ** length_penalty``
    (n = tokens including eos; ``length_penalty=0`` keeps the raw sum); the best K
    of the rest stay alive. Stopping rule: a sentence is done once it has K
    finished hypotheses (or reaches its max length) and then leaves the batch, so
    the later steps compute only the sentences still searching; the search stops
    when all are done (``drop_finished=False`` keeps done sentences in the batch,
    masked: the same outputs, the baseline of the bench).
    Lengths follow greedy search's rule (``max_len_*``, ``min_len``).
    With K = 1 this is exactly greedy search.

    Per-step bookkeeping is backpointers (token, parent row, attention); the
    hypotheses are read back once at the end.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got {n_best} and {beam_size}")
    B, K, device = src.size(0), beam_size, src.device
    max_len = _max_lengths(src_mask, max_len_a, max_len_b, max_len_cap)  # (B,)
    memory, cache = model.encode(src, src_mask)

    # Rows: beam k of sentence j is row j * K + k of the whole batch ("global" rows, what the history and
    # the results use); the model only sees the rows of the sentences still searching, in the same order.
    active = torch.arange(B, device=device)  # (A,) the sentences still searching
    beams = torch.arange(K, device=device)
    rows = active.repeat_interleave(K)  # (A*K,) sentence of each row
    beam_mask = src_mask
    source_only = frozenset(getattr(model, "source_cache_keys", ()))
    rank = torch.arange(2 * K, device=device)  # (2K,)

    tokens = src.new_full((B,), bos_id)  # step 0 runs once per sentence, then each gets its K rows
    alive = torch.full((B, K), float("-inf"), device=device)
    alive[:, 0] = 0.0  # the K beams start identical: expand only one of them
    fin_scores = torch.full((B, K), float("-inf"), device=device)  # sorted, best first
    fin_step = torch.zeros(B, K, dtype=torch.long, device=device)  # step that emitted eos
    fin_row = (active * K).unsqueeze(1).expand(B, K).clone()  # global row that emitted eos
    results = (fin_scores.clone(), fin_step.clone(), fin_row.clone())  # of every sentence, once it is done
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (A,); all False while done sentences leave
    hist_tokens, hist_parents, hist_attention = [], [], []

    for step in range(int(max_len.max()) + 1):
        A = active.numel()
        global_rows = ((active * K).unsqueeze(1) + beams).view(-1)  # (A*K,)
        logits, cache, attention = model.decode_step(tokens, memory, beam_mask, cache)
        if step == 0:  # the K beams start identical: the first step is computed for one and copied to all
            logits, attention, memory, beam_mask = (t[rows] for t in (logits, attention, memory, beam_mask))
            cache = _select(cache, rows)
        if return_attention:
            hist_attention.append(_scatter_rows(attention, global_rows, B * K))  # (B*K, [L, h,] S)
        logp = _log_probs(model, logits, step, max_len[active].repeat_interleave(K), eos_id, min_len)  # (A*K, V)
        V = logp.size(-1)
        cand_scores, cand = logp.add_(alive.view(-1, 1)).view(A, K * V).topk(2 * K, dim=1)  # (A, 2K), in place
        cand_tokens = cand % V
        cand_beams = cand // V  # the beam each candidate extends
        is_eos = cand_tokens == eos_id

        # Finish eos candidates ranked in the top K; keep the K best finished so far.
        finishing = is_eos & (rank < K) & ~done.unsqueeze(1) & cand_scores.isfinite()
        penalised = cand_scores / ((5.0 + step + 1) / 6.0) ** length_penalty
        merged = torch.cat([fin_scores, penalised.masked_fill(~finishing, float("-inf"))], dim=1)
        fin_scores, pick = merged.topk(K, dim=1)  # (A, K)
        fin_step = torch.cat([fin_step, torch.full_like(cand_tokens, step)], dim=1).gather(1, pick)
        fin_row = torch.cat([fin_row, (active * K).unsqueeze(1) + cand_beams], dim=1).gather(1, pick)
        now_done = ~done & (fin_scores[:, -1].isfinite() | (step >= max_len[active]))  # (A,)
        for result, state in zip(results, (fin_scores, fin_step, fin_row)):
            result[active[now_done]] = state[now_done]
        done |= now_done
        if done.all():
            break

        # The K best non-eos candidates continue (each beam has one eos, so there are K).
        keep = (rank + is_eos * 2 * K).topk(K, dim=1, largest=False).indices  # (A, K), by score
        alive = cand_scores.gather(1, keep)
        tokens = cand_tokens.gather(1, keep).view(-1)
        parent_beams = cand_beams.gather(1, keep)  # (A, K)
        hist_tokens.append(_scatter_rows(tokens, global_rows, B * K, fill=eos_id))
        hist_parents.append(_scatter_rows(((active * K).unsqueeze(1) + parent_beams).view(-1), global_rows, B * K))
        parents = ((torch.arange(A, device=device) * K).unsqueeze(1) + parent_beams).view(-1)  # (A*K,) rows now
        if drop_finished and done.any():  # done sentences leave the batch
            stay = (~done).nonzero().squeeze(1)  # (A',)
            stay_rows = ((stay * K).unsqueeze(1) + beams).view(-1)  # (A'*K,)
            active, alive, fin_scores, fin_step, fin_row, done = (
                t[stay] for t in (active, alive, fin_scores, fin_step, fin_row, done))
            tokens, parents, memory, beam_mask = (t[stay_rows] for t in (tokens, parents, memory, beam_mask))
            cache = _select(cache, stay_rows, keep=frozenset(cache) - source_only)  # the source's rows only
        cache = _select(cache, parents, keep=source_only)  # parents are beams of the same sentence

    # Backtrack hypothesis i from its eos at fin_step[i], emitted by (global) row fin_row[i].
    fin_scores, fin_step, fin_row = results
    ends = fin_step[:, :n_best].reshape(-1)  # (N,)
    row = fin_row[:, :n_best].reshape(-1)  # at step t: the row whose history holds positions < t
    out_tokens, out_attention = [], []
    for t in reversed(range(step + 1)):
        before_end = t < ends
        token = torch.full_like(ends, eos_id)
        if t < len(hist_tokens):
            token = torch.where(before_end, hist_tokens[t][row], token)
            row = torch.where(before_end, hist_parents[t][row], row)
        out_tokens.append(token)
        if return_attention:
            out_attention.append(hist_attention[t][row])
    out = torch.stack(out_tokens[::-1], dim=1)  # (N, T), junk after eos
    attention = torch.stack(out_attention[::-1], dim=-2) if return_attention else None
    sentence_mask = src_mask.repeat_interleave(n_best, dim=0)  # (N, S)
    return _hypotheses(out, ends, fin_scores[:, :n_best].reshape(-1), attention, sentence_mask)
