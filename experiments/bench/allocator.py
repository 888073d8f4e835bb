"""tcmalloc against the system malloc in training on a CPU: ``python -m experiments.bench.allocator``.

Trains the same run (``s2s-train``: the same seed, batches and updates) as
pairs of processes side by side, one thread each, as the grid trains
(experiments/bench/side_by_side.py): fp32 on the system malloc beside fp32
on tcmalloc; where bf16 is native, the same in bf16 (what the grid trains on
such a CPU), and bf16 against fp32 with both on tcmalloc. It prints target
tokens/s per logging window, each run's peak resident memory, and whether
the runs on tcmalloc logged the losses of the system malloc's run of the
same precision, which they must: the malloc decides where a tensor lives,
not what is computed. Why the malloc matters at all: experiments/core/allocator.py.
"""

from __future__ import annotations

import argparse
import os

import torch

from experiments.bench.plan import native_bf16
from experiments.bench.side_by_side import (Arm, Pairs, add_options, command, header, parse, run, run_table,
                                             speed_tables)
from experiments.core.allocator import preload_env


def system_env(env: dict[str, str]) -> dict[str, str]:
    """``LD_PRELOAD`` as ``env`` has it, less any tcmalloc: a run on the system malloc."""
    kept = [lib for lib in env.get("LD_PRELOAD", "").replace(":", " ").split() if "tcmalloc" not in lib]
    return {"LD_PRELOAD": " ".join(kept)}


def pairs(bf16: bool) -> Pairs:
    """Pair name -> its two runs, the baseline first; the bf16 pairs only where bf16 is native."""
    tcmalloc = {"LD_PRELOAD": preload_env(dict(os.environ), "tcmalloc")[0]["LD_PRELOAD"]}

    def arm(precision: str, malloc: str) -> Arm:
        return Arm(f"{precision}, {malloc}", precision, tcmalloc if malloc == "tcmalloc" else system_env(os.environ),
                   malloc)

    both = {"fp32": (arm("fp32", "system"), arm("fp32", "tcmalloc"))}
    if bf16:
        both |= {"bf16": (arm("bf16", "system"), arm("bf16", "tcmalloc")),
                 "precision": (arm("fp32", "tcmalloc"), arm("bf16", "tcmalloc"))}
    return both


QUESTIONS = {"fp32": "what tcmalloc buys fp32", "bf16": "what tcmalloc buys bf16",
             "precision": "bf16 against fp32, both on tcmalloc"}


def report(results: dict, args: argparse.Namespace, measured: Pairs, command: str, commit: str,
           work: dict | None) -> str:
    lines = header("tcmalloc against the system malloc in training", args, command, commit, work)
    lines += speed_tables(results, measured, {k: v for k, v in QUESTIONS.items() if k in measured})
    lines += run_table(results, measured, "losses as on the system malloc")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(p, "outputs/allocator")
    p.add_argument("--no-bf16", action="store_true", help="fp32 only, even where bf16 is native")
    args = parse(p, argv)
    measured = pairs(native_bf16(torch.device("cpu")) and not args.no_bf16)
    run("experiments.bench.allocator", argv, args, measured,
        lambda results, command, commit, work: report(results, args, measured, command, commit, work))


if __name__ == "__main__":
    command(main)
