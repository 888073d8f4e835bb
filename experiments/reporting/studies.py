"""Tables of several presets (``s2s-tables A B --name NAME``): their rows' names and which rows are tested.

A study puts a recipe variant beside the runs it changes: each row names its
preset (``transformer (multi30k_de_en_parity)``). Which pairs the paired
bootstrap then compares follows the questions such a table asks:

* within each preset, the first model (by name) against each other one: the
  models compared under one recipe (the GRU against the Transformer, both
  tuned);
* each model in every other preset against the same model in the first
  preset (the preset of the first folder given): what the recipe does to that
  model (with copy against without; tuned against default).

A table of one preset tests each model against the first, as before.
"""

from __future__ import annotations

from typing import Any


def by_preset(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of one table; where they come from several presets (``--name``), each row names its preset too:
    ``transformer (multi30k_de_en_dropout)``, so that a recipe variant is a row of its own."""
    if len({run.get("experiment") for run in runs}) < 2:
        return runs
    return [{**run, "model": f"{run['model']} ({run.get('experiment') or run['task']})", "arch": run["model"],
             "preset": run.get("experiment") or run["task"]} for run in runs]


def pairs(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (baseline, other) rows the paired bootstrap compares, by row name, in the order the table shows them."""
    names = sorted({run["model"] for run in runs})
    if not any("preset" in run for run in runs):
        return [(names[0], other) for other in names[1:]]
    row = {run["model"]: (run["arch"], run["preset"]) for run in runs}
    presets = list(dict.fromkeys(run["preset"] for run in runs))
    within = [(rows[0], other) for preset in presets
              for rows in [[n for n in names if row[n][1] == preset]] for other in rows[1:]]
    first = {row[n][0]: n for n in names if row[n][1] == presets[0]}
    across = [(first[row[n][0]], n) for preset in presets[1:] for n in names
              if row[n][1] == preset and row[n][0] in first]
    return within + across
