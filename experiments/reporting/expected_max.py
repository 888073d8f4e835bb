"""Expected validation performance of a random search (Dodge et al. 2019, "Show Your Work"), both models on one plot.

    python -m experiments.reporting.expected_max results/runs/tune_multi30k_de_en --out results

Given N finished trials of a model with best validation scores v_(1) <= ... <=
v_(N), the expected best score of n trials drawn from the same search is

    E[max_n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n)

(the maximum of n draws with replacement from the empirical distribution),
with variance E[max_n^2] - E[max_n]^2. A reader sees what each model reaches
for any tuning budget n <= N, and whether one wins only with more or luckier
tuning. Trials are the run folders of a search preset (experiments/training/search.py):
``<runs>/<model>/seed<k>`` with results.json, config.yaml and metrics.jsonl,
as s2s-grid writes and ``s2s-tables --export`` commits them; unfinished
trials (no results.json) are left out and counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from experiments.core.atomic import write_text
from experiments.core.errors import UserError
from experiments.core.outdirs import default_out, out_help, say_wrote
from experiments.core.plotting import plt, save_figure
from experiments.training.runs import export, shown_path
from experiments.training.search import Trial, distributions, load_trials
from experiments.reporting.embedding import embed
from experiments.reporting.tables import markdown_table


def expected_max(values: list[float], n: int) -> tuple[float, float]:
    """Expected maximum of ``n`` i.i.d. draws from the empirical distribution of ``values``, and its std."""
    v = np.sort(np.asarray(values, dtype=float))
    i = np.arange(1, len(v) + 1)
    weight = (i / len(v)) ** n - ((i - 1) / len(v)) ** n  # P(the maximum of n draws is v_(i))
    mean = float((weight * v).sum())
    return mean, float(np.sqrt(max(0.0, (weight * v * v).sum() - mean * mean)))


def curve_rows(trials: dict[str, list[Trial]]) -> list[list[str]]:
    longest = max(len(ts) for ts in trials.values())
    rows = []
    for n in range(1, longest + 1):
        cells = [str(n)]
        for ts in trials.values():
            cells.append("{:.2f} ± {:.2f}".format(*expected_max([t.score for t in ts], n)) if n <= len(ts) else "–")
        rows.append(cells)
    return rows


def crossing(trials: dict[str, list[Trial]]) -> str:
    """Which model leads at n = 1 and at the largest n both have, and where the lead changes hands, if it does."""
    if len(trials) != 2:
        return ""
    (a, ta), (b, tb) = trials.items()
    leads = []
    for n in range(1, min(len(ta), len(tb)) + 1):
        gap = expected_max([t.score for t in ta], n)[0] - expected_max([t.score for t in tb], n)[0]
        leads.append(a if gap > 0 else b if gap < 0 else "neither")
    if len(leads) == 1:
        return f"With n = 1, all that both models have so far, the {leads[0]} leads."
    changes = [f"between n = {n + 1} and n = {n + 2}" for n in range(len(leads) - 1) if leads[n] != leads[n + 1]]
    if not changes:
        return f"The {leads[0]} leads at every n up to {len(leads)}: the curves do not cross within n <= {len(leads)}."
    return (f"With n = 1 the {leads[0]} leads, with n = {len(leads)} the {leads[-1]}: the lead changes hands "
            f"{', '.join(changes)} within n <= {len(leads)}.")


def still_rising(trials: dict[str, list[Trial]]) -> str:
    """How many trials scored their best at their last validation (the trainer validates once more at the
    budget's end): their curves had not flattened, so a longer budget could reorder them."""
    counts = ", ".join(f"{m} {sum(t.best_step == t.steps for t in ts)} of {len(ts)}" for m, ts in trials.items())
    return (f"Trials whose best validation was their last, at the budget's end (still rising, so a longer budget "
            f"could rank them otherwise): {counts}.")


EARLY = 0.5  # the part of a search's token budget at which its ranking is compared with the ranking at the end


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b of two rankings of the same items (a pair tied in either counts as neither concordant
    nor discordant, and leaves that ranking's side of the denominator); NaN with no untied pair."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    untied = float(np.sqrt((da != 0).sum() * (db != 0).sum()))
    return float((da * db).sum() / untied) if untied else float("nan")


def best_up_to(trial: Trial, tokens: float) -> float | None:
    """A trial's best validation score among its validations at or before ``tokens`` real target tokens."""
    seen = [r[trial.metric] for r in trial.validations if r.get("tokens", 0) <= tokens and trial.metric in r]
    return max(seen) if seen else None


def early_ranking(trials: dict[str, list[Trial]]) -> str:
    """Would a search at part of the budget have ranked the trials as the whole budget does?

    Each trial's best validation up to ``EARLY`` of the budget against its best at the end: Kendall's tau-b per
    model and over both models' trials together, and whether the best trial would have been the same. Trials
    validate at the same real target tokens whatever their batch size (the space draws ``eval_every`` with it),
    so the early scores are read at one point for all of them.
    """
    budget = next(iter(trials.values()))[0].budget
    cells, pooled = [], ([], [])
    for model, ts in trials.items():
        pairs = [(early, t.score, t.trial) for t in ts if (early := best_up_to(t, EARLY * budget)) is not None]
        if len(pairs) < 2:
            continue
        early_scores, final_scores, numbers = zip(*pairs)
        pooled[0].extend(early_scores)
        pooled[1].extend(final_scores)
        same = numbers[int(np.argmax(early_scores))] == numbers[int(np.argmax(final_scores))]
        cells.append(f"{model} {kendall_tau(list(early_scores), list(final_scores)):.2f} over {len(pairs)} trials, "
                     f"{'the same' if same else 'another'} best trial")
    if not cells:
        return ""
    together = f"; both models' trials together {kendall_tau(*pooled):.2f}" if len(cells) > 1 else ""
    return (f"Ranked at {EARLY:.0%} of the budget ({EARLY * budget:,.0f} real target tokens), by their best "
            f"validation up to there, against their ranking at the end (Kendall's tau-b, 1: the same order): "
            f"{'; '.join(cells)}{together}.")


def plot_trial_curves(trials: dict[str, list[Trial]], title: str, path: Path) -> None:
    """Every trial's validation score against real target tokens, a panel a model, the best trial drawn
    thicker; the dashed line is where ``early_ranking`` reads the trials."""
    fig, axes = plt.subplots(1, len(trials), figsize=(5.4 * len(trials), 4.2), sharey=True, squeeze=False)
    first = next(iter(trials.values()))[0]
    lowest = min(t.score for ts in trials.values() for t in ts)
    for ax, (model, ts) in zip(axes[0], trials.items()):
        best = max(ts, key=lambda t: t.score)
        for t in ts:
            rows = sorted((r for r in t.validations if t.metric in r and "tokens" in r), key=lambda r: r["tokens"])
            ax.plot([r["tokens"] / 1e6 for r in rows], [r[t.metric] for r in rows], marker=".", markersize=3,
                    linewidth=2.4 if t is best else 1.0, label=f"trial {t.trial}: {t.score:.2f}")
        ax.axvline(EARLY * first.budget / 1e6, color="0.5", linestyle="--", linewidth=1)
        ax.annotate(f" ranked here too ({EARLY:.0%} of the budget)", (EARLY * first.budget / 1e6, 1.0),
                    xycoords=("data", "axes fraction"), va="top", fontsize=7, color="0.4")
        ax.set_title(f"{model} ({len(ts)} trials)", fontsize=10)
        ax.set_xlabel("real target tokens (millions)")
        ax.set_xlim(0, first.budget / 1e6 * 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="lower right", title="trial: its best", title_fontsize=7)
    axes[0][0].set_ylabel(f"validation {first.metric} (greedy)")
    axes[0][0].set_ylim(bottom=max(0.0, np.floor(lowest) - 10))  # the late part, where the ranking is decided
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def machine(hardware: dict[str, Any]) -> str:
    """The GPU a trial ran on, else its CPU (a GPU machine's CPU says nothing about the trial's speed)."""
    return str(hardware.get("gpu") or hardware.get("cpu") or hardware.get("device"))


def hours_text(trials: list[Trial]) -> str:
    """The training hours of a model's trials; split by device where some ran on a GPU (an hour there is not an
    hour here)."""
    by_device: dict[str, float] = {}
    for t in trials:
        device = str((t.run.get("hardware") or {}).get("device") or "?")
        by_device[device] = by_device.get(device, 0.0) + t.hours
    total = f"{sum(by_device.values()):.2f}"
    if len(by_device) == 1:
        return total
    return f"{total} ({', '.join(f'{d} {h:.2f}' for d, h in sorted(by_device.items()))})"


def cpu_hours_text(trials: list[Trial]) -> str:
    """The CPU hours of a model's trials, saying of how many where some did not record them ('–': none did)."""
    recorded = [t.cpu_hours for t in trials if t.cpu_hours is not None]
    if not recorded:
        return "–"
    total = f"{sum(recorded):.2f}"
    return total if len(recorded) == len(trials) else f"{total} ({len(recorded)} of {len(trials)} trials)"


def settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[1]}={v}"
                     for k, v in settings.items())


