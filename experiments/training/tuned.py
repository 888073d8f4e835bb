"""``s2s-tuned``: a random search's best trial per model, written into the conf tree as the tuned recipe.

    s2s-tuned results/runs/tune_multi30k_de_en            # -> conf/tuned/multi30k_de_en.yaml
    s2s-grid multi30k_de_en_tuned:1,2,3 multi30k_en_de_tuned:1

Each model's recipe is the settings its best finished trial drew (the keys
the search space sets, read back from the trial's config.yaml), ranked on the
metric every trial was judged on (greedy validation), ties to the earlier
trial. Both models must have finished the same number of trials, so each
recipe is the best of the same tuning budget (``--trials N`` takes trials
1..N of each, which is what a budget of N trials means for a search whose
trial k is seed k). The file names the trials it came from and the command
that wrote it; presets load it with ``- /tuned@tuned: <task>`` in their
defaults, and ``experiments/training/search.py: apply_tuned`` applies the
model's settings to the run, which records them in its config.yaml.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from experiments.core.atomic import write_text
from experiments.core.errors import UserError
from experiments.training.runs import shown_path
from experiments.training.search import Trial, load_trials

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def chosen(trials: dict[str, list[Trial]], unfinished: dict[str, int], n: int | None) -> dict[str, list[Trial]]:
    """The trials each model's best is chosen from: trials 1..n of each, or all finished where the counts agree."""
    if n is not None:
        if n < 1:
            raise UserError(f"--trials {n}: give a number of trials of at least 1")
        picked = {m: [t for t in ts if t.trial <= n] for m, ts in trials.items()}
        short = {m: sorted(set(range(1, n + 1)) - {t.trial for t in ts}) for m, ts in picked.items()}
        short = {m: missing for m, missing in short.items() if missing}
        if short:
            raise UserError("--trials " + str(n) + ": not finished yet: " + "; ".join(
                f"{m} trial(s) {', '.join(map(str, missing))}" for m, missing in short.items()))
        return picked
    counts = {m: len(ts) for m, ts in trials.items()}
    if len(set(counts.values())) > 1:
        raise UserError(f"the models have finished different numbers of trials ({counts}; unfinished: "
                        f"{unfinished or 'none'}): a fair recipe is the best of the same budget, so pass --trials N "
                        "to take trials 1..N of each")
    return trials


def recipe(trials: dict[str, list[Trial]]) -> dict[str, Any]:
    """The ``tuned`` node: each model's best trial and the settings it drew."""
    budgets = {t.budget for ts in trials.values() for t in ts}
    metrics = {t.metric for ts in trials.values() for t in ts}
    searches = {str(t.run.get("experiment") or "") for ts in trials.values() for t in ts}
    if len(budgets) > 1 or len(metrics) > 1 or len(searches) > 1:
        raise UserError(f"these trials are not one search: token budgets {sorted(budgets)}, metrics {sorted(metrics)},"
                        f" presets {sorted(searches)}")
    best = {m: max(ts, key=lambda t: (t.score, -t.trial)) for m, ts in sorted(trials.items())}
    return {
        "search": searches.pop(),
        "metric": metrics.pop(),
        "trials": len(next(iter(trials.values()))),
        "best": {m: {"trial": t.trial, "score": round(t.score, 2), "best_step": t.best_step,
                     "run": shown_path(Path(t.run["run_dir"]))} for m, t in best.items()},
        "settings": {m: t.settings for m, t in best.items()},
    }


def render(node: dict[str, Any], command: str) -> str:
    lines = [f"# The tuned recipes of search {node['search']} (conf/experiment/{node['search']}.yaml): each model's",
             f"# best of its first {node['trials']} trials on greedy validation {node['metric']}, the settings it drew.",
             f"# Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC;",
             "# do not edit: run the command again. Loaded by presets as `- /tuned@tuned: <this file's name>`."]
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(OmegaConf.create(node))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-tuned", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a search's trials: <runs>/<model>/seed<k> (results/runs/tune_...)")
    parser.add_argument("--trials", type=int, metavar="N", help="choose from trials 1..N of each model (default: "
                                                                "every finished trial, which must be as many per model)")
    parser.add_argument("--out", type=Path, help="the recipe file (default: conf/tuned/<the trials' task>.yaml)")
    args = parser.parse_args(argv)
    try:
        trials, unfinished = load_trials(args.runs)
        node = recipe(chosen(trials, unfinished, args.trials))
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    task = next(iter(trials.values()))[0].run["task"]
    out = args.out or CONF_DIR / "tuned" / f"{task}.yaml"
    command = " ".join(["s2s-tuned", str(shown_path(args.runs)), *(["--trials", str(args.trials)] if args.trials
                                                                 else []), *(["--out", str(args.out)] if args.out
                                                                             else [])])
    write_text(out, render(node, command))
    for model, best in node["best"].items():
        print(f"{model}: trial {best['trial']} of {node['trials']}, validation {node['metric']} {best['score']:.2f} "
              f"at update {best['best_step']} ({best['run']})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
