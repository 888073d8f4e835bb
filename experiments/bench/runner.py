"""Running the measurements: each Spec in a fresh worker process (``python -m experiments.bench``) or in this one.

A worker per configuration keeps its peak memory, thread setting and compile
caches its own; its peak RSS comes from ``wait4``, and a timeout ends the
worker's whole process group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from experiments.bench.measure import maxrss_mb, measure, row_head
from experiments.bench.plan import Spec
from experiments.bench.report import jsonable
from experiments.data.pipeline import TaskData

TTB_TIMEOUT = 7 * 24 * 3600  # time to BLEU (and to quality) trains for as long as it takes


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """``count`` one-thread processes multiplying matrices for as long as the block runs; their pids."""
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.bench.load"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for _ in range(count)]
    try:
        time.sleep(1.0 if procs else 0.0)  # let them reach their loop
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class Measured(NamedTuple):
    code: int  # exit status
    seconds: float  # wall time
    peak_mb: float  # peak resident set
    minor_faults: int  # pages the kernel mapped in (and zeroed, for fresh memory) without reading a disk


def run_measured(cmd: list[str], *, log_path: Path, timeout: float, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` (output to ``log_path``); returns its exit code, wall seconds, peak RSS and minor page faults.

    Both come from ``wait4`` for this child alone, without psutil. The
    child gets its own process group so that a timeout ends it and whatever it started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            kill()
            raise
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(proc.returncode, time.perf_counter() - start, maxrss_mb(usage.ru_maxrss), usage.ru_minflt)


class Runner:
    """Runs Specs in worker processes (or in this one) and reports progress."""

    def __init__(self, work_dir: Path, in_process: bool, keep_runs: bool, timeout: float) -> None:
        self.work_dir = work_dir
        self.in_process = in_process
        self.keep_runs = keep_runs
        self.timeout = timeout
        self.started = time.perf_counter()
        self.data: TaskData | None = None  # loaded once by the caller; workers load their own

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def __call__(self, spec: Spec) -> dict[str, Any]:
        slug = f"{spec.kind}-{spec.preset}-{spec.name}".replace("+", "_").replace("/", "_")
        spec.run_dir = str(self.work_dir / "runs" / slug)
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        self.say(f"{spec.kind} {spec.preset} {spec.name} ...")
        with busy_processes(spec.load):
            result = measure(spec, self.data) if self.in_process else self.in_worker(spec, slug)
        result.update(load=spec.load, env=spec.env or {})
        if self.in_process and spec.env:
            result["env_note"] = "--in-process: the environment was not applied (it needs a fresh process)"
        if not self.keep_runs:
            shutil.rmtree(spec.run_dir, ignore_errors=True)
        self.report(spec, result)
        return result

    def in_worker(self, spec: Spec, slug: str) -> dict[str, Any]:
        runs = self.work_dir / "runs"
        spec_file, out_file, log_file = runs / f"{slug}.spec.json", runs / f"{slug}.result.json", runs / f"{slug}.log"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(asdict(spec)))
        out_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "experiments.bench", "--worker", str(spec_file), str(out_file)]
        timeout = self.timeout if spec.kind not in ("ttb", "ttq") else TTB_TIMEOUT
        rc, _, rss, _ = run_measured(cmd, log_path=log_file, timeout=timeout,
                                  env={**os.environ, **spec.env} if spec.env else None)
        if not out_file.exists():
            tail = log_file.read_text()[-2000:]
            return {**row_head(spec), "error": f"worker exited with {rc} (timeout {timeout:.0f}s?): "
                                               f"{tail.strip()[-500:]}"}
        return {**json.loads(out_file.read_text()), "worker_peak_rss_mb": rss}

    def report(self, spec: Spec, result: dict[str, Any]) -> None:
        """One progress line per result (and per scaling point or decoding row)."""
        if "error" in result:
            self.say(f"  FAILED: {result['error']}")
        elif spec.kind == "scaling":
            for point in result.get("points", []):
                self.say(f"  {point['batch_tokens']} tokens: {point['tokens_per_s']:.0f} tok/s, "
                         f"{point['step_s']:.3f} s/step")
        elif spec.kind == "train":
            self.say(f"  {result['tokens_per_s']:.0f} tok/s, {result['step_s']:.3f} s/step, "
                     f"warm-up {result['warmup_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MiB")
            for row in result.get("decoding", []):
                self.say(f"  decode {row['search']}: {row['sentences']} sentences in {row['seconds']:.2f} s "
                         f"(mean output length {row['mean_output_len']:.1f})")


def worker_main(spec_file: str, out_file: str) -> None:
    """A worker process: measure one Spec (a JSON file) and write its result row."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = Spec(**json.loads(Path(spec_file).read_text()))
    result = measure(spec)
    Path(out_file).write_text(json.dumps(jsonable(result)))
