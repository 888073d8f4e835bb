"""``make run``: the repository's main job at a small scale, start to finish, in a few minutes on a laptop CPU.

    python -m experiments.demo                               # Multi30k de->en, GRU vs Transformer
    python -m experiments.demo --out /tmp/demo trainer.max_steps=20   # Hydra overrides reach every job

1. data: Multi30k de->en is read from the data root (``$S2S_DATA_DIR``, else
   ``~/.cache/s2s-compare/data``; files that are absent are downloaded and
   sha256-checked), parsed, its tokenizer trained and its splits tokenized once,
   into the cache both trainings read. When it can be neither read nor
   downloaded the demo says so and runs the same steps on the toy task
   (``experiment=smoke``: generated data, tiny models).
2. train: the grid of ``conf/experiment/demo.yaml`` (a small GRU and a small
   Transformer, the same budget) with ``s2s-grid``: the two jobs side by side,
   each on its share of the cores.
3. compare: ``s2s-tables`` writes ``<out>/<preset>.md`` and ``.csv`` (BLEU and
   chrF, the paired bootstrap, the metric by source length and its plot).
4. look: ``s2s-attention --examples K`` writes ``<out>/attention/attention.html``.

Every step is printed as the command it runs, so each can be run again alone.
The run folders, ``<out>/runs/<preset>/<model>/seed1``, are trained anew each time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import shutil
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from experiments.analysis.attention import main as attention_main
from experiments.core.config import validate
from experiments.data.pipeline import TaskData
from experiments.core.errors import DataError, UserError
from experiments.training.grid import main as grid_main
from experiments.core.runtime import usable_cores
from experiments.reporting.tables import main as tables_main
from experiments.training.train import CONF_DIR
from experiments.training.preflight import run_splits

PRESET = "demo"  # conf/experiment/demo.yaml: Multi30k de->en
FALLBACK = "smoke"  # conf/experiment/smoke.yaml: the toy task, for a machine that cannot get Multi30k


def prepare_data(preset: str, overrides: list[str]) -> tuple[TaskData, dict[str, int]]:
    """Build the caches the preset's jobs read (raw splits, tokenizer, token ids); DataError when the data is not there.

    Returns the data and the size of each split the jobs use.
    """
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = validate(compose("config", overrides=[f"experiment={preset}", *overrides]))
    data = TaskData(cfg.task, cfg.cache_dir)
    return data, {name: len(data.split(name)) for name in run_splits(cfg)}


def announce(title: str, command: list[str]) -> None:
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides applied to every job")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default outputs/demo)")
    parser.add_argument("--examples", type=int, default=4, help="examples on the attention page (default 4)")
    parser.add_argument("--toy", action="store_true", help="run the toy task (experiment=smoke) without trying Multi30k")
    args = parser.parse_args(argv)
    started = time.time()
    out = args.out.resolve()
    preset = FALLBACK if args.toy else PRESET
    print(f"== data: {'the toy task (--toy)' if args.toy else 'Multi30k de->en'}", flush=True)
    try:
        try:
            data, sizes = prepare_data(preset, args.overrides)
        except DataError as e:
            if preset == FALLBACK:
                raise
            print(f"Multi30k could not be read or downloaded: {e}\n"
                  f"Falling back to the toy task (experiment={FALLBACK}: generated data, tiny models): the same "
                  "steps, but not the comparison this repository is for.", flush=True)
            preset = FALLBACK
            data, sizes = prepare_data(preset, args.overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    where = f"files in {data.data_root / 'multi30k'} (sha256-checked), " if data.task.loader == "multi30k" else ""
    print(f"{data.task.name}: {', '.join(f'{k} {n:,}' for k, n in sizes.items())} sentence pairs; {where}"
          f"tokenized into {data.cache_dir}", flush=True)

    runs = out / "runs"
    shutil.rmtree(runs / preset, ignore_errors=True)  # trained anew: the table describes this run only
    jobs = min(2, usable_cores())
    grid = ["--runs-dir", str(runs), "--jobs", str(jobs), "--threads", str(max(1, usable_cores() // jobs)),
            f"{preset}:1", *args.overrides]
    # Each step is one command, run in this process (it has imported what they all need).
    announce("train both models side by side (each job's log: <run folder>/grid.log)", ["s2s-grid", *grid])
    grid_main(grid)  # exits, naming the failed job and its log, when one fails
    tables = [str(runs / preset), "--out", str(out)]
    announce("compare them: BLEU, chrF, paired bootstrap, by source length", ["s2s-tables", *tables])
    tables_main(tables)
    seed_one = sorted(str(p) for p in (runs / preset).glob("*/seed1"))
    attention = [*seed_one, "--examples", str(args.examples), "--views", "last-layer", "--out", str(out / "attention"),
                 "--no-wandb"]
    announce("their cross-attention on the first test sentences", ["s2s-attention", *attention])
    with contextlib.redirect_stdout(io.StringIO()):  # it lists every PNG; the page links them all
        attention_main(attention)

    table = out / f"{preset}.md"
    print(f"\n{table.read_text()}")
    print(f"Done in {(time.time() - started) / 60:.1f} min. A short budget: it shows the pipeline, not what "
          "the models reach (docs/results.md's tables and `s2s-grid multi30k_de_en` are that).\n"
          f"  comparison table: {table} (the .csv and the plots beside it)\n"
          f"  attention maps:   {out / 'attention' / 'attention.html'}\n"
          f"  run folders:      {'  '.join(seed_one)}")


if __name__ == "__main__":
    main()
