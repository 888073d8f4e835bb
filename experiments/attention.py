"""``s2s-attention``: heatmaps of the cross-attention a trained model used for its own output.

    s2s-attention RUN_DIR [RUN_DIR ...] --text "a source sentence" [--beam 5]
    s2s-attention RUN_DIR [RUN_DIR ...] --index 3 [--split test]
    s2s-attention RUN_DIR [RUN_DIR ...] --examples 8 [--out DIR]

The weights are ``Hypotheses.attention`` of the chosen hypothesis: the attention
of the very decoder steps that emitted its tokens (greedy, or beam search with
``--beam K``), not a teacher-forced re-run. Rows are the output pieces plus the
eos step, columns the source pieces plus the source eos.

Files, in ``--out`` (default ``<run dir>/attention/``), named
``<example>_<model>-<run dir name>_beam<K>[_<figure>].png`` where ``<example>`` is
``<split>-<index>`` or ``text-<hash of the text>``: the GRU gives one map; the
Transformer gives ``_mean`` (mean over decoder layers and heads) and ``_layers``
(a grid, one row per decoder layer, one column per head). ``--examples K`` also
writes ``attention.html`` (images embedded, so the page stands alone) to
``--out`` or the first run's attention folder: per example, the source, the
reference, and each run's hypothesis and map side by side. Each PNG is logged to
its run's W&B run (``logger`` of the run's config, unless ``disabled`` or
``--no-wandb``) under ``attention/<example>[/<figure>]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from experiments.atomic import atomic_path, write_text
from experiments.batching import collate
from experiments.errors import UserError
from experiments.evaluate import LoadedRun, load_run, search
from experiments.tracking import Tracker
from experiments.trainer import autocast_for


@dataclass
class AttentionMap:
    weights: np.ndarray  # GRU (T, S); Transformer (L, H, T, S)
    src_labels: list[str]  # S source pieces, "</s>" last
    tgt_labels: list[str]  # T output pieces, "</s>" last
    hypothesis: str  # detokenized output


def attention_map(run: LoadedRun, src_text: str, beam: int = 1) -> AttentionMap:
    """Decode ``src_text`` and return the cross-attention of the best hypothesis."""
    data, decoding = run.data, run.cfg.decoding
    ids = data.tokenizer.encode_src([src_text])[0]
    batch = collate([ids], [[]], np.zeros(1), max_src_len=data.task.max_src_len, max_tgt_len=data.task.max_tgt_len,
                    pad_id=data.pad_id, bos_id=data.bos_id, eos_id=data.eos_id).to(run.device)
    hyps = search(run.model, batch, data, decoding, autocast_for(run.device, run.cfg.trainer.precision), beam,
                  return_attention=True)
    tokens = hyps.tokens[0]
    return AttentionMap(
        weights=hyps.attention[0].float().cpu().numpy(),
        src_labels=data.tokenizer.src_pieces(batch.src[0].tolist()),  # ends in the eos piece
        tgt_labels=data.tokenizer.tgt_pieces(tokens + [data.eos_id]),
        hypothesis=data.tokenizer.decode_tgt([tokens])[0],
    )


def _heatmap(fig: Figure, ax, weights: np.ndarray, amap: AttentionMap, title: str) -> None:
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(amap.src_labels)), amap.src_labels, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(amap.tgt_labels)), amap.tgt_labels)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)


def figures(amap: AttentionMap, title: str) -> dict[str, Figure]:
    """Figures by file-name suffix: ``{"": map}`` (GRU) or ``{"mean": ..., "layers": grid}`` (Transformer)."""
    T, S = amap.weights.shape[-2:]
    size = (2.5 + 0.35 * S, 2.0 + 0.3 * T)  # one panel, in inches: a readable tick per piece
    if amap.weights.ndim == 2:
        fig = Figure(figsize=size, layout="constrained")
        _heatmap(fig, fig.subplots(), amap.weights, amap, title)
        return {"": fig}
    L, H = amap.weights.shape[:2]
    mean = Figure(figsize=size, layout="constrained")
    _heatmap(mean, mean.subplots(), amap.weights.mean(axis=(0, 1)), amap,
             f"{title}\nmean of {L} layers x {H} heads")
    grid = Figure(figsize=(size[0] * H, size[1] * L), layout="constrained")
    grid.suptitle(title)
    for (layer, head), ax in zip(np.ndindex(L, H), grid.subplots(L, H, squeeze=False).flat):
        _heatmap(grid, ax, amap.weights[layer, head], amap, f"layer {layer + 1} head {head + 1}")
    return {"mean": mean, "layers": grid}


def save(figs: dict[str, Figure], out: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>[_<suffix>].png`` per figure; returns the paths by suffix."""
    paths = {}
    for suffix, fig in figs.items():
        paths[suffix] = out / (f"{stem}_{suffix}.png" if suffix else f"{stem}.png")
        with atomic_path(paths[suffix]) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return paths


