"""s2s-bench: the tiny preset end to end, each fast path against the plain path, and the JoeyNMT plumbing.

No timing is asserted: only that the report is complete and well formed, and
that every fast path computes what the plain path computes (fp32 paths within
1e-5, bf16 within 1e-2 relative).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from experiments.evaluation import builders, evaluate
from experiments.data.batching import cut_sorted
from experiments.bench import analysis, cli, decode, joeynmt, joeynmt_config, measure, other_work, plan, plots
from experiments.bench.decode import NoKVCache, decode_one_at_a_time
from experiments.bench.plan import compose, native_bf16
from experiments.bench.report import REPORT_KEYS
from experiments.evaluation.builders import build_model
from experiments.data.pipeline import TaskData
from experiments.evaluation.evaluate import decode_split
from experiments.evaluation.loss import sequence_loss
from experiments.training.trainer import Trainer
from models import greedy_search

TINY = plan.TINY_TASK


@pytest.fixture
def cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's cache for the toy task (S2S_CACHE_DIR reaches the worker processes too)."""
    monkeypatch.setenv("S2S_CACHE_DIR", str(shared_cache))
    return shared_cache


def tiny_cfg(model: str, *extra: str):
    # fp32 unless a test asks otherwise: auto means bf16 on CPUs with native bf16, and the plain run is the baseline.
    precision = [] if any(e.startswith("trainer.precision=") for e in extra) else ["trainer.precision=fp32"]
    return compose([*TINY, f"model={model}_tiny", "logger=none", "trainer.progress=false", "trainer.device=cpu",
                    "trainer.num_threads=1", *precision, *extra])


@pytest.fixture
def toy(cache: Path) -> TaskData:
    cfg = tiny_cfg("transformer")
    return TaskData(cfg.task, cfg.cache_dir)


# ---------------------------------------------------------------------------
# end to end


def test_a_configuration_past_its_time_limit_stops_after_the_fewest_updates_and_says_so(cache: Path,
                                                                                      tmp_path: Path) -> None:
    """``max_seconds`` ends the timed phase early (a slow configuration must not hold the bench up), never before
    MIN_MEASURED updates; the row says how many it measured of how many asked. A limit any update exceeds makes
    the count exact on every machine."""
    spec = plan.Spec("train", "transformer_tiny", "base", [*TINY, "model=transformer_tiny", "logger=none",
                                                           "trainer.progress=false", "trainer.device=cpu",
                                                           "trainer.num_threads=1", "trainer.precision=fp32"],
                     warmup=1, steps=measure.MIN_MEASURED + 3, max_seconds=1e-9, run_dir=str(tmp_path / "run"))
    row = measure.measure(spec)
    assert "error" not in row, row.get("error")
    assert row["steps"] == measure.MIN_MEASURED and row["steps_asked"] == measure.MIN_MEASURED + 3
    assert row["tokens_per_s"] > 0


def test_seen_shapes_time_the_batches_the_warm_up_ran_and_count_the_time_they_took_to_make() -> None:
    made = []

    def stream():
        for i in range(100):
            made.append(i)
            yield f"batch{i}"

    updates, warmup = measure.update_plan(stream(), warmup=2, steps=3, seen_shapes=True)
    runs = list(updates)
    assert warmup == 3 and [b for b, _ in runs] == ["batch0", "batch1", "batch2"] * 2 and made == [0, 1, 2]
    assert [t for _, t in runs[3:]] == [t for _, t in runs[:3]]  # a timed batch costs what making it cost
    updates, warmup = measure.update_plan(stream(), warmup=2, steps=3, seen_shapes=False)
    assert warmup == 2 and [b for b, _ in updates] == [f"batch{i}" for i in range(5)]


