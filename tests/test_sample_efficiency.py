"""Sample efficiency across batch sizes: curves grouped by batch size, tokens to a threshold, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.reporting import sample_efficiency as se


def write_run(folder: Path, model: str, batch_tokens: int, seed: int, points: list[tuple[int, float]],
              per_update: int) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  name: {model}\ntrainer:\n  batch_tokens: {batch_tokens}\n")
    rows = [{"event": "train", "step": 1, "loss": 9.0}]
    rows += [{"event": "valid", "step": step, "bleu": bleu, "tokens": step * per_update, "train_seconds": step * 0.5}
             for step, bleu in points]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    # 4096-token batches, 2 seeds, 1000 real target tokens an update: validations at 1M, 2M, 3M tokens
    write_run(root / "big/transformer/seed1", "transformer", 4096, 1, [(1000, 10.0), (2000, 30.0), (3000, 40.0)], 1000)
    write_run(root / "big/transformer/seed2", "transformer", 4096, 2, [(1000, 20.0), (2000, 30.0), (3000, 36.0)], 1000)
    # 2048-token batches, one seed, 500 an update: the same tokens at twice the updates
    write_run(root / "small/transformer/seed1", "transformer", 2048, 1, [(2000, 25.0), (4000, 35.0), (6000, 37.0)],
              500)
    write_run(root / "big/gru/seed1", "gru", 4096, 1, [(1000, 50.0)], 1000)  # another model: left out
    return root


def test_runs_are_grouped_by_batch_size_for_one_model(runs: Path) -> None:
    by_size, folders = se.load_curves([runs], "transformer", "bleu")
    assert list(by_size) == ["2048-token batches", "4096-token batches"]
    assert [len(seeds) for seeds in by_size.values()] == [1, 2]
    assert len(folders) == 3 and not any("gru" in f for f in folders)


def test_tokens_to_threshold_interpolate_the_seed_mean(runs: Path) -> None:
    by_size, _ = se.load_curves([runs], "transformer", "bleu")
    big = by_size["4096-token batches"]  # seed mean 15, 30, 38 at 1M, 2M, 3M
    assert se.first_reach(big, "bleu", 34.0) == pytest.approx(2.5e6)
    assert se.first_reach(big, "bleu", 15.0) == pytest.approx(1e6)
    assert se.first_reach(big, "bleu", 38.5) is None
    small = by_size["2048-token batches"]  # 25, 35, 37 at 1M, 2M, 3M
    assert se.first_reach(small, "bleu", 34.0) == pytest.approx(1.9e6)


def test_report_and_plot(runs: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- table:sample_efficiency -->\nSTALE\n<!-- /table:sample_efficiency -->\nafter\n")
    out = tmp_path / "results"
    se.main([str(runs), "--threshold", "34", "--out", str(out), "--readme", str(readme)])
    report = (out / "sample_efficiency.md").read_text()
    assert "| 2048-token batches | 1 | 500 | 3.00M | 37.00 at 3.00M | 1.90M |" in report
    assert "| 4096-token batches | 2 | 1,000 | 3.00M | 38.00 at 3.00M | 2.50M |" in report
    assert (out / "sample_efficiency.png").stat().st_size > 0
    text = readme.read_text()
    assert "STALE" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "](results/sample_efficiency.png)" in text  # relative to the document it is copied into


def test_no_matching_run_is_a_clear_error(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        se.main([str(runs), "--model", "lstm"])
    assert exit_.value.code == 2
    assert "no lstm run with validation bleu below" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        se.main([str(runs / "missing")])


def test_committed_report_is_what_its_command_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """results/sample_efficiency.md is rebuilt, byte for byte, by the command it names (from results/runs)."""
    import shlex

    repo = Path(__file__).resolve().parents[1]
    committed = (repo / "results" / "sample_efficiency.md").read_text()
    command = committed.split("Produced by `", 1)[1].split("`", 1)[0]
    args = shlex.split(command)[3:]  # after "python -m experiments.reporting.sample_efficiency"
    monkeypatch.chdir(repo)
    se.main([*args, "--out", str(tmp_path)])
    assert (tmp_path / "sample_efficiency.md").read_text() == committed
