"""Where the GRU's CPU paths start to pay: ``python -m experiments.bench.gru_paths``.

Times one training update (forward, loss, backward) of the table-size GRU on
synthetic batches of a fixed token budget at growing source lengths, with
nn.GRU packed + the autograd decoder loop against the batched recurrence + the
hand-written loop (``model.recurrence``, ``model.decoder_loop``). Targets are
as long as the sources (translation) or a seventh of them (summarization).
It answers whether ``auto`` (the hand-written paths on any CPU batch) costs
anything on short sources.

``--task NAME`` times whole training updates (``Trainer.train_step``: loss,
backward, clipping, AdamW) on the task's real training batches instead, the
same batches for both: the GRU as it trained before its CPU paths (nn.GRU
packed, the autograd loop, logits at every padded target position) against
the defaults (batched recurrence, hand-written loop stopping each sentence at
its end, logits at real positions only), update by update in turns. s2s-bench
measures configurations one after another, and this machine's speed drifts by
a fifth between them; taking turns is the measurement of their ratio that it
does not move.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from experiments.bench.markdown import save_report
from experiments.bench.plan import GRU_BEFORE_CPU_PATHS, TINY_TASK
from experiments.core.runtime import cpu_name, git_commit
from models.gru import GRUSeq2Seq

PATHS = {"packed + autograd": ("packed", "autograd"), "batched + hand-written": ("batched", "handwritten")}


def real_batches(task: list[str], preset: str, batches: int, threads: int, precision: str,
                 work_dir: Path) -> dict[str, Any]:
    """Seconds and real target tokens of ``batches`` training updates per path, the paths taking turns.

    ``task``: the task's Hydra overrides; ``preset``: conf/model's GRU (gru, or gru_tiny in tests)."""
    from experiments.bench.batches import batch_stream
    from experiments.bench.plan import compose
    from experiments.data.pipeline import TaskData
    from experiments.training.trainer import Trainer

    base = [*task, f"model={preset}", "logger=none", "trainer.progress=false", "trainer.device=cpu",
            f"trainer.precision={precision}", f"trainer.num_threads={threads}"]
    paths = {"before (packed + autograd + padded logits)": GRU_BEFORE_CPU_PATHS, "now (defaults)": []}
    data, trainers = None, {}
    for i, (name, overrides) in enumerate(paths.items()):
        cfg = compose([*base, *overrides])
        data = data or TaskData(cfg.task, cfg.cache_dir)
        torch.manual_seed(0)
        trainers[name] = Trainer(cfg, work_dir / f"path{i}", data=data)
    stream = batch_stream(data, cfg, "sorted")
    seconds = {name: 0.0 for name in trainers}
    tokens = 0
    for i in range(batches + 1):  # the first update of each is not timed
        batch = next(stream)
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step([batch])
            if i:
                seconds[name] += time.perf_counter() - start
        tokens += batch.n_tgt_tokens if i else 0
    return {"seconds": seconds, "tokens": tokens}


def update_seconds(sources: int, src_len: int, tgt_len: int, *, vocab: int, size: dict[str, int],
                   repeats: int) -> dict[str, float]:
    """Per path, the fastest of ``repeats`` timed updates (after one untimed) on the same random tokens.

    The paths take turns, update by update, so that a machine that speeds up or
    slows down during the measurement favours neither.
    """
    models = {}
    for name, (recurrence, loop) in PATHS.items():
        torch.manual_seed(0)
        models[name] = GRUSeq2Seq(src_vocab_size=vocab, tgt_vocab_size=vocab, pad_id=1, dropout=0.1,
                                  tie_embeddings=True, share_embeddings=True, recurrence=recurrence,
                                  decoder_loop=loop, **size).train()
    src = torch.randint(4, vocab, (sources, src_len))
    mask = torch.ones_like(src, dtype=torch.bool)
    tgt = torch.randint(4, vocab, (sources, tgt_len + 1))
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            logits, _ = model(src, mask, tgt[:, :-1])
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten()).backward()
            model.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - start)
    return {name: min(t[1:]) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", default="16,64,400", help="source lengths (pieces)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="source tokens per batch (sentences = this / length)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a tiny model (tests)")
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    p.add_argument("--task", help="time whole updates on this task's real training batches (e.g. samsum)")
    p.add_argument("--batches", type=int, default=20, help="with --task: timed updates per path")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="with --task")
    p.add_argument("--readme", type=Path, help="also copy the table into this file between <!-- table:NAME --> "
                   "markers, NAME the --out file's stem")
    args = p.parse_args(argv)
    if args.readme and not args.out:
        p.error("--readme needs --out (its file name names the README's markers)")
    torch.set_num_threads(args.threads)
    command = " ".join(["python -m experiments.bench.gru_paths", *(sys.argv[1:] if argv is None else argv)])
    stamp = (f"Measured by `{command}` on {cpu_name()}, {args.threads} thread(s), {{precision}}, torch "
             f"{torch.__version__}, commit {git_commit()}, {datetime.now(timezone.utc).isoformat(timespec='seconds')}.")
    if args.task:
        with tempfile.TemporaryDirectory() as tmp:
            task, preset = (TINY_TASK, "gru_tiny") if args.tiny else ([f"task={args.task}"], "gru")
            measured = real_batches(task, preset, args.batches, args.threads, args.precision, Path(tmp))
        a, b = measured["seconds"].values()
        rows = [f"| {name} | {s:.1f} | {measured['tokens'] / s:.0f} |" for name, s in measured["seconds"].items()]
        text = "\n".join([
            f"# The GRU's CPU paths on {args.task}'s training batches", "",
            stamp.format(precision=args.precision) + f" {args.batches} training updates (`Trainer.train_step`) on "
            f"the task's length-sorted batches, {measured['tokens']} real target tokens, the same batches for both, "
            "taking turns update by update after one untimed each.", "",
            "| path | seconds | target tokens/s |", "| --- | --- | --- |", *rows, "",
            f"Now against before: {a / b:.2f}x.", ""])
        print(text)
        save_report(text, args.out, args.readme)
        return
    size = ({"emb_dim": 8, "hidden_size": 16, "enc_layers": 1} if args.tiny
            else {"emb_dim": 256, "hidden_size": 512, "enc_layers": 2})  # conf/model/gru.yaml
    vocab = 50 if args.tiny else 8000
    rows = []
    for src_len in (int(x) for x in args.lengths.split(",")):
        sources = max(args.batch_tokens // src_len, 1)
        for task, tgt_len in (("translation", src_len), ("summarization", max(src_len // 7, 1))):
            secs = update_seconds(sources, src_len, tgt_len, vocab=vocab, size=size, repeats=args.repeats)
            a, b = secs.values()
            rows.append(f"| {src_len} | {sources} | {tgt_len} ({task}) | {a:.4f} | {b:.4f} | {a / b:.2f}x |")
            print(rows[-1], flush=True)
    text = "\n".join([
        "# The GRU's CPU paths by source length", "",
        stamp.format(precision="fp32") + " One update (forward, loss, backward) of the table-size GRU on random "
        "tokens, fastest of "
        f"{args.repeats} after one untimed, the two paths taking turns; {args.batch_tokens} source tokens a batch.",
        "",
        "| source length | sentences | target length | packed + autograd s | batched + hand-written s | speedup |",
        "| --- | --- | --- | --- | --- | --- |", *rows, ""])
    save_report(text, args.out, args.readme)


if __name__ == "__main__":
    main()
