"""The reproduce workflow: Hydra multirun over models and seeds, then s2s-tables."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.reporting.tables import main as tables_main
from tests.conftest import HUNG_S, REPO


def multirun(sweep_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.training.train", "-m", "experiment=smoke", f"hydra.sweep.dir={sweep_dir}",
         f"cache_dir={cache}", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=HUNG_S,
    )


@pytest.mark.slow
def test_smoke_grid_writes_four_runs_and_a_table_that_matches_them(tmp_path: Path, shared_cache: Path) -> None:
    result = multirun(tmp_path / "grid", shared_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "grid").rglob("results.json"))]
    assert sorted((r["model"], r["seed"]) for r in runs) == [("gru", 1), ("gru", 2), ("transformer", 1), ("transformer", 2)]

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:smoke -->\nSTALE-TABLE\n<!-- /table:smoke -->\noutro\n")
    tables_main([str(tmp_path / "grid"), "--export", str(tmp_path / "runs"), "--out", str(tmp_path / "results"),
                 "--readme", str(readme)])
    rows = {(row["model"], row["checkpoint"]): row for row in csv.DictReader(open(tmp_path / "results" / "smoke.csv"))}
    for model in ("gru", "transformer"):
        for checkpoint, tests in (("best", lambda r: r["test"]), ("average of best 2", lambda r: r["averaged"]["test"])):
            bleus = [tests(r)["test"]["bleu"] for r in runs if r["model"] == model]
            row = rows[model, checkpoint]
            assert float(row["test_bleu_mean"]) == pytest.approx(statistics.fmean(bleus), abs=1e-9)
            assert float(row["test_bleu_std"]) == pytest.approx(statistics.stdev(bleus), abs=1e-9)
            assert int(row["params"]) == next(r["params"] for r in runs if r["model"] == model)

    # The export holds what re-scoring needs and nothing else, and gives the same tables on its own.
    exported = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*") if p.is_file())
    assert exported == sorted(f"smoke/{m}/seed{s}/{f}" for m in ("gru", "transformer") for s in (1, 2)
                              for f in ("config.yaml", "metrics.jsonl", "results.json", "hyps/test-beam2.txt.gz",
                                        "hyps/test-beam2-average.txt.gz"))
    tables_main([str(tmp_path / "runs" / "smoke"), "--out", str(tmp_path / "again")])
    for name in ("smoke.md", "smoke.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "results" / name).read_text()
    # A later session's runs folder holds seed 2 alone: exporting it keeps seed 1's rows in the table.
    later = tmp_path / "later"
    for path in (tmp_path / "grid").rglob("results.json"):
        if json.loads(path.read_text())["seed"] == 2:
            shutil.copytree(path.parent, later / path.parent.parent.name / path.parent.name)
    tables_main([str(later), "--export", str(tmp_path / "runs"), "--out", str(tmp_path / "later-results")])
    for name in ("smoke.md", "smoke.csv"):
        assert (tmp_path / "later-results" / name).read_text() == (tmp_path / "results" / name).read_text()
    assert (tmp_path / "results" / "smoke_curves.png").exists()
    table = (tmp_path / "results" / "smoke.md").read_text()
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in table and "Paired bootstrap" in table
    mean = statistics.fmean(r["test"]["test"]["bleu"] for r in runs if r["model"] == "gru")
    assert f"{mean:.2f} ± " in table
    assert (tmp_path / "results" / "smoke_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = readme.read_text()
    assert embedded.startswith("intro\n<!-- table:smoke -->\n") and embedded.endswith("<!-- /table:smoke -->\noutro\n")
    assert "STALE-TABLE" not in embedded and table.split("\n", 2)[2].strip() in embedded


def regenerate_command(table: Path) -> list[str] | None:
    """The ``s2s-tables`` arguments a committed table names in its "Regenerate:" line (None: not such a table)."""
    match = re.search(r"Regenerate: `s2s-tables ([^`]+)`", table.read_text())
    return match.group(1).split() if match else None


COMMITTED = sorted(p.name for p in (REPO / "results").glob("*.md") if regenerate_command(p))


def test_every_committed_experiment_is_in_a_committed_table() -> None:
    """A search's trials test nothing: their table is the expected-maximum report, written once both models have
    finished trials (experiments/reporting/expected_max.py), not an s2s-tables table."""
    import yaml

    experiments = {p.name for p in (REPO / "results" / "runs").glob("*") if p.is_dir()}
    searches = {e for e in experiments
                if "search" in (yaml.safe_load((REPO / "conf" / "experiment" / f"{e}.yaml").read_text()) or {})}
    tabled = {arg.removeprefix("results/runs/") for table in COMMITTED
              for arg in regenerate_command(REPO / "results" / table)}
    assert experiments - searches and experiments - searches <= tabled


SEARCH_REPORTS = sorted(p.name for p in (REPO / "results").glob("*_evp.md"))


@pytest.mark.parametrize("report", SEARCH_REPORTS)
def test_committed_search_reports_are_what_the_committed_trials_give(report: str, tmp_path: Path) -> None:
    """An expected-maximum report (and its curve) written again from the trials committed under results/runs:
    the same text, but for where its Regenerate line says it was written."""
    from experiments.reporting.expected_max import main as expected_max

    search = report.removesuffix("_evp.md")
    expected_max([str(REPO / "results" / "runs" / search), "--out", str(tmp_path)])
    again = (tmp_path / report).read_text().replace(f"--out {tmp_path}`", "--out results`")
    assert again.replace(str(REPO / "results" / "runs"), "results/runs") == (REPO / "results" / report).read_text()


ENSEMBLE_REPORTS = sorted(p.name for p in (REPO / "results").glob("ensembles*.json"))


@pytest.mark.parametrize("report", ENSEMBLE_REPORTS)
def test_committed_ensemble_scores_are_what_their_committed_outputs_give(report: str) -> None:
    """Every system of a committed ``s2s-ensemble`` report is scored again, by the repo's metric code, from its
    committed outputs and the dataset's references: the same numbers to the last digit."""
    from experiments.evaluation.metrics import task_metrics
    from experiments.data.textfiles import read_lines
    from tests.conftest import data_root

    root = data_root()
    systems = json.loads((REPO / "results" / report).read_text())["systems"]
    assert systems
    for system in systems:
        task = OmegaConf.load(REPO / "conf" / "task" / f"{system['task']}.yaml")
        assert task.loader == "multi30k", "only Multi30k ensembles are committed; teach this test the others' refs"
        refs = read_lines(root / "multi30k" / f"{system['upstream_split']}.{task.tgt_lang}.gz")
        hyps = (REPO / system["hyps"]).read_text(encoding="utf-8").splitlines()
        scores = task_metrics(str(task.kind), hyps, [[r] for r in refs])
        assert (scores["bleu"], scores["chrf"]) == (system["bleu"], system["chrf"]), system["system"]


