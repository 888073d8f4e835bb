"""From the measured rows to the report's judgements: fast paths off against on, JoeyNMT beside ours, the targets."""

from __future__ import annotations

import math
from typing import Any

import torch

from experiments.bench.report import fmt, is_load_row
from experiments.bench.ttq import ttq_rows, ttq_targets
from experiments.bench.targets import (DECODE_TARGETS, JOEYNMT_ANCHORS, JOEYNMT_CURVE, JOEYNMT_TOKENS_PER_UPDATE,
                                       JOEYNMT_VERSION, SAMPLE_TARGET, SAMPLE_TOKENS_TARGET, TRAIN_TARGETS)


def ratio(a: Any, b: Any) -> float | None:
    if not a or not b or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return None
    return a / b


Rows = dict[tuple[str, str], dict[str, Any]]  # (model, config) -> a training result row


def analyse(training: list[dict[str, Any]], joeynmt: dict[str, Any], device: torch.device,
            batch_tokens: int, ttb: list[dict[str, Any]] | None = None, *, task: str = "multi30k_de_en",
            comparable: bool = True, ttq: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fast-path pairs, the comparison with JoeyNMT, time to quality against JoeyNMT's and the targets.

    ``task``: the bench's task, whose targets (``targets.TRAIN_TARGETS``,
    ``DECODE_TARGETS``) and JoeyNMT anchor apply. ``comparable``: whether the
    rows are the table-size models; otherwise (--tiny) no target is judged.
    """
    ok = [r for r in training if "error" not in r and not r["config"].startswith("scale") and not is_load_row(r)]
    by = {(r["model"], r["config"]): r for r in ok}
    models = sorted({r["model"] for r in training}, key=lambda m: (m != "transformer", m))
    fast = [row for model in models for row in fast_paths(model, by, ok, device)]
    anchors = JOEYNMT_ANCHORS.get(task, {})
    comparison = [against_joeynmt(model, by, joeynmt.get(model, {}), batch_tokens, anchors.get(model))
                  for model in models]
    quality = ttq_rows(ttq or [], joeynmt, batch_tokens)
    targets = [*speed_targets(models, by, comparison, device, task, comparable), *sample_targets(ttb or []),
               *ttq_targets(quality, device.type, task, comparable)]
    return {"fast_paths": fast, "comparison": comparison, "targets": targets, "time_to_quality": quality}


def fast_paths(model: str, by: Rows, ok: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """Each fast path of ``model`` measured off and on (tok/s for training, sentences/s for decoding)."""
    rows = []

    def pair(path: str, off: str, on: str, note: str = "") -> None:
        a, b = by.get((model, off)), by.get((model, on))
        if a and b:
            rows.append({"fast_path": path, "model": model, "off": off, "on": on,
                         "off_value": a["tokens_per_s"], "on_value": b["tokens_per_s"], "unit": "tok/s",
                         "speedup": ratio(b["tokens_per_s"], a["tokens_per_s"]), "note": note})

    def padding(*configs: str) -> str:
        return "padding, target side: " + " vs ".join(fmt(by.get((model, c), {}).get("pad_tgt"), ".0%")
                                                      for c in configs)

    pair("bf16 autocast", "base", "bf16")
    if model == "transformer":
        pair("torch.compile", "base", "compile")
        pair("bf16 + torch.compile", "base", "bf16+compile")
    base, one = by.get((model, "base")), by.get((model, "threads1"))
    if base and one:
        pair(f"threads ({one['threads']} vs {base['threads']})", "threads1", "base")
    pair("sorted batches (whole split vs unsorted random)", "random", "base", padding("random", "base"))
    pool = next((c for (m, c) in by if m == model and c.startswith("pool")), None)
    if pool:
        pair(f"sorted batches (whole split vs pools of {by[(model, pool)]['pool_size']})", pool, "base",
             padding(pool, "base"))
    pair("fused AdamW", "unfused", "base")
    pair("dropout masks (four units a 64-bit draw, vs torch's bernoulli_)", "torch-dropout", "base")
    pair("target padding skipped (output layer" + ("; the decoder loop's steps" if model == "gru" and
                                                     device.type == "cpu" else "") + ")", "padded-targets", "base",
         padding("base"))
    if model == "gru":  # the recurrence and decoder loop auto picks (base) against the other ones
        if device.type == "cuda":
            pair("encoder recurrence (nn.GRU packed, cuDNN, vs batched steps)", "batched", "base")
            pair("decoder loop (autograd, vs hand-written backward)", "handwritten", "base")
        else:
            pair("encoder recurrence (batched steps, hand-written backward, vs nn.GRU packed)", "packed", "base")
            pair("decoder loop (hand-written backward vs autograd)", "autograd", "base")
            pair("all three (vs nn.GRU packed, the autograd loop, logits at padded positions)", "packed+autograd",
                 "base")
    decoding = (by.get((model, "base")) or next((r for r in ok if r["model"] == model and r.get("decoding")),
                                                {})).get("decoding", [])
    for ablation, path, off_word in (("kv_cache", "KV cache (greedy decoding)", "no KV cache"),
                                     ("batching", "batched search (decoding)", "one sentence at a time"),
                                     ("source_cache", "source cache left in place (beam search)", "copied"),
                                     ("drop_finished_beam", "finished sentences leave the batch (beam search)",
                                      "kept"),
                                     ("drop_finished_greedy", "finished sentences leave the batch (greedy)", "kept"),
                                     ("bf16_beam", "bf16 autocast (beam search)", None),
                                     ("bf16_greedy", "bf16 autocast (greedy)", None)):
        # off_word names the baseline row of the pair; None: the ablation row is the fast path, the plain one off
        pairs = [r for r in decoding if r.get("ablation") == ablation]
        if len(pairs) == 1 and "against" in pairs[0]:  # against the plain row of that search, same split
            pairs += [r for r in decoding if r["search"] == pairs[0]["against"] and "ablation" not in r][:1]
        if len(pairs) == 2:
            on, off = (pairs[0], pairs[1]) if off_word is None or off_word not in pairs[0]["search"] \
                else (pairs[1], pairs[0])
            rows.append({"fast_path": path, "model": model, "off": off["search"], "on": on["search"],
                         "off_value": off["sentences_per_s"], "on_value": on["sentences_per_s"],
                         "unit": "sentences/s", "speedup": ratio(on["sentences_per_s"], off["sentences_per_s"]),
                         "note": f"{on['sentences']} sentences; same outputs: "
                                 f"{on.get('same_outputs', off.get('same_outputs', '?'))}/{off['sentences']}"
                                 + (f"; BLEU {off['bleu']:.2f} -> {on['bleu']:.2f}"
                                    if off.get("bleu") is not None and on.get("bleu") is not None else "")})
    return rows


def against_joeynmt(model: str, by: Rows, theirs: dict[str, Any], batch_tokens: int,
                    anchor: float | None) -> dict[str, Any]:
    """Our fp32, random-batch and best tok/s at the batch budget as multiples of JoeyNMT's (measured or anchor)."""
    measured = theirs.get("tokens_per_s") if "error" not in theirs else None
    reference = measured or anchor
    # the plain rows are fp32 unless an override (trainer.precision=bf16 for every configuration) made them not
    base, random_ = ({} if row.get("precision", "fp32") != "fp32" else row
                     for row in (by.get((model, "base"), {}), by.get((model, "random"), {})))
    candidates = [r for (m, _), r in by.items() if m == model and r.get("batch_tokens") == batch_tokens]
    best = max(candidates, key=lambda r: r["tokens_per_s"], default={})
    return {
        "model": model,
        "joeynmt_tokens_per_s": reference,
        "joeynmt_source": "measured in this run" if measured else
                          "anchor (shared/peers/joeynmt, not measured in this run)" if anchor else
                          "not measured (--joeynmt)",
        "joeynmt_step_s": theirs.get("step_s"),
        "joeynmt_params": theirs.get("params"),
        "params": by.get((model, "base"), {}).get("params") or best.get("params"),
        "fp32_tokens_per_s": base.get("tokens_per_s"),
        "fp32_random_batches_tokens_per_s": random_.get("tokens_per_s"),
        "best_config": best.get("config"),
        "best_tokens_per_s": best.get("tokens_per_s"),
        "fp32_ratio": ratio(base.get("tokens_per_s"), reference),
        "fp32_random_batches_ratio": ratio(random_.get("tokens_per_s"), reference),
        "best_ratio": ratio(best.get("tokens_per_s"), reference),
    }


