"""s2s-grid: the jobs of a preset, their fixed folders, and a second run that only finishes what is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.training import grid
from experiments.training.compute_plan import embed_plan, plan_table
from experiments.core.errors import ConfigError
from tests.conftest import HUNG_S, REPO


def test_jobs_are_the_sweep_product_with_seeds_outermost(tmp_path: Path) -> None:
    jobs = grid.plan("multi30k_de_en", tmp_path, [], {})
    assert [j.name for j in jobs] == [f"multi30k_de_en/{m}:{s}" for s in (1, 2, 3) for m in ("gru", "transformer")]
    assert jobs[0].folder == tmp_path / "multi30k_de_en" / "gru" / "seed1"
    assert [j.name for j in grid.plan("multi30k_de_en", tmp_path, [], {"seed": "2,3", "model": "gru"})] == \
        ["multi30k_de_en/gru:2", "multi30k_de_en/gru:3"]
    with pytest.raises(ConfigError, match="'lr' is not swept by multi30k_de_en"):
        grid.plan("multi30k_de_en", tmp_path, [], {"lr": "1"})
    with pytest.raises(ConfigError, match="no hydra.sweeper.params"):
        grid.plan("quickstart", tmp_path, [], {})
    with pytest.raises(ConfigError, match="Could not find 'experiment/nope'"):
        grid.plan("nope", tmp_path, [], {})


def test_a_preset_item_names_its_model_and_seeds_in_the_folder_layouts_order() -> None:
    assert grid.parse_preset("samsum", []) == ("samsum", {})
    assert grid.parse_preset("samsum:2,3", ["model=gru"]) == ("samsum", {"model": "gru", "seed": "2,3"})
    assert grid.parse_preset("multi30k_de_en/transformer:1,2,3", ["model=gru"]) == \
        ("multi30k_de_en", {"model": "transformer", "seed": "1,2,3"})  # the item's model wins over --only's
    assert grid.parse_preset("aeslc/gru", []) == ("aeslc", {"model": "gru"})
    for bad in ("samsum:", "samsum/:1", "/gru:1"):
        with pytest.raises(ConfigError, match="expected NAME, NAME:SEEDS or NAME/MODEL:SEEDS"):
            grid.parse_preset(bad, [])


@pytest.mark.parametrize("lock", [".grid.lock", ".train.lock"])  # another grid's, or a plain s2s-train's
def test_state_comes_from_the_folder_and_its_lock(tmp_path: Path, lock: str) -> None:
    job = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1", "model": "gru"})[0]
    assert job.state() == "missing"
    assert "trainer.resume=true" not in job.command(1) and "trainer.overwrite=true" not in job.command(1)
    # stopped before its first checkpoint: nothing to resume, so it starts over (the begun run moved aside)
    job.folder.mkdir(parents=True)
    (job.folder / "metrics.jsonl").write_text('{"step": 50}\n')
    assert job.state() == "begun" and "trainer.overwrite=true" in job.command(1)
    (job.folder / "checkpoints").mkdir()
    (job.folder / "checkpoints" / "last.pt").write_bytes(b"")
    assert job.state() == "interrupted" and "trainer.resume=true" in job.command(1)
    assert "trainer.overwrite=true" not in job.command(1)
    # another process holds the folder's lock: the job is running there
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)",
                               str(job.folder / lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert job.state() == "running"
        assert grid.run_job(job, 1)[1] == "running elsewhere"
    finally:
        holder.kill()
        holder.wait()
    (job.folder / "results.json").write_text("{}")
    assert job.state() == "done"


def test_a_job_that_fails_before_it_starts_says_why_at_once_and_the_queue_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The pool keeps a job's exception until the whole queue has run: a grid once sat with a core idle, its
    next job's error unsaid, because the checkout's conf/ had a key its loaded schema lacked."""
    first, second = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1"})
    for job in (first, second):
        job.folder.mkdir(parents=True)

    def refuse(job: grid.Job) -> str:
        if job is first:
            raise ConfigError("In 'model/gru': Key 'dropout_masks' not in 'GRUConfig'\nmore")
        return "waiting for something"

    monkeypatch.setattr(grid, "start_from_source", refuse)
    assert grid.run_job(first, 1) == (first, "failed (ConfigError before it started)")
    said = capsys.readouterr().out
    assert f"failed  {first.name} before it started: ConfigError: In 'model/gru': Key 'dropout_masks' not in" in said
    assert "Traceback" in (first.folder / "grid.log").read_text()
    assert grid.run_job(second, 1) == (second, "waiting for something")


