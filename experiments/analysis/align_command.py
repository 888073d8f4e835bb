"""``s2s-align``: Pharaoh word alignments from a run's attention, or their agreement with eflomal.

    s2s-align RUN --src test.de --tgt test.en > test.align                # Pharaoh "i-j", one line a pair
    s2s-align RUN --src test.de --tgt test.en --map L2H5                  # one Transformer layer and head
    s2s-align GRU_RUN TRANSFORMER_RUN --eflomal --split test     # outputs/alignment/alignment.{md,json,png}

How a map becomes word links: ``experiments/evaluation/align.py``.

``--eflomal`` trains eflomal on the task's training split plus ``--split``
(whitespace words, lowercased by eflomal), symmetrizes its two directions with
grow-diag-final-and, and reports how well every map of every run agrees with
it on ``--split`` (precision, recall, F1, AER): ``<out>.md``, ``.json`` and ``.png``
(``--out results/alignment`` replaces the committed report).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from experiments.evaluation.align import attention_links, pharaoh
from experiments.core.atomic import write_report
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import load_run
from experiments.core.extras import require
from experiments.core.outdirs import default_out, say_wrote
from experiments.evaluation.score import read_pairs


def align_files(target: str, src: Path, tgt: Path, which: str | None) -> list[str]:
    """Pharaoh lines for the pairs of ``src`` / ``tgt`` from map ``which`` of one run (None: its default map)."""
    run = load_run(target)
    sources, targets = read_pairs(src, tgt)
    links = attention_links(run, sources, targets, str(src))
    which = which or ("attention" if "attention" in links[0] else "mean")
    if which not in links[0]:
        raise UserError(f"--map {which}: the {run.cfg.model.name} run {target} has the maps "
                        f"{', '.join(sorted(links[0]))}")
    return [pharaoh(pair[which]) for pair in links]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-align", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder or checkpoint (one, or several with --eflomal)")
    parser.add_argument("--src", type=Path, help="source sentences, one a line")
    parser.add_argument("--tgt", type=Path, help="their translations, line-aligned with --src")
    parser.add_argument("--map", default=None, help="attention (GRU), mean (Transformer, default) or L<l>H<h>")
    parser.add_argument("--out", type=Path, help="Pharaoh file (default or -: standard output); with --eflomal: "
                        "the report's path without suffix (default outputs/alignment/alignment)")
    parser.add_argument("--eflomal", action="store_true", help="report agreement with eflomal on --split")
    parser.add_argument("--split", default="test", help="with --eflomal: the split to align")
    parser.add_argument("--note", default="", help="with --eflomal: a line printed in bold under the header")
    args = parser.parse_args(argv)
    if not args.eflomal and (args.src is None or args.tgt is None or len(args.runs) != 1):
        parser.error("give one RUN with --src and --tgt, or --eflomal")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = shlex.join(["s2s-align", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.eflomal:
            require(("eflomal",), "analysis", "s2s-align --eflomal")
            # Imported here: only the report needs eflomal and matplotlib.
            from experiments.analysis import alignment_report

            out = args.out or default_out("alignment") / "alignment"
            say_wrote(out.parent, alignment_report.write_report(args.runs, args.split, out, command, args.note))
            return
        pairs = align_files(args.runs[0], args.src, args.tgt, args.map)
        write_report(args.out, "".join(line + "\n" for line in pairs))
        if args.out and str(args.out) != "-":
            say_wrote(args.out.parent, [args.out])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