def speed_targets(models: list[str], by: Rows, comparison: list[dict[str, Any]], device: torch.device,
                  task: str, comparable: bool) -> list[dict[str, Any]]:
    """The training-speed targets (ratios to JoeyNMT) and the CPU decoding-time targets."""
    targets = []
    comp = {c["model"]: c for c in comparison}
    for model, which, minimum in TRAIN_TARGETS.get(task, []):
        if model not in models:
            continue
        value = comp.get(model, {}).get(f"{which}_ratio")
        targets.append({"kind": "training",  # --from-json judges these rows again (rejudged_training_targets)
                        "target": f"{model} training ({'fp32' if which == 'fp32' else 'fast paths'}) "
                                  f">= {minimum:g}x JoeyNMT on {task}", "value": value, "unit": "x",
                        "met": None if value is None or not comparable else value >= minimum,
                        "against": comp.get(model, {}).get("joeynmt_source") if comparable else
                                   "not judged: not the table-size models"})
    for model, search, seconds in DECODE_TARGETS.get(task, []):
        if model not in models:
            continue
        rows = (by.get((model, "base")) or {}).get("decoding", [])
        source = (by.get((model, "base")) or {}).get("decoded_with", "")
        for how in ("", ", bf16 autocast"):  # the plain row, and the bf16 one where it was measured
            row = next((r for r in rows if r["search"] == search + how and ("ablation" in r) == bool(how)), None)
            if how and row is None:
                continue
            full = row is not None and row["sentences"] >= 1000
            value = row["seconds"] if row else None
            targets.append({"target": f"{model} {search} over the test split <= {seconds:g} s (CPU{how})",
                            "value": value, "unit": "s",
                            "met": None if value is None or device.type != "cpu" or not full else value <= seconds,
                            "against": f"decoded with {source}" + (" under bf16 autocast" if how else " in fp32")
                            + ("" if full else "; not the full 1000-sentence split") if row else None})
    return targets


