"""Load several runs as one ensemble, and ``s2s-ensemble``: score single runs and ensembles on a split.

    s2s-ensemble --system GRU_RUN --system TRANSFORMER_RUN --system GRU_RUN TRANSFORMER_RUN --split test --beam 5
    s2s-ensemble --system T1 T2 T3 --out outputs/ensembles/report --hyps outputs/ensembles --note "3 seeds"

Every ``--system`` is one run (a run folder or any checkpoint file of ours, an
averaged one included) or several, decoded together as an ``models.Ensemble``:
at every step the mean of the members' log-probabilities, each member with its
own cache, members of any architecture. The members must share one tokenizer
(same task and ``task.tokenizer`` settings); the first member's config sets the
task, the decoding rules and the precision. The report (``<out>.md`` and
``.json``) starts with the exact command that wrote it; ``--hyps DIR`` also
keeps every system's outputs (``DIR/<n>.txt``, e.g. for ``s2s-compare --hyps``).
Without ``--out`` the report is only printed: nothing is written unless asked
(``--out results/ensembles`` replaces the committed report).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from experiments.core.atomic import write_text
from experiments.evaluation.builders import autocast_for, resolve_precision
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import LoadedRun, decode_split, load_run, score
from experiments.core.outdirs import say_wrote
from experiments.core.runtime import git_commit, hardware
from models.ensemble import Ensemble


def run_label(run: LoadedRun) -> str:
    """``<model> <run folder name> @<step>``: names a member in reports and attention output."""
    return f"{run.cfg.model.name} {run.run_dir.name} @{run.step}"


def load_models(targets: list[str], overrides: list[str] | None = None) -> tuple[LoadedRun, list[LoadedRun]]:
    """The runs at ``targets`` and the run to decode with: the single run itself, or their ``Ensemble``.

    The ensemble's ``LoadedRun`` has the first member's config, data, device, folder and step.
    """
    if not targets:
        raise UserError("give at least one run folder or checkpoint")
    members = [load_run(t, overrides) for t in targets]
    first = members[0]
    for target, run in zip(targets[1:], members[1:]):
        if (run.cfg.task.name, run.cfg.task.src_field, run.cfg.task.tgt_field) != (
                first.cfg.task.name, first.cfg.task.src_field, first.cfg.task.tgt_field):
            raise UserError(f"{targets[0]} was trained on task {first.cfg.task.name!r} and {target} on "
                            f"{run.cfg.task.name!r}: an ensemble averages models of one task (the same source and "
                            "target language); ensemble runs of one task")
        a, b = first.data.tokenizer, run.data.tokenizer
        if a.key != b.key:
            raise UserError(
                f"{targets[0]} and {target} use different tokenizers ({a.tgt.vocab_size()} and "
                f"{b.tgt.vocab_size()} target pieces; tokenizer {a.key} vs {b.key}): an ensemble's members must "
                "share one vocabulary. Ensemble runs trained with the same task and task.tokenizer settings.")
    if len(members) == 1:
        return first, members
    ensemble = Ensemble([m.model for m in members], [run_label(m) for m in members]).eval()
    return LoadedRun(first.cfg, first.data, ensemble, first.device, first.run_dir, first.step), members


def trained_at(run: LoadedRun) -> str | None:
    """The commit a member was trained at, from its run folder's ``results.json`` (absent until the run ends)."""
    try:
        return json.loads((run.run_dir / "results.json").read_text()).get("commit")
    except (OSError, ValueError):
        return None


