"""Time to quality (``--time-to-quality``): wall seconds to a validation BLEU, ours against JoeyNMT's on one machine.

Ours: each model trained with its recipe (``plan.ttq_spec``) until greedy
validation BLEU first reaches the threshold (JoeyNMT's best, 38.86, by
default): updates, real target tokens, training seconds, validation seconds
and wall seconds (validation included), as ``ttb.time_to_bleu`` measures them.

JoeyNMT's: its seconds per update measured in the same bench run
(``--joeynmt``, from its own log windows: training only, no validation) times
the first update of its BLEU-by-update curve (``targets.JOEYNMT_CURVE``,
``joey_transformer.yaml``: its GRU config never gets near) at or above the
threshold. The ratio is JoeyNMT's seconds over ours, both of one run on one
machine; without ``--joeynmt`` there is none, and the 2-core anchor of
another machine is quoted for orientation only.
"""

from __future__ import annotations

from typing import Any

from experiments.bench.markdown import fmt, machine, md_table, ratio_cell
from experiments.bench.targets import (JOEYNMT_ANCHOR_STEP_S, JOEYNMT_BEST, JOEYNMT_CURVE,
                                       JOEYNMT_CURVE_BATCH_TOKENS, JOEYNMT_VERSION, TTQ_TARGETS)

JOEYNMT_MODEL = "transformer"  # whose measured seconds per update go with the curve (joey_transformer.yaml)


def joeynmt_updates_to(threshold: float, curve: dict[int, float] = JOEYNMT_CURVE) -> int | None:
    """The first update of JoeyNMT's curve whose validation BLEU is at or above ``threshold`` (None: above its best)."""
    return next((step for step, bleu in sorted(curve.items()) if bleu >= threshold), None)


def joeynmt_seconds(threshold: float, joeynmt: dict[str, Any], batch_tokens: int | None) -> dict[str, Any]:
    """JoeyNMT's seconds to ``threshold`` on this run's machine, or None and why there is no such figure.

    ``joeynmt``: the report's ``joeynmt`` part (``--joeynmt``: model -> its
    measurement); ``batch_tokens``: the bench's batch budget, which JoeyNMT ran
    at (a report saved before the measurement recorded its own).
    """
    updates = joeynmt_updates_to(threshold)
    theirs = joeynmt.get(JOEYNMT_MODEL) or {}
    measured_at = theirs.get("batch_tokens", batch_tokens)
    out: dict[str, Any] = {"updates": updates, "step_s": None, "seconds": None, "batch_tokens": measured_at,
                           "why": None}
    best_step = max(JOEYNMT_CURVE, key=lambda s: JOEYNMT_CURVE[s])
    if updates is None:
        out["why"] = (f"not reached by its curve (best {JOEYNMT_BEST:g} at update {best_step}): no ratio")
    elif not joeynmt:
        out["why"] = "the ratio needs --joeynmt (JoeyNMT's seconds per update measured in the same run)"
    elif not theirs:
        out["why"] = (f"JoeyNMT's {JOEYNMT_MODEL} (whose curve this is) was not measured: add {JOEYNMT_MODEL} "
                      "to --models")
    elif "error" in theirs or not theirs.get("step_s"):
        out["why"] = f"JoeyNMT's {JOEYNMT_MODEL} failed: {theirs.get('error', 'no seconds per update')}"
    elif measured_at != JOEYNMT_CURVE_BATCH_TOKENS:
        out["why"] = (f"JoeyNMT was measured at {measured_at}-token batches, its curve is at "
                      f"{JOEYNMT_CURVE_BATCH_TOKENS}: run the bench with --batch-tokens {JOEYNMT_CURVE_BATCH_TOKENS}")
    else:
        out.update(step_s=theirs["step_s"], seconds=theirs["step_s"] * updates)
    return out


def ttq_rows(runs: list[dict[str, Any]], joeynmt: dict[str, Any], batch_tokens: int | None) -> list[dict[str, Any]]:
    """Each time-to-quality run with JoeyNMT's seconds to its threshold and the ratios (None where not measured).

    Reached: ``ratio_wall`` = JoeyNMT's seconds / our wall seconds (validation
    included), ``ratio_train`` = / our training seconds. Not reached: the ratio
    is below ``ratio_wall_at_most`` (JoeyNMT's seconds / the wall seconds we
    trained without reaching it).
    """
    rows = []
    for run in runs:
        if "error" in run:
            rows.append(dict(run))
            continue
        ref = joeynmt_seconds(run["threshold"], joeynmt, batch_tokens)
        theirs, reached = ref["seconds"], run["reached"]
        rows.append({**run, "joeynmt": ref,
                     "ratio_wall": theirs / run["wall_s"] if theirs and reached and run["wall_s"] else None,
                     "ratio_train": theirs / run["train_s"] if theirs and reached and run["train_s"] else None,
                     "ratio_wall_at_most": theirs / run["wall_s"] if theirs and not reached and run["wall_s"]
                     else None})
    return rows


