"""Results of many runs as tables and plots: the comparison tables and the one-table summary, extractive
baselines, length buckets, learning curves, sample efficiency, the expected maximum of a search, parameter counts.

Commands: ``s2s-tables``; ``python -m experiments.reporting.<module>`` for the others."""