@dataclass
class Example:
    name: str  # file-name prefix and W&B key
    src: str
    ref: str | None


def pick_examples(runs: list[LoadedRun], args: argparse.Namespace) -> list[Example]:
    """The sources to decode; split examples come from the first run (all runs must share its task)."""
    if args.text is not None:
        return [Example(f"text-{hashlib.sha1(args.text.encode()).hexdigest()[:8]}", args.text, None)]
    tasks = sorted({run.cfg.task.name for run in runs})
    if len(tasks) > 1:
        raise UserError(f"the runs are on different tasks {tasks}: compare split examples of one task, or use --text")
    split = runs[0].data.split(args.split)
    if args.examples:
        indices = list(range(min(args.examples, len(split))))
    elif 0 <= args.index < len(split):
        indices = [args.index]
    else:
        raise UserError(f"--index {args.index} is out of range: split {args.split!r} has {len(split)} examples "
                        f"(0..{len(split) - 1})")
    rows = split.dataset.select(indices)
    return [Example(f"{args.split}-{i}", src, ref) for i, src, ref in zip(indices, rows["src"], rows["tgt"])]


def page(runs: list[LoadedRun], items: list[Example], hyps: list[list[str]], images: list[list[Path]]) -> str:
    """One HTML page: per example, source and reference, then one column per run (hypothesis and map)."""
    esc = html.escape
    heads = "".join(f"<th>{esc(r.cfg.model.name)}<br><small>{esc(str(r.run_dir))}, step {r.step}</small></th>"
                    for r in runs)
    body = []
    for i, ex in enumerate(items):
        cells = "".join(
            f"<td><p>{esc(hyps[r][i])}</p><img src=\"data:image/png;base64,"
            f"{base64.b64encode(images[r][i].read_bytes()).decode()}\" alt=\"{esc(images[r][i].name)}\"></td>"
            for r in range(len(runs)))
        body.append(f"<h2>{esc(ex.name)}</h2><p><b>source</b> {esc(ex.src)}</p>"
                    f"<p><b>reference</b> {esc(ex.ref or '')}</p><table><tr>{heads}</tr><tr>{cells}</tr></table>")
    style = "td{vertical-align:top;padding:0 1em} img{max-width:48vw} th{text-align:left}"
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>attention</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def render_runs(args: argparse.Namespace) -> list[Path]:
    """Render, save and log every example for every run; returns the files written."""
    runs = [load_run(d) for d in args.runs]
    items = pick_examples(runs, args)
    written: list[Path] = []
    hyps: list[list[str]] = []
    shown: list[list[Path]] = []  # per run, per example: the map the HTML page shows
    for run in runs:
        out = Path(args.out) if args.out else run.run_dir / "attention"
        cfg, tag = run.cfg, f"{run.cfg.model.name}-{run.run_dir.name}"
        tracker = None
        if not args.no_wandb and cfg.logger.mode != "disabled":
            tracker = Tracker(cfg.logger, run.run_dir, OmegaConf.to_container(cfg, resolve=True),
                              name=f"{cfg.task.name}-{cfg.model.name}-s{cfg.seed}")
        hyps.append([])
        shown.append([])
        for ex in items:
            amap = attention_map(run, ex.src, args.beam)
            title = f"{cfg.model.name} | {run.run_dir.name} | step {run.step} | beam {args.beam}"
            paths = save(figures(amap, title), out, f"{ex.name}_{tag}_beam{args.beam}")
            if tracker:
                # One key per figure: W&B wants one image size per key. No step: W&B refuses steps
                # below the run's last, and training logged steps after its best checkpoint.
                for suffix, path in paths.items():
                    tracker.images("/".join(filter(None, ("attention", ex.name, suffix))), [path])
            hyps[-1].append(amap.hypothesis)
            shown[-1].append(next(iter(paths.values())))  # the GRU map or the Transformer mean
            written += paths.values()
        if tracker:
            tracker.finish()
    if args.examples:
        target = (Path(args.out) if args.out else runs[0].run_dir / "attention") / "attention.html"
        write_text(target, page(runs, items, hyps, shown))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-attention", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or checkpoint files)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="a source sentence to decode")
    source.add_argument("--index", type=int, help="an example of --split")
    source.add_argument("--examples", type=int, metavar="K", help="the first K examples of --split, plus an HTML page")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=1, help="1: greedy (default); K > 1: beam search")
    parser.add_argument("--out", help="output folder (default: <run dir>/attention/)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the images to the runs' W&B runs")
    args = parser.parse_args(argv)
    if args.beam < 1 or (args.examples is not None and args.examples < 1):
        parser.error("--beam and --examples must be at least 1")
    try:
        written = render_runs(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main()