@pytest.mark.parametrize("table", COMMITTED)
def test_committed_tables_are_what_the_committed_outputs_give(table: str, tmp_path: Path, monkeypatch) -> None:
    """Every table under results/ is rebuilt, byte for byte, by the command it names, from results/runs and the
    datasets."""
    from tests.conftest import data_root

    data_root()
    monkeypatch.chdir(REPO)  # the tables name their sources as given: results/runs/<experiment>
    tables_main([*regenerate_command(REPO / "results" / table), "--out", str(tmp_path)])
    name = table.removesuffix(".md")
    for file in (f"{name}.md", f"{name}.csv"):
        assert (tmp_path / file).read_text() == (REPO / "results" / file).read_text(), file


def test_the_validation_column_is_each_rows_own_validation_score() -> None:
    """valid_mean / valid_std of the committed study table, against the runs' results.json read here: the best
    checkpoint's score for best rows, the averaged checkpoint's for averaged rows, per preset."""
    rows = list(csv.DictReader((REPO / "results" / "multi30k_de_en_parity_study.csv").open()))
    assert rows
    for row in rows:
        model, preset = re.fullmatch(r"(\w+) \((\w+)\)", row["model"]).groups()
        folder = REPO / "results" / "runs" / preset / model
        runs = [json.loads(p.read_text()) for p in folder.glob("seed*/results.json")]
        scores = [(r["averaged"] if row["checkpoint"] != "best" else r)["valid_bleu"] for r in runs]
        assert float(row["valid_mean"]) == pytest.approx(statistics.fmean(scores))
        assert float(row["valid_std"]) == pytest.approx(statistics.stdev(scores) if len(scores) > 1 else 0.0)


