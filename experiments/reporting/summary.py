"""The finding in one table: every task's test metrics for both models, read from the comparison tables' CSVs.

``s2s-tables --out results --summary README.md`` puts it between the README's
``<!-- table:summary -->`` markers. A task is summarised when its table was
built from committed run outputs (``results/runs/<experiment>/``) and has a
``gru`` and a ``transformer`` row: the studies of one model and the early
short-budget tables are left to docs/results.md. Numbers are the tables' own
(best checkpoint by validation, mean ± std over seeds), never typed.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MODELS = ("gru", "transformer")
# Column order of a task's metrics on its main test set (others, e.g. a new metric, follow in the CSV's order).
ORDER = ("bleu", "chrf", "rouge1", "rouge2", "rougeLsum")


def test_metrics(columns: list[str]) -> list[str]:
    """The metrics a table has on its main ``test`` split (``test_<metric>_mean``; other test sets left out)."""
    found = [m.group(1) for c in columns if (m := re.fullmatch(r"test_([A-Za-z0-9]+)_mean", c))]
    return sorted(found, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))


def cell(row: dict[str, str], metric: str) -> str:
    mean, std = float(row[f"test_{metric}_mean"]), float(row[f"test_{metric}_std"])
    return f"{mean:.2f} ± {std:.2f}" if " " in row["seeds"] else f"{mean:.2f}"


def test_set(table: Path) -> str:
    """The upstream name of the table's main test set (``test_2016_flickr``), from its task's config."""
    task = re.search(r"^Task `([^`]+)`", table.read_text(), re.MULTILINE)
    conf = CONF_DIR / "task" / f"{task.group(1)}.yaml" if task else None
    return str(OmegaConf.load(conf).splits.test) if conf and conf.exists() else "test"


def summarise(tables: Path, document: Path) -> str:
    """The summary table of the tables in ``tables``, its links relative to ``document``; '' when none qualifies."""
    rows = []
    for experiment in sorted(p.name for p in (tables / "runs").glob("*") if p.is_dir()):
        path = tables / f"{experiment}.csv"
        if not path.exists():
            continue
        with path.open() as f:
            reader = csv.DictReader(f)
            best = {r["model"]: r for r in reader if r.get("checkpoint") == "best"}
            columns = list(reader.fieldnames or [])
        if set(best) != set(MODELS):
            continue
        link = Path(os.path.relpath(tables.resolve(), document.resolve().parent)) / f"{experiment}.md"
        seeds = {m: best[m]["seeds"] for m in MODELS}
        seed_text = seeds["gru"] if len(set(seeds.values())) == 1 else "; ".join(f"{m} {s}" for m, s in seeds.items())
        metrics = test_metrics(columns)
        rows += [(metrics[0] != "bleu", experiment, n,
                  [f"`{experiment}`", f"{test_set(tables / f'{experiment}.md')} {metric}",
                   *(cell(best[m], metric) for m in MODELS), seed_text, f"[table]({link.as_posix()})"])
                 for n, metric in enumerate(metrics)]
    rows = [row for *_, row in sorted(rows)]  # translation first, then summarization; by name
    if not rows:
        return ""
    header = ["experiment", "test set and metric", "GRU", "Transformer", "seeds", "full table"]
    return ("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
            + "".join("| " + " | ".join(r) + " |\n" for r in rows)
            + "\nThe best checkpoint by validation; mean ± std over the seeds listed (one seed: no std). "
              f"Written by `s2s-tables --out {tables.as_posix()} --summary {document.as_posix()}` from the tables' "
              "CSVs.\n")