def test_a_grid_whose_checkout_moved_starts_nothing_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys) -> None:
    job = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1", "model": "gru"})[0]
    monkeypatch.setattr(grid, "checkout_commit", lambda: "aaaaaaa")
    running = grid.Running(2)
    monkeypatch.setattr(grid, "checkout_commit", lambda: "bbbbbbb")
    assert grid.run_job(job, 1, running) == (job, "not started (the grid was ended)")
    assert "the checkout under this grid moved from aaaaaaa to bbbbbbb" in running.ended_by
    assert f"not starting {job.name} or any job after it" in capsys.readouterr().out
    assert not (job.folder / "grid.log").exists()  # nothing was started


def s2s_grid(runs: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "experiments.training.grid", "smoke", "--runs-dir", str(runs), "--jobs", "2",
                           f"cache_dir={cache}", *args], cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_running_the_grid_again_skips_done_jobs_and_resumes_interrupted_ones(tmp_path: Path,
                                                                             shared_cache: Path) -> None:
    first = s2s_grid(tmp_path, shared_cache, "--only", "seed=1")
    assert first.returncode == 0, first.stderr + first.stdout
    folders = [tmp_path / "smoke" / m / "seed1" for m in ("gru_tiny", "transformer_tiny")]
    assert all((f / "results.json").exists() for f in folders)
    # Pretend the Transformer was killed after its step-50 checkpoint: keep last.pt, drop what came after.
    interrupted = folders[1]
    (interrupted / "results.json").unlink()
    before = json.loads((folders[0] / "results.json").read_text())
    again = s2s_grid(tmp_path, shared_cache, "--only", "seed=1")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "1 done or running elsewhere, 1 to run" in again.stdout
    assert "trainer.resume=true" in (interrupted / "grid.log").read_text().split("\n===")[-1]
    assert json.loads((interrupted / "results.json").read_text())["steps"] == 100
    assert json.loads((folders[0] / "results.json").read_text()) == before  # the finished job was not touched
    status = subprocess.run([sys.executable, "-m", "experiments.training.grid", "smoke", "--runs-dir", str(tmp_path),
                             "--only", "seed=1", "--status"], cwd=REPO, capture_output=True, text=True)
    assert status.stdout.count("done") == 2 and "best valid bleu" in status.stdout and "s/update" in status.stdout


def test_a_pause_in_one_validation_interval_does_not_set_the_jobs_pace(tmp_path: Path) -> None:
    """Wall seconds count a SIGSTOP (a benchmark, CI) as training: the pace is the median over the intervals."""
    job = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1", "model": "gru"})[0]
    job.folder.mkdir(parents=True)
    seconds = [500.0, 1000.0, 2500.0, 3000.0]  # 2 s an update, but 6 s in the third interval (paused)
    (job.folder / "metrics.jsonl").write_text("".join(
        json.dumps({"event": "valid", "step": 250 * k, "bleu": 1.0, "tokens": 250_000 * k, "train_seconds": t}) + "\n"
        for k, t in enumerate(seconds, start=1)))
    facts = job.facts()
    assert facts["s_per_update"] == pytest.approx(2.0) and facts["s_per_token"] == pytest.approx(0.002)
    assert grid.typical_pace([{"step": 250, "train_seconds": 750.0}], "step") == 3.0  # one interval: the mean