def planned_trials(experiment: str) -> int:
    """Trials per model the search's preset plans (its sweep's seeds); 0 where no preset of that name is found."""
    from experiments.training.grid import sweep_params

    try:
        return len(sweep_params(experiment).get("seed", [])) if experiment else 0
    except UserError:
        return 0


def report(trials: dict[str, list[Trial]], unfinished: dict[str, int], root: Path, regenerate: str,
           per_model: int = 0) -> str:
    """The report's Markdown; ``per_model``: the trials a model the preset plans (``planned_trials``)."""
    first = next(iter(trials.values()))[0]
    metric = first.metric
    planned = {m: max(per_model, len(ts) + unfinished.get(m, 0)) for m, ts in trials.items()}
    budgets = {t.budget for ts in trials.values() for t in ts}
    if len(budgets) > 1:
        raise UserError(f"{root}: its trials trained on different token budgets {sorted(budgets)}: not one search")
    machines = sorted({f"{machine(t.run['hardware'])} ({t.run.get('precision', '?')})"
                       for ts in trials.values() for t in ts})
    commits = sorted({t.run.get("commit", "?") for ts in trials.values() for t in ts})
    lines = [f"# Expected validation {metric} of a random search: {root.name}", "",
             f"Every trial trained on up to {first.budget:,} real target tokens and was judged on greedy validation "
             f"{metric} (its best validation); trials of a model are i.i.d. draws from the space in "
             f"conf/experiment/{root.name}.yaml. Expected maximum over n trials, mean ± std (Dodge et al. 2019). "
             f"Hardware: {'; '.join(machines)}; commits {', '.join(commits)}. Regenerate: `{regenerate}`.", "",
             markdown_table(["n trials", *(f"{m} (of {len(ts)})" for m, ts in trials.items())], curve_rows(trials)),
             crossing(trials), still_rising(trials), early_ranking(trials), "",
             f"Plots: `{root.name}_evp.png` (these curves), `{root.name}_trials.png` (each trial's validation {metric} "
             f"against real target tokens), `{root.name}_settings.png` (each trial's best validation {metric} against "
             "the settings it drew, a panel for each setting both models search).", "",
             "Budget spent (finished trials):", "",
             markdown_table(["model", "trials done / planned", "updates", "real target tokens (M)", "training hours",
                             "CPU hours"],
                            [[m, f"{len(ts)} / {planned[m]}", f"{sum(t.steps for t in ts):,}",
                              f"{sum(t.tokens for t in ts) / 1e6:.1f}", hours_text(ts), cpu_hours_text(ts)]
                             for m, ts in trials.items()]), "",
             "Training hours: the wall time of the trials' updates (validation left out), which counts any time a "
             "job was paused (SIGSTOP) or waited for a core another process held; CPU hours: the CPU time their "
             "processes spent in those updates, which counts neither (one thread a job in the grid), for the trials "
             "that recorded it.", "",
             f"Each model's best trial becomes its tuned recipe: `s2s-tuned {shown_path(root)}` writes them into conf/tuned/ "
             "(the best of the same number of finished trials per model).", ""]
    for model, ts in trials.items():
        best = max(ts, key=lambda t: t.score)
        lines += [f"## {model}: the trials", "",
                  f"Best: trial {best.trial}, validation {metric} {best.score:.2f} at update {best.best_step}.", "",
                  markdown_table(["trial", f"valid {metric}", "best at", "updates", "params", "hours", "CPU hours",
                                  "settings"],
                                 [[str(t.trial), f"{t.score:.2f}", str(t.best_step), str(t.steps),
                                   f"{t.params / 1e6:.2f}M", f"{t.hours:.2f}",
                                   "–" if t.cpu_hours is None else f"{t.cpu_hours:.2f}", settings_text(t.settings)]
                                  for t in ts]), ""]
    return "\n".join(lines)


