"""Sample efficiency across batch sizes: one model's validation metric against the real target tokens it trained on.

``s2s-tables`` compares the two models at one batch size. This answers the
other question: does a model need more real target tokens than a peer because
of its batch size? (JoeyNMT's Multi30k Transformer reaches 38.9 validation
BLEU after about 4.3M real target tokens in unsorted batches of about 1.7k;
ours carry about 3.4k.) It reads the validation rows of the runs below the
folders given, finished or still running (any folder with ``metrics.jsonl``
and ``config.yaml``), groups them by batch size, and writes the metric at
equal real target tokens (mean over seeds), where each batch size's seed-mean
curve first reaches ``--threshold``, and the curves against updates, tokens
and hours.

    python -m experiments.reporting.sample_efficiency results/runs/multi30k_de_en results/runs/multi30k_de_en_2k \\
        --model transformer --threshold 38.9 --out results --readme docs/performance.md

Without ``--out`` the report goes to ``outputs/sample_efficiency/``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from experiments.reporting import curves
from experiments.core.atomic import write_text
from experiments.core.outdirs import default_out, out_help, say_wrote
from experiments.core.errors import UserError
from experiments.reporting.embedding import embed
from experiments.reporting.tables import markdown_table

Curves = dict[str, list[list[dict[str, Any]]]]  # label -> one list of validation rows per seed


def load_curves(roots: list[Path], model: str, metric: str) -> tuple[Curves, list[str]]:
    """``model``'s validation rows below ``roots``, by batch size (labels ``"<n>-token batches"``, smallest
    first), and the run folders they came from."""
    found: dict[int, list[tuple[int, list[dict[str, Any]]]]] = defaultdict(list)
    folders = []
    for root in roots:
        if not root.exists():
            raise UserError(f"{root} does not exist: pass folders holding run folders (metrics.jsonl + config.yaml)")
        for path in sorted(root.rglob("metrics.jsonl")):
            config = path.with_name("config.yaml")
            if not config.exists():
                continue
            cfg = OmegaConf.load(config)
            if cfg.model.name != model:
                continue
            rows = [r for r in map(json.loads, path.read_text().splitlines())
                    if r.get("event") == "valid" and metric in r and "tokens" in r]
            if rows:
                found[int(cfg.trainer.batch_tokens)].append((int(cfg.seed), rows))
                folders.append(str(path.parent))
    if not found:
        raise UserError(f"no {model} run with validation {metric} below {[str(r) for r in roots]}")
    return {f"{size}-token batches": [rows for _, rows in sorted(seeds, key=lambda s: s[0])]
            for size, seeds in sorted(found.items())}, folders


def seed_mean(seeds: list[list[dict[str, Any]]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' mean curve at every validation's token count within the range all seeds cover: (x, mean)."""
    xs = np.unique(np.concatenate([[r["tokens"] for r in rows] for rows in seeds]).astype(float))
    xs = xs[(xs >= max(rows[0]["tokens"] for rows in seeds)) & (xs <= min(rows[-1]["tokens"] for rows in seeds))]
    return xs, curves.on_grid(seeds, "tokens", metric, xs).mean(axis=0)


def first_reach(seeds: list[list[dict[str, Any]]], metric: str, threshold: float) -> float | None:
    """Real target tokens at which the seeds' mean curve first reaches ``threshold``, linearly interpolated
    between validations over the range every seed covers; None if it never does."""
    xs, mean = seed_mean(seeds, metric)
    above = np.nonzero(mean >= threshold)[0]
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], mean[i - 1], mean[i]
    return float(x0 + (threshold - y0) * (x1 - x0) / (y1 - y0))


def summary_rows(by_size: Curves, metric: str, threshold: float | None) -> list[list[str]]:
    """Per batch size: seeds, real target tokens per update, tokens covered by every seed, the best seed-mean
    validation value and where, and the tokens to the threshold."""
    rows = []
    for label, seeds in by_size.items():
        covered = min(rows_[-1]["tokens"] for rows_ in seeds)
        xs, mean = seed_mean(seeds, metric)
        best = int(np.argmax(mean)) if mean.size else None
        per_update = np.mean([rows_[-1]["tokens"] / rows_[-1]["step"] for rows_ in seeds])
        row = [label, str(len(seeds)), f"{per_update:,.0f}", f"{covered / 1e6:.2f}M",
               f"{mean[best]:.2f} at {xs[best] / 1e6:.2f}M" if best is not None else "–"]
        if threshold is not None:
            reach = first_reach(seeds, metric, threshold)
            row.append(f"{reach / 1e6:.2f}M" if reach is not None else f"not reached in {covered / 1e6:.2f}M")
        rows.append(row)
    return rows


def report(by_size: Curves, model: str, metric: str, threshold: float | None, folders: list[str],
           command: str, plot_name: str) -> str:
    columns = ["batches", "seeds", "real target tokens / update", "tokens every seed reached",
               f"best mean validation {metric}"] + ([f"tokens to {metric} {threshold:g}"] if threshold else [])
    text = (f"# {plot_name}\n\n"
            f"Produced by `{command}` from {len(folders)} run folder(s). {model}: validation {metric} (greedy) "
            "against real (non-pad) target tokens, mean over seeds, linearly interpolated between validations.\n\n"
            + markdown_table(columns, summary_rows(by_size, metric, threshold)))
    matched = curves.matched_table(by_size, metric, points=6)
    if matched:
        text += (f"\nValidation {metric} at equal real target tokens (millions), mean over seeds:\n\n"
                 + markdown_table(["tokens (M)", *by_size], matched))
    return text + f"\n![validation {metric} against updates, tokens and hours]({plot_name}.png)\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.reporting.sample_efficiency",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run folders (searched recursively)")
    parser.add_argument("--model", default="transformer", help="model.name of the runs to compare")
    parser.add_argument("--metric", default="bleu", help="validation metric (a key of metrics.jsonl)")
    parser.add_argument("--threshold", type=float, help="report the tokens at which each curve first reaches it")
    parser.add_argument("--out", type=Path, default=default_out("sample_efficiency"),
                        help=out_help("sample_efficiency"))
    parser.add_argument("--name", default="sample_efficiency", help="file name of the report and its plot")
    parser.add_argument("--readme", type=Path, help="also copy the report into this file, between "
                        "<!-- table:NAME --> and <!-- /table:NAME -->")
    args = parser.parse_args(argv)
    try:
        by_size, folders = load_curves(args.roots, args.model, args.metric)
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    command = ("python -m experiments.reporting.sample_efficiency " + " ".join(map(str, args.roots))
               + f" --model {args.model} --metric {args.metric}"
               + (f" --threshold {args.threshold:g}" if args.threshold else ""))
    text = report(by_size, args.model, args.metric, args.threshold, folders, command, args.name)
    args.out.mkdir(parents=True, exist_ok=True)
    curves.plot(by_size, args.metric, f"{args.model}: validation {args.metric} by batch size", "",
                args.out / f"{args.name}.png", threshold=args.threshold)
    path = args.out / f"{args.name}.md"
    write_text(path, text)
    say_wrote(args.out, [path, f"{args.name}.png"])
    if args.readme:  # the plot's link, relative to the document it is copied into
        plot = Path(os.path.relpath(args.out.resolve(), args.readme.resolve().parent)) / f"{args.name}.png"
        embed(args.readme, args.name, text.replace(f"]({args.name}.png)", f"]({plot.as_posix()})"))


if __name__ == "__main__":
    main()
