"""``python -m experiments.bench``: the same as ``s2s-bench`` (the bench's worker processes start this way)."""

from experiments.bench.cli import cli

cli()
