"""The report's "Profiles" section: each profile's top operators and, where bf16 ran beside fp32, how the
update's time moved between matrix products, copies and the rest, with the speed-up bf16 could reach at most."""

from __future__ import annotations

from typing import Any

from experiments.bench.markdown import fmt, md_table, ratio_cell

CLASS_NAMES = {"matmul": "matrix products (mm, bmm, addmm, baddbmm)",
               "copies": "copies (`aten::copy_`: dtype casts, slice writes)", "rest": "everything else"}


def bf16_bound(fp32: dict[str, float], bf16: dict[str, float]) -> float:
    """bf16's speed-up over fp32 if only the matrix products changed: the copies bf16 adds cost nothing and
    everything else takes its fp32 time (Amdahl's law with the measured matrix-product speed-up)."""
    total = sum(fp32.values())
    return total / (total - fp32["matmul"] + bf16["matmul"])


def precision_rows(fp32: dict[str, float], bf16: dict[str, float]) -> list[list[str]]:
    rows = [[CLASS_NAMES[k], fmt(fp32[k], ".3f"), fmt(bf16[k], ".3f"),
             ratio_cell(fp32[k] / bf16[k]) if bf16[k] else "–"] for k in CLASS_NAMES]
    total32, total16 = sum(fp32.values()), sum(bf16.values())
    return rows + [["all", fmt(total32, ".3f"), fmt(total16, ".3f"), ratio_cell(total32 / total16)]]


def profiles(report: dict[str, Any], image_prefix: str) -> list[str]:
    runs = report.get("profiles")
    if not runs:
        return []
    out = ["## Profiles", "", *(f"- {p['model']} ({p.get('config', 'base')}): `{p.get('trace', p.get('error'))}` "
                                "(open in https://ui.perfetto.dev)" for p in runs), ""]
    for p in runs:
        if not p.get("top_ops"):
            continue
        out += [f"Where a {p['model']} ({p.get('config', 'base')}) update's time goes (the profile's top operators "
                f"by self CPU time, over {p['steps']} profiled updates; CPU time of all threads, so it can exceed "
                "the wall time):", "",
                "| operator | self CPU s / update | share | calls / update |", "| --- | --- | --- | --- |",
                *(f"| `{o['op']}` | {o['self_s_per_step']:.3f} | {o['share']:.1%} | {o['calls_per_step']:.0f} |"
                  for o in p["top_ops"]), ""]
    return out


def bf16_split(report: dict[str, Any], image_prefix: str) -> list[str]:
    """Per model profiled in fp32 and bf16 (``--profile`` where bf16 is native): how the update's self time
    moved between matrix products, copies and the rest, and the speed-up bf16 could reach at most."""
    runs = report.get("profiles") or []
    by_config = {(p["model"], p.get("config", "base")): p.get("op_classes") for p in runs}
    pairs = [(m, by_config[m, "base"], by_config[m, "bf16"]) for m in dict.fromkeys(p["model"] for p in runs)
             if by_config.get((m, "base")) and by_config.get((m, "bf16"))]
    if not pairs:
        return []
    out = ["## Where bf16 gains and loses time", "",
           "Self CPU seconds per update in the fp32 and bf16 profiles (`--profile`; every thread's CPU time, so "
           "the sums exceed the wall time). The bound: if bf16 sped up the matrix products as measured and "
           "nothing else changed (its casts free, everything else at its fp32 time), an update could be at most "
           "that much faster in bf16 than in fp32; what bounds it is the work outside the matrix products (kept "
           "in fp32 by design where it is, e.g. the GRU's state and gates).", ""]
    for model, fp32, bf16 in pairs:
        out += [md_table([f"{model}: operators", "fp32", "bf16", "fp32 / bf16"], precision_rows(fp32, bf16)), "",
                f"{model}: bf16 at most {ratio_cell(bf16_bound(fp32, bf16))} faster than fp32.", ""]
    return out