def test_a_table_of_two_presets_names_each_rows_preset(tmp_path: Path, monkeypatch) -> None:
    """A recipe variant is a row of its own, scored as in its own preset's table and tested against the same model
    under the first preset (experiments/reporting/studies.py)."""
    from tests.conftest import data_root

    data_root()
    monkeypatch.chdir(REPO)
    tables_main(["results/runs/multi30k_de_en", "results/runs/multi30k_de_en_2k", "--name", "both",
                 "--out", str(tmp_path)])
    rows = {(r["model"], r["checkpoint"]): r for r in csv.DictReader(open(tmp_path / "both.csv"))}
    own = {(f"{r['model']} ({experiment})", r["checkpoint"]): {**r, "model": f"{r['model']} ({experiment})"}
           for experiment in ("multi30k_de_en", "multi30k_de_en_2k")
           for r in csv.DictReader(open(REPO / "results" / f"{experiment}.csv"))}
    assert rows == own
    table = (tmp_path / "both.md").read_text()
    assert "Regenerate: `s2s-tables results/runs/multi30k_de_en results/runs/multi30k_de_en_2k --name both`" in table
    # the models under the first recipe (three seeds), then the 2k recipe against the same model's first (seed 1):
    # the 2k preset trained no GRU, so there is no pair of models under it and no GRU across recipes
    headers = [line for line in table.splitlines() if line.startswith("| seed | metric |")]
    assert headers == ["| seed | metric | gru (multi30k_de_en) | transformer (multi30k_de_en) | "
                       "gru (multi30k_de_en) − transformer (multi30k_de_en) | p |",
                       "| seed | metric | transformer (multi30k_de_en) | transformer (multi30k_de_en_2k) | "
                       "transformer (multi30k_de_en) − transformer (multi30k_de_en_2k) | p |"]
    paired = table.split(headers[1], 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert [line.split(" | ")[:2] for line in paired] == [["| 1", "bleu"], ["| 1", "chrf"]]
    assert "each table's baseline in its left column" in table


def test_a_table_cannot_mix_tasks(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        tables_main(["results/runs/multi30k_de_en", "results/runs/multi30k_en_de", "--name", "mixed",
                     "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "table 'mixed' would mix the tasks ['multi30k_de_en', 'multi30k_en_de']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_failing_job_does_not_lose_the_others(tmp_path: Path, shared_cache: Path) -> None:
    # Two models x two learning rates, one of them invalid; a fifth of the smoke budget is enough to finish.
    result = multirun(tmp_path / "sweep", shared_cache, "hydra.sweeper.params.seed=1", "trainer.lr=3e-3,-1",
                      "trainer.max_steps=20", "trainer.eval_every=10")
    assert result.returncode != 0  # the sweep reports the failure...
    assert "trainer.lr=-1.0 must be positive" in result.stderr + result.stdout
    done = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("results.json")]
    assert sorted(r["model"] for r in done) == ["gru", "transformer"]  # ...and keeps the two good runs


def test_tables_on_an_empty_folder_says_what_is_missing(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tables_main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no results.json under" in capsys.readouterr().err


# One-model studies of the Transformer, not comparison tables: its sample efficiency by batch size, its dropout
# placement, JoeyNMT's embedding init (a parity ablation)
STUDIES = ("multi30k_de_en_2k", "multi30k_de_en_dropout", "multi30k_de_en_parity_xavier")
# The tuned presets' budget is real target tokens, whatever batch each tuned recipe chose, and their recipes exist
# only once a search has finished: tests/test_search.py composes them with a recipe and checks that budget.
TABLE_PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")
                       if not p.stem.startswith("tune_") and not p.stem.endswith("_tuned")
                       and p.stem not in ("quickstart", "smoke", *STUDIES))


@pytest.mark.parametrize("preset", TABLE_PRESETS)
def test_table_presets_give_both_models_one_budget(preset: str, make_cfg) -> None:
    """A table compares models, not budgets: updates, batches, validation and decoding are the same for both."""
    from omegaconf import OmegaConf

    from experiments.training.grid import sweep_params

    budgets, names = [], []
    for model in sweep_params(preset)["model"]:  # gru and transformer, or sized variants (gru_small)
        cfg = make_cfg(f"experiment={preset}", f"model={model}")
        assert cfg.experiment == preset
        names.append(cfg.model.name)
        t = cfg.trainer
        budgets.append((t.max_steps, t.batch_tokens, t.accum_steps, t.eval_every, t.eval_max_sentences,
                        t.warmup_steps if preset.endswith("_cpu") else None, OmegaConf.to_container(cfg.decoding)))
    assert sorted(names) == ["gru", "transformer"] and budgets[0] == budgets[1]


def test_the_length_column_is_the_mean_words_of_the_committed_outputs() -> None:
    """test_words of the committed AESLC table, against its runs' gzipped test outputs read here (best rows from
    test-beam5, averaged rows from test-beam5-average), and the first-sentence row's own length."""
    import gzip

    rows = {(r["model"], r["checkpoint"]): r for r in csv.DictReader((REPO / "results" / "aeslc.csv").open())}
    for model in ("gru", "transformer"):
        for checkpoint, suffix in (("best", ""), ("average of best 5", "-average")):
            lines = gzip.decompress((REPO / "results" / "runs" / "aeslc" / model / "seed1" / "hyps" /
                                     f"test-beam5{suffix}.txt.gz").read_bytes()).decode().splitlines()
            words = statistics.fmean(len(line.split()) for line in lines)
            assert float(rows[model, checkpoint]["test_words"]) == pytest.approx(words)
    assert float(rows["first sentence", "extractive"]["test_words"]) > float(rows["gru", "best"]["test_words"])
