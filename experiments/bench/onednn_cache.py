"""oneDNN's kernel cache in bf16 training on a CPU: ``python -m experiments.bench.onednn_cache``.

Trains the same run (``s2s-train``: the same seed, batches and updates) as
two pairs of processes, the two of a pair side by side with one thread each,
as the grid trains: bf16 with oneDNN's default cache of 1024 matmul kernels
beside bf16 with the wider one the trainer now asks for
(``runtime.widen_onednn_cache``), then fp32 (whose matmuls compile no
kernels) beside bf16 with the wide cache, the baseline bf16 is judged
against. Side by side, a drift in the machine's speed (a fifth between runs
one after the other, see gru_paths) slows both of a pair alike. It prints
target tokens/s per logging window (the trainer's own figure, epoch by
epoch) and the peak resident memory of each run. The two bf16 runs of the
first pair must log the same losses: the cache changes how soon a matmul
starts, not what it computes. Sorted batching cuts the same batches every
epoch, so from the second epoch on every shape has been seen once: what a
cache that holds them all saves shows there.
"""

from __future__ import annotations

import argparse

from experiments.bench.side_by_side import (Arm, Pairs, add_options, command, header, parse, run, run_table,
                                             speed_tables)
from experiments.core.runtime import ONEDNN_CACHE_CAPACITY

DEFAULT_CAPACITY = 1024  # oneDNN's own


def pairs(wide: int) -> Pairs:
    """Pair name -> its two runs, the baseline first."""
    def arm(precision: str, capacity: int) -> Arm:
        label = "fp32" if precision == "fp32" else f"bf16, cache {capacity}"
        return Arm(label, precision, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(capacity)})

    return {"cache": (arm("bf16", DEFAULT_CAPACITY), arm("bf16", wide)),
            "precision": (arm("fp32", DEFAULT_CAPACITY), arm("bf16", wide))}


def report(results: dict, args: argparse.Namespace, command: str, commit: str, work: dict | None) -> str:
    both = pairs(args.capacity)
    lines = header("oneDNN's kernel cache in bf16 training", args, command, commit, work)
    lines += speed_tables(results, both, {"cache": "what the wider cache buys bf16",
                                          "precision": "bf16 (wide cache) against fp32"})
    lines += run_table(results, both, f"losses as bf16 with cache {DEFAULT_CAPACITY}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(p, "outputs/onednn_cache")
    p.add_argument("--capacity", type=int, default=ONEDNN_CACHE_CAPACITY, help="the wide cache")
    args = parse(p, argv)
    run("experiments.bench.onednn_cache", argv, args, pairs(args.capacity),
        lambda results, command, commit, work: report(results, args, command, commit, work))


if __name__ == "__main__":
    command(main)
