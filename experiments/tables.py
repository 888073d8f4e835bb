"""``s2s-tables``: collect run folders into the comparison tables under ``results/``.

    s2s-tables multirun/multi30k_de_en --out results

Every ``results.json`` below the given folders is one run. Runs are grouped by
experiment preset; for each, the table gives per model the test metric mean ±
std over seeds, the parameter count, steps, training time and tokens/s, the
hardware and commit, and the paired bootstrap test between the two models on
each seed's test outputs. A length analysis (metric by source-length bucket,
table and plot) answers the classic RNN-vs-Transformer question. Nothing in
the written files is typed by hand: every number is read from the run folders.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from experiments import metrics  # noqa: E402
from experiments.atomic import atomic_path, write_text  # noqa: E402
from experiments.config import validate  # noqa: E402
from experiments.data import TaskData  # noqa: E402
from experiments.errors import UserError  # noqa: E402

METRICS = {"translation": ["bleu", "chrf"], "summarization": ["rouge1", "rouge2", "rougeLsum"]}
LENGTH_EDGES = {"translation": (8, 12, 16, 20, 25), "summarization": (50, 100, 150, 200, 300)}


def find_runs(roots: list[Path]) -> list[dict[str, Any]]:
    runs = []
    for root in roots:
        if not root.exists():
            raise UserError(f"{root} does not exist: pass the folder(s) holding the runs (e.g. multirun/<name>)")
        for path in sorted(root.rglob("results.json")):
            result = json.loads(path.read_text())
            result["run_dir"] = str(path.parent)
            runs.append(result)
    if not runs:
        raise UserError(f"no results.json under {[str(r) for r in roots]}: have the runs finished?")
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_data(run_dir: str) -> TaskData:
    cfg = validate(OmegaConf.load(Path(run_dir) / "config.yaml"))
    return TaskData(cfg.task, cfg.cache_dir, tokenizer_dir=Path(run_dir) / "tokenizer")


def hypotheses(run: dict[str, Any], split: str) -> list[str]:
    return (Path(run["run_dir"]) / "hyps" / f"{split}-beam{run['beam_size']}.txt").read_text().split("\n")[:-1]


def significance(kind: str, by_model: dict[str, list[dict]], data: TaskData) -> list[dict[str, Any]]:
    """Paired bootstrap between the first two models, for every seed both have."""
    models = sorted(by_model)
    if len(models) != 2:
        return []
    a, b = ({r["seed"]: r for r in by_model[m]} for m in models)
    refs = data.split("test").references()
    rows = []
    for seed in sorted(set(a) & set(b)):
        test = metrics.paired_bootstrap(kind, hypotheses(a[seed], "test"), hypotheses(b[seed], "test"), refs)
        rows.append({"seed": seed, "model_a": models[0], "model_b": models[1], "score_a": test["a"],
                     "score_b": test["b"], "delta": test["delta"], "p_value": test["p_value"]})
    return rows


def length_analysis(kind: str, by_model: dict[str, list[dict]], data: TaskData) -> dict[str, list[dict]]:
    """Test metric per source-length bucket (words), averaged over each model's seeds."""
    split = data.split("test")
    lengths = [len(s.split()) for s in split.sources()]
    refs = split.references()
    out = {}
    for model, runs in sorted(by_model.items()):
        per_seed = [metrics.length_buckets(lengths, kind, hypotheses(r, "test"), refs, edges=LENGTH_EDGES[kind])
                    for r in runs]
        out[model] = [
            {**bucket, "score": statistics.fmean(s[i]["score"] for s in per_seed) if bucket["score"] is not None else None}
            for i, bucket in enumerate(per_seed[0])
        ]
    return out