def test_the_compute_plan_is_written_from_the_run_folders(tmp_path: Path) -> None:
    jobs = grid.plan("multi30k_de_en", tmp_path, [], {"seed": "1,2"})
    done, running = jobs[0], jobs[1]  # gru seed 1, transformer seed 1
    for job, rows in ((done, [(250, 30.0, 500.0), (500, 33.0, 1000.0)]), (running, [(250, 20.0, 750.0)])):
        job.folder.mkdir(parents=True)
        (job.folder / "metrics.jsonl").write_text("".join(
            json.dumps({"event": "valid", "step": s, "bleu": b, "tokens": s * 3000, "train_seconds": t}) + "\n"
            for s, b, t in rows))
        (job.folder / "config.yaml").write_text("trainer:\n  max_steps: 1000\n")
    (done.folder / "results.json").write_text("{}")
    readme = tmp_path / "README.md"
    readme.write_text("plan:\n<!-- compute-plan -->\nold\n<!-- /compute-plan -->\nend\n")
    embed_plan(readme, jobs, "multi30k_de_en:1,2")
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- /compute-plan -->\nend\n")
    assert "| multi30k_de_en | gru | 1 | done | 500 / 1000 | bleu 33.00 (step 500) | 2.00 | 0 |" in text
    # begun, with no last.pt to resume from: it starts over, so all 1000 updates are left, at 3 s each
    assert "| multi30k_de_en | transformer | 1 | begun | 250 / 1000 | bleu 20.00 (step 250) | 3.00 | 0.8 |" in text
    # seed 2 has not started: the preset's limit, at the pace of its seed-1 sibling
    assert "| multi30k_de_en | gru | 2 | missing | 0 / 3000 | – | – | ~1.7 |" in text
    # what is left adds up beneath the table: 1000 x 3 s + 3000 x 2 s + 3000 x 3 s (transformer 2 at seed 1's pace)
    assert "In all, 3 jobs not done: 5.0 job-hours at these paces; about 2.5 h as two one-thread jobs" in text
    plain = tmp_path / "plain.md"
    plain.write_text("nothing here\n")
    with pytest.raises(ConfigError, match="no <!-- compute-plan -->"):
        embed_plan(plain, jobs, "x")


def test_a_search_trial_is_planned_by_its_token_budget(tmp_path: Path) -> None:
    """A trial ends at trainer.max_tokens, long before its update cap: hours left count the tokens left."""
    # gru 1, transformer 1, gru 2, transformer 2
    first, other, second, _ = grid.plan("tune_multi30k_de_en", tmp_path, [], {"seed": "1,2"})
    first.folder.mkdir(parents=True)
    (first.folder / "metrics.jsonl").write_text(json.dumps(
        {"event": "valid", "step": 500, "bleu": 20.0, "tokens": 1_280_000, "train_seconds": 640.0}) + "\n")
    (first.folder / "config.yaml").write_text("trainer:\n  max_steps: 20000\n  max_tokens: 5120000\n")
    table = plan_table([first, second])
    # begun without a checkpoint, so it starts over: 5.12M tokens at 0.5 ms each, 0.71 h; the second trial, not
    # begun, at its sibling's pace: 0.71 h too
    assert "| tune_multi30k_de_en | gru | 1 | begun | 500 / 20000 (1.28M / 5.12M tokens) | bleu 20.00 (step 500) " \
           "| 1.28 | 0.7 |" in table
    assert "| tune_multi30k_de_en | gru | 2 | missing | 0 / 20000 (0.00M / 5.12M tokens) | – | – | ~0.7 |" in table
    # no Transformer trial has timed an update: its hours are unknown, and the total says it leaves them out
    assert "In all, 3 jobs not done: 1.4 job-hours at these paces; and 1 with no pace yet" in plan_table(
        [first, other, second])


