"""The trainer end to end on CPU: configs, training, metrics, W&B, checkpoints, resume, s2s-eval."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu
import torch
from hydra.errors import ConfigCompositionException

from experiments.evaluation import checkpoint
from experiments.core.config import check_override_keys, validate
from experiments.core.config_groups import check_tuned
from experiments.core.errors import CheckpointError, ConfigError
from experiments.evaluation.evaluate import evaluate_checkpoint
from experiments.training.train import main as train_main, run
from tests.conftest import CONF, HUNG_S, REPO, compose_cfg

TINY = [
    "task=toy_reverse",
    "task.toy.train_size=2000",
    "task.toy.eval_size=100",
    "model=transformer",
    "model.d_model=32",
    "model.heads=2",
    "model.ff_size=64",
    "model.enc_layers=1",
    "model.dec_layers=1",
    "trainer=debug",
    "trainer.max_steps=60",
    "trainer.eval_every=20",
    "trainer.warmup_steps=20",
    "trainer.lr=3e-3",
    "trainer.batch_tokens=1024",
    "trainer.num_threads=1",
    "decoding.beam_size=2",
    "logger.mode=offline",
]


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def pairwise(tasks: list[str], models: list[str], trainers: list[str]) -> list[tuple[str, str, str]]:
    """Every (task, model) once, the trainer turning with both indices: each pair of any two groups occurs."""
    return [(task, model, trainers[(i + j) % len(trainers)]) for i, task in enumerate(tasks)
            for j, model in enumerate(models)]


# The groups meet only two at a time (a model's recipe and a trainer preset both set trainer keys; validate's
# rules read the task and the trainer), so every pair of choices covers what every triple would, with a third
# of the compositions (0.4 s each: the triples cost about a minute of the suite).
COMBINATIONS = pairwise(names("task"), names("model"), names("trainer"))


def test_the_combinations_hold_every_pair_of_choices() -> None:
    for a, b in ((0, 1), (0, 2), (1, 2)):
        groups = [names(g) for g in ("task", "model", "trainer")]
        assert {(c[a], c[b]) for c in COMBINATIONS} == {(x, y) for x in groups[a] for y in groups[b]}


@pytest.mark.parametrize("task, model, trainer", COMBINATIONS)
def test_every_pair_of_task_model_trainer_choices_composes(task: str, model: str, trainer: str) -> None:
    cfg = validate(compose_cfg([f"task={task}", f"model={model}", f"trainer={trainer}"]))
    assert cfg.task.name == task and cfg.model.name == model.split("_")[0]  # gru_tiny, gru_small: a gru
    assert set(cfg.task.splits) >= {"train", "valid", "test"}


@pytest.mark.parametrize("experiment", names("experiment"))
def test_every_experiment_preset_composes(experiment: str) -> None:
    try:
        check_tuned(experiment, CONF)
    except ConfigError as e:  # tuned finals before their search has finished: tests/test_search.py composes them
        assert experiment.endswith("_tuned") and "s2s-tuned" in str(e)  # with a recipe
        return
    cfg = validate(compose_cfg([f"experiment={experiment}"]))
    assert cfg.experiment == experiment


def test_misspelled_key_names_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.lrr'. Did you mean 'trainer.lr'\?.*warmup_steps"):
        check_override_keys(["trainer.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"'model.hiden'.*Did you mean 'model.hidden_size'"):
        check_override_keys(["model=gru", "model.hiden=3"])
    check_override_keys(["trainer.lr=1e-3", "model=gru", "model.hidden_size=3", "task.splits.extra=x"])
    cfg = compose_cfg([])
    cfg.trainer._set_flag("struct", False)
    cfg.trainer.lrr = 1.0  # a typo that reached the config some other way (a YAML file)
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.lrr'.*Valid keys here"):
        validate(cfg)


def test_bad_value_lists_the_choices() -> None:
    for override, choices in (("trainer.precision=fp16", r"Invalid value 'fp16', expected one of \[auto, fp32, bf16\]"),
                              ("model.attention=dot", r"expected one of \[bahdanau, luong_dot, luong_general\]")):
        with pytest.raises(ConfigCompositionException, match=f"Error merging override {override}") as error:
            compose_cfg(["model=gru", override])
        assert re.search(choices, str(error.value.__cause__))
    with pytest.raises(ConfigError, match=r"trainer.batch_tokens=0 must be at least 1"):
        validate(compose_cfg(["trainer.batch_tokens=0"]))
    with pytest.raises(ConfigError, match=r"decoding.min_len=-1 must be 0 \(no minimum\) or more"):
        validate(compose_cfg(["decoding.min_len=-1"]))
    with pytest.raises(ConfigError, match=r"trainer.test_splits names \['valid'\].*its test splits are \['test'\]"):
        validate(compose_cfg(["trainer.test_splits=[test,valid]"]))
    with pytest.raises(ConfigError, match=r"model.activation_dropout=1.0 must be in \[0, 1\)"):
        validate(compose_cfg(["model=transformer", "model.activation_dropout=1.0"]))


def test_cli_reports_a_bad_key_without_a_traceback(monkeypatch, capsys) -> None:
    # The console script's own function, in this process: an uncaught exception (a traceback) would fail here.
    monkeypatch.setattr(sys, "argv", ["s2s-train", "trainer.lrr=1"])
    with pytest.raises(SystemExit) as exit_info:
        train_main()
    assert exit_info.value.code == 2
    assert "Did you mean 'trainer.lr'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(TINY + [f"cache_dir={shared_cache}"])
    return run_dir, run(cfg, run_dir)


def test_short_training_lowers_the_loss_and_scores_bleu(trained: tuple[Path, dict]) -> None:
    run_dir, results = trained
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if r["event"] == "train"]
    assert train[-1] < 0.8 * train[0]
    assert results["test"]["test"]["bleu"] > 0
    assert {"config.yaml", "results.json", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoints" / "best.pt").exists() and (run_dir / "checkpoints" / "last.pt").exists()
    assert (run_dir / "hyps" / "valid-step20.txt").exists()


def test_reported_bleu_equals_sacrebleu_on_the_written_hypotheses(trained: tuple[Path, dict]) -> None:
    run_dir, results = trained
    from experiments.data.pipeline import TaskData

    hyps = (run_dir / "hyps" / "test-beam2.txt").read_text().splitlines()
    cfg = validate(compose_cfg(TINY))
    refs = TaskData(cfg.task, results_cache(run_dir)).split("test").dataset["tgt"]
    direct = sacrebleu.corpus_bleu(hyps, [refs])
    assert results["test"]["test"]["bleu"] == pytest.approx(direct.score, abs=1e-9)
    assert "tok:13a" in results["test"]["test"]["bleu_signature"]


def results_cache(run_dir: Path) -> str:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())["cache_dir"]


def test_wandb_offline_run_holds_the_logged_keys(trained: tuple[Path, dict]) -> None:
    run_dir, _ = trained
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    content = files[0].read_bytes()
    for key in (b"train/loss", b"valid/bleu", b"valid/ppl", b"test/test/bleu", b"test/samples", b"params"):
        assert key in content, key


def test_s2s_eval_decodes_a_run_and_writes_metrics(trained: tuple[Path, dict]) -> None:
    run_dir, results = trained
    result = evaluate_checkpoint(str(run_dir), ["split=test", "decoding.beam_size=2"])
    assert result["bleu"] == pytest.approx(results["test"]["test"]["bleu"])
    written = json.loads((run_dir / "eval" / "test-beam2.json").read_text())
    assert written["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert len((run_dir / "eval" / "test-beam2.txt").read_text().splitlines()) == 100
    with pytest.raises(Exception, match=r"no split 'dev'"):
        evaluate_checkpoint(str(run_dir), ["split=dev"])


def test_checkpoints_load_weights_only_and_reject_bad_files(trained: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = trained
    best = run_dir / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    assert state["format"] == checkpoint.FORMAT
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated.pt is not a readable checkpoint"):
        checkpoint.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"not an s2s-compare checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(CheckpointError, match=r"no checkpoint at"):
        checkpoint.load(tmp_path / "missing.pt")


def test_results_name_the_code_each_start_ran_not_the_code_there_at_the_end(tmp_path: Path, shared_cache: Path,
                                                                              monkeypatch) -> None:
    """The grid moves its checkout while jobs run: a run records the commit read when it started, and a resume
    under other code adds its own."""
    from experiments.training import trainer

    reads = iter(["aaaaaaa", "bbbbbbb", "bbbbbbb"])
    monkeypatch.setattr(trainer, "git_commit", lambda: next(reads))
    short = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.test_after_training=false",
             "logger.mode=disabled", f"cache_dir={shared_cache}"]
    first = run(compose_cfg(TINY + short), tmp_path)
    assert first["commit"] == "aaaaaaa"
    longer = [o.replace("max_steps=20", "max_steps=30") for o in short]
    resumed = run(compose_cfg(TINY + longer + ["trainer.resume=true", "trainer.change_budget=true"]), tmp_path)
    assert resumed["commit"] == "aaaaaaa+bbbbbbb"


def test_cpu_seconds_leave_out_a_pause_that_wall_seconds_count(tmp_path: Path, shared_cache: Path,
                                                               monkeypatch) -> None:
    """A grid job paused by SIGSTOP (a benchmark, CI) keeps its wall clock running: train_seconds counts the pause,
    train_cpu_seconds does not. The pause is played by a sleep in every update (no CPU used, time passes); a run
    resumed from a checkpoint written before CPU seconds were counted says it does not know them (null)."""
    from experiments.training import trainer

    pause, steps = 0.25, 10
    real_step = trainer.Trainer.train_step

    def paused_step(self, group):
        time.sleep(pause)
        return real_step(self, group)

    monkeypatch.setattr(trainer.Trainer, "train_step", paused_step)
    short = [f"trainer.max_steps={steps}", "trainer.eval_every=10", "trainer.test_after_training=false",
             "logger.mode=disabled", f"cache_dir={shared_cache}"]
    first = run(compose_cfg(TINY + short), tmp_path)
    assert first["train_seconds"] >= steps * pause
    assert 0 < first["train_cpu_seconds"] <= first["train_seconds"] - steps * pause / 2

    last = tmp_path / "checkpoints" / "last.pt"
    state = checkpoint.load(last)
    del state["trainer"]["train_cpu_seconds"]  # as a checkpoint of an older run holds it
    checkpoint.save(state, last)
    longer = [o.replace(f"max_steps={steps}", f"max_steps={steps + 2}") for o in short]
    resumed = run(compose_cfg(TINY + longer + ["trainer.resume=true", "trainer.change_budget=true"]), tmp_path)
    assert resumed["steps"] == steps + 2 and resumed["train_cpu_seconds"] is None


def test_a_crash_during_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    checkpoint.save({"step": 1}, target)

    def crash(path: Path, data: memoryview) -> None:
        path.write_bytes(bytes(data[:10]))  # half written when the machine dies
        raise OSError("I/O error")

    monkeypatch.setattr(checkpoint, "write_durably", crash)
    with pytest.raises(OSError):
        checkpoint.save({"step": 2}, target)
    assert checkpoint.load(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def train_cli(run_dir: Path, cache: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "experiments.training.train", *TINY, f"cache_dir={cache}", "logger.mode=disabled",
            f"hydra.run.dir={run_dir}", "trainer.max_steps=80", *extra]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigterm_ends_a_run_with_the_command_that_resumes_it(tmp_path: Path, shared_cache: Path) -> None:
    """A scheduler's stop (SIGTERM) is not a crash: exit 143, one line saying how to go on, the checkpoint intact."""
    run_dir = tmp_path / "run"
    victim = subprocess.Popen([sys.executable, "-m", "experiments.training.train", *TINY, f"cache_dir={shared_cache}",
                               "logger.mode=disabled", f"hydra.run.dir={run_dir}", "trainer.max_steps=100000"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # logs: stdout
    hung = time.time() + HUNG_S
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert victim.poll() is None and time.time() < hung, "run ended (or hung) before its first checkpoint"
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=HUNG_S) == 143
    err = victim.stdout.read()
    assert f"ended by SIGTERM: add trainer.resume=true hydra.run.dir={run_dir} to the same command" in err
    assert "Traceback" not in err
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["trainer"]["step"] >= 1
    assert not list((run_dir / "checkpoints").glob(".*tmp"))  # no temporary left behind


@pytest.mark.slow
def test_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path, shared_cache: Path) -> None:
    straight = train_cli(tmp_path / "straight", shared_cache)  # beside the one to kill: a core each

    killed_dir = tmp_path / "killed"
    victim = train_cli(killed_dir, shared_cache)
    hung = time.time() + HUNG_S
    while not (killed_dir / "checkpoints" / "last.pt").exists():
        assert victim.poll() is None and time.time() < hung, "run ended (or hung) before its first checkpoint"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed_from = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=True)["trainer"]["step"]
    assert resumed_from < 80
    resumed = train_cli(killed_dir, shared_cache, "trainer.resume=true")
    assert resumed.wait(timeout=HUNG_S) == 0, resumed.stderr.read()
    assert straight.wait(timeout=HUNG_S) == 0, straight.stderr.read()

    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((killed_dir / "results.json").read_text())
    for key in ("steps", "best_step", "valid_bleu"):
        assert a[key] == b[key], key
    assert a["test"]["test"]["bleu"] == b["test"]["test"]["bleu"]
    final_a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)["model"]
    final_b = torch.load(killed_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    events = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "valid"] == [20, 40, 60, 80]