def write_table(name: str, runs: list[dict[str, Any]], out: Path, command: str) -> Path:
    kind = runs[0]["kind"]
    by_model: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_model[run["model"]].append(run)
    test_splits = list(runs[0]["test"])
    metric_keys = [(split, m) for split in test_splits for m in METRICS[kind]]
    summary = []  # numbers, for the CSV
    for model, group in sorted(by_model.items()):
        row: dict[str, Any] = {
            "model": model,
            "params": group[0]["params"],
            "seeds": " ".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"])),
            "steps": statistics.fmean(r["steps"] for r in group),
            "train_minutes": statistics.fmean(r["train_seconds"] / 60 for r in group),
            "tokens_per_s": statistics.fmean(r["train_tokens_per_s"] for r in group),
        }
        for split, m in metric_keys:
            row[f"{split}_{m}_mean"], row[f"{split}_{m}_std"] = mean_std([r["test"][split][m] for r in group])
        summary.append(row)
    columns = ["model", "params", "seeds", "steps", "train min", "tokens/s"] + [f"{s} {m}" for s, m in metric_keys]
    rows = [
        {"model": r["model"], "params": f"{r['params']:,}", "seeds": r["seeds"], "steps": f"{r['steps']:.0f}",
         "train min": f"{r['train_minutes']:.1f}", "tokens/s": f"{r['tokens_per_s']:,.0f}",
         **{f"{s} {m}": f"{r[f'{s}_{m}_mean']:.2f}" + (f" ± {r[f'{s}_{m}_std']:.2f}" if " " in r["seeds"] else "")
            for s, m in metric_keys}}
        for r in summary
    ]

    data = run_data(runs[0]["run_dir"])
    tests = significance(kind, by_model, data)
    lengths = length_analysis(kind, by_model, data)
    first = runs[0]
    signature = first["test"]["test"].get("bleu_signature") or first["test"]["test"].get("rouge_signature")
    hardware = sorted({r["hardware"].get("gpu") or f"{r['hardware']['cpu']} ({r['hardware']['cores']} cores)" for r in runs})

    md = io.StringIO()
    md.write(f"# {name}\n\n")
    md.write(f"Task `{first['task']}` ({kind}); test sets: {', '.join(test_splits)}; "
             f"beam {first['beam_size']}; best checkpoint by validation {metrics.PRIMARY[kind]}.\n")
    md.write(f"Metric signature: `{signature}`.\n")
    md.write(f"Hardware: {'; '.join(hardware)}; precision {first['precision']}; "
             f"commits {', '.join(sorted({r['commit'] for r in runs}))}.\n")
    md.write(f"Produced by `{command}` from {len(runs)} run folders; mean ± std over seeds where there are several.\n\n")
    md.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for row in rows:
        md.write("| " + " | ".join(str(row[c]) for c in columns) + " |\n")
    if tests:
        md.write(f"\nPaired bootstrap on `test` ({metrics.PRIMARY[kind]}, 1000 resamples; p = share of "
                 "resamples where the overall winner does not win):\n\n| seed | " + f"{tests[0]['model_a']} | {tests[0]['model_b']} "
                 "| delta | p |\n|---|---|---|---|---|\n")
        for t in tests:
            md.write(f"| {t['seed']} | {t['score_a']:.2f} | {t['score_b']:.2f} | {t['delta']:+.2f} | {t['p_value']:.3f} |\n")
    md.write(f"\nTest {metrics.PRIMARY[kind]} by source length (words), mean over seeds "
             f"(plot: `{name}_length.png`):\n\n| bucket | n | " + " | ".join(lengths) + " |\n|---|---|"
             + "---|" * len(lengths) + "\n")
    some = next(iter(lengths.values()))
    for i, bucket in enumerate(some):
        scores = [lengths[m][i]["score"] for m in lengths]
        md.write(f"| {bucket['bucket']} | {bucket['count']} | "
                 + " | ".join("–" if s is None else f"{s:.2f}" for s in scores) + " |\n")

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.md", md.getvalue())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(summary[0]))
    writer.writeheader()
    writer.writerows(summary)
    write_text(out / f"{name}.csv", buffer.getvalue())
    plot_lengths(name, kind, lengths, out / f"{name}_length.png")
    return out / f"{name}.md"


def plot_lengths(name: str, kind: str, lengths: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for model, buckets in lengths.items():
        xs = [b["bucket"] for b in buckets if b["score"] is not None]
        ax.plot(xs, [b["score"] for b in buckets if b["score"] is not None], marker="o", label=model)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel(f"test {metrics.PRIMARY[kind]}")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def embed(readme: Path, name: str, table: str) -> None:
    """Replace the text between ``<!-- table:name -->`` and ``<!-- /table:name -->`` with ``table``."""
    text = readme.read_text()
    start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    if start not in text or end not in text:
        print(f"note: {readme} has no {start} ... {end} markers; add them where the table belongs to embed it")
        return
    body = table.split("\n", 2)[2]  # without the "# name" heading
    head, rest = text.split(start, 1)
    write_text(readme, head + start + "\n" + body.rstrip() + "\n" + end + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--name", help="table name (default: the runs' experiment preset)")
    parser.add_argument("--readme", type=Path, help="also copy each table into this file, between the markers "
                        "<!-- table:NAME --> and <!-- /table:NAME --> (so the README never holds a hand-typed number)")
    args = parser.parse_args(argv)
    command = "s2s-tables " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        groups: dict[str, list[dict]] = defaultdict(list)
        for run in find_runs(args.roots):
            groups[args.name or run.get("experiment") or run["task"]].append(run)
        for name, runs in groups.items():
            table = write_table(name, runs, args.out, command)
            print(f"wrote {table} ({len(runs)} runs)")
            if args.readme:
                embed(args.readme, name, table.read_text())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