def test_a_trial_not_begun_is_planned_at_the_pace_of_its_models_trials_together(tmp_path: Path) -> None:
    """Trials draw different batch sizes: the next one is planned at all its model's trials' seconds over their
    tokens, not at whichever trial the table read last."""
    gru1, _, gru2, _, gru3, _ = grid.plan("tune_multi30k_de_en", tmp_path, [], {"seed": "1,2,3"})
    for job, tokens, seconds in ((gru1, 5_120_000, 5120.0), (gru2, 1_280_000, 3840.0)):  # 1 and 3 ms a token
        job.folder.mkdir(parents=True)
        (job.folder / "metrics.jsonl").write_text(json.dumps(
            {"event": "valid", "step": 500, "bleu": 20.0, "tokens": tokens, "train_seconds": seconds}) + "\n")
        (job.folder / "config.yaml").write_text("trainer:\n  max_steps: 20000\n  max_tokens: 5120000\n")
    (gru1.folder / "results.json").write_text("{}")
    # (5120 + 3840) s over 6.4M tokens = 1.4 ms a token: 5.12M tokens, 1.99 h (trial 2 alone: 4.27 h; trial 1: 1.42)
    row = "| tune_multi30k_de_en | gru | 3 | missing | 0 / 20000 (0.00M / 5.12M tokens) | – | – | ~2.0 |"
    assert row in plan_table([gru1, gru2, gru3])


def test_jobs_of_presets_with_no_pace_yet_are_planned_from_their_task_or_as_copies(tmp_path: Path) -> None:
    """A trained_as job whose source trains here only runs its tests; one whose source was only exported trains,
    and, like a copy preset's job, is planned at the pace of its model on the same task in the other presets."""
    runs, committed = tmp_path / "runs", tmp_path / "committed"
    only = {"seed": "1,2", "model": "gru"}
    samsum = grid.plan("samsum", runs, [], only, committed)
    lengths = grid.plan("samsum_lengths", runs, [], only, committed)
    copy = grid.plan("samsum_copy", runs, [], {"seed": "1", "model": "gru"}, committed)
    exported = samsum[0].committed  # seed 1: exported only, no checkpoints here; seed 2 is queued to train here
    exported.mkdir(parents=True)
    (exported / "metrics.jsonl").write_text(json.dumps(
        {"event": "valid", "step": 6000, "rouge_mean": 28.0, "tokens": 6000 * 800, "train_seconds": 12000.0}) + "\n")
    (exported / "config.yaml").write_text("trainer:\n  max_steps: 6000\n")
    (exported / "results.json").write_text("{}")
    table = plan_table(samsum + lengths + copy)
    assert "| samsum | gru | 2 | missing | 0 / 6000 | – | – | ~3.3 |" in table  # seed 1's 2 s an update
    assert "| samsum_lengths | gru | 1 | missing | 0 / 6000 | – | – | ≈3.3 |" in table  # its source was only exported
    assert "| samsum_lengths | gru | 2 | missing | 0 / 6000 | – | – | tests only |" in table  # after samsum:2 here
    assert "| samsum_copy | gru | 1 | missing | 0 / 6000 | – | – | ≈3.3 |" in table
    assert "In all, 4 jobs not done: 10.0 job-hours at these paces; 1 of them only run their tests" in table


