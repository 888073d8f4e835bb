"""Looking inside trained runs: cross-attention maps (PNGs and the HTML page, with its ``web/`` assets), word
alignments from attention and their agreement with a statistical aligner, compare-mt reports of two runs.

Commands: ``s2s-attention``, ``s2s-align``, ``s2s-compare``."""