def test_tiny_bench_writes_a_complete_report(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, prof = tmp_path / "results", tmp_path / "prof"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:benchmarks -->\nSTALE\n<!-- /table:benchmarks -->\noutro\n")
    # --max-measure-seconds 0: every configuration runs all its updates however slow the machine is (the early
    # stop is tested on its own below), so the counts asserted here hold on any CPU and under any load.
    report = cli.main(["--tiny", "--in-process", "--no-compile", "--out", str(out), "--work-dir",
                             str(tmp_path / "work"), "--profile", str(prof), "--time-to-bleu", "0",
                             "--max-measure-seconds", "0", "--readme", str(readme), "trainer.num_threads=1"])
    md = (out / "benchmarks.md").read_text()
    saved = json.loads((out / "benchmarks.json").read_text())
    assert saved["meta"] == report["meta"]
    meta = saved["meta"]
    for key in ("date", "commit", "cpu", "cores", "torch", "device", "gpu", "task", "command"):
        assert key in meta
    assert meta["gpu"] is None and meta["device"] == "cpu" and meta["torch"] == torch.__version__
    work = meta["other_work"]  # measured over the whole run (whether it was busy depends on this machine)
    assert work["seconds"] > 0 and work["other_cores"] >= 0 and isinstance(work["busy"], bool)
    assert f"| other work during the run (CPU time not this bench's, from /proc/stat) | {other_work.describe(work)} |" in md
    assert set(saved) >= REPORT_KEYS == {"meta", "training", "fast_paths", "comparison", "targets",
                                                   "scaling", "joeynmt", "profiles", "time_to_bleu"}

    training = saved["training"]
    assert not [r for r in training if "error" in r], [r["error"] for r in training if "error" in r]
    configs = {(r["model"], r["config"]) for r in training}
    for model in ("transformer", "gru"):
        assert {(model, c) for c in ("base", "bf16", "threads1", "pool200", "random")} <= configs
    for r in training:
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0 and r["peak_rss_mb"] > 0 and r["steps"] == r["steps_asked"]
        assert r["seen_shapes"] and r["warmup_steps"] == r["steps_asked"]  # the timed batches were the warm-up
        assert 0 <= r["pad_tgt"] < 1 and 0 <= r["pad_src"] < 1
    by = {(r["model"], r["config"]): r for r in training}
    for r in (r for r in training if "peak" in r):  # the square sampled between the 3 timed updates, then twice
        square = r["peak"]["square"]
        assert square["samples"] == 3 + 2 and square["min"] <= square["median"] <= square["gflops"]
        assert r["mfu_padded"] == pytest.approx(r["model_gflops_padded"] / square["gflops"])  # against the fastest
    assert by[("transformer", "random")]["pad_tgt"] > by[("transformer", "base")]["pad_tgt"]
    assert by[("transformer", "bf16")]["precision"] == "bf16" and by[("transformer", "base")]["precision"] == "fp32"

    decoding = by[("transformer", "base")]["decoding"]
    searches = {d["search"] for d in decoding}
    assert {"greedy", "beam5", "greedy, KV cache", "greedy, no KV cache", "beam5 batched",
            "beam5 one sentence at a time"} <= searches
    for d in decoding:
        assert d["seconds"] > 0 and d["mean_output_len"] >= 0 and d["mean_ref_len"] > 0
    assert {"greedy", "beam5"} <= {d["search"] for d in by[("gru", "base")]["decoding"]}

    paths = {(f["fast_path"], f["model"]) for f in saved["fast_paths"]}
    for model in ("transformer", "gru"):  # these baselines decode the same sentences to the same outputs
        for search in ("beam5, source cache copied every step", "beam5, finished sentences kept in the batch",
                       "greedy, finished sentences kept in the batch"):
            baseline = next(d for d in by[(model, "base")]["decoding"] if d["search"] == search)
            assert baseline["same_outputs"] == baseline["sentences"] > 0, (model, search)
        bf16 = [d for d in by[(model, "base")]["decoding"] if d.get("ablation", "").startswith("bf16")]
        if native_bf16(torch.device("cpu")):  # the same searches in bf16, scored, with what they share with fp32
            assert [d["search"] for d in bf16] == ["greedy, bf16 autocast", "beam5, bf16 autocast"]
            assert all(d["sentences"] > 0 and "bleu" in d and 0 <= d["same_outputs"] <= d["sentences"] for d in bf16)
            assert any(f["fast_path"] == "bf16 autocast (beam search)" and f["model"] == model
                       for f in saved["fast_paths"])
        else:  # emulated bf16 is no fast path: not measured
            assert bf16 == []
    for name in ("bf16 autocast", "fused AdamW", "KV cache (greedy decoding)", "batched search (decoding)",
                 "source cache left in place (beam search)", "finished sentences leave the batch (beam search)",
                 "finished sentences leave the batch (greedy)",
                 "sorted batches (whole split vs unsorted random)"):
        assert any(p == name for p, _ in paths), name
    recurrence = next(f for f in saved["fast_paths"] if f["fast_path"].startswith("encoder recurrence"))
    assert recurrence["model"] == "gru" and (recurrence["off"], recurrence["on"]) == ("packed", "base")
    loops = {f["fast_path"]: (f.get("off"), f.get("on")) for f in saved["fast_paths"] if f["model"] == "gru"}
    assert loops["decoder loop (hand-written backward vs autograd)"] == ("autograd", "base")
    assert loops["all three (vs nn.GRU packed, the autograd loop, logits at padded positions)"] == (
        "packed+autograd", "base")
    skipped = {f["model"]: (f.get("off"), f.get("on")) for f in saved["fast_paths"]
               if f["fast_path"].startswith("target padding skipped")}
    assert skipped == {"transformer": ("padded-targets", "base"), "gru": ("padded-targets", "base")}
    masks = {f["model"]: (f.get("off"), f.get("on")) for f in saved["fast_paths"]
             if f["fast_path"].startswith("dropout masks")}
    assert masks == {"transformer": ("torch-dropout", "base"), "gru": ("torch-dropout", "base")}
    assert by[("gru", "packed")]["tokens_per_s"] > 0
    assert [c["model"] for c in saved["comparison"]] == ["transformer", "gru"]
    assert all(c["joeynmt_source"].startswith("anchor") for c in saved["comparison"])
    # 3 training, greedy and beam decoding (again in bf16 where it is native), 2 sample-efficiency targets
    assert len(saved["targets"]) == 7 + 2 * native_bf16(torch.device("cpu"))
    assert all(t["met"] is None for t in saved["targets"])  # toy models answer none of JoeyNMT's targets
    in_updates, in_tokens = saved["targets"][-2:]
    assert in_updates["target"].startswith("transformer validation BLEU >= 38.86 in <= 2000 updates of 4096 tokens")
    assert in_tokens["target"].startswith("transformer validation BLEU >= 38.86 with <= 4.24M real target tokens")
    for sample in (in_updates, in_tokens):
        assert sample["value"] is None and sample["met"] is None  # a 4-update toy run cannot answer it
    assert (out / "benchmarks_curve_tokens.png").stat().st_size > 1000

    assert {(r["model"], r["batch_tokens"]) for r in saved["scaling"]} == {
        (m, t) for m in ("transformer", "gru") for t in (256, 512)}
    assert (out / "benchmarks_scaling.png").stat().st_size > 1000
    assert [r["reached"] for r in saved["time_to_bleu"]] == [True, True]
    assert all(r["steps_to_bleu"] == 2 for r in saved["time_to_bleu"])
    assert (out / "benchmarks_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| updates | transformer (base) | gru (base) | JoeyNMT 2.3.0 (reference) |" in md
    for p in saved["profiles"]:
        assert "traceEvents" in json.loads(Path(p["trace"]).read_text())
        top = p["top_ops"]  # where the time goes: real operators, heaviest first, shares of the profiled total
        assert 0 < len(top) <= 12 and any(o["op"] in ("aten::mm", "aten::addmm", "aten::bmm") for o in top)
        assert [o["self_s_per_step"] for o in top] == sorted((o["self_s_per_step"] for o in top), reverse=True)
        assert 0 < sum(o["share"] for o in top) <= 1 + 1e-9
        assert f"Where a {p['model']} ({p['config']}) update's time goes" in md and f"| `{top[0]['op']}` |" in md

    for section in ("## Training throughput", "## Fast paths", "## Decoding", "## Against JoeyNMT", "## Targets",
                    "## Scaling", "## Time to BLEU", "## Profiles"):
        assert section in md
    assert "| GPU |" not in md and "No GPU was used" in md

    embedded = readme.read_text()
    assert embedded.startswith("intro\n<!-- table:benchmarks -->\nMeasured by `s2s-bench --tiny")
    assert embedded.endswith("<!-- /table:benchmarks -->\noutro\n") and "STALE" not in embedded
    for section in ("#### Against JoeyNMT", "#### Targets", "#### Fast paths", "#### Time to BLEU"):
        assert section in embedded
    assert "## Training throughput" not in embedded
    assert "](results/benchmarks_scaling.png)" in embedded and "the whole report: `results/benchmarks.md`" in embedded

    # --from-json writes the same report again without measuring anything
    again = tmp_path / "again"
    cli.main(["--from-json", str(out / "benchmarks.json"), "--out", str(again)])
    assert (again / "benchmarks.md").read_text() == md
    assert json.loads((again / "benchmarks.json").read_text()) == saved
    assert (again / "benchmarks_curve.png").stat().st_size > 1000

    # the console script exits 0: what its function returns becomes the exit status
    import re
    from importlib import import_module

    pyproject = (Path(cli.__file__).parents[2] / "pyproject.toml").read_text()
    module, _, function = re.search(r'^s2s-bench = "(.+)"$', pyproject, re.M).group(1).partition(":")
    monkeypatch.setattr("sys.argv", ["s2s-bench", "--from-json", str(out / "benchmarks.json"), "--out", str(again)])
    assert getattr(import_module(module), function)() is None


def test_worker_processes_report_their_own_peak_memory(cache: Path, tmp_path: Path) -> None:
    report = cli.main(["--tiny", "--models", "gru", "--configs", "base", "--no-decode", "--no-scaling",
                             "--out", str(tmp_path / "results"), "--work-dir", str(tmp_path / "work"),
                             "trainer.num_threads=1"])
    [row] = report["training"]
    assert "error" not in row, row.get("error")
    assert row["peak_rss_mb"] > 50 and row["worker_peak_rss_mb"] >= row["peak_rss_mb"] * 0.9
    assert report["meta"]["isolated_workers"]


# ---------------------------------------------------------------------------
# fast paths compute what the plain path computes


def fixed_batch(data: TaskData):
    return next(data.batches("valid", data.plan("valid", 256, shuffle=False)))


def fixed_batch_loss(model: str, data: TaskData, tmp_path: Path, *overrides: str) -> float:
    """Per-token loss of the trainer's forward (compiled or not, under its autocast) on a fixed batch."""
    cfg = tiny_cfg(model, "seed=3", *overrides)
    trainer = Trainer(cfg, tmp_path / "-".join(overrides or ("plain",)).replace("=", "_"), data=data)
    batch = fixed_batch(data)
    trainer.model.eval()
    with torch.no_grad(), trainer.autocast():
        logits, _ = trainer.forward(batch.src, batch.src_mask, batch.tgt_in)
    torch.set_num_threads(1)
    return float(sequence_loss(logits, batch.tgt_out, data.pad_id, cfg.trainer.label_smoothing,
                               log_probs=trainer.model.outputs_log_probs)) / batch.n_tgt_tokens


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_thread_count_gives_the_same_loss(model: str, toy: TaskData, tmp_path: Path) -> None:
    plain = fixed_batch_loss(model, toy, tmp_path)
    two = fixed_batch_loss(model, toy, tmp_path, "trainer.num_threads=2")
    assert two == pytest.approx(plain, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_bf16_autocast_gives_the_same_loss_within_bf16_precision(model: str, toy: TaskData, tmp_path: Path) -> None:
    plain = fixed_batch_loss(model, toy, tmp_path)
    bf16 = fixed_batch_loss(model, toy, tmp_path, "trainer.precision=bf16")
    assert bf16 != plain  # autocast really ran in bf16
    assert bf16 == pytest.approx(plain, rel=1e-2)


def test_torch_compile_gives_the_same_loss(toy: TaskData, tmp_path: Path) -> None:
    usable, why = plan.compile_usable()
    if not usable:
        pytest.skip(why)
    plain = fixed_batch_loss("transformer", toy, tmp_path)
    compiled = fixed_batch_loss("transformer", toy, tmp_path, "trainer.compile=true")
    assert compiled == pytest.approx(plain, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_fused_adamw_takes_the_same_step(device: str, toy: TaskData, tmp_path: Path) -> None:
    losses = []
    for fused in ("true", "false"):
        trainer = Trainer(tiny_cfg("transformer", "seed=3", f"trainer.device={device}", f"trainer.fused_adamw={fused}",
                                   "model.dropout=0.0", "trainer.precision=fp32"), tmp_path / fused, data=toy)
        assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["fused"] == (
            fused == "true")
        batch = fixed_batch(toy)
        losses.append([trainer.train_step([batch])[0] for _ in range(3)])  # the later losses follow the updates
    assert losses[0][0] == losses[1][0]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_sorted_and_random_batches_give_the_same_total_loss(model: str, toy: TaskData) -> None:
    """Padding never changes the loss: the same examples, batched sorted or unsorted, sum to the same loss."""
    cfg = tiny_cfg(model, "seed=3")
    torch.manual_seed(3)
    net = build_model(cfg.model, toy).eval()
    split = toy.split("train")
    examples = np.arange(96)
    longest = np.maximum(split.src_lens, split.tgt_lens)

    def total(plan: list[np.ndarray]) -> float:
        loss = 0.0
        with torch.no_grad():
            for batch in toy.batches("train", plan):
                logits, _ = net(batch.src, batch.src_mask, batch.tgt_in)
                loss += float(sequence_loss(logits, batch.tgt_out, toy.pad_id, 0.1, log_probs=False))
        return loss

    shuffled = np.random.default_rng(0).permutation(examples)
    ordered = examples[np.lexsort((split.tgt_lens[examples], split.src_lens[examples]))]
    unsorted_batches, sorted_batches = cut_sorted(shuffled, longest, 200), cut_sorted(ordered, longest, 200)
    assert len(unsorted_batches) > 1
    assert total(sorted_batches) == pytest.approx(total(unsorted_batches), rel=1e-5)


@pytest.mark.parametrize("copy", [False, True])
def test_kv_cache_gives_the_logits_of_rerunning_the_decoder(toy: TaskData, copy: bool) -> None:
    cfg = tiny_cfg("transformer", "seed=3", f"model.copy={str(copy).lower()}")
    torch.manual_seed(3)
    model = build_model(cfg.model, toy).eval()
    batch = fixed_batch(toy)
    baseline = NoKVCache(model)
    with torch.no_grad():
        memory, cache = model.encode(batch.src, batch.src_mask)
        _, plain = baseline.encode(batch.src, batch.src_mask)
        for t in range(batch.tgt_in.size(1)):
            tokens = batch.tgt_in[:, t]
            cached_logits, cache, _ = model.decode_step(tokens, memory, batch.src_mask, cache)
            rerun_logits, plain, _ = baseline.decode_step(tokens, memory, batch.src_mask, plain)
            torch.testing.assert_close(cached_logits, rerun_logits, atol=1e-5, rtol=0)
    common = dict(bos_id=toy.bos_id, eos_id=toy.eos_id, return_attention=False)
    assert (greedy_search(model, batch.src, batch.src_mask, **common).tokens
            == greedy_search(baseline, batch.src, batch.src_mask, **common).tokens)


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_batched_beam_search_matches_one_sentence_at_a_time(model: str, toy: TaskData,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(model, "seed=3")
    torch.manual_seed(3)
    net = build_model(cfg.model, toy).eval()
    fp32 = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    batched = decode_split(net, toy, "test", cfg.decoding, torch.device("cpu"), fp32, beam_size=5, limit=12)
    sizes, search = [], evaluate.search

    def counted(net, batch, *args, **kwargs):
        sizes.append(batch.src.size(0))
        return search(net, batch, *args, **kwargs)

    monkeypatch.setattr(evaluate, "search", counted)
    single = decode_one_at_a_time(net, toy, "test", cfg.decoding, torch.device("cpu"), fp32, beam_size=5, limit=12)
    assert sizes == [1] * 12  # the baseline really searches one sentence at a time
    assert batched.token_ids == single.token_ids


def test_only_the_bf16_configurations_run_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with native bf16 the trainer's precision=auto means bf16: every other configuration pins fp32."""
    monkeypatch.setattr(builders, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    specs, _ = plan.build_specs(cli.parse_args(["--tiny", "--profile", "traces", "--time-to-bleu", "1"]), cpu)
    precision = {(s.kind, s.preset, s.name): builders.resolve_precision(cpu, compose(s.overrides).trainer.precision)
                 for s in specs}
    assert {("train", "gru_tiny", "bf16"), ("scaling", "gru_tiny", "scaling"), ("ttb", "gru_tiny", "base"),
            ("profile", "gru_tiny", "base"), ("train", "gru_tiny", "random")} <= set(precision)
    assert {k for k, p in precision.items() if p == "bf16"} == {k for k in precision if "bf16" in k[2]}


def test_every_cpu_configuration_runs_with_the_threads_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration is left to trainer.num_threads=0, which counts the cores a busy moment leaves free."""
    monkeypatch.setattr(plan, "usable_cores", lambda: 2)
    specs, _ = plan.build_specs(cli.parse_args(["--tiny", "--profile", "traces", "--time-to-bleu", "1"]),
                                torch.device("cpu"))
    threads = {(s.kind, s.preset, s.name): compose(s.overrides).trainer.num_threads for s in specs}
    assert threads[("train", "transformer_tiny", "base")] == 2 and threads[("train", "gru_tiny", "bf16")] == 2
    assert {k for k, n in threads.items() if n != 2} == {("train", "gru_tiny", "threads1"),
                                                         ("train", "transformer_tiny", "threads1")}
    assert all(threads[k] == 1 for k in threads if k[2] == "threads1")


def test_plots_label_their_axes_and_every_line_and_start_at_zero() -> None:
    meta = {"task": "multi30k_de_en", "cpu": "Some CPU", "cores": 2, "gpu": None, "torch": "2.0", "batch_tokens": 4096}
    report = {
        "meta": meta,
        "scaling": [{"model": m, "batch_tokens": t, "tokens_per_s": 2000.0 + t / 10, "step_s": 1.0}
                    for m in ("gru", "transformer") for t in (1024, 2048, 4096)],
        "comparison": [{"model": "transformer", "joeynmt_tokens_per_s": 770.0, "joeynmt_source": "anchor (...)"}],
        "time_to_bleu": [{"model": "transformer", "config": "base", "batch_tokens": 4096,
                          "history": [{"step": 250, "bleu": 20.0}, {"step": 500, "bleu": 30.0}]}],
    }
    scaling, ttb = plots.scaling_figure(report), plots.ttb_figure(report)
    for fig, words in ((scaling, ["batch budget", "plain configuration"]), (ttb, ["4096-token batches"])):
        [ax] = fig.axes
        assert ax.get_ylim()[0] == 0
        assert ax.get_xlabel() and ax.get_ylabel()
        assert all(w in ax.get_title() for w in [meta["task"], "Some CPU, 2 cores", *words])
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == len(ax.get_lines()) and not [x for x in labels if x.startswith("_")]
        assert any(x.startswith("JoeyNMT 2.3.0") for x in labels)
    assert "per second" in scaling.axes[0].get_ylabel() and "tokens" in scaling.axes[0].get_xlabel()
    assert any(x.startswith("target") for x in [t.get_text() for t in ttb.axes[0].get_legend().get_texts()])
    assert plots.scaling_figure({**report, "scaling": []}) is None
    assert plots.ttb_figure({**report, "time_to_bleu": []}) is None


def test_decode_run_decodes_with_a_trained_checkpoint(toy: TaskData, tmp_path: Path) -> None:
    from experiments.evaluation import checkpoint

    cfg = tiny_cfg("transformer", "seed=3")
    trainer = Trainer(cfg, tmp_path / "run", data=toy)
    trainer.progress.step = 7
    checkpoint.save(trainer.state(), tmp_path / "run" / "checkpoints" / "best.pt")
    spec = {"split": "test", "limit": 5, "beams": [1, 2], "ablation": 0, "run": str(tmp_path / "run")}
    bench = Trainer(cfg, tmp_path / "bench", data=toy)
    model, data, dcfg, device, autocast, source = decode.decoding_model(bench, toy, cfg, spec)
    assert model is not bench.model and "(step 7)" in source
    rows = decode.measure_decoding(model, data, dcfg, device, autocast, spec)
    assert [(r["search"], r["sentences"]) for r in rows] == [("greedy", 5), ("beam2", 5)]
    with pytest.raises(Exception, match="not a gru"):
        decode.decoding_model(bench, toy, tiny_cfg("gru"), spec)


# ---------------------------------------------------------------------------
# JoeyNMT plumbing (JoeyNMT itself is not installed by the tests)


def fake_paths(tmp_path: Path) -> dict:
    stems = {s: str(tmp_path / n) for s, n in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr"))}
    return {"stems": stems, "sp_model": str(tmp_path / "sp.model"), "vocab": str(tmp_path / "vocab.txt"),
            "vocab_size": 8000, "src_lang": "de", "tgt_lang": "en"}


def test_joeynmt_config_matches_our_transformer(tmp_path: Path) -> None:
    cfg = compose(["task=multi30k_de_en", "model=transformer", "logger=none"])
    config, notes = joeynmt_config.joey_config(cfg, fake_paths(tmp_path), model_dir=tmp_path / "m", steps=60,
                                              log_every=10, use_cuda=False)
    config = yaml.safe_load(yaml.safe_dump(config))  # what JoeyNMT reads back
    enc, dec, tr = config["model"]["encoder"], config["model"]["decoder"], config["training"]
    for side, layers in ((enc, 3), (dec, 3)):
        assert (side["type"], side["num_layers"], side["num_heads"], side["hidden_size"], side["ff_size"],
                side["layer_norm"], side["embeddings"]["embedding_dim"]) == ("transformer", layers, 8, 256, 1024,
                                                                             "pre", 256)
    assert config["model"]["tied_embeddings"] and config["model"]["tied_softmax"]
    assert (tr["batch_size"], tr["batch_type"], tr["label_smoothing"], tr["normalization"]) == (4096, "token", 0.1,
                                                                                               "tokens")
    assert (tr["scheduling"], tr["learning_rate_warmup"], tr["learning_rate"]) == ("warmupinversesquareroot", 800,
                                                                                   7e-4)
    assert tr["updates"] == 60 and tr["logging_freq"] == 10
    assert tr["validation_freq"] > 60 and tr["validation_freq"] % 10 == 0
    assert config["data"]["src"]["voc_file"] == config["data"]["trg"]["voc_file"]
    assert config["data"]["special_symbols"]["pad_id"] == 1 and config["fp16"] is False
    assert config["data"]["dev"].endswith("/val") and config["data"]["src"]["lang"] == "de"
    assert any("batches" in n for n in notes)


def test_joeynmt_config_matches_our_gru(tmp_path: Path) -> None:
    cfg = compose(["task=multi30k_de_en", "model=gru", "logger=none"])
    config, notes = joeynmt_config.joey_config(cfg, fake_paths(tmp_path), model_dir=tmp_path / "m", steps=60,
                                              log_every=10, use_cuda=False)
    enc, dec, tr = config["model"]["encoder"], config["model"]["decoder"], config["training"]
    assert (enc["rnn_type"], enc["bidirectional"], enc["hidden_size"], enc["num_layers"]) == ("gru", True, 256, 2)
    assert (dec["hidden_size"], dec["num_layers"], dec["attention"], dec["input_feeding"]) == (512, 1, "bahdanau",
                                                                                              True)
    assert (tr["scheduling"], tr["learning_rate_warmup"], tr["learning_rate"]) == ("warmupinversesquareroot", 200, 1e-3)
    assert tr["clip_grad_norm"] == 1.0
    assert config["model"]["tied_embeddings"] and not config["model"]["tied_softmax"]
    assert any("output layer" in n for n in notes) and any("schedule plateau" in n for n in notes)


WINDOW = ("2026-01-01 {time} - INFO - joeynmt.training - Epoch   1, Step:       {step}, Batch Loss:   {loss}, "
          "Batch Acc: 0.01, Tokens per Sec:      {rate}, Lr: 0.000009")
LOG = "\n".join([
    "2026-01-01 10:00:00,000 - INFO - joeynmt.model - Total params: 7578624",
    "2026-01-01 10:00:01,000 - INFO - joeynmt.training - EPOCH 1",
    WINDOW.format(time="10:00:31,000", step=10, loss=90.1, rate=500),
    WINDOW.format(time="10:00:51,000", step=20, loss=88.2, rate=800),
    WINDOW.format(time="10:01:21,000", step=30, loss=85.3, rate=700),
    "2026-01-01 10:01:22,000 - INFO - joeynmt.training - Training ended since maximum num. of updates 30 was reached.",
]) + "\n"


def test_joeynmt_log_is_read_window_by_window() -> None:
    parsed = joeynmt.parse_log(LOG)
    assert parsed["params"] == 7578624
    assert [w["step"] for w in parsed["windows"]] == [10, 20, 30]
    summary = joeynmt.summarize(parsed, skip=1)  # the first window (warm-up) is dropped
    assert summary["measured_steps"] == 20 and summary["measured_s"] == pytest.approx(50)
    assert summary["tokens_per_s"] == pytest.approx((800 * 20 + 700 * 30) / 50)
    assert summary["step_s"] == pytest.approx(2.5)
    with pytest.raises(Exception, match="windows"):
        joeynmt.summarize(parsed, skip=3)


def test_joeynmt_data_export_keeps_our_ids(toy: TaskData, tmp_path: Path) -> None:
    paths = joeynmt.export_data(toy, tmp_path / "data")
    pieces = Path(paths["vocab"]).read_text(encoding="utf-8").splitlines()
    assert pieces == [toy.tokenizer.src.id_to_piece(i) for i in range(toy.src_vocab_size)]
    assert pieces[:4] == ["<unk>", "<pad>", "<s>", "</s>"]  # JoeyNMT's specials, at our ids
    train = Path(paths["stems"]["train"] + ".src").read_text(encoding="utf-8").splitlines()
    assert train == list(toy.split("train").dataset["src"])
    assert Path(paths["stems"]["valid"] + ".tgt").exists() and Path(paths["sp_model"]).exists()
    assert joeynmt.export_data(toy, tmp_path / "data") == paths  # reused, not rewritten


@pytest.mark.parametrize(("first", "max_steps", "batch_tokens", "met"), [
    (1750, 2000, 4096, True),     # reached in time
    (2250, 3000, 4096, False),    # reached, too late
    (None, 2000, 4096, False),    # not reached in the updates the target allows
    (None, 1000, 4096, None),     # stopped before the target's updates: cannot tell
    (1500, 2000, 2048, None),     # another batch size: another question
])
def test_sample_efficiency_target_is_judged_only_when_the_run_can_answer(first, max_steps, batch_tokens, met) -> None:
    history = [{"step": s, "bleu": 39.0 if first is not None and s >= first else 30.0}
               for s in range(250, max_steps + 1, 250)]
    run = {"model": "transformer", "config": "base", "batch_tokens": batch_tokens, "max_steps": max_steps,
           "eval_every": 250, "history": history, "best_bleu": max(h["bleu"] for h in history)}
    [target] = analysis.sample_targets([run])
    assert target["met"] is met and target["value"] == first


@pytest.mark.parametrize("first_tokens, trained, met", [
    (3.0e6, 4.0e6, True),      # JoeyNMT's best BLEU with fewer real target tokens than JoeyNMT took
    (5.0e6, 6.0e6, False),     # reached, with more
    (None, 5.0e6, False),      # trained past JoeyNMT's tokens without reaching it
    (None, 2.0e6, None),       # stopped before that many tokens: cannot tell
])
def test_sample_efficiency_in_real_tokens(first_tokens, trained, met) -> None:
    steps = range(250, 2001, 250)
    history = [{"step": s, "tokens": trained * s / 2000,
                "bleu": 39.0 if first_tokens is not None and trained * s / 2000 >= first_tokens else 30.0}
               for s in steps]
    run = {"model": "transformer", "config": "base", "batch_tokens": 4096, "max_steps": 2000, "eval_every": 250,
           "history": history, "best_bleu": max(h["bleu"] for h in history), "tokens": trained}
    _, in_tokens = analysis.sample_targets([run])
    assert in_tokens["met"] is met
    reached = next((h["tokens"] for h in history if h["bleu"] >= 39.0), None)
    assert in_tokens["value"] == (None if reached is None else reached / 1e6)
    # a report saved before tokens were recorded gets the updates row only
    assert len(analysis.sample_targets([{**run, "history": [{k: v for k, v in h.items() if k != "tokens"}
                                                             for h in history]}])) == 1


def test_time_to_bleu_plot_against_real_tokens_scales_joeynmt_by_its_tokens_per_update() -> None:
    from experiments.bench.targets import JOEYNMT_CURVE, JOEYNMT_TOKENS_PER_UPDATE

    meta = {"task": "multi30k_de_en", "cpu": "Some CPU", "cores": 2, "gpu": None, "torch": "2.0", "batch_tokens": 4096}
    report = {"meta": meta, "time_to_bleu": [{"model": "transformer", "config": "base", "batch_tokens": 4096,
                                              "history": [{"step": 250, "tokens": 850_000, "bleu": 20.0},
                                                          {"step": 500, "tokens": 1_700_000, "bleu": 30.0}]}]}
    [ax] = plots.ttb_figure(report, by="tokens").axes
    assert "tokens" in ax.get_xlabel() and "real target tokens" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["transformer (base)"].get_xdata()) == [0.85, 1.7]
    joey = lines[next(name for name in lines if name.startswith("JoeyNMT"))]
    assert list(joey.get_xdata()) == pytest.approx([s * JOEYNMT_TOKENS_PER_UPDATE / 1e6 for s in JOEYNMT_CURVE])
    without_tokens = {**report, "time_to_bleu": [{**report["time_to_bleu"][0], "history": [{"step": 250, "bleu": 1.0}]}]}
    assert plots.ttb_figure(without_tokens, by="tokens") is None


def test_from_json_names_a_file_that_is_not_a_report(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text('{"bleu": 1}')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--from-json", str(bad), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"--from-json {bad}: not a readable s2s-bench report" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_load_measures_threads_beside_a_busy_process_and_two_job_sweeps(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    report = cli.main(["--tiny", "--load", "--models", "transformer", "--configs", "base", "--no-decode",
                       "--no-scaling", "--out", str(out), "--work-dir", str(tmp_path / "work"),
                       "trainer.num_threads=1"])
    loaded = {r["config"]: r for r in report["training"] if r.get("load") or r.get("env")}
    assert set(loaded) == {"idle, passive wait", "loaded, all cores", "loaded, all cores, passive wait",
                           "loaded, 1 thread", "loaded, auto"}
    assert all("error" not in r for r in loaded.values()), [r.get("error") for r in loaded.values()]
    assert loaded["loaded, 1 thread"]["threads"] == 1 and loaded["loaded, 1 thread"]["load"] == 1
    assert loaded["loaded, all cores"]["threads"] == plan.usable_cores()
    assert loaded["idle, passive wait"] == {**loaded["idle, passive wait"], "load": 0,
                                            "env": {"OMP_WAIT_POLICY": "PASSIVE"}}
    assert 1 <= loaded["loaded, auto"]["threads"] <= max(1, plan.usable_cores() - 1)  # the busy core left alone
    # The load rows are reported on their own, never as a fast path or as "ours best" against JoeyNMT.
    assert [r["config"] for r in report["training"] if not (r.get("load") or r.get("env"))] == ["base"]
    assert report["comparison"][0]["best_config"] == "base"
    sweeps = {w["sweep"]: w for w in report["sweeps"]}
    assert set(sweeps) == {"one after the other, auto", "side by side, all cores each", "side by side, auto"}
    for w in sweeps.values():
        assert "error" not in w, w.get("error")
        assert sorted(j["model"] for j in w["jobs"]) == ["gru", "transformer"] and w["wall_s"] > 0
    assert all(j["threads"] == [plan.usable_cores()] for j in sweeps["side by side, all cores each"]["jobs"])
    markdown = (out / "benchmarks.md").read_text()
    assert "## Threads under load" in markdown and "| loaded, auto | 1 |" in markdown
    assert "| side by side, auto | 2 |" in markdown


def test_task_samsum_trains_on_dialogues_and_judges_its_own_targets(tmp_path: Path) -> None:
    args = cli.parse_args(["--task", "samsum", "--configs", "base", "--no-scaling", "--no-decode"])
    specs, _ = plan.build_specs(args, torch.device("cpu"))
    assert {s.preset for s in specs} == {"gru", "transformer"}
    cfg = compose(specs[0].overrides)
    assert (cfg.task.name, cfg.task.max_src_len, cfg.trainer.batch_tokens) == ("samsum", 400, 4096)
    config, notes = joeynmt_config.joey_config(cfg, fake_paths(tmp_path), model_dir=tmp_path / "m", steps=60,
                                              log_every=10, use_cuda=False)
    assert (config["data"]["src"]["max_length"], config["data"]["trg"]["max_length"]) == (400, 100)
    assert any("JoeyNMT drops longer training pairs" in n for n in notes)
    rows = [{"kind": "train", "model": m, "config": "base", "tokens_per_s": tps, "batch_tokens": 4096,
             "params": 1} for m, tps in (("transformer", 900.0), ("gru", 300.0))]
    # No anchor for SAMSum: without JoeyNMT measured, nothing is judged; measured, the 2x targets are.
    unmeasured = analysis.analyse(rows, {}, torch.device("cpu"), 4096, task="samsum")
    assert [c["fp32_ratio"] for c in unmeasured["comparison"]] == [None, None]
    assert [t["met"] for t in unmeasured["targets"]] == [None, None]
    joey = {"transformer": {"tokens_per_s": 400.0}, "gru": {"tokens_per_s": 200.0}}
    judged = {t["target"]: t["met"] for t in analysis.analyse(rows, joey, torch.device("cpu"), 4096,
                                                              task="samsum")["targets"]}
    assert judged == {"transformer training (fp32) >= 2x JoeyNMT on samsum": True,
                      "gru training (fp32) >= 2x JoeyNMT on samsum": False}
    # every configuration overridden to bf16: the plain rows are no fp32 figure, and the fp32 target is not judged
    bf16 = [{**r, "precision": "bf16"} for r in rows]
    overridden = analysis.analyse(bf16, joey, torch.device("cpu"), 4096, task="samsum")
    assert [(c["fp32_ratio"], c["best_ratio"]) for c in overridden["comparison"]] == [(None, 2.25), (None, 1.5)]
    assert [t["met"] for t in overridden["targets"]] == [None, None]


def test_task_must_be_a_task_preset_and_time_to_bleu_a_translation_task(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--task", "samsun"])
    assert "conf/task/ has no samsun.yaml" in capsys.readouterr().err
    args = cli.parse_args(["--task", "samsum", "--configs", "none", "--time-to-bleu", "30"])
    with pytest.raises(plan.UserError, match="needs a translation task; --task samsum is summarization"):
        plan.build_specs(args, torch.device("cpu"))


def test_gru_paths_on_real_batches_times_whole_updates_of_both_paths_in_turns(tmp_path: Path) -> None:
    from experiments.bench import gru_paths

    out, readme = tmp_path / "real.md", tmp_path / "README.md"
    readme.write_text("before\n<!-- table:real -->\nold\n<!-- /table:real -->\nafter\n")
    gru_paths.main(["--tiny", "--task", "toy", "--batches", "2", "--threads", "1", "--out", str(out),
                    "--readme", str(readme)])
    text = out.read_text()
    embedded = readme.read_text()
    assert "old" not in embedded and text.split("\n", 2)[2].strip() in embedded and embedded.endswith("after\n")
    rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| before") or
            line.startswith("| now")]
    assert [r[0] for r in rows] == ["before (packed + autograd + padded logits)", "now (defaults)"]
    seconds = [float(r[1]) for r in rows]
    assert all(s > 0 for s in seconds) and all(float(r[2]) > 0 for r in rows)
    assert re.search(r"Now against before: \d+\.\d\dx\.", text)


def test_gru_paths_times_both_cpu_paths_at_each_length(tmp_path: Path) -> None:
    from experiments.bench import gru_paths

    out = tmp_path / "paths.md"
    gru_paths.main(["--tiny", "--lengths", "4,8", "--batch-tokens", "16", "--repeats", "1", "--threads", "1",
                    "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[:3] for r in rows] == [["| 4", "4", "4 (translation)"], ["| 4", "4", "1 (summarization)"],
                                                  ["| 8", "2", "8 (translation)"], ["| 8", "2", "1 (summarization)"]]
    for row in rows:
        packed, batched, speedup = (float(c.rstrip("x")) for c in row.strip("| ").split(" | ")[3:])
        assert packed > 0 and batched > 0 and speedup == pytest.approx(packed / batched, rel=0.05, abs=0.01)  # cells are rounded


def test_a_saved_report_is_judged_again_against_the_targets_as_they_stand(monkeypatch: pytest.MonkeyPatch) -> None:
    """--from-json keeps the measured ratios and re-judges them when an issue has raised a training target since."""
    monkeypatch.setitem(analysis.TRAIN_TARGETS, "multi30k_de_en", [("transformer", "fp32", 3.0)])
    kept = {"target": "transformer validation BLEU >= 38.86 in <= 2000 updates of 4096 tokens", "value": 1750,
            "unit": " updates", "met": True, "against": "JoeyNMT"}
    report = {"meta": {"task": "multi30k_de_en", "tiny": None, "device": "cpu"},
              "training": [{"model": "transformer", "config": "base", "tokens_per_s": 2213.0}],
              "comparison": [{"model": "transformer", "fp32_ratio": 2.68, "best_ratio": 3.83,
                              "joeynmt_source": "measured in this run"}],
              "targets": [{"kind": "training", "target": "transformer training (fp32) >= 2.5x JoeyNMT on multi30k_de_en",
                           "value": 2.68, "unit": "x", "met": True, "against": "measured in this run"}, kept]}
    fresh, again = analysis.rejudged_training_targets(report)
    assert fresh["target"] == "transformer training (fp32) >= 3x JoeyNMT on multi30k_de_en"
    assert fresh["value"] == 2.68 and fresh["met"] is False and fresh["against"] == "measured in this run"
    assert again == kept