def test_a_job_committed_under_results_runs_is_done_even_when_the_runs_folder_was_lost(tmp_path: Path) -> None:
    committed = tmp_path / "results" / "runs"
    copy = committed / "multi30k_de_en" / "gru" / "seed1"
    copy.mkdir(parents=True)
    (copy / "results.json").write_text("{}")
    (copy / "metrics.jsonl").write_text(json.dumps({"event": "valid", "step": 3000, "bleu": 40.0,
                                                    "train_seconds": 7500.0}) + "\n")
    (copy / "config.yaml").write_text("trainer:\n  max_steps: 3000\n")
    gru1, transformer1 = grid.plan("multi30k_de_en", tmp_path / "s2s-runs", [], {"seed": "1"}, committed)
    assert (gru1.state(), transformer1.state()) == ("done", "missing")
    assert grid.run_job(gru1, 1) == (gru1, f"done (committed in {copy})")
    assert not gru1.folder.exists() or not (gru1.folder / "metrics.jsonl").exists()  # nothing was run
    # --status says where to look: the exported copy, since this machine has no run folder for it
    assert gru1.where(tmp_path / "s2s-runs") == f"{copy} (exported copy; no run folder here)"
    assert transformer1.where(tmp_path / "s2s-runs") == "multi30k_de_en/transformer/seed1"
    assert gru1.facts()["s_per_update"] == 2.5 and gru1.limit() == 3000  # read from the committed copy
    [unaware] = grid.plan("multi30k_de_en", tmp_path / "s2s-runs", [], {"seed": "1", "model": "gru"})
    assert unaware.state() == "missing"  # without the committed folder it would run again
    # a retraining begun in the runs folder (--committed none) does not replace the done run's facts
    gru1.folder.mkdir(parents=True, exist_ok=True)
    (gru1.folder / "metrics.jsonl").write_text(json.dumps({"event": "valid", "step": 250, "bleu": 5.0}) + "\n")
    assert gru1.state() == "done" and gru1.facts()["best"] == 40.0 and gru1.facts()["step"] == 3000
    # nor does a finished one (retrained for its checkpoints): the committed copy is what the tables report
    (gru1.folder / "results.json").write_text("{}")
    (gru1.folder / "metrics.jsonl").write_text(json.dumps({"event": "valid", "step": 3000, "bleu": 39.0}) + "\n")
    assert gru1.state() == "done" and gru1.facts()["best"] == 40.0


def test_a_done_job_whose_preset_changed_since_says_so(tmp_path: Path, capsys) -> None:
    """A committed run counts as done whatever the preset says today; --status and the compute plan name the
    settings that changed since it ran, so its rows are rerun on purpose, not trusted by mistake."""
    from omegaconf import OmegaConf

    from experiments.core.config import validate

    committed = tmp_path / "results" / "runs"
    gru1, transformer1 = grid.plan("multi30k_de_en", tmp_path / "s2s-runs", [], {"seed": "1"}, committed)
    for job in (gru1, transformer1):
        config = validate(job.preset_config())
        config.trainer.num_threads = 2  # where and how fast it ran: not a change of what it reports
        job.committed.mkdir(parents=True)
        (job.committed / "results.json").write_text("{}")
        (job.committed / "metrics.jsonl").write_text("")
        (job.committed / "config.yaml").write_text(OmegaConf.to_yaml(config))
    assert gru1.changed_since() == {} and transformer1.changed_since() == {}
    config = OmegaConf.load(transformer1.committed / "config.yaml")
    config.decoding.min_len, config.trainer.lr = 3, 0.5
    (transformer1.committed / "config.yaml").write_text(OmegaConf.to_yaml(config))
    preset = validate(transformer1.preset_config())
    assert transformer1.changed_since() == {"decoding.min_len": (3, preset.decoding.min_len),
                                            "trainer.lr": (0.5, preset.trainer.lr)}
    assert transformer1.state() == "done"  # still skipped by the grid: a rerun is asked for, not made
    assert "| multi30k_de_en | transformer | 1 | done (preset changed since: decoding.min_len, trainer.lr) |" in \
        plan_table([gru1, transformer1])
    grid.main(["multi30k_de_en:1", "--status", "--runs-dir", str(tmp_path / "s2s-runs"), "--committed", str(committed)])
    out = capsys.readouterr().out
    assert out.count("the preset changed since this run") == 1
    assert f"decoding.min_len 3 -> {preset.decoding.min_len!r}, trainer.lr 0.5 -> {preset.trainer.lr!r}" in out


