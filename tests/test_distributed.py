"""Data-parallel training on CPU (gloo): one process's equal, epoch coverage, resume, launchers and presets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from experiments.training import distributed, train
from experiments.data.pipeline import TaskData
from experiments.core.errors import ConfigError
from experiments.training.trainer import Trainer
from tests.conftest import CONF, HUNG_S, REPO
from tests.test_trainer import TINY

# Dropout off: the ranks' random streams then play no part, and only the batches and the
# loss normalisation decide the update.
DDP = TINY + ["model.dropout=0.0", "trainer.warmup_steps=1", "trainer.max_steps=5", "trainer.eval_every=5",
              "trainer.test_after_training=false", "logger.mode=disabled"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_epoch(trainer: Trainer) -> list[list[int]]:
    """The example indices of every batch the trainer's own stream yields in epoch 0."""
    batches = []
    for _, batch in trainer.batch_stream():
        if trainer.progress.epoch:
            break
        batches.append(batch.indices.tolist())
    return batches


def rank_worker(rank: int, port: int, streams: dict[str, DictConfig], fit: DictConfig, root: Path) -> None:
    """One of two ranks, started the way torchrun starts them: each rank's epoch streams, then a short fit."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    with distributed.process_group():
        epochs = {name: first_epoch(Trainer(cfg, root / name)) for name, cfg in streams.items()}
        trainer = Trainer(fit, root / "fit")
        reduced_at: list[int] = []  # the update each gradient all-reduce belongs to (one bucket: a tiny model)

        def counting_hook(state, bucket):
            reduced_at.append(trainer.progress.step)
            return allreduce_hook(state, bucket)

        trainer.ddp.register_comm_hook(None, counting_hook)
        trainer.fit()
    (root / f"rank{rank}.json").write_text(json.dumps({"epochs": epochs, "reduced_at": reduced_at}))


def budgets(data: TaskData, parity: int) -> int:
    """A batch budget near 1024 tokens whose epoch-0 plan has an even (0) or odd (1) number of batches."""
    return next(b for b in range(1024, 1200) if len(data.plan("train", b, shuffle=True, seed=1)) % 2 == parity)


def test_two_ranks_equal_one_process_over_the_same_batches(tmp_path: Path, shared_cache: Path, make_cfg) -> None:
    base = [*DDP, f"cache_dir={shared_cache}"]
    data = TaskData(make_cfg(*base).task, shared_cache)  # builds the caches the ranks then read
    even, odd = budgets(data, 0), budgets(data, 1)
    streams = {name: make_cfg(*base, f"trainer.batch_tokens={b}") for name, b in (("even", even), ("odd", odd))}
    # 2 ranks x 2 micro-batches an update against 1 process x 4 micro-batches.
    fit = make_cfg(*base, f"trainer.batch_tokens={even}", "trainer.accum_steps=2")
    mp.spawn(rank_worker, args=(free_port(), streams, fit, tmp_path), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    n = len(data.split("train"))
    for name in ("even", "odd"):
        shards = [r["epochs"][name] for r in ranks]
        assert len(shards[0]) == len(shards[1])  # every rank takes as many steps
        seen = np.sort(np.concatenate([b for shard in shards for b in shard]))
        assert np.array_equal(seen, np.arange(n)), name  # every example once across the ranks
    single_plan = first_epoch(Trainer(streams["odd"], tmp_path / "single_odd"))
    assert len(ranks[0]["epochs"]["odd"]) == (len(single_plan) + 1) // 2  # one batch was split to even it out

    # The pairing, by construction: with an even count rank r takes batches r, r+2, ... of the one-process
    # epoch, so update k of the ranks (their micro-batches 2k, 2k+1) covers one-process batches 4k..4k+3.
    single_plan = first_epoch(Trainer(streams["even"], tmp_path / "single_even"))
    for rank, r in enumerate(ranks):
        assert r["epochs"]["even"] == single_plan[rank::2]
    # One gradient all-reduce an update: the first micro-step ran under no_sync.
    for r in ranks:
        assert r["reduced_at"] == list(range(5))

    single = make_cfg(*base, f"trainer.batch_tokens={even}", "trainer.accum_steps=4")
    results = Trainer(single, tmp_path / "single").fit()
    assert results["world_size"] == 1
    ddp_results = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert ddp_results["world_size"] == 2 and ddp_results["steps"] == results["steps"] == 5
    assert ddp_results["train_tokens_per_s"] > 0
    one = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "fit" / "checkpoints" / "last.pt", weights_only=True)["model"]
    start = Trainer(single, tmp_path / "untrained").model.state_dict()
    # Attention key biases get an exactly-zero gradient (softmax ignores a constant added to every score):
    # Adam turns the two runs' different round-off there into lr-sized steps, and they change nothing.
    compared = [name for name in one if not name.endswith("k_proj.bias")]
    assert len(compared) == len(one) - 3
    for name in compared:
        assert torch.allclose(one[name], two[name], rtol=0, atol=1e-5), name
    assert any(not torch.allclose(one[name], start[name], rtol=0, atol=1e-3) for name in compared)


def launch(args: list[str], log: Path) -> subprocess.Popen:
    """A training command in its own process group, so that killing it kills every rank."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            start_new_session=True)


