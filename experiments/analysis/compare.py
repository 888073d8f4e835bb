"""``s2s-compare``: a compare-mt report (HTML) on two runs' outputs for one split.

    s2s-compare GRU_RUN TRANSFORMER_RUN --split test     # the report in outputs/compare_mt/
    s2s-compare RUN_A RUN_B --hyps a.txt b.txt      # outputs decoded before (e.g. by s2s-eval): no decoding

Both runs decode the split (beam ``--beam``, default each run's
``decoding.beam_size``) unless ``--hyps`` gives their outputs. The sources, the
references (the first of each sentence) and the two outputs are tokenized with
sacreBLEU's 13a tokenizer and handed to compare-mt (Neubig et al., 2019),
which writes ``index.html``, its figures and its example pages into ``--out``
(default ``outputs/compare_mt/``; ``--out results/compare_mt`` replaces the committed report);
the exact command is written at the top of the page. Its BLEU is then the
sacreBLEU BLEU of our tables, except that compare-mt counts at least one n-gram
of every order in every sentence, which lowers it a little where outputs are
shorter than 4 tokens (both tested).

From compare-mt: BLEU and length ratio, word accuracy (F-measure) by frequency
bucket, BLEU by reference length, sentence counts by length difference and
sentence BLEU, characteristic n-grams, and example sentences where the systems
differ most. Left to ``s2s-tables``: the significance test (its paired bootstrap
with sacreBLEU's statistics; compare-mt's bootstrap is not run) and BLEU by
source length. Both compute BLEU within length buckets the same way: on
the same buckets they give the same numbers (tested).
"""

from __future__ import annotations

import argparse
import html
import logging
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from experiments.evaluation.builders import autocast_for
from experiments.core.errors import DataError, UserError
from experiments.evaluation.evaluate import LoadedRun, decode_split, load_run
from experiments.core.extras import install, require
from experiments.core.outdirs import default_out, out_help

COMPARE_MT_ARGS = ["--compare_scores", "score_type=bleu", "score_type=length", "--seed", "1"]
BLEU_NOTE = ("Inputs tokenized with sacreBLEU's 13a tokenizer: BLEU here is sacreBLEU's (as in s2s-eval and "
             "s2s-tables) except that compare-mt counts at least one n-gram of every order in every sentence, "
             "which lowers it a little where outputs are shorter than 4 tokens. Significance tests and BLEU by "
             "source length: s2s-tables.")


def tokenize_13a(lines: list[str]) -> list[str]:
    tokenizer = Tokenizer13a()
    return [tokenizer(line.strip()) for line in lines]


def system_name(run: LoadedRun) -> str:
    return f"{run.cfg.model.name}-{run.run_dir.name}-step{run.step}"


def outputs(run: LoadedRun, split: str, beam: int | None, hyps: Path | None) -> list[str]:
    """The run's outputs for ``split``: read from ``hyps`` or decoded now."""
    n = len(run.data.split(split))
    if hyps is not None:
        if not hyps.is_file():
            raise DataError(f"{hyps}: no such file")
        lines = hyps.read_text(encoding="utf-8").split("\n")
        lines = lines[:-1] if lines and lines[-1] == "" else lines
        if len(lines) != n:
            raise DataError(f"{hyps} has {len(lines)} lines but split {split!r} has {n} sentences: "
                            "give that split's outputs, one a line")
        return lines
    return decode_split(run.model, run.data, split, run.cfg.decoding, run.device,
                        autocast_for(run.device, run.cfg.trainer.precision), beam_size=beam).hypotheses


def run_compare_mt(folder: Path, ref: list[str], outs: list[list[str]], src: list[str], names: list[str],
                   title: str, out: Path) -> str:
    """Write the tokenized files to ``folder``, run compare-mt into ``out``; returns its text report."""
    files = {"ref": ref, "src": src, **{f"sys{i}": o for i, o in enumerate(outs)}}
    for name, lines in files.items():
        (folder / name).write_text("\n".join(tokenize_13a(lines)) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "compare_mt.compare_mt_main", str(folder / "ref"),
           *(str(folder / f"sys{i}") for i in range(len(outs))), "--src_file", str(folder / "src"),
           "--sys_names", *names, "--output_directory", str(out), "--report_title", title, *COMPARE_MT_ARGS]
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        hint = f" Install compare-mt 0.2.10 and six: {install('analysis')}." if "ModuleNotFoundError" in last else ""
        raise UserError(f"compare-mt failed (exit {done.returncode}): {last}.{hint}")
    return done.stdout


def compare(targets: list[str], split: str, out: Path, beam: int | None, hyps: list[Path] | None,
            command: str, note: str = "") -> Path:
    runs = [load_run(t) for t in targets]
    tasks = sorted({r.cfg.task.name for r in runs})
    if len(tasks) > 1:
        raise UserError(f"{targets[0]} and {targets[1]} are on different tasks {tasks}: compare runs of one task")
    data = runs[0].data
    test = data.split(split)  # an unknown split fails here, listing the valid ones
    outs = [outputs(run, split, beam, h) for run, h in zip(runs, hyps or [None, None])]
    names = [system_name(r) for r in runs]
    if names[0] == names[1]:
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    title = f"{runs[0].cfg.task.name} {split} ({runs[0].cfg.task.splits[split]}): {names[0]} vs {names[1]}"
    out = out.resolve()  # compare-mt runs in the work folder
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        work, report = Path(tmp) / "input", Path(tmp) / "report"
        work.mkdir()
        text = run_compare_mt(work, [refs[0] for refs in test.references()], outs, test.sources(), names, title,
                              report)
        index = report / "index.html"
        page = index.read_text(encoding="utf-8")
        produced = (f"<p>Produced by <code>{html.escape(command)}</code> with compare-mt "
                    f"{version('compare-mt')}. {BLEU_NOTE}</p>\n"
                    + (f"<p><b>{html.escape(note)}</b></p>\n" if note else ""))
        index.write_text(page.replace("<body>\n", "<body>\n" + produced, 1), encoding="utf-8")
        (report / "report.txt").write_text(f"Produced by {command}\n{note}\n\n{text}", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        report.rename(out)
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs=2, metavar="RUN", help="two run folders or checkpoints (A, then B)")
    parser.add_argument("--split", default="test", help="the split to decode (default: test)")
    parser.add_argument("--beam", type=int, help="beam size (default: each run's decoding.beam_size)")
    parser.add_argument("--hyps", nargs=2, type=Path, metavar="FILE", help="the two runs' outputs: do not decode")
    parser.add_argument("--out", type=Path, default=default_out("compare_mt"),
                        help=out_help("compare_mt", "report folder, replaced"))
    parser.add_argument("--note", default="", help="a line printed in bold at the top, e.g. the runs' state")
    args = parser.parse_args(argv)
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = shlex.join(["s2s-compare", *(sys.argv[1:] if argv is None else argv)])
    try:
        require(("compare_mt", "six"), "analysis", "s2s-compare")  # before the decoding, not after it
        page = compare(args.runs, args.split, args.out, args.beam, args.hyps, command, args.note)
        print(f"wrote {args.out}/: the compare-mt report; open {page}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
