"""Everything around the models: data, training, evaluation, analysis and reports, one subpackage per role.

Each subpackage imports only from those below it (docs/design.md, "Code layout"; tests/test_layout.py):
core <- data <- evaluation <- training <- analysis, reporting <- bench, and ``demo`` (``make run``) on top.
"""
