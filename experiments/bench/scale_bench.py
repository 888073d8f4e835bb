"""Scale benchmark: millions of sentence pairs through the ``hf`` loader in bounded memory.

    python -m experiments.bench.scale_bench --pairs 2000000

Generates ``--pairs`` synthetic sentence pairs (WMT-shaped records:
``{"id", "translation": {"de", "en"}}``) as Parquet or JSON-lines shards under
``.bench/scale/`` (git-ignored; reused by later runs), then measures
``--fraction`` of the corpus and all of it, each in a fresh process with a
fresh cache: load it as an ``hf`` task (Arrow files), train the tokenizer,
tokenize the training split (``datasets.map`` with ``--num-proc`` workers),
build one epoch's batch plan (and rank 0's shard of 8) and read the first
batches. Each stage is timed; the peak resident memory of the process and of
its largest tokenization worker (``getrusage``) shows what the corpus costs in
memory. Writes ``outputs/scale/scale.md`` and ``scale.json`` (``--out results``
replaces the committed report); exits 1 when a peak passes ``--max-rss-mib``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from experiments.core.outdirs import default_out, out_help, say_wrote

REPO = Path(__file__).resolve().parents[2]
SHARD = 100_000  # pairs a training file
EVAL_PAIRS = 3000  # pairs in each of the validation and test files
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
MEASURE_ARGS = ("format", "num_proc", "vocab_size", "max_sentences", "batch_tokens", "read_batches")


# ---------------------------------------------------------------------------
# Corpus


def vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` distinct pseudo-words of one to four syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(SYLLABLES, rng.integers(1, 5)))] = None
    return np.array(list(words))


class Corpus:
    """A synthetic "translation" task: Zipf-distributed words, the target is the mapped words reversed."""

    def __init__(self, seed: int = 0, vocab_size: int = 20_000) -> None:
        rng = np.random.default_rng(seed)
        self.src_words = vocabulary(rng, vocab_size)
        self.tgt_words = vocabulary(rng, vocab_size)[rng.permutation(vocab_size)]
        zipf = 1.0 / np.arange(1, vocab_size + 1)
        self.probs = zipf / zipf.sum()

    def pairs(self, n: int, seed: int) -> tuple[list[str], list[str]]:
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.poisson(18, n), 3, 60)
        ids = rng.choice(len(self.probs), int(lengths.sum()), p=self.probs)
        src_words, tgt_words = self.src_words[ids], self.tgt_words[ids]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        src = [" ".join(src_words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        tgt = [" ".join(tgt_words[a:b][::-1]) for a, b in zip(bounds[:-1], bounds[1:])]
        return src, tgt


def write_shard(path: Path, ids: range, src: list[str], tgt: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        translation = pa.StructArray.from_arrays([pa.array(src), pa.array(tgt)], names=["de", "en"])
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "translation": translation}), path)
    else:
        with open(path, "w", encoding="utf-8") as f:
            for i, s, t in zip(ids, src, tgt):
                f.write(json.dumps({"id": i, "translation": {"de": s, "en": t}}, ensure_ascii=False) + "\n")


def generate(folder: Path, pairs: int, fmt: str) -> dict[str, list[str]]:
    """The corpus's files by split, written first unless a complete corpus of this size is there."""
    manifest = folder / "corpus.json"
    if manifest.exists() and json.loads(manifest.read_text())["pairs"] == pairs:
        return json.loads(manifest.read_text())["files"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    corpus = Corpus()
    files: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    n_shards = -(-pairs // SHARD)
    started = time.perf_counter()
    for shard in range(n_shards):
        start = shard * SHARD
        n = min(SHARD, pairs - start)
        path = folder / f"train-{shard:05d}-of-{n_shards:05d}.{fmt}"
        write_shard(path, range(start, start + n), *corpus.pairs(n, seed=shard + 1))
        files["train"].append(str(path))
        print(f"\rgenerated {start + n:,} / {pairs:,} pairs ({time.perf_counter() - started:.0f} s)", end="",
              flush=True)
    print()
    for offset, split in enumerate(("validation", "test")):
        path = folder / f"{split}.{fmt}"
        write_shard(path, range(EVAL_PAIRS), *corpus.pairs(EVAL_PAIRS, seed=-(offset + 1) % 2**32))
        files[split].append(str(path))
    manifest.write_text(json.dumps({"pairs": pairs, "format": fmt, "files": files}, indent=1))
    return files


# ---------------------------------------------------------------------------
# One measurement (run in a fresh process, so its peak memory is its own)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def rss_mib() -> dict[str, float]:
    """Resident memory now: private ("anon") and pages of mapped files ("file": the Arrow files, reclaimable)."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {kind: int(fields[f"Rss{kind.capitalize()}"].split()[0]) / 1024 for kind in ("anon", "file")}


def task_config(files: dict[str, list[str]], fmt: str, args: argparse.Namespace) -> Any:
    from experiments.core.config import TaskConfig

    return OmegaConf.merge(OmegaConf.structured(TaskConfig), {
        "name": "scale_bench",
        "loader": "hf",
        "hf": {"path": "parquet" if fmt == "parquet" else "json", "data_files": files},
        "src_field": "translation.de",
        "tgt_field": "translation.en",
        "splits": {"train": "train", "valid": "validation", "test": "test"},
        "num_proc": args.num_proc,
        "tokenizer": {"vocab_size": args.vocab_size, "max_sentences": args.max_sentences},
    })


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, tokenize and batch one corpus; stage times in seconds and peak RSS in MiB."""
    from experiments.data.pipeline import TaskData
    from experiments.data.sources import raw_split

    args = argparse.Namespace(**spec["args"])
    task = task_config(spec["files"], args.format, args)
    cache = Path(spec["cache"])
    seconds: dict[str, float] = {}
    peak_after = {"import": peak_rss_mib()}  # the peak is monotone: each stage's own shows where it rises

    def stage(name: str, started: float) -> None:
        seconds[name] = time.perf_counter() - started
        peak_after[name] = peak_rss_mib()

    started = time.perf_counter()
    train, _ = raw_split(task, "train", cache, cache)
    stage("load", started)

    started = time.perf_counter()
    data = TaskData(task, cache)
    stage("tokenizer", started)

    started = time.perf_counter()
    split = data.split("train")
    stage("tokenize", started)

    started = time.perf_counter()
    plan = data.plan("train", args.batch_tokens, shuffle=True, seed=1, epoch=0)
    shard = data.plan("train", args.batch_tokens, shuffle=True, seed=1, epoch=0, rank=0, world_size=8)
    stage("plan", started)

    started = time.perf_counter()
    read = sum(batch.n_tgt_tokens for _, batch in zip(range(args.read_batches), data.batches("train", plan)))
    stage("read_batches", started)

    return {
        "pairs": len(train),
        "files": len(spec["files"]["train"]),
        "corpus_mib": sum(Path(f).stat().st_size for f in spec["files"]["train"]) / 2**20,
        "arrow_mib": sum(Path(f["filename"]).stat().st_size for f in split.dataset.cache_files) / 2**20,
        "tokens": int(split.src_lens.sum() + split.tgt_lens.sum()),
        "batches": len(plan),
        "rank0_of_8_batches": len(shard),
        "read_batches": args.read_batches,
        "read_tokens": read,
        "seconds": seconds,
        "peak_rss_after_mib": peak_after,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_workers_mib": peak_rss_mib(resource.RUSAGE_CHILDREN),
        "rss_end_mib": rss_mib(),
    }


def run_measurement(files: dict[str, list[str]], cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(cache, ignore_errors=True)
    settings = {k: getattr(args, k) for k in MEASURE_ARGS}
    spec = {"files": files, "cache": str(cache), "args": settings}
    out = subprocess.run([sys.executable, "-m", "experiments.bench.scale_bench", "--measure", json.dumps(spec)],
                         cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Report


def report(runs: list[dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    rows = [
        "| pairs | train files MiB | tokenized Arrow MiB | load s | tokenizer s | tokenize s | plan s | batches "
        "| peak RSS MiB after load / tokenizer / tokenize / plan | RSS at the end MiB, private + mapped files "
        "| peak RSS of a tokenize worker MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        s, peaks = r["seconds"], r["peak_rss_after_mib"]
        peak = " / ".join(f"{peaks[name]:,.0f}" for name in ("load", "tokenizer", "tokenize", "plan"))
        rows.append(f"| {r['pairs']:,} | {r['corpus_mib']:,.0f} | {r['arrow_mib']:,.0f} | {s['load']:.1f} | "
                    f"{s['tokenizer']:.1f} | {s['tokenize']:.1f} | {s['plan']:.1f} | {r['batches']:,} | {peak} | "
                    f"{r['rss_end_mib']['anon']:,.0f} + {r['rss_end_mib']['file']:,.0f} | "
                    f"{r['peak_rss_workers_mib']:,.0f} |")
    small, large = runs
    stages = ["import", "load", "tokenizer", "tokenize", "plan"]
    peaks = large["peak_rss_after_mib"]
    rises = {stage: peaks[stage] - peaks[before] for before, stage in zip(stages, stages[1:])}
    top = max(rises, key=rises.get)
    why = (" (SentencePiece holds its sample, capped by `task.tokenizer.max_sentences`, while it trains)"
           if top == "tokenizer" else "")
    return "\n".join([
        "# Scale: a large Hugging Face corpus in bounded memory",
        "",
        f"`{args.command}` on {machine['date']}, commit `{machine['commit']}`.",
        "",
        f"Machine: {machine['hardware']['cpu']}, {machine['hardware']['cores']} usable cores, "
        f"{machine['memory_gib']:.0f} GiB RAM, shared with other jobs (load average over 1 / 5 / 15 minutes: "
        f"{' / '.join(f'{x:.1f}' for x in machine['load_before'])} when it started, "
        f"{' / '.join(f'{x:.1f}' for x in machine['load_after'])} when it ended); datasets {machine['datasets']}, "
        f"sentencepiece {machine['sentencepiece']}, torch {machine['hardware']['torch']}.",
        "",
        f"Synthetic WMT-shaped pairs (`translation.de` -> `translation.en`, Zipf words, 3-60 words a sentence) in "
        f"{args.format} shards of {SHARD:,} pairs, loaded as an `hf` task (`task.hf.path={task_path(args)}`, "
        f"`data_files` by split); each row is a fresh process with an empty cache. Stages: load (Arrow files "
        f"written by `datasets`), tokenizer (joint unigram, {args.vocab_size:,} pieces, trained on at most "
        f"{args.max_sentences:,} sentences spread over the split), tokenize (`datasets.map`, {args.num_proc} "
        f"processes), plan (one epoch's token-budget batches of {args.batch_tokens:,} tokens, plus rank 0's "
        f"shard of 8).",
        "",
        *rows,
        "",
        f"The corpus grows {large['pairs'] / small['pairs']:.0f}x, the peak RSS of the process "
        f"{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}x (after imports it held "
        f"{peaks['import']:,.0f} MiB). The largest rise of the peak at {large['pairs']:,} pairs comes in the {top} "
        f"stage, +{rises[top]:,.0f} MiB{why}. The text and token ids stay in memory-mapped Arrow files: at the "
        f"end the process held {small['rss_end_mib']['anon']:,.0f} and {large['rss_end_mib']['anon']:,.0f} MiB "
        f"of private memory, of which the length arrays and the batch plan take a few tens of bytes an example; "
        f"its other resident pages are mapped files (libraries, Arrow files), which the kernel can drop. "
        f"A tokenize worker is forked from the process, so its RSS counts the pages it shares with it. "
        f"Limit checked: {args.max_rss_mib:,} MiB for the process and for each worker.",
        "",
    ])


def task_path(args: argparse.Namespace) -> str:
    return "parquet" if args.format == "parquet" else "json"


def machine_facts(load_before: tuple[float, float, float]) -> dict[str, Any]:
    import datasets
    import sentencepiece
    import torch

    from experiments.core.runtime import git_commit, hardware

    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return {
        "hardware": hardware(torch.device("cpu")),
        "memory_gib": mem_kib / 2**20,
        "commit": git_commit(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "datasets": datasets.__version__,
        "sentencepiece": sentencepiece.__version__,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--fraction", type=float, default=0.1, help="the smaller corpus, as a share of --pairs")
    parser.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    parser.add_argument("--num-proc", type=int, default=2, help="tokenization processes (task.num_proc)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-sentences", type=int, default=None, help="tokenizer sample (default: the task's)")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--read-batches", type=int, default=200)
    parser.add_argument("--max-rss-mib", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, default=REPO / ".bench" / "scale")
    parser.add_argument("--out", type=Path, default=default_out("scale"), help=out_help("scale"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement, JSON spec
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.max_sentences is None:
        from experiments.core.config import TokenizerConfig

        args.max_sentences = TokenizerConfig.max_sentences
    args.command = "python -m experiments.bench.scale_bench " + " ".join(argv if argv is not None else sys.argv[1:])

    files = generate(args.workdir / f"corpus-{args.pairs}-{args.format}", args.pairs, args.format)
    load_before = os.getloadavg()
    n_small = max(1, round(len(files["train"]) * args.fraction))
    runs = []
    for train_files in (files["train"][:n_small], files["train"]):
        subset = {**files, "train": train_files}
        run = run_measurement(subset, args.workdir / "cache", args)
        print(f"{run['pairs']:,} pairs: " + ", ".join(f"{k} {v:.1f} s" for k, v in run["seconds"].items())
              + f"; peak RSS {run['peak_rss_mib']:,.0f} MiB (largest worker {run['peak_rss_workers_mib']:,.0f} MiB)")
        runs.append(run)
    machine = machine_facts(load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text(report(runs, args, machine))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "measure"}
    (args.out / "scale.json").write_text(json.dumps({"machine": machine, "settings": settings, "runs": runs},
                                                    indent=2) + "\n")
    say_wrote(args.out, ["scale.md", "scale.json"])
    worst = max(max(r["peak_rss_mib"], r["peak_rss_workers_mib"]) for r in runs)
    if worst > args.max_rss_mib:
        print(f"peak RSS {worst:,.0f} MiB is over the {args.max_rss_mib:,} MiB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