@pytest.mark.slow
def test_a_preset_trained_as_another_is_tested_from_its_finished_runs_not_trained_again(tmp_path: Path,
                                                                                        shared_cache: Path) -> None:
    """smoke_lengths trains what smoke trains (trained_as: smoke): the grid copies smoke's finished run and only
    the final tests run again, under smoke_lengths' length choices; a job whose source has no run here trains."""
    runs = tmp_path / "runs"
    common = ["--runs-dir", str(runs), "--committed", "none", "--jobs", "1", f"cache_dir={shared_cache}"]
    grid_cmd = [sys.executable, "-m", "experiments.training.grid"]
    first = subprocess.run([*grid_cmd, "smoke/gru_tiny:1", "smoke_lengths/gru_tiny:1", *common],
                           capture_output=True, text=True, timeout=HUNG_S)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "copy   smoke_lengths/gru_tiny:1: the finished run" in first.stdout
    source, derived = runs / "smoke" / "gru_tiny" / "seed1", runs / "smoke_lengths" / "gru_tiny" / "seed1"
    before, after = (json.loads((d / "results.json").read_text()) for d in (source, derived))
    assert (after["experiment"], before["experiment"]) == ("smoke_lengths", "smoke")
    assert "length_choice" in after and "length_choice" not in before
    assert (after["steps"], after["best_step"], after["valid_bleu"]) == (before["steps"], before["best_step"],
                                                                         before["valid_bleu"])
    trained = [[r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["event"] == "train"]
               for d in (source, derived)]
    assert trained[0] == trained[1]  # not one update more: the copy's record of training, as it was
    assert "experiment: smoke_lengths" in (derived / "config.yaml").read_text()
    assert not (derived / "wandb_run_id").exists() or (derived / "wandb_run_id").read_text() != \
        (source / "wandb_run_id").read_text()
    # no finished smoke run of seed 2 here: smoke_lengths trains it as smoke would
    second = subprocess.run([*grid_cmd, "smoke_lengths/gru_tiny:2", *common], capture_output=True, text=True,
                            timeout=HUNG_S)
    assert second.returncode == 0 and "copy " not in second.stdout, second.stderr + second.stdout
    assert [r for r in map(json.loads, (runs / "smoke_lengths" / "gru_tiny" / "seed2" / "metrics.jsonl").read_text()
                                      .splitlines()) if r["event"] == "train"]


def test_trained_as_is_refused_where_the_presets_train_differently(tmp_path: Path) -> None:
    from experiments.training import derive
    from omegaconf import OmegaConf

    from experiments.core.config import validate
    from tests.conftest import compose_cfg

    source = tmp_path / "samsum" / "gru" / "seed1"
    source.mkdir(parents=True)
    trained = validate(compose_cfg(["experiment=samsum", "model=gru"]))
    trained.trainer.lr = 0.5
    (source / "config.yaml").write_text(OmegaConf.to_yaml(trained))
    with pytest.raises(ConfigError, match=r"trained_as: samsum says this preset trains what .* trained, but they "
                                          r"differ in trainer\.lr 0\.5 -> 0\.001"):
        derive.check_same_training(source, validate(compose_cfg(["experiment=samsum_lengths", "model=gru"])))
    trained.trainer.lr = validate(compose_cfg(["experiment=samsum", "model=gru"])).trainer.lr
    (source / "config.yaml").write_text(OmegaConf.to_yaml(trained))
    derive.check_same_training(source, validate(compose_cfg(["experiment=samsum_lengths", "model=gru"])))
    with pytest.raises(ConfigError, match=r"differ in model\.copy False -> True"):
        copy = validate(compose_cfg(["experiment=samsum_copy", "model=gru"]))
        copy.trained_as = "samsum"  # as if samsum_copy had kept samsum_lengths' trained_as
        derive.check_same_training(source, copy)