@pytest.mark.slow
def test_a_killed_two_rank_job_resumes_where_an_uninterrupted_one_ends(tmp_path: Path, shared_cache: Path) -> None:
    common = [*TINY, f"cache_dir={shared_cache}", "logger.mode=disabled", "trainer.max_steps=30",
              "trainer.eval_every=10"]
    # Uninterrupted: torchrun running the s2s-train console script.
    straight_dir = tmp_path / "straight"
    s2s_train = str(Path(sys.executable).with_name("s2s-train"))
    straight = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       "--no-python", s2s_train, *common, f"hydra.run.dir={straight_dir}"], tmp_path / "straight.log")
    assert straight.wait(timeout=HUNG_S) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    # Interrupted: a job of the submitit launcher's local preset (2 tasks), killed after its first
    # checkpoint and then started again into the same folder, as Slurm requeues a preempted job.
    sweep = tmp_path / "sweep"
    job = [sys.executable, "-m", "experiments.training.train", "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}",
           *common]
    run_dir = sweep / "toy_reverse" / "transformer" / "seed1_0"
    victim = launch(job, tmp_path / "killed.log")
    deadline = time.time() + HUNG_S
    while not (run_dir / "checkpoints" / "last.pt").exists():
        assert victim.poll() is None and time.time() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    resumed_from = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["trainer"]["step"]
    assert resumed_from < 30
    requeued = launch(job, tmp_path / "requeued.log")
    assert requeued.wait(timeout=HUNG_S) == 0, (tmp_path / "requeued.log").read_text()[-3000:]

    a = json.loads((straight_dir / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    for key in ("steps", "best_step", "valid_bleu", "world_size"):
        assert a[key] == b[key], key
    assert a["world_size"] == 2 and a["test"]["test"]["bleu"] == b["test"]["test"]["bleu"]
    final_a = torch.load(straight_dir / "checkpoints" / "last.pt", weights_only=True)
    final_b = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    for name in final_a["model"]:
        assert torch.equal(final_a["model"][name], final_b["model"][name]), name
    for rank in range(2):  # each rank's random stream was carried across the kill (dropout is on)
        assert torch.equal(final_a["rng"][rank]["torch"], final_b["rng"][rank]["torch"])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "valid"] == [10, 20, 30]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["resume"] is True


def test_launchers_describe_the_process_group(monkeypatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launch() == distributed.Launch(0, 0, 1)
    with distributed.process_group():
        assert not distributed.active() and distributed.world_size() == 1

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1",
             "SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[017-018]"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert distributed.launch() == distributed.Launch(rank=9, local_rank=1, world_size=16)
    assert os.environ["MASTER_ADDR"] == "gpu017"
    assert os.environ["MASTER_PORT"] == str(distributed.master_port("4242"))
    assert 20000 <= distributed.master_port("4242") < 40000
    assert distributed.master_port("4242") != distributed.master_port("4243")

    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: no process group
    assert distributed.launch() == distributed.Launch()

    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun's variables win
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.launch() == distributed.Launch(rank=3, local_rank=1, world_size=4)
    assert distributed.torchrun_rank() == 3


def test_jobs_started_by_submitit_resume_from_their_folder(tmp_path: Path, make_cfg, monkeypatch) -> None:
    seen = []

    class Recorder:
        def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
            seen.append(cfg.trainer.resume)

        def fit(self) -> dict:
            return {}

    monkeypatch.setattr(train, "Trainer", Recorder)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    train.run(make_cfg("trainer.resume=false"), tmp_path)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")  # a local job of one task
    train.run(make_cfg("trainer.resume=false"), tmp_path)  # its first start: nothing to resume yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    train.run(make_cfg("trainer.resume=false"), tmp_path)  # requeued after a checkpoint: goes on from it
    assert seen == [False, False, True]


def test_resume_without_a_checkpoint_is_refused_naming_the_flag(tmp_path: Path, shared_cache: Path,
                                                                make_cfg) -> None:
    with pytest.raises(ConfigError, match="no .*last.pt to resume from.*trainer.resume=false"):
        Trainer(make_cfg(*DDP, f"cache_dir={shared_cache}", "trainer.resume=true"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_the_slurm_and_local_presets_compose() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
        wider = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.nodes=4",
                                             "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True).hydra.launcher
        local = compose("config", overrides=["hydra/launcher=local"], return_hydra_config=True).hydra.launcher
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (slurm.nodes, slurm.gpus_per_node, slurm.tasks_per_node, slurm.cpus_per_task) == (2, 8, 8, 8)
    assert (slurm.mem_gb, slurm.timeout_min, slurm.partition, slurm.max_num_timeout) == (256, 1440, None, 20)
    assert "export SLURM_KILL_BAD_EXIT=1" in slurm.setup
    assert (wider.nodes, wider.gpus_per_node, wider.tasks_per_node, wider.partition) == (4, 4, 4, "gpu")
    assert local._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert (local.nodes, local.tasks_per_node, local.gpus_per_node) == (1, 2, 0)