def shared_settings(trials: dict[str, list[Trial]]) -> list[str]:
    """The searched keys every model's trials have, in the first model's order (the axes one plot can share)."""
    keys = [list(ts[0].settings) for ts in trials.values()]
    # trainer.eval_every is drawn with the batch size (each trial validates at the same tokens): no panel of its own
    return [k for k in keys[0] if all(k in other for other in keys[1:]) and k != "trainer.eval_every"]


def plot_settings(trials: dict[str, list[Trial]], title: str, path: Path) -> None:
    """Each trial's best validation score against each searched setting the models share, a panel a setting.

    The x axis is the space's, not the draws': a log axis for a log-uniform draw (the learning rate) and for
    choices that double (batch tokens, warm-up), ticks at every choice of a numeric choice, a category each for
    any other choice (batching), the models' points side by side within it.
    """
    keys = shared_settings(trials)
    spaces = {model: distributions(ts[0].space, model) for model, ts in trials.items()}
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.6 * rows + 0.5), squeeze=False, sharey=True)
    metric = next(iter(trials.values()))[0].metric
    for ax, key in zip(axes.flat, keys):
        kinds = {spaces[m].get(key, ("choice", []))[0] for m in trials}
        choices = [v for m in trials for v in spaces[m].get(key, ("", []))[1] if kinds == {"choice"}]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in [*choices, *(t.settings[key] for ts in trials.values() for t in ts)])
        categories = sorted({str(v) for v in choices}, key=choices_order(choices)) if not numeric else []
        for m, (model, ts) in enumerate(trials.items()):
            ys = [t.score for t in ts]
            if numeric:
                xs = [float(t.settings[key]) for t in ts]
            else:  # the models side by side within a category
                xs = [categories.index(str(t.settings[key])) + (m - (len(trials) - 1) / 2) * 0.15 for t in ts]
            ax.scatter(xs, ys, s=22, alpha=0.8, label=model)
        steps = sorted(set(choices))
        geometric = numeric and len(steps) > 2 and steps[0] > 0 and all(b >= 1.5 * a for a, b in zip(steps, steps[1:]))
        if kinds == {"log_uniform"} or geometric:  # a log-uniform draw, or choices such as 1024/2048/4096
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if numeric and choices:
            ax.set_xticks(steps)
            ax.xaxis.set_minor_locator(NullLocator())
        if numeric:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_xticks(range(len(categories)))
            ax.set_xticklabels(categories, fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_title(key.split(".", 1)[1], fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"valid {metric}", fontsize=9)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def choices_order(choices: list[Any]) -> Any:
    """Sort key: categories in the order the space first lists them."""
    first = {}
    for v in choices:
        first.setdefault(str(v), len(first))
    return lambda text: first.get(text, len(first))


def plot(trials: dict[str, list[Trial]], title: str, path: Path, planned: int = 0) -> None:
    """The curves over n = 1 .. the planned trials (the x axis spans the whole search while it runs)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, ts in trials.items():
        n = np.arange(1, len(ts) + 1)
        mean, std = np.array([expected_max([t.score for t in ts], k) for k in n]).T
        ax.plot(n, mean, marker="o", label=f"{model} ({len(ts)} trial{'s' if len(ts) > 1 else ''})")
        ax.fill_between(n, mean - std, mean + std, alpha=0.2)
    metric = next(iter(trials.values()))[0].metric
    last = max(planned, *(len(ts) for ts in trials.values()))
    ax.set_xlim(0.5, last + 0.5)
    ax.set_xticks(range(1, last + 1))
    ax.set_xlabel("trials (n)")
    ax.set_ylabel(f"expected best validation {metric} (± std)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")  # the curves rise to the upper right; below them, late n, stays empty
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.reporting.expected_max", description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="a search's trials: <runs>/<model>/seed<k> (results/runs/tune_...)")
    parser.add_argument("--out", type=Path, default=default_out("expected_max"),
                        help=out_help("expected_max", "folder for <search>_evp.md / .png"))
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="first copy each finished trial to DIR/<search>/<model>/seed<k> (results/runs: with "
                             "its best validation outputs, re-scorable) and report from that copy")
    parser.add_argument("--readme", type=Path, help="also embed the report between <!-- table:<search>_evp --> "
                                                    "markers in this file")
    args = parser.parse_args(argv)
    try:
        trials, unfinished = load_trials(args.runs)
        if args.export:
            args.runs = {export(t.run, args.export).parents[1] for ts in trials.values() for t in ts}.pop()
            trials, _ = load_trials(args.runs)
    except UserError as e:
        parser.exit(2, f"error: {e}\n")
    name = f"{args.runs.name}_evp"
    regenerate = f"python -m experiments.reporting.expected_max {shown_path(args.runs)} --out {shown_path(args.out)}"
    per_model = planned_trials(str(next(iter(trials.values()))[0].run.get("experiment") or ""))
    text = report(trials, unfinished, args.runs, regenerate, per_model) + "\n"
    write_text(args.out / f"{name}.md", text)
    plot(trials, f"Expected best validation score vs tuning budget: {args.runs.name}", args.out / f"{name}.png",
         per_model)
    if args.readme:
        embed(args.readme, name, text)
    settings_png, trials_png = f"{args.runs.name}_settings.png", f"{args.runs.name}_trials.png"
    plot_settings(trials, f"Each trial's best validation score against its draws: {args.runs.name}",
                  args.out / settings_png)
    plot_trial_curves(trials, f"Each trial's validation score as it trained: {args.runs.name}", args.out / trials_png)
    say_wrote(args.out, [f"{name}.md", f"{name}.png", trials_png, settings_png])


if __name__ == "__main__":
    main()