def evaluate_system(targets: list[str], split: str, beam: int) -> tuple[dict[str, Any], list[str]]:
    """Decode ``split`` with one run or an ensemble; its report row and its hypotheses."""
    run, members = load_models(targets)
    run.data.split(split)  # an unknown split fails here, listing the valid ones
    decoded = decode_split(run.model, run.data, split, run.cfg.decoding, run.device,
                           autocast_for(run.device, run.cfg.trainer.precision), beam_size=beam)
    return {
        "system": " + ".join(run_label(m) for m in members),
        "members": [{"target": t, "model": m.cfg.model.name, "run_dir": str(m.run_dir), "step": m.step,
                     "seed": m.cfg.seed, "trained_at": trained_at(m)} for t, m in zip(targets, members)],
        "task": run.cfg.task.name,
        "upstream_split": run.cfg.task.splits[split],
        "decoded_on": {"hardware": hardware(run.device), "commit": git_commit(),
                       "precision": resolve_precision(run.device, run.cfg.trainer.precision)},
        "decode_seconds": decoded.seconds,
        **score(run.data, split, decoded.hypotheses),
    }, decoded.hypotheses


def report(rows: list[dict[str, Any]], command: str, split: str, beam: int, note: str) -> str:
    first = rows[0]
    names = {"bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeLsum": "ROUGE-Lsum"}
    metrics = [k for k in names if k in first]
    signature = first.get("bleu_signature") or first.get("rouge_signature", "")
    lines = [
        "# Ensembles",
        "",
        f"Produced by `{command}`.",
        "",
        f"Task `{first['task']}`, split `{split}` ({first['upstream_split']}), beam {beam}. An ensemble decodes "
        "with the mean of its members' log-probabilities at every step (greedy and beam search unchanged, "
        "each member with its own cache). Metric signature: `" + signature + "`.",
    ]
    where = first["decoded_on"]
    trained = sorted({m["trained_at"] or "unknown (no results.json)" for row in rows for m in row["members"]})
    machine = where["hardware"].get("gpu") or f"{where['hardware']['cpu']} ({where['hardware']['cores']} cores)"
    lines += ["", f"Decoded at commit {where['commit']} on {machine}, torch {where['hardware']['torch']}, "
              f"{where['precision']}; the members were trained at commit{'s' if len(trained) > 1 else ''} "
              f"{', '.join(trained)}."]
    if note:
        lines += ["", f"**{note}**"]
    lines += ["", "| system | members | " + " | ".join(names[m] for m in metrics) + " | decode s |",
              "|---|---|" + "---|" * len(metrics) + "---|"]
    for row in rows:
        lines.append(f"| {row['system']} | {len(row['members'])} | "
                     + " | ".join(f"{row[m]:.2f}" for m in metrics) + f" | {row['decode_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-ensemble", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--system", action="append", nargs="+", required=True, metavar="RUN",
                        help="one run, or several decoded as an ensemble; repeat for more systems")
    parser.add_argument("--split", default="test", help="the split to decode (default: test)")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy search)")
    parser.add_argument("--out", type=Path, help="write the report to OUT.md and OUT.json (default: print it)")
    parser.add_argument("--note", default="", help="a line printed in bold under the header, e.g. the runs' state")
    parser.add_argument("--hyps", type=Path, metavar="DIR",
                        help="also write each system's outputs to DIR/<n>.txt (n = its position, from 1)")
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = shlex.join(["s2s-ensemble", *(sys.argv[1:] if argv is None else argv)])
    try:
        rows = []
        for n, targets in enumerate(args.system, start=1):
            row, hypotheses = evaluate_system(targets, args.split, args.beam)
            rows.append(row)
            if args.hyps:
                row["hyps"] = str(args.hyps / f"{n}.txt")
                write_text(row["hyps"], "".join(h + "\n" for h in hypotheses))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    text = report(rows, command, args.split, args.beam, args.note)
    if args.out:
        payload = {"command": command, "split": args.split, "beam": args.beam, "note": args.note,
                   "combination": "mean of log-probabilities", "systems": rows}
        write_text(args.out.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
        write_text(args.out.with_suffix(".md"), text)
    print(text, end="")
    if args.hyps:
        say_wrote(args.hyps, [f"{n}.txt" for n in range(1, len(rows) + 1)])
    if args.out:
        say_wrote(args.out.parent, [args.out.with_suffix(".md"), args.out.with_suffix(".json")])


if __name__ == "__main__":
    main()