def ttq_targets(rows: list[dict[str, Any]], device_type: str, task: str, comparable: bool) -> list[dict[str, Any]]:
    """The issue's time-to-quality targets (``TTQ_TARGETS``): yes, no, or not measured.

    Judged on a CPU, for the table-size models, at JoeyNMT's best BLEU, with
    JoeyNMT measured in the same run: met when the wall-time ratio is at least
    the target; not met when reached with less, or when not reached after
    training longer than JoeyNMT's seconds / the target (it cannot be met any
    more); otherwise not measured.
    """
    if not rows:
        return []
    out = []
    for model, minimum in TTQ_TARGETS.get(task, []):
        row = next((r for r in rows if r["model"] == model), None)
        target = (f"{model} to validation BLEU {JOEYNMT_BEST:g} >= {minimum:g}x sooner than JoeyNMT "
                  "(wall s with validation, same CPU)")
        why, met, value = None, None, None
        if row is None or "error" in row:
            why = "no time-to-quality run" if row is None else f"the run failed: {row['error']}"
        elif not comparable:
            why = "not judged: not the table-size models"
        elif device_type != "cpu":
            why = "not judged: measured on a GPU; the target is a CPU's"
        elif row["threshold"] != JOEYNMT_BEST:
            why = f"not judged: the run's threshold is {row['threshold']:g}, the target's {JOEYNMT_BEST:g}"
        elif row["joeynmt"]["seconds"] is None:
            why = row["joeynmt"]["why"]
        elif row["reached"]:
            value = row["ratio_wall"]
            met = value >= minimum
        elif row["ratio_wall_at_most"] < minimum:
            met = False  # already past JoeyNMT's seconds / minimum without reaching it
        else:
            why = "not reached in the updates it was given, before JoeyNMT's seconds / the target ran out"
        if why is None:
            ref = row["joeynmt"]
            why = (f"JoeyNMT {JOEYNMT_VERSION}: {ref['updates']} updates x {ref['step_s']:.2f} s measured here = "
                   f"{ref['seconds']:.0f} s (training only); ours: recipe {row.get('recipe')}, "
                   f"{row.get('batch_tokens')}-token batches, {fmt(row['wall_s'], '.0f')} s"
                   + ("" if row["reached"] else f" without reaching it (ratio below {row['ratio_wall_at_most']:.2f}x)"))
        out.append({"target": target, "value": value, "unit": "x", "met": met,
                    "verdict": {True: "yes", False: "**no**", None: "not measured"}[met], "against": why})
    return out


def time_to_quality(report: dict[str, Any], image_prefix: str) -> list[str]:
    """The report's "Time to quality" section (none without --time-to-quality runs)."""
    rows = report.get("time_to_quality") or []
    if not rows:
        return []
    meta = report["meta"]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], r.get("recipe", "–"), *["–"] * 11, f"failed: {r['error']}"])
            continue
        ref, reached = r["joeynmt"], r["reached"]
        tokens = r["tokens_to_bleu"] if reached else r["tokens"]
        ratio_wall = ratio_cell(r["ratio_wall"]) if reached else (
            f"< {ratio_cell(r['ratio_wall_at_most'])}" if r.get("ratio_wall_at_most") else "–")
        table.append([r["model"], r.get("recipe", "–"), r["config"], fmt(r["batch_tokens"], "d"),
                      fmt(r["threshold"], "g"),
                      "yes" if reached else f"no (best {fmt(r['best_bleu'], '.2f')})",
                      fmt(r["steps_to_bleu"], "d") if reached else f"{r['max_steps']} (all)",
                      fmt(tokens / 1e6, ".2f") if tokens is not None else "–",
                      fmt(r["train_s"], ".0f"), fmt(r.get("val_s"), ".0f"), fmt(r["wall_s"], ".0f"),
                      fmt(ref["seconds"], ".0f"), ratio_wall, ratio_cell(r["ratio_train"]) if reached else "–"])
    out = ["## Time to quality", "",
           f"Seconds on {machine(meta)} until greedy validation BLEU over the whole split first reaches the threshold "
           "(JoeyNMT's best by default), each model trained with its recipe (the conf/experiment preset named, "
           "what `s2s-train experiment=NAME` trains with, or conf/recipe/MODEL alone where the task has no preset; "
           "the bench's own settings give way where the preset sets them), "
           "validated at the recipe's cadence. Training s: the updates alone; validation s: decoding, scoring and "
           "the checkpoints each validation writes; wall s: all of it. JoeyNMT's seconds: its Transformer's "
           "seconds per update measured in this run (`--joeynmt`, training only) times the updates its "
           f"`joey_transformer.yaml` curve needs ({JOEYNMT_CURVE_BATCH_TOKENS}-token batches; "
           "shared/peers/joeynmt/README.md). Ratio: JoeyNMT's seconds over ours.", "",
           md_table(["model", "recipe", "config", "batch tokens", "BLEU threshold", "reached", "updates",
                     "real target tokens (M)", "training s", "validation s", "wall s", "JoeyNMT s",
                     "ratio (wall)", "ratio (training)"], table), ""]
    ok = [r for r in rows if "error" not in r]
    whys = list(dict.fromkeys(r["joeynmt"]["why"] for r in ok if r["joeynmt"]["why"]))  # one line per reason
    out += [f"- JoeyNMT's seconds: {why}." for why in whys]
    out += list(dict.fromkeys(f"- JoeyNMT: {ref['updates']} updates x {ref['step_s']:.3f} s an update = "
                              f"{ref['seconds']:.0f} s." for ref in (r["joeynmt"] for r in ok) if ref["seconds"]))
    out += [f"- {r['model']} ({r.get('recipe')}) trained with: " + ", ".join(f"{k}={v}" for k, v in
                                                                          r["settings"].items())
            for r in ok if r.get("settings")]
    anchor = JOEYNMT_ANCHOR_STEP_S.get(str(meta.get("task")))
    updates = joeynmt_updates_to(rows[0].get("threshold", JOEYNMT_BEST))
    if anchor and updates and any((r.get("joeynmt") or {}).get("seconds") is None for r in rows):
        out += [f"- For orientation only (another machine, no ratio, no verdict): JoeyNMT took about {anchor:g} s "
                f"an update on a 2-core AMD EPYC of this project's kind (shared/peers/joeynmt/README.md), which "
                f"would make its {updates} updates about {anchor * updates:.0f} s."]
    return out + [""]
