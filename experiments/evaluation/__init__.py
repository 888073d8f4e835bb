"""A trained model put to use: building and loading it (``builders``, ``checkpoint``), decoding and scoring
(``evaluate``, ``metrics``, ``loss``), ensembles, forced-decoding scores, translation and attention alignments.

Commands: ``s2s-eval``, ``s2s-ensemble``, ``s2s-score``, ``s2s-translate``. Nothing here needs the trainer."""
