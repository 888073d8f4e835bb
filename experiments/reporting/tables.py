"""``s2s-tables``: the comparison tables under ``results/``, rebuilt from run outputs alone.

    s2s-tables results/runs/multi30k_de_en     # the committed table again, into outputs/tables/: diff it
    s2s-tables ~/s2s-runs/multi30k_de_en --export results/runs --out results --readme docs/results.md

Tables go to ``outputs/tables/`` unless ``--out`` says otherwise: ``--out
results`` replaces the committed table (and ``--readme docs/results.md`` the
copy between its markers there), which a plain run in a clone never does.

Every ``results.json`` below the given folders is one run. ``--export DIR``
first copies each run's summary, events, config and gzipped test outputs into
``DIR/<experiment>/<model>/seed<k>/`` (experiments/training/runs.py) and builds the
tables from ``DIR/<experiment>/`` as a whole (the runs just copied and those
exported before, e.g. the seeds of an earlier session), so a committed table
is always what its committed outputs give. Per table: each model's test metrics (mean ± std over seeds) for
the best checkpoint and, where the runs averaged, the averaged one; extractive
reference rows for summarization; the paired bootstrap per seed, of each model
against the first (in a table of several presets: experiments/reporting/studies.py); the metric by source-length bucket with bucket sizes and 95%
intervals; and compute-matched validation curves (experiments/reporting/curves.py).
Nothing in the written files is typed by hand.

A summarization task with extra references (``task.ref_fields``: AESLC's
three annotated subjects) is scored two ways, side by side: against its target
field alone (one reference: how published results on AESLC are scored), first,
and against the best of all its references (per sentence and ROUGE type, the
highest F1: what the runs record and select checkpoints by). The models' rows
under the first are re-scored from their outputs.

Runs of several presets make one table with ``--name``; each row then names
its preset, so a recipe variant sits beside the models it is compared with:

    s2s-tables results/runs/multi30k_de_en results/runs/multi30k_de_en_dropout --name multi30k_de_en_dropout_study
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from experiments.reporting import baselines, buckets, curves, studies, summary
from experiments.reporting.embedding import embed
from experiments.evaluation import lengths, metrics
from experiments.core.atomic import write_text
from experiments.core.errors import UserError
from experiments.core.outdirs import default_out, out_help, say_wrote
from experiments.training.runs import config_of, export, find_runs, hypotheses, task_of, texts, validation_setting

METRICS = {"translation": ["bleu", "chrf"], "summarization": ["rouge1", "rouge2", "rougeLsum"]}
LENGTH_EDGES = {"translation": (8, 12, 16, 20, 25), "summarization": (50, 100, 150, 200, 300)}


@dataclass(frozen=True)
class Scoring:
    """One way to score a test split: against every reference (what the runs recorded), or against the target
    field alone (``single``: each sentence's first reference). ``label`` names it in the tables ("" where a task
    is scored one way only)."""

    label: str
    single: bool = False

    def refs(self, refs: metrics.Refs) -> metrics.Refs:
        return [r[:1] for r in refs] if self.single else refs

    @property
    def suffix(self) -> str:
        """After a metric's name: `` (subject)``."""
        return f" ({self.label})" if self.label else ""


