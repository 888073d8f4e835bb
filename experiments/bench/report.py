"""The report: Markdown sections rendered from the report dict, the files written, the headline copied into a README.

Everything here reads a report (measured now, or loaded by ``--from-json``),
so a saved report renders again without measuring anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from experiments.core.atomic import write_text
from experiments.bench import other_work
from experiments.bench.markdown import fmt, machine, md_table, ratio_cell
from experiments.bench.profile_report import bf16_split, profiles
from experiments.bench.plots import save_png, scaling_figure, ttb_figure
from experiments.bench.targets import JOEYNMT_TOKENS_PER_UPDATE
from experiments.bench.ttb import ttb_curves
from experiments.bench.ttq import time_to_quality
from experiments.core.errors import UserError

# What a report holds; --from-json refuses a file without all of them.
REPORT_KEYS = {"meta", "training", "fast_paths", "comparison", "targets", "scaling", "joeynmt", "profiles",
               "time_to_bleu"}


# ---------------------------------------------------------------------------
# sections: each renders its lines from the report (none where it has nothing to show)


def header(report: dict[str, Any], image_prefix: str) -> list[str]:
    meta = report["meta"]
    out = ["# Speed benchmark", ""]
    hw = [["date", meta["date"]], ["commit", meta["commit"]], ["CPU", meta["cpu"]],
          ["cores (usable by this process)", meta["cores"]]]
    if meta.get("gpu"):
        hw.append(["GPU", meta["gpu"]])
    hw += [["torch", meta["torch"]], ["device", meta["device"]]]
    if "native_bf16" in meta:
        device = meta["device"].split(":")[0]
        hw.append([f"bf16 on this {device}", "native" if meta["native_bf16"] else
                   "emulated (no AVX512-BF16 / AMX: slow)" if device == "cpu" else "emulated"])
    if meta.get("onednn_cache"):
        hw.append(["oneDNN kernel cache (matmul shapes kept compiled; CPU bf16)", meta["onednn_cache"]])
    if meta.get("malloc"):
        hw.append(["malloc (experiments/core/allocator.py)", meta["malloc"]])
    if meta.get("load_before") or meta.get("load_after"):
        hw.append(["load average (1, 5, 15 min) before / after the run",
                   " / ".join(" ".join(fmt(x, ".2f") for x in load) if load else "–"
                              for load in (meta.get("load_before"), meta.get("load_after")))])
    if meta.get("other_work"):
        hw.append(["other work during the run (CPU time not this bench's, from /proc/stat)",
                   other_work.describe(meta["other_work"])])
    hw += [["task", meta["task"]], ["command", f"`{meta['command']}`"]]
    out += [md_table(["", ""], hw), ""]
    if not meta.get("gpu"):
        out += ["No GPU was used in this run: every number below is from the CPU.", ""]
    where = "in its own process" if meta["isolated_workers"] else "in the bench's process (--in-process)"
    warmup = (f"up to {meta['steps']} updates run twice, the first time as the warm-up, the second measured (so "
              "that no measured update meets a batch shape for the first time, as a run's updates from its second "
              "epoch on; bf16 on a CPU compiles a kernel for each new matmul shape)" if meta.get("seen_shapes") else
              f"{meta['warmup']} warm-up update(s), then up to {meta['steps']} measured on new batches")
    out += [f"Training: each configuration {where}, {warmup} (updates = warm-up + measured); tokens/s counts real "
            "(non-pad) target tokens per second of wall time, batch collation included; s/step is that wall time per "
            "update (CPU s/step: CPU time of all threads, steadier on a shared machine); padding is over a whole "
            "epoch's batches. Peak RSS is the worker process's (Python, torch, the data and the model included).", ""]
    out += [f"- {note}" for note in meta.get("notes", [])]
    if meta.get("notes"):
        out += [""]
    return out


def is_load_row(r: dict[str, Any]) -> bool:
    """A --load configuration: measured beside busy processes or in another environment, reported on its own."""
    return bool(r.get("load") or r.get("env"))


def training_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["training"] if not r["config"].startswith("scale") and not is_load_row(r)]


def under_load(report: dict[str, Any], image_prefix: str) -> list[str]:
    """--load: the Transformer beside busy processes, and the two-job sweeps."""
    loaded = [r for r in report["training"] if is_load_row(r)]
    sweeps = report.get("sweeps") or []
    if not loaded and not sweeps:
        return []
    out = ["## Threads under load", ""]
    if loaded:
        idle = next((r for r in report["training"] if r["model"] == loaded[0]["model"] and r["config"] == "base"
                     and "error" not in r), None)
        rows = []
        if idle:
            rows.append(["idle, all cores (the base row)", 0, idle["threads"], "default", fmt(idle["tokens_per_s"]),
                         fmt(idle["step_s"], ".3f"), fmt(idle.get("cpu_s_per_step"), ".3f"), "1.00x"])
        for r in loaded:
            if "error" in r:
                rows.append([r["config"], r["load"], "–", "–", "–", "–", "–", f"failed: {r['error']}"])
                continue
            rel = r["tokens_per_s"] / idle["tokens_per_s"] if idle and idle.get("tokens_per_s") else None
            rows.append([r["config"], r["load"], r["threads"], r["env"].get("OMP_WAIT_POLICY", "default").lower(),
                         fmt(r["tokens_per_s"]), fmt(r["step_s"], ".3f"), fmt(r.get("cpu_s_per_step"), ".3f"),
                         ratio_cell(rel)])
        out += [f"The {loaded[0]['model']}'s plain configuration (fp32, sorted batches) beside busy one-thread "
                "processes (`python -m experiments.bench.load`: one torch thread multiplying matrices, as another "
                "one-thread job would). Threads: all cores (what `trainer.num_threads` fixed at the core count "
                "takes), 1, or auto (`trainer.num_threads=0`: the cores other processes leave free, measured "
                "from /proc). OpenMP wait: libgomp's default (threads spin a while before sleeping) or "
                "`OMP_WAIT_POLICY=PASSIVE`.", "",
                md_table(["configuration", "busy processes beside", "threads", "OpenMP wait", "tok/s", "s/step",
                          "CPU s/step", "vs idle"], rows), ""]
    if sweeps:
        first = next((w for w in sweeps if w["sweep"].startswith("one after") and "error" not in w), None)
        rows = []
        for w in sweeps:
            if "error" in w:
                rows.append([w["sweep"], w["steps"], f"failed: {w['error'][:200]}", "–", "–", "–"])
                continue
            jobs = {j["model"]: j for j in w["jobs"]}
            rows.append([w["sweep"], w["steps"], fmt(w["wall_s"], ".0f"),
                         " / ".join(fmt(jobs[m]["tokens_per_s"]) for m in sorted(jobs)),
                         " / ".join(",".join(map(str, jobs[m]["threads"])) for m in sorted(jobs)),
                         ratio_cell(first["wall_s"] / w["wall_s"] if first else None)])
        models = " / ".join(sorted(j["model"] for j in next((w for w in sweeps if "error" not in w),
                                                              {"jobs": []})["jobs"]))
        out += ["A two-job sweep (`s2s-train -m model=gru,transformer`, the bench's task and fp32 settings), "
                "timed end to end: one after the other (Hydra's basic launcher) against side by side "
                "(`hydra/launcher=local`, submitit's local executor, one task a job), threads fixed at the core "
                "count or auto. tok/s is each job's mean over its log windows after the first (startup and "
                "warm-up left out); threads are those its log windows ran with.", "",
                md_table(["sweep", "updates a job", "wall s (both jobs)", f"tok/s ({models})",
                          f"threads ({models})", "speed-up vs one after the other"], rows), ""]
    return out


def training(report: dict[str, Any], image_prefix: str) -> list[str]:
    rows = []
    for r in training_rows(report):
        if "error" in r:
            rows.append([r["model"], r["config"], *["–"] * 11, f"failed: {r['error']}"])
            continue
        memory = fmt(r.get("peak_gpu_mb"), ".0f") + " (GPU)" if "peak_gpu_mb" in r else fmt(r["peak_rss_mb"])
        batches = "random (unsorted)" if r["batching"] == "random" else (
            "sorted, whole split" if not r["pool_size"] else f"sorted in pools of {r['pool_size']}")
        rows.append([r["model"], r["config"], r["precision"], "yes" if r["compile"] else "no", r["threads"],
                     batches, f"{r['warmup_steps']}+{r['steps']}", fmt(r["tokens_per_s"]),
                     fmt(r["step_s"], ".3f"), fmt(r.get("cpu_s_per_step"), ".3f"), fmt(r["warmup_s"], ".1f"),
                     memory, f"{r['pad_src']:.0%} / {r['pad_tgt']:.0%}", fmt(r["tgt_tokens_per_batch"])])
    if not rows:
        return []
    return ["## Training throughput", "",
            md_table(["model", "config", "precision", "compile", "threads", "batches", "updates", "tok/s", "s/step",
                      "CPU s/step", "warm-up s", "peak MiB", "padding src / tgt", "tgt tokens / batch"], rows), ""]


def machine_limit(report: dict[str, Any], image_prefix: str) -> list[str]:
    runs = [r for r in training_rows(report) if "peak" in r]
    if not runs:
        return []
    rows = []
    for r in runs:
        peak = r["peak"]
        dtype = peak["dtype"] + (" (bf16 emulated)" if r["precision"] != peak["dtype"] else "")
        shapes = "; ".join(f"{name} {'x'.join(map(str, s['shape']))}: {fmt(s['gflops'], '.1f')}"
                           for name, s in peak["shapes"].items())
        square = peak["square"]  # reports from before the spread was kept show the rate alone
        spread = f" ({square['min']:.0f}–{square['gflops']:.0f} over {square['samples']})" if "samples" in square else ""
        rows.append([r["model"], r["config"], peak["threads"], dtype, fmt(r["model_gflops_padded"], ".1f"),
                     fmt(r["model_gflops_real"], ".1f"), fmt(square["gflops"], ".1f") + spread, shapes,
                     f"{fmt(r['mfu_padded'], '.1%')} / {fmt(r['mfu_real'], '.1%')}"])
    size = runs[0]["peak"]["square"]["shape"][0]
    return ["## Against the machine's limit", "",
            "Model FLOP/s: the matmul FLOPs of the measured updates (forward x 3, counted from each batch's shapes: "
            "`experiments/bench/flops.py`) per second of the same wall time as tok/s, over the positions the update "
            "computes (padding included where it is computed; the output layer and the GRU's CPU decoder loop skip it) "
            "and over real tokens only. Peak: torch's matmul rate measured in the same "
            f"worker, same threads and dtype, at a {size}-cubed square (sampled between the timed updates and right "
            "after them: the fastest sample, with the slowest–fastest range and the number of samples, which shows "
            "how busy the machine was) and at the model's own dominant shapes (m x k x n, at the median batch, "
            "fastest of the repeats right after). MFU = model FLOP/s / the fastest square sample: the "
            "share of the machine's matmul rate the training gets; the rest goes to elementwise work, softmax, "
            "layer norm, the optimizer, small matmuls and framework overhead.", "",
            md_table(["model", "config", "threads", "dtype", "model GFLOP/s (padded)", "model GFLOP/s (real tokens)",
                      "peak GFLOP/s (square)", "peak GFLOP/s (model shapes)", "MFU (padded / real)"], rows), ""]


def fast_paths(report: dict[str, Any], image_prefix: str) -> list[str]:
    if not report["fast_paths"]:
        return []
    rows = [[f["fast_path"], f["model"], f.get("off", "–"), f.get("on", "–"),
             fmt(f.get("off_value"), ".1f") if "off_value" in f else "–",
             fmt(f.get("on_value"), ".1f") if "on_value" in f else "–", f.get("unit", ""),
             fmt(f.get("speedup"), ".2f") + ("x" if f.get("speedup") else ""), f.get("note", "")]
            for f in report["fast_paths"]]
    return ["## Fast paths, off and on", "",
            md_table(["fast path", "model", "off", "on", "off", "on", "unit", "speedup", "note"], rows), ""]


def decoding(report: dict[str, Any], image_prefix: str) -> list[str]:
    runs = training_rows(report)
    decoded = [(r["model"], d) for r in runs if "error" not in r for d in r.get("decoding", [])]
    if not decoded:
        return []
    out = ["## Decoding", ""]
    out += [f"- {r['model']}: decoded with {r['decoded_with']}" for r in runs if r.get("decoded_with")]
    out += [""]
    if any(r.get("decoded_with", "").startswith("the bench's model") for r in runs):
        out += ["The bench's own model is barely trained (the base configuration's updates only), so its "
                "outputs tend to run to the length limit (compare the mean output length with the "
                "references'): its times are an upper bound for the same search on a trained model, and its "
                "BLEU is no quality figure. `--decode-run MODEL=RUN` decodes with a trained run instead.", ""]
    rows = [[m, d["search"], d["sentences"], fmt(d["seconds"], ".2f"), fmt(d["sentences_per_s"], ".1f"),
             fmt(d["mean_output_len"], ".1f"), fmt(d["mean_ref_len"], ".1f"), fmt(d.get("bleu"), ".2f"),
             fmt(d.get("same_outputs"), "d")] for m, d in decoded]
    return out + [md_table(["model", "search", "sentences", "seconds", "sentences/s", "mean output length",
                            "mean reference length", "BLEU", "same outputs as the fast path"], rows), ""]


def comparison(report: dict[str, Any], image_prefix: str) -> list[str]:
    if not report["comparison"]:
        return []
    rows = [[c["model"], fmt(c["params"], ","), fmt(c["joeynmt_params"], ","),
             fmt(c["joeynmt_tokens_per_s"]) + ("" if c["joeynmt_source"].startswith("measured") else " (anchor)"),
             fmt(c["joeynmt_step_s"], ".2f"), fmt(c["fp32_tokens_per_s"]), ratio_cell(c["fp32_ratio"]),
             fmt(c["fp32_random_batches_tokens_per_s"]), ratio_cell(c["fp32_random_batches_ratio"]),
             f"{fmt(c['best_tokens_per_s'])} ({c['best_config']})", ratio_cell(c["best_ratio"])]
            for c in report["comparison"]]
    out = ["## Against JoeyNMT", "",
           md_table(["model", "params (ours)", "params (JoeyNMT)", "JoeyNMT tok/s", "JoeyNMT s/step", "ours fp32",
                     "ratio", "ours fp32, random batches", "ratio", "ours best (config)", "ratio"], rows), ""]
    sources = {c["joeynmt_source"].split(" ")[0] for c in report["comparison"]}
    if sources == {"anchor"}:
        out += ["JoeyNMT was not run (`--joeynmt`): the ratios are against the anchor numbers measured on "
                "this project's 2-core CPU machine (shared/peers/joeynmt/README.md).", ""]
    elif sources == {"not"}:
        out += ["JoeyNMT was not run (`--joeynmt`) and there are no anchor numbers for this task: no ratios.", ""]
    joey = report.get("joeynmt") or {}
    for model, j in joey.items():
        if "error" in j:
            out += [f"- JoeyNMT {model}: failed: {j['error']}"]
            continue
        out += [f"- JoeyNMT {model}: {j['steps']} updates, the first {j['skipped_windows']} "
                f"window(s) of {j['log_every']} updates skipped as warm-up, then "
                f"{j['measured_steps']} measured from its own \"Tokens per Sec\" log lines; "
                f"{j['threads']} threads (OMP_NUM_THREADS); peak RSS {fmt(j.get('peak_rss_mb'))} MiB; "
                f"config `{j['config']}`"]
        out += [f"  - {note}" for note in j.get("mapping_notes", [])]
    return out + ([""] if joey else [])


def targets(report: dict[str, Any], image_prefix: str) -> list[str]:
    if not report["targets"]:
        return []
    rows = [[t["target"], fmt(t["value"], t.get("format", ".2f")) + (t["unit"] if t["value"] is not None else ""),
             t.get("verdict") or {True: "yes", False: "**no**", None: "–"}[t["met"]], t.get("against") or ""]
            for t in report["targets"]]
    return ["## Targets", "", md_table(["target", "measured", "met", "against"], rows), ""]


def scaling(report: dict[str, Any], image_prefix: str) -> list[str]:
    if not report["scaling"]:
        return []
    meta = report["meta"]
    rows = [[r["model"], r["batch_tokens"], fmt(r["tokens_per_s"]), fmt(r["step_s"], ".3f")]
            for r in report["scaling"]]
    out = ["## Scaling with the batch budget", "",
           f"Plain configuration (fp32, eager, sorted batches); the {meta['batch_tokens']}-token point is "
           f"the base run above, the others {meta['scaling_warmup']} warm-up + {meta['scaling_steps']} measured "
           "updates.", "", md_table(["model", "batch tokens", "tok/s", "s/step"], rows), ""]
    if report.get("scaling_plot"):
        out += [f"![tokens/s against batch tokens]({image_prefix}{report['scaling_plot']})", ""]
    return out


def time_to_bleu(report: dict[str, Any], image_prefix: str) -> list[str]:
    runs = report.get("time_to_bleu")
    if not runs:
        return []
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([r["model"], r["config"], "–", "–", "–", "–", "–", "–", f"failed: {r['error']}"])
            continue
        tokens = r.get("tokens_to_bleu") if r["reached"] else r.get("tokens")
        rows.append([r["model"], r["config"], fmt(r["threshold"], ".1f"),
                     fmt(r["steps_to_bleu"], "d") if r["reached"] else f"not reached in {r['max_steps']}",
                     "–" if tokens is None else fmt(tokens / 1e6, ".2f") + ("" if r["reached"] else " (all)"),
                     fmt(r["train_s"], ".0f"), fmt(r["wall_s"], ".0f"), fmt(r["best_bleu"], ".2f"),
                     f"validation (greedy, full split) every {r['eval_every']} updates"])
    out = ["## Time to BLEU", "",
           md_table(["model", "config", "BLEU threshold", "updates", "real target tokens (M)", "training s",
                     "wall s (with validation)", "best BLEU", "note"], rows), "",
           f"JoeyNMT's updates carry about {JOEYNMT_TOKENS_PER_UPDATE:.0f} real target tokens each (its unsorted "
           "batches are about half padding), ours about 3.4k: compare the two in tokens as well as in updates.", ""]
    curves = ttb_curves(runs)
    if not curves:
        return out
    steps = sorted({step for curve in curves.values() for step in curve})
    rows = [[step, *(fmt(curve.get(step), ".2f") for curve in curves.values())] for step in steps]
    out += ["Validation BLEU (greedy) by update; JoeyNMT's curve is its `joey_transformer.yaml` run at the same "
            "4096-token batches (shared/peers/joeynmt/README.md), which does not depend on the hardware.", "",
            md_table(["updates", *curves], rows), ""]
    if report.get("ttb_plot"):
        out += [f"![validation BLEU against updates]({image_prefix}{report['ttb_plot']})", ""]
    if report.get("ttb_tokens_plot"):
        out += [f"![validation BLEU against real target tokens]({image_prefix}{report['ttb_tokens_plot']})", ""]
    return out


Section = Callable[[dict[str, Any], str], list[str]]
SECTIONS: dict[str, Section] = {
    "header": header, "training": training, "machine_limit": machine_limit, "fast_paths": fast_paths,
    "decoding": decoding, "comparison": comparison, "targets": targets, "scaling": scaling,
    "time_to_bleu": time_to_bleu, "time_to_quality": time_to_quality, "under_load": under_load,
    "bf16_split": bf16_split, "profiles": profiles}
README_SECTIONS = ("comparison", "targets", "machine_limit", "fast_paths", "under_load", "scaling", "time_to_bleu",
                   "time_to_quality", "bf16_split")


def render_markdown(report: dict[str, Any], sections: tuple[str, ...] = tuple(SECTIONS),
                    image_prefix: str = "") -> str:
    """The report as Markdown: ``sections`` in their order; images linked as ``image_prefix + file name``."""
    return "\n".join(line for name in sections for line in SECTIONS[name](report, image_prefix))


# ---------------------------------------------------------------------------
# files

def jsonable(value: Any) -> Any:
    """NaN and infinities as null (strict JSON), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_report(path: Path) -> dict[str, Any]:
    """A saved report (``--from-json``), or one UserError naming the file and what it lacks."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--from-json {path}: not a readable s2s-bench report ({e})") from None
    missing = REPORT_KEYS - set(report) if isinstance(report, dict) else REPORT_KEYS
    if missing:
        raise UserError(f"--from-json {path}: not a readable s2s-bench report (no {sorted(missing)})")
    return report


def write_report(report: dict[str, Any], name: str, out_dir: Path, readme: Path | None) -> None:
    """NAME.md, NAME.json and the plots in ``out_dir``; the headline tables into ``readme`` when given."""
    report["scaling_plot"] = save_png(scaling_figure(report), out_dir / f"{name}_scaling.png")
    report["ttb_plot"] = save_png(ttb_figure(report), out_dir / f"{name}_curve.png")
    report["ttb_tokens_plot"] = save_png(ttb_figure(report, by="tokens"), out_dir / f"{name}_curve_tokens.png")
    markdown = render_markdown(report)
    write_text(out_dir / f"{name}.md", markdown + "\n")
    write_text(out_dir / f"{name}.json", json.dumps(jsonable(report), indent=2) + "\n")
    print(markdown)
    if readme:
        embed_in_readme(report, readme, name, out_dir)


def embed_in_readme(report: dict[str, Any], readme: Path, name: str, out_dir: Path) -> None:
    """Copy the report's headline sections between ``<!-- table:NAME -->`` markers in ``readme``."""
    from experiments.reporting.embedding import embed

    meta = report["meta"]
    prefix = os.path.relpath(out_dir.resolve(), readme.resolve().parent) + "/"
    provenance = (f"Measured by `{meta['command']}` on {machine(meta)}, torch {meta['torch']}, commit "
                  f"{meta['commit']}, {meta['date']}; the whole report: `{prefix}{name}.md`."
                  + (f" Other work during the run: {other_work.describe(meta['other_work'])}."
                     if meta.get("other_work") else ""))
    body = ("\n" + render_markdown(report, README_SECTIONS, prefix)).replace("\n## ", "\n#### ").strip()
    embed(readme, name, f"# {name}\n\n{provenance}\n\n{body}\n")
