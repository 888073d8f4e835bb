"""JoeyNMT 2.3.0 beside our models in ``s2s-bench --joeynmt``: same data, vocabulary, sizes and machine.

Steps, per model:

1. a virtual environment of its own, built once and cached in
   ``<work dir>/joeynmt-venv``: our torch version (the CPU build where that is
   what pip finds), ``joeynmt==2.3.0``, ``sentencepiece==0.2.0`` (0.2.3 dropped
   the ``SetVocabulary`` that JoeyNMT calls) and ``importlib_metadata`` (which
   JoeyNMT imports but does not always pull in);
2. the data exported from our Arrow splits as plain text (``<split>.<lang>``),
   our SentencePiece model, and ``vocab.txt`` holding its pieces in id order,
   so that JoeyNMT's token ids are ours (unk=0 pad=1 bos=2 eos=3);
3. a JoeyNMT config mapped from our composed config (``joeynmt_config``: the
   mapping and whatever could not be matched are returned as notes and
   printed in the report);
4. ``python -m joeynmt train CONFIG --skip-test`` for a fixed number of
   updates with validation pushed past the end, its peak RSS taken with ``wait4``;
5. its log's "Tokens per Sec" lines, the first windows dropped as warm-up,
   combined weighted by each window's duration (from the log timestamps).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig

from experiments.bench.joeynmt_config import joey_config
from experiments.bench.plan import base_overrides, compose
from experiments.bench.runner import run_measured
from experiments.bench.targets import JOEYNMT_VERSION
from experiments.data.pipeline import TaskData
from experiments.core.errors import UserError
from experiments.core.runtime import usable_cores

PINS = [f"joeynmt=={JOEYNMT_VERSION}", "sentencepiece==0.2.0", "importlib_metadata"]


def torch_pin() -> str:
    return f"torch=={torch.__version__.split('+')[0]}"


def requirements() -> list[str]:
    return [torch_pin(), *PINS]


# ---------------------------------------------------------------------------
# the environment


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path, pip_args: str = "", say: Any = print) -> Path:
    """JoeyNMT's own virtual environment (built on first use, reused while its requirements are the same)."""
    stamp = venv / ".s2s-bench-requirements.json"
    wanted = {"requirements": requirements(), "pip_args": pip_args, "python": sys.version.split()[0]}
    python = venv_python(venv)
    if stamp.exists() and python.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    say(f"building JoeyNMT's environment in {venv} ({' '.join(wanted['requirements'])}) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(python), "-m", "pip", "install", "-q", *requirements(), *shlex.split(pip_args)]
    log_file = venv.parent / "joeynmt-venv-install.log"
    with open(log_file, "w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc:
        raise UserError(f"pip could not build JoeyNMT's environment (exit {rc}): see {log_file}")
    check = subprocess.run([str(python), "-c", "import joeynmt, torch, sentencepiece; print(torch.__version__)"],
                           capture_output=True, text=True)
    if check.returncode:
        raise UserError(f"JoeyNMT's environment does not import: {check.stderr.strip()[-500:]}")
    stamp.write_text(json.dumps(wanted))
    return python


# ---------------------------------------------------------------------------
# data and vocabulary

LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits on


def languages(task: Any) -> tuple[str, str]:
    return task.src_lang or "src", task.tgt_lang or "tgt"


def export_data(data: TaskData, folder: Path, splits: tuple[str, ...] = ("train", "valid", "test")) -> dict[str, Any]:
    """Plain-text copies of our splits, our SentencePiece model and its vocabulary in id order.

    Rewritten only when the tokenizer or the split contents change (a stamp
    file records their keys). Returns the paths JoeyNMT's config needs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    src_lang, tgt_lang = languages(data.task)
    tok = data.tokenizer
    if not tok.joint:
        raise UserError("the JoeyNMT comparison needs the task's joint vocabulary (task.tokenizer.joint=true)")
    names = {split: data.task.splits[split] for split in splits if split in data.task.splits}
    key = {"tokenizer": tok.key, "train": data.train_key, "splits": names, "langs": [src_lang, tgt_lang]}
    stamp = folder / "export.json"
    paths = {"stems": {split: str(folder / name) for split, name in names.items()},
             "sp_model": str(folder / "sp.model"), "vocab": str(folder / "vocab.txt"),
             "vocab_size": tok.tgt.vocab_size(), "src_lang": src_lang, "tgt_lang": tgt_lang}
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return paths
    for split, name in names.items():
        ds = data.split(split).dataset
        for column, lang in (("src", src_lang), ("tgt", tgt_lang)):
            lines = [LINE_BREAKS.sub(" ", text) for text in ds[column]]
            (folder / f"{name}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copyfile(tok.src_path, folder / "sp.model")
    pieces = [tok.src.id_to_piece(i) for i in range(tok.src.get_piece_size())]
    broken = [p for p in pieces if LINE_BREAKS.search(p)]
    if broken:
        raise UserError(f"SentencePiece pieces with line breaks cannot go into JoeyNMT's vocab file: {broken[:5]}")
    (folder / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    stamp.write_text(json.dumps(key))
    return paths


# ---------------------------------------------------------------------------
# the log

LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - \w+ - [\w.]+ - Epoch\s+(?P<epoch>\d+), "
    r"Step:\s+(?P<step>\d+), Batch Loss:\s+(?P<loss>[-\d.e+naif]+), Batch Acc: (?P<acc>[-\d.e+naif]+), "
    r"Tokens per Sec:\s+(?P<tok>\d+), Lr: (?P<lr>[-\d.e+]+)", re.M)
PARAMS_LINE = re.compile(r"Total params: (\d+)")
EPOCH_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - \w+ - [\w.]+ - EPOCH (?P<epoch>\d+)",
                        re.M)


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse_log(text: str) -> dict[str, Any]:
    """JoeyNMT's training log lines: one window per "Tokens per Sec" line, and the parameter count."""
    windows = [{"time": _time(m["time"]), "epoch": int(m["epoch"]), "step": int(m["step"]),
                "loss": float(m["loss"]), "tokens_per_s": float(m["tok"]), "lr": float(m["lr"])}
               for m in LOG_LINE.finditer(text)]
    params = PARAMS_LINE.search(text)
    return {"windows": windows, "params": int(params.group(1)) if params else None,
            "epoch_starts": {int(m["epoch"]): _time(m["time"]) for m in EPOCH_LINE.finditer(text)}}


def summarize(parsed: dict[str, Any], skip: int) -> dict[str, Any]:
    """Throughput over the windows after the first ``skip``, weighted by each window's duration.

    A window's duration is the time between its log line and the previous one
    (JoeyNMT restarts its clock right after logging); its tokens are its rate
    times that duration. Windows that start a new epoch are left out (their
    clock restarts at the epoch, after the epoch's bookkeeping).
    """
    windows = parsed["windows"]
    kept = []
    for i in range(max(skip, 1), len(windows)):
        prev, cur = windows[i - 1], windows[i]
        if cur["epoch"] != prev["epoch"]:
            continue
        kept.append((cur["time"] - prev["time"], cur["step"] - prev["step"], cur["tokens_per_s"]))
    if not kept:
        raise UserError(f"JoeyNMT logged {len(windows)} throughput windows; need more than {skip} "
                        "(raise --joeynmt-steps or lower --joeynmt-log-every)")
    seconds = sum(k[0] for k in kept)
    steps = sum(k[1] for k in kept)
    tokens = sum(k[0] * k[2] for k in kept)
    return {"tokens_per_s": tokens / seconds, "step_s": seconds / steps, "measured_steps": steps,
            "measured_s": seconds, "window_tokens_per_s": [w["tokens_per_s"] for w in windows],
            "last_loss": windows[-1]["loss"]}


# ---------------------------------------------------------------------------
# running it


def bench_model(cfg: DictConfig, data: TaskData, work_dir: Path, python: Path, *, steps: int, log_every: int,
                skip_windows: int, threads: int, use_cuda: bool, timeout: float) -> dict[str, Any]:
    kind = str(cfg.model.name)
    folder = work_dir / "joeynmt"
    paths = export_data(data, folder / "data" / data.task.name)
    run_dir = folder / kind
    model_dir = run_dir / "model"
    config, notes = joey_config(cfg, paths, model_dir=model_dir, steps=steps, log_every=log_every,
                                use_cuda=use_cuda)
    config_path = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    cmd = [str(python), "-m", "joeynmt", "train", str(config_path), "--skip-test"]
    rc, seconds, rss, _ = run_measured(cmd, log_path=run_dir / "stdout.log", timeout=timeout, cwd=run_dir, env=env)
    log_file = model_dir / "train.log"
    text = log_file.read_text() if log_file.exists() else (run_dir / "stdout.log").read_text()
    result: dict[str, Any] = {"model": kind, "config": str(config_path), "steps": steps, "log_every": log_every,
                              "batch_tokens": int(cfg.trainer.batch_tokens),
                              "skipped_windows": skip_windows, "threads": threads, "seconds_total": seconds,
                              "peak_rss_mb": rss, "mapping_notes": notes, "returncode": rc}
    if rc:
        tail = (run_dir / "stdout.log").read_text()[-1500:].strip()
        result["error"] = f"joeynmt exited with {rc}: {tail[-500:]}"
        return result
    parsed = parse_log(text)
    result["params"] = parsed["params"]
    try:
        result.update(summarize(parsed, skip_windows))
    except UserError as e:
        result["error"] = str(e)
    return result


def run_all(args: Any, data: TaskData, device: torch.device, runner: Any) -> dict[str, Any]:
    """JoeyNMT for each of ``args.models``, configured from the same composed config as our base run; with
    --time-to-quality its Transformer too, whose seconds per update go with its BLEU curve (``ttq``)."""
    work_dir = Path(args.work_dir).resolve()
    models = list(args.models)
    if getattr(args, "time_to_quality", None) is not None and "transformer" not in models:
        models.append("transformer")
    try:
        python = ensure_venv(work_dir / "joeynmt-venv", args.joeynmt_pip_args, say=runner.say)
    except (UserError, subprocess.SubprocessError, OSError) as e:
        runner.say(f"JoeyNMT: FAILED to build its environment: {e}")
        return {m: {"model": m, "error": f"environment: {e}"} for m in models}
    results = {}
    for model in models:
        preset = f"{model}_tiny" if args.tiny else model
        runner.say(f"joeynmt {preset}: {args.joeynmt_steps} updates ...")
        try:
            cfg = compose(base_overrides(args, device, preset))
            result = bench_model(cfg, data, work_dir, python, steps=args.joeynmt_steps,
                                 log_every=args.joeynmt_log_every, skip_windows=args.joeynmt_skip_windows,
                                 threads=(cfg.trainer.num_threads or usable_cores()), use_cuda=device.type == "cuda",
                                 timeout=600 + 60 * args.joeynmt_steps)
        except (UserError, OSError) as e:
            result = {"model": model, "error": str(e)}
        if "error" in result:
            runner.say(f"  FAILED: {result['error']}")
        else:
            runner.say(f"  {result['tokens_per_s']:.0f} tok/s, {result['step_s']:.3f} s/step "
                       f"({result['params']:,} parameters)")
        results[model] = result
    return results