def scorings(task: Any, kind: str, refs: metrics.Refs) -> list[Scoring]:
    """The test scorings of a task, the single-reference one first; ``refs`` of its test split, to count them."""
    if kind != "summarization" or not task.ref_fields:
        return [Scoring("")]
    return [Scoring(task.tgt_field, single=True), Scoring(f"{max(map(len, refs))} refs")]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def significance(kind: str, by_model: dict[str, list[dict]], refs: metrics.Refs,
                 ways: list[Scoring], compared: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """sacreBLEU's paired bootstrap of each ``compared`` pair of rows (studies.pairs), best checkpoints, for
    every seed both have, under every scoring."""
    tests = []
    for first, other in compared:
        a = {r["seed"]: r for r in by_model[first]}
        b = {r["seed"]: r for r in by_model[other]}
        for seed in sorted(set(a) & set(b)):
            each = [metrics.paired_bootstrap(kind, hypotheses(a[seed], "test", expected=len(refs)),
                                             hypotheses(b[seed], "test", expected=len(refs)),
                                             way.refs(refs)) for way in ways]
            test = {**each[0], "metrics": {f"{metric}{way.suffix}": result for way, t in zip(ways, each)
                                           for metric, result in t["metrics"].items()}}  # rouge_mean (subject)
            tests.append({"seed": seed, "model_a": first, "model_b": other, "test": test})
    return tests


def significance_text(tests: list[dict[str, Any]]) -> str:
    """The paired tests as tables, one per pair of rows compared, with the test, its size and every metric's
    signature named."""
    first = tests[0]["test"]
    baselines = list(dict.fromkeys(t["model_a"] for t in tests))
    baseline = f"baseline {baselines[0]}" if len(baselines) == 1 else "each table's baseline in its left column"
    text = (f"\nPaired bootstrap on `test`: {first['test']}, {first['n_samples']} resamples of the "
            f"{first['sentences']} sentences, seed {first['seed']}, {baseline}; score (bootstrap mean ± 95% interval); p = (1 + "
            f"#{{resamples k: |Δ_k| − mean |Δ_k| > |Δ|}}) / {first['n_samples'] + 1}, two-sided; its floor, "
            f"1/{first['n_samples'] + 1}, is also what identical outputs get:\n")
    cell = "{:.2f} ({:.2f} ± {:.2f})".format
    for a, b in dict.fromkeys((t["model_a"], t["model_b"]) for t in tests):
        text += "\n" + markdown_table(["seed", "metric", a, b, f"{a} − {b}", "p"], [
            [str(t["seed"]), name, cell(r["a"], r["a_mean"], r["a_ci"]), cell(r["b"], r["b_mean"], r["b_ci"]),
             f"{r['delta']:+.2f}", f"{r['p_value']:.4f}"]
            for t in tests if (t["model_a"], t["model_b"]) == (a, b) for name, r in t["test"]["metrics"].items()])
    return text + "\nTest signatures: " + "; ".join(f"{name} `{r['signature']}`"
                                                  for name, r in first["metrics"].items()) + ".\n"


def column(split: str, metric: str, way: Scoring) -> str:
    """A metric's key in the CSV: ``test_rouge1``, and ``test_rouge1_subject`` under a single-reference scoring."""
    return f"{split}_{metric}" + (f"_{way.label}" if way.single else "")


def model_rows(kind: str, by_model: dict[str, list[dict]], metric_keys: list[tuple[str, str, Scoring]],
               refs: dict[str, metrics.Refs]) -> list[dict[str, Any]]:
    """One summary row per model and checkpoint kind (best; averaged where every seed averaged). The recorded
    scoring comes from each run's results, a single-reference one from re-scoring its outputs against ``refs``
    (by split)."""
    summary = []
    for model, group in sorted(by_model.items()):
        kinds = [("best", False)]
        if all(r.get("averaged") for r in group):
            how = group[0]["averaged"]
            kinds.append((f"average of {how['by']} {how['n']}", True))
        for checkpoint, averaged in kinds:
            recorded = [(r["averaged"] if averaged else r)["test"] for r in group]  # per run: split -> metrics
            rescored = {(split, way): [metrics.task_metrics(kind, hypotheses(r, split, averaged), way.refs(refs[split]))
                                       for r in group]
                        for split, way in dict.fromkeys((s, w) for s, _, w in metric_keys if w.single)}

            row: dict[str, Any] = {
                "model": model, "checkpoint": checkpoint, "params": group[0]["params"],
                "seeds": " ".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"])),
                "steps": statistics.fmean(r["steps"] for r in group),
                "best_step": statistics.fmean(r["best_step"] for r in group),
                "train_hours": statistics.fmean(r["train_seconds"] / 3600 for r in group),
                "tokens_per_s": statistics.fmean(r["train_tokens_per_s"] for r in group),
            }
            row["valid_mean"], row["valid_std"] = mean_std([(r["averaged"] if averaged else r)
                                                            [f"valid_{metrics.PRIMARY[kind]}"] for r in group])
            row["test_words"] = statistics.fmean(mean_words(hypotheses(r, "test", averaged)) for r in group)
            for split, m, way in metric_keys:
                per_run = rescored[split, way] if way.single else [tests[split] for tests in recorded]
                key = column(split, m, way)
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std([scores[m] for scores in per_run])
            summary.append(row)
    return summary


def baseline_rows(task: Any, kind: str, metric_keys: list[tuple[str, str, Scoring]]) -> list[dict[str, Any]]:
    """The task's extractive reference rows, scored on every test split, every way, by the models' metric code."""
    if kind != "summarization":
        return []
    _, train_refs = texts(task, "train")
    train_targets = [r[0] for r in train_refs]
    rows = []
    for name, summarise in baselines.baselines(task.name, train_targets).items():
        row: dict[str, Any] = {"model": name, "checkpoint": "extractive", "params": 0, "seeds": "",
                               "steps": 0, "best_step": 0, "train_hours": 0.0, "tokens_per_s": 0.0,
                               "test_words": mean_words([summarise(s) for s in texts(task, "test")[0]])}
        for split in sorted({s for s, _, _ in metric_keys}):
            sources, refs = texts(task, split)
            summaries = [summarise(s) for s in sources]
            for way in dict.fromkeys(w for s, _, w in metric_keys if s == split):
                scores = metrics.task_metrics(kind, summaries, way.refs(refs))
                for s, m, w in metric_keys:
                    if (s, w) == (split, way):
                        row[f"{column(s, m, w)}_mean"], row[f"{column(s, m, w)}_std"] = scores[m], 0.0
        rows.append(row)
    return rows


def mean_words(texts: list[str]) -> float:
    """Mean whitespace-separated words per text: how long a system's outputs are (ROUGE and BLEU's brevity
    penalty both depend on it)."""
    return statistics.fmean(len(t.split()) for t in texts) if texts else 0.0


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    return ("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            + "".join("| " + " | ".join(r) + " |\n" for r in rows))


def write_table(name: str, runs: list[dict[str, Any]], out: Path, regenerate: str) -> Path:
    kind = runs[0]["kind"]
    primary = metrics.PRIMARY[kind]
    by_model: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if "test" not in run["test"]:
            raise UserError(f"{run['run_dir']}/results.json has no scores of the test split: a search trial, or a "
                            "run with trainer.test_after_training=false; table runs that tested their best checkpoint")
        twin = next((r for r in by_model[run["model"]] if r["seed"] == run["seed"]), None)
        if twin:
            raise UserError(f"table {name!r} has two {run['model']} runs of seed {run['seed']}: {twin['run_dir']} and "
                            f"{run['run_dir']}; table them apart (give the folders separately, or --name), or move "
                            "one away")
        by_model[run["model"]].append(run)
    task = task_of(runs[0])
    test_splits = list(runs[0]["test"])
    split_refs = {split: texts(task, split)[1] for split in test_splits}
    ways = scorings(task, kind, split_refs["test"])
    metric_keys = [(split, m, way) for split in test_splits for way in ways for m in METRICS[kind]]
    summary = model_rows(kind, by_model, metric_keys, split_refs) + baseline_rows(task, kind, metric_keys)
    columns = ["model", "checkpoint", "params", "seeds", "updates", "best at", "train h", f"valid {primary}",
               "test words"] + [f"{s} {m}{w.suffix}" for s, m, w in metric_keys]
    rows = [[r["model"], r["checkpoint"], f"{r['params']:,}" if r["params"] else "–", r["seeds"] or "–",
             f"{r['steps']:.0f}" if r["steps"] else "–", f"{r['best_step']:.0f}" if r["steps"] else "–",
             f"{r['train_hours']:.2f}" if r["steps"] else "–",
             f"{r['valid_mean']:.2f}" + (f" ± {r['valid_std']:.2f}" if " " in r["seeds"] else "") if r["steps"] else "–",
             f"{r['test_words']:.1f}"]
            + [f"{r[f'{column(s, m, w)}_mean']:.2f}"
               + (f" ± {r[f'{column(s, m, w)}_std']:.2f}" if " " in r["seeds"] else "")
               for s, m, w in metric_keys] for r in summary]

    sources, refs = texts(task, "test")
    tests = significance(kind, by_model, refs, ways, studies.pairs(runs))
    by_length = {model: buckets.by_length(kind, [len(s.split()) for s in sources],
                                          [hypotheses(r, "test", expected=len(refs)) for r in group], refs,
                                          LENGTH_EDGES[kind])
                 for model, group in sorted(by_model.items())}
    by_curve = curves.curves(runs, primary)
    first = runs[0]
    signatures = "; ".join(f"{key.removesuffix('_signature')} `{value}`"
                           for key, value in first["test"]["test"].items() if key.endswith("_signature"))
    hardware = "; ".join(sorted({r["hardware"].get("gpu") or f"{r['hardware']['cpu']} ({r['hardware']['cores']} cores)"
                                 for r in runs}))

    md = io.StringIO()
    md.write(f"# {name}\n\n")
    md.write(f"Task `{first['task']}` ({kind}); test sets: {', '.join(test_splits)}; beam {first['beam_size']}; "
             f"checkpoint: the best by validation {primary} (column `valid {primary}`: "
             f"{'; '.join(sorted({validation_setting(r) for r in runs}))})"
             + (", and the average of the kept snapshots (rows marked)" if any(r.get("averaged") for r in runs) else "")
             + ".\n")
    md.write(f"Column `test words`: mean words per output on `test` (whitespace-separated; the references "
             f"average {mean_words([r[0] for r in refs]):.1f}).\n")
    if any(r.get("length_choice") for r in runs):
        md.write(lengths.choice_text(runs, primary))
    md.write(f"Metric signatures: {signatures}.\n")
    md.write(f"Hardware: {hardware}; precision {', '.join(sorted({r['precision'] for r in runs}))}; "
             f"commits {', '.join(sorted({r['commit'] for r in runs}))}.\n")
    md.write(f"{len(runs)} runs; mean ± std over seeds where there are several. "
             f"Regenerate: `{regenerate}`.\n\n")
    md.write(markdown_table(columns, rows))
    if kind == "summarization":
        md.write("\nExtractive rows copy parts of the source (experiments/reporting/baselines.py), scored by the same code.\n")
    if len(ways) > 1:
        single, every = ways
        md.write(f"Scored two ways: ({single.label}) against the `{task.tgt_field}` field alone, one reference, as "
                 f"published results on the dataset are scored; ({every.label}) against the best of the "
                 f"`{task.tgt_field}` and the `{'`, `'.join(task.ref_fields)}` (per sentence and ROUGE type, the "
                 f"highest F1), what the runs record and select checkpoints by on validation. The length buckets "
                 f"and the validation curves below are scored the latter way.\n")
    if tests:
        md.write(significance_text(tests))
    md.write(f"\nTest {primary}{ways[-1].suffix} by source length (words), mean over seeds, [95% bootstrap interval] "
             f"(plot: `{name}_length.png`):\n\n")
    some = next(iter(by_length.values()))
    md.write(markdown_table(["bucket", "n"] + list(by_length), [
        [b["bucket"], str(b["count"])] + ["–" if by_length[m][i]["score"] is None else
                                          f"{by_length[m][i]['score']:.2f} [{by_length[m][i]['low']:.1f}, "
                                          f"{by_length[m][i]['high']:.1f}]" for m in by_length]
        for i, b in enumerate(some)]))
    matched = curves.matched_table(by_curve, primary)
    if matched:
        md.write(f"\nValidation {primary} (greedy) at equal real target tokens, mean over seeds, interpolated "
                 f"between validations (plot against updates, tokens and hours: `{name}_curves.png`):\n\n")
        md.write(markdown_table(["target tokens (M)"] + list(by_curve), matched))

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.md", md.getvalue())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(summary[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    write_text(out / f"{name}.csv", buffer.getvalue())
    budget = (f"{statistics.fmean(r['steps'] for r in runs):.0f} updates of {task_budget(first)}"  # one budget, or a study's
              if len({(r["steps"], task_budget(r)) for r in runs}) == 1 else "each row's preset sets its updates and batches")
    buckets.plot_lengths(f"{name}: test {primary} by source length ({budget}, beam {first['beam_size']})", kind, by_length,
                 out / f"{name}_length.png")
    if by_curve:
        curves.plot(by_curve, primary, f"{name}: validation {primary} (greedy, {task.splits.valid}) at equal compute; "
                    f"{budget}", hardware,
                    out / f"{name}_curves.png")
    return out / f"{name}.md"


def task_budget(run: dict[str, Any]) -> str:
    cfg = config_of(run)
    return f"{cfg.trainer.batch_tokens}-token batches"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-tables", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("roots", nargs="*", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=default_out("tables"), help=out_help("tables"))
    parser.add_argument("--summary", type=Path, metavar="FILE",
                        help="also write the summary of every task's table in --out (both models, mean ± std) into "
                        "FILE between <!-- table:summary --> markers: s2s-tables --out results --summary README.md")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="copy each run's outputs to DIR/<experiment>/<model>/seed<k> and tabulate that copy")
    parser.add_argument("--name", help="table name (default: the runs' experiment preset)")
    parser.add_argument("--readme", type=Path, help="also copy each table into this file (docs/results.md), between "
                        "the markers <!-- table:NAME --> and <!-- /table:NAME --> (so no document holds a hand-typed "
                        "number)")
    args = parser.parse_args(argv)
    if not args.roots and not args.summary:
        parser.error("give the folders holding run folders (or --summary FILE alone)")
    try:
        if args.readme and not args.readme.is_file():
            raise UserError(f"--readme {args.readme}: no such file; name the README that holds the table markers")
        if args.roots:
            tabulate(args)
        if args.summary:
            text = summary.summarise(args.out, args.summary)
            if not text:
                raise UserError(f"{args.out} has no comparison table of both models built from {args.out}/runs: "
                                "--out results summarises the committed tables")
            embed(args.summary, "summary", "# summary\n\n" + text)
            print(f"wrote the summary of {args.out}/ into {args.summary}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def tabulate(args: argparse.Namespace) -> None:
    """Each table of the runs below ``args.roots`` (exported first with ``--export``), and its copy in --readme."""
    found = find_runs(args.roots)
    if args.export:  # tabulate everything the export holds for these experiments: earlier seeds too
        experiments = sorted({export(run, args.export).parents[1] for run in found})
        found = find_runs(experiments)
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in found:
        groups[args.name or run.get("experiment") or run["task"]].append(run)
    for name, runs in groups.items():
        tasks = sorted({run["task"] for run in runs})
        if len(tasks) > 1:
            raise UserError(f"table {name!r} would mix the tasks {tasks}: one table compares runs on one task; "
                            "give the folders of one task")
        source = str(args.export / name) if args.export else " ".join(map(str, args.roots))
        regenerate = f"s2s-tables {source}" + (f" --name {args.name}" if args.name else "")  # any --out
        table = write_table(name, studies.by_preset(runs), args.out, regenerate)
        written = [f"{name}{end}" for end in (".md", ".csv", "_length.png", "_curves.png")]
        say_wrote(args.out, [f for f in written if (args.out / f).exists()])
        print(f"table {name}: {len(runs)} runs")
        if args.readme:
            embed(args.readme, name, table.read_text())


if __name__ == "__main__":
    main()