def rejudged_training_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A saved report's targets with the training-speed rows judged again against today's ``TRAIN_TARGETS``.

    The ratios are measurements and stay as saved; a minimum is the issue's,
    and an issue may raise it after the measurement (fp32 2.5x -> 3x), so
    ``--from-json`` states each ratio against the target as it stands now.
    Every other row (decoding, sample efficiency, time to quality) is kept as
    saved.
    """
    meta = report["meta"]
    tiny = meta["task"].endswith("(tiny)")  # --tiny stands in for the Multi30k bench, judging nothing (analyse)
    task = "multi30k_de_en" if tiny else meta["task"]
    ok = [r for r in report["training"] if "error" not in r]
    by = {(r["model"], r["config"]): r for r in ok}
    models = [c["model"] for c in report["comparison"]]
    fresh = [t for t in speed_targets(models, by, report["comparison"], torch.device(meta.get("device", "cpu")),
                                      task, comparable=not tiny)
             if t.get("kind") == "training"]
    kept = [t for t in report["targets"] if t.get("kind") != "training"]
    return fresh + kept


def sample_targets(ttb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Updates to JoeyNMT's best validation BLEU, judged only for a run that can answer it.

    The first validation at or above the threshold counts, so the figure is
    rounded up to the validation cadence. A run with another batch size, or one
    that stopped early below the bar, leaves the target unjudged.
    """
    model, bleu, updates, tokens = SAMPLE_TARGET
    rows = []
    for run in ttb:
        if run.get("model") != model or "error" in run:
            continue
        first = next((h["step"] for h in run["history"] if h["bleu"] >= bleu), None)
        judged = run.get("batch_tokens") == tokens and (first is not None or run["max_steps"] >= updates)
        rows.append({"target": f"{model} validation BLEU >= {bleu:g} in <= {updates} updates of {tokens} tokens",
                     "value": first, "unit": " updates", "format": "d",
                     "met": (first is not None and first <= updates) if judged else None,
                     "against": f"JoeyNMT {JOEYNMT_VERSION}: {bleu:g} after {max(JOEYNMT_CURVE)} updates; "
                                f"ours validated every {run['eval_every']} updates, best {fmt(run['best_bleu'], '.2f')}"})
        rows += tokens_target(run)
    return rows


def tokens_target(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Real target tokens to JoeyNMT's best validation BLEU, against the tokens JoeyNMT took (none for a run
    saved before tokens were recorded). Judged once reached, or once the run has trained past that many tokens."""
    model, bleu, budget = SAMPLE_TOKENS_TARGET
    if any("tokens" not in h for h in run["history"]):
        return []
    first = next((h["tokens"] for h in run["history"] if h["bleu"] >= bleu), None)
    judged = first is not None or run.get("tokens", 0) >= budget
    return [{"target": f"{model} validation BLEU >= {bleu:g} with <= {budget / 1e6:.2f}M real target tokens",
             "value": None if first is None else first / 1e6, "unit": "M tokens", "format": ".2f",
             "met": (first is not None and first <= budget) if judged else None,
             "against": f"JoeyNMT {JOEYNMT_VERSION}: {bleu:g} after {max(JOEYNMT_CURVE)} updates of about "
                        f"{JOEYNMT_TOKENS_PER_UPDATE:.0f} real target tokens; ours validated every "
                        f"{run['eval_every']} updates"}]


def scaling_rows(training: list[dict[str, Any]], scaled: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Throughput against the batch budget: the scaling workers' points and the base runs (none without the former)."""
    if not scaled:
        return []
    points = [r for r in training if r["config"] == "base"]
    for result in scaled:
        points += result.get("points", [])
    rows = [{"model": r["model"], "batch_tokens": r["batch_tokens"], "tokens_per_s": r["tokens_per_s"],
             "step_s": r["step_s"], "steps": r["steps"], "config": r["config"]}
            for r in points if "error" not in r]
    return sorted(rows, key=lambda r: (r["model"], r["batch_tokens"]))
