"""A lent GPU's one prepared command: check the machine, prove the CUDA paths, train the queue for a fixed time,
pack what finished.

    make lease-prepare                                   # here: wheels and data into .lease/ (carried there)
    python3 -m experiments.training.lease --minutes 7 tune_multi30k_de_en          # there, after the wheels
    python3 -m experiments.training.lease --unpack lease.tgz                       # here again: into results/runs

A lent machine (one GPU, many cores) comes for minutes, bare, with torch but
without this project's other packages, and gives back only a few files. So
the command runs in four steps, each reported in ``OUT/lease.json`` (``$OUT``,
else ``outputs/lease``) however far it got:

1. environment: the GPU, and the versions of the packages the trainer imports
   (a missing or too old one is named at once, not after minutes of training);
2. the CUDA tests (``tests/test_cuda_paths.py``, skipped on a machine without
   a GPU), their last lines in ``OUT/cuda-tests.txt``;
3. ``s2s-grid ITEMS --jobs N --threads 1`` in a runs folder of its own,
   ended (SIGTERM: its jobs stop with it) at ``--minutes``; finished jobs
   already exported under ``results/runs`` are skipped as on any machine;
4. every finished run exported as ``s2s-tables --export`` does (summary,
   events, config, gzipped outputs) into one ``OUT/runs.tgz``, beside the
   grid's log.

``--unpack`` puts such an archive's runs into ``results/runs`` (a run already
there is kept, and named); the CPU grid then counts them as done.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMPORTED = ("torch", "numpy", "sentencepiece", "sacrebleu", "omegaconf", "hydra", "datasets", "pyarrow",
            "rouge_score", "matplotlib")  # what training and its final tests import
MIN_VERSIONS = {"pyarrow": 24}  # datasets 5 refuses an older one at import


def environment() -> dict[str, Any]:
    """The GPU and the package versions, or the first package that is missing or too old (``problem``)."""
    found: dict[str, Any] = {}
    for name in IMPORTED:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure is the answer
            return {**found, "problem": f"import {name} failed: {type(e).__name__}: {e} (carry its wheel: "
                                        "make lease-prepare)"}
        found[name] = getattr(module, "__version__", "?")
        major = MIN_VERSIONS.get(name)
        if major and int(str(found[name]).split(".")[0]) < major:
            return {**found, "problem": f"{name} {found[name]} is older than {major}: carry its wheel"}
    import torch

    found["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return found


def run_grid(items: list[str], runs_dir: Path, jobs: int, seconds: float, log: Path) -> dict[str, Any]:
    """``s2s-grid`` for ``seconds``, then SIGTERM (it ends its jobs, which resume from their checkpoints)."""
    cmd = [sys.executable, "-m", "experiments.training.grid", *items, "--runs-dir", str(runs_dir),
           "--jobs", str(jobs), "--threads", "1"]
    started = time.monotonic()
    with open(log, "w") as out:
        grid = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            rc = grid.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            grid.send_signal(signal.SIGTERM)
            try:
                rc = grid.wait(timeout=120)
            except subprocess.TimeoutExpired:  # a job that would not stop: what finished is still packed
                os.killpg(grid.pid, signal.SIGKILL)
                rc = grid.wait()
    return {"command": " ".join(cmd[1:]), "exit": rc, "seconds": round(time.monotonic() - started, 1)}


def pack(runs_dir: Path, archive: Path) -> list[str]:
    """Export every finished run under ``runs_dir`` into ``archive`` (a .tgz of ``<exp>/<model>/seed<k>``)."""
    from experiments.core.errors import UserError
    from experiments.training.runs import export, find_runs

    try:
        runs = find_runs([runs_dir])
    except UserError:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        exported = [export(run, Path(tmp)).relative_to(tmp).as_posix() for run in runs]
        with tarfile.open(archive, "w:gz") as tar:
            for name in exported:
                tar.add(Path(tmp) / name, arcname=name)
    return exported


def unpack(archive: Path, into: Path) -> tuple[list[str], list[str]]:
    """The runs of ``archive`` put under ``into``: (added, kept as they were because ``into`` had them)."""
    from experiments.core.atomic import atomic_path

    added, kept = [], []
    with tarfile.open(archive) as tar, tempfile.TemporaryDirectory() as tmp:
        tar.extractall(tmp, filter="data")
        for results in sorted(Path(tmp).rglob("results.json")):
            name = results.parent.relative_to(tmp)
            target = into / name
            if target.exists():
                kept.append(name.as_posix())
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as building:  # whole or not at all, whichever file system /tmp is on
                shutil.copytree(results.parent, building)
            added.append(name.as_posix())
    return added, kept


def cuda_tests(log: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda_paths.py"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    log.write_text(done.stdout[-6000:] + done.stderr[-2000:])
    return {"exit": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.training.lease", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("items", nargs="*", help="s2s-grid's items (presets, then overrides)")
    parser.add_argument("--minutes", type=float, default=7.0, help="training time before the grid is ended")
    parser.add_argument("--jobs", type=int, default=8, help="jobs side by side on the GPU (default 8)")
    parser.add_argument("--runs-dir", type=Path, default=Path(tempfile.gettempdir()) / "lease-runs")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "outputs" / "lease"))
    parser.add_argument("--skip-tests", action="store_true", help="no CUDA tests (a rerun within one lease)")
    parser.add_argument("--unpack", type=Path, metavar="TGZ", help="put an archive's runs into results/runs, then end")
    args = parser.parse_args(argv)
    if args.unpack:
        added, kept = unpack(args.unpack, REPO / "results" / "runs")
        print(f"added to results/runs: {', '.join(added) or 'nothing'}")
        if kept:
            print(f"kept as they were (already exported): {', '.join(kept)}")
        return
    if not args.items:
        parser.error("name the grid's items, e.g. tune_multi30k_de_en")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"items": args.items, "minutes": args.minutes, "jobs": args.jobs}

    def save() -> None:
        (args.out / "lease.json").write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps(report, indent=1), flush=True)

    report["environment"] = environment()
    if "problem" in report["environment"]:
        save()
        sys.exit(3)
    if not args.skip_tests:
        report["cuda_tests"] = cuda_tests(args.out / "cuda-tests.txt")
        save()
    report["grid"] = run_grid(args.items, args.runs_dir, args.jobs, 60 * args.minutes, args.out / "grid.log")
    report["exported"] = pack(args.runs_dir, args.out / "runs.tgz")
    save()


if __name__ == "__main__":
    main()
