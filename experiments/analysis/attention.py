"""``s2s-attention``: the cross-attention a trained model used for its own output, as PNGs and an HTML page.

    s2s-attention RUN_DIR [RUN_DIR ...] --text "a source sentence" [--beam 5]
    s2s-attention RUN_DIR [RUN_DIR ...] --index 3 [--split test]
    s2s-attention RUN_DIR [RUN_DIR ...] --examples 8 [--out DIR] [--views last-layer grid] [--words]

The weights are ``Hypotheses.attention`` of the chosen hypothesis: the attention
of the very decoder steps that emitted its tokens (greedy, or beam search with
``--beam K``), not a teacher-forced re-run. Rows are the output pieces plus the
eos step, columns the source pieces plus the source eos.

PNGs, in ``--out`` (default ``<run dir>/attention/``), are named
``<example>_<model>-seed<S>-step<N>_beam<K>[_<view>][_words].png`` where
``<example>`` is ``<test set>-<index>`` (e.g. ``test_2016_flickr-3``) or
``text-<hash of the text>``: the GRU gives one map; the Transformer one per
``--views`` entry (default ``last-layer grid``: the last layer's mean over its
heads, and every layer x head; see ``experiments.analysis.attention_views``). Each PNG is
logged to its run's W&B run (``logger`` of the run's config, unless
``disabled`` or ``--no-wandb``) under ``attention/<example>[/<view>]``.

``--html`` (implied by ``--examples``) also writes ``attention.html`` to
``--out`` or the first run's attention folder: one self-contained page (data
and script inline, nothing loaded from the network) with every run side by side
per example, a view selector per Transformer run (one head, a layer's mean, the
last layer's mean, all layers' mean, or the grid), per-head entropy and share on
``</s>``, hover read-outs and a word-level toggle. For a run trained with copy
(``model.copy``) it also shows, per output piece, p_gen (the probability of
generating from the vocabulary; 1 - p_gen is copied) and the copy distribution:
the Transformer's copy attention, or the GRU's attention, which is its map.
Those come from a teacher-forced pass over the hypothesis (``copy_view``), the
same computation as the search's steps in eval mode.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from experiments.analysis import attention_page
from experiments.core.atomic import write_text
from experiments.analysis.attention_plots import figures, save
from experiments.analysis.attention_views import View, check_view, parse_view
from experiments.data.batching import Batch, collate
from experiments.evaluation.builders import autocast_for
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import LoadedRun, load_run, search
from experiments.training.runs import shown_path
from experiments.training.tracking import Tracker
from models.copy import copy_terms


@dataclass
class AttentionMap:
    weights: np.ndarray  # GRU (T, S); Transformer (L, H, T, S)
    src_labels: list[str]  # S source pieces, "</s>" last
    tgt_labels: list[str]  # T output pieces, "</s>" last
    hypothesis: str  # detokenized output
    p_gen: np.ndarray | None = None  # (T,) with copy: the probability of generating each row from the vocabulary
    copy: np.ndarray | None = None  # (T, S) the Transformer's copy distribution (the GRU's is ``weights``)


def copy_view(run: LoadedRun, batch: Batch, tokens: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """p_gen (T,) of each output piece and eos, and the Transformer's copy attention (T, S) over the real source
    positions (None for the GRU, which copies with its cross-attention: the map itself).

    A teacher-forced pass over the hypothesis rather than the search's own steps: decode_step returns only the
    mixture, and in eval mode the pass computes the same (tests hold the two equal)."""
    tgt_in = torch.tensor([[run.data.bos_id, *tokens]], device=run.device)
    with torch.inference_mode(), autocast_for(run.device, run.cfg.trainer.precision)():
        terms = copy_terms(run.model, batch.src, batch.src_mask, tgt_in)
    copy = None if shape(run) == (0, 0) else terms.attention[0][:, batch.src_mask[0]].cpu().numpy()
    return terms.p_gen[0].cpu().numpy(), copy


def attention_map(run: LoadedRun, src_text: str, beam: int = 1) -> AttentionMap:
    """Decode ``src_text`` and return the cross-attention of the best hypothesis (and with copy, ``copy_view``)."""
    data, decoding = run.data, run.cfg.decoding
    ids = data.tokenizer.encode_src([src_text])[0]
    batch = collate([ids], [[]], np.zeros(1), max_src_len=data.task.max_src_len, max_tgt_len=data.task.max_tgt_len,
                    pad_id=data.pad_id, bos_id=data.bos_id, eos_id=data.eos_id).to(run.device)
    hyps = search(run.model, batch, data, decoding, autocast_for(run.device, run.cfg.trainer.precision), beam,
                  return_attention=True)
    tokens = hyps.tokens[0]
    p_gen, copy = copy_view(run, batch, tokens) if getattr(run.model, "copy", False) else (None, None)
    return AttentionMap(
        weights=hyps.attention[0].float().cpu().numpy(),
        src_labels=data.tokenizer.src_pieces(batch.src[0].tolist()),  # ends in the eos piece
        tgt_labels=data.tokenizer.tgt_pieces(tokens + [data.eos_id]),
        hypothesis=data.tokenizer.decode_tgt([tokens])[0],
        p_gen=p_gen,
        copy=copy,
    )


@dataclass
class Example:
    name: str  # file-name prefix and W&B key: "test_2016_flickr-3" or "text-<hash>"
    label: str  # on the page: "test_2016_flickr #3"
    src: str
    refs: list[str]  # every reference of the example; none for --text


def check_text(run: LoadedRun, text: str) -> None:
    """A --text the run can show whole: not empty, and within the source length it was trained on (a longer one
    would be cut, and the map would show a sentence that was not the one given)."""
    pieces = len(run.data.tokenizer.encode_src([text])[0])
    if not pieces:
        raise UserError("--text is empty: give a source sentence to decode")
    if pieces + 1 > run.data.task.max_src_len:  # + its eos
        raise UserError(f"--text is {pieces} pieces, more than the {run.data.task.max_src_len - 1} this run's task "
                        f"keeps of a source (task.max_src_len {run.data.task.max_src_len}, eos included): shorten it")


def pick_examples(runs: list[LoadedRun], args: argparse.Namespace) -> list[Example]:
    """The sources to decode; split examples come from the first run (all runs must share its task)."""
    if args.text is not None:
        for run in runs:
            check_text(run, args.text)
        name = f"text-{hashlib.sha1(args.text.encode()).hexdigest()[:8]}"
        return [Example(name, name, args.text, [])]
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
    sources, refs = split.sources(), split.references()
    upstream = runs[0].cfg.task.splits[args.split]
    return [Example(f"{upstream}-{i}", f"{upstream} #{i}", sources[i], refs[i]) for i in indices]


def model_title(run: LoadedRun) -> str:
    """``GRU (bahdanau attention), seed 1`` or ``Transformer (3 layers x 8 heads), seed 1``."""
    model = run.cfg.model
    if model.name == "gru":
        return f"GRU ({getattr(model.attention, 'value', model.attention)} attention), seed {run.cfg.seed}"
    return f"Transformer ({model.dec_layers} layers x {model.heads} heads), seed {run.cfg.seed}"


def run_tags(runs: list[LoadedRun]) -> list[str]:
    """File-name tags ``<model>-seed<S>-step<N>``; the run folder's name is added where two would clash."""
    tags = [f"{r.cfg.model.name}-seed{r.cfg.seed}-step{r.step}" for r in runs]
    return [f"{t}-{r.run_dir.name}" if tags.count(t) > 1 else t for t, r in zip(tags, runs)]


def decoding_text(run: LoadedRun, beam: int) -> str:
    d = run.cfg.decoding
    search_text = "greedy" if beam == 1 else f"beam {beam}, length penalty {d.length_penalty}"
    return f"{search_text}, at most {d.max_len_a} x source length + {d.max_len_b} pieces, min length {d.min_len}"


def shape(run: LoadedRun) -> tuple[int, int]:
    """Decoder layers and heads of a Transformer; (0, 0) for the GRU, whose attention has neither."""
    model = run.cfg.model
    return (model.dec_layers, model.heads) if model.name == "transformer" else (0, 0)


def page_runs(runs: list[LoadedRun], targets: list[str], tags: list[str], beam: int) -> list[attention_page.PageRun]:
    return [attention_page.PageRun(model_title(run), tag, target, run.step, run.cfg.trainer.max_steps, *shape(run),
                                   beam, decoding_text(run, beam))
            for run, target, tag in zip(runs, targets, tags)]


def write_pngs(run: LoadedRun, tag: str, items: list[Example], maps: list[AttentionMap], args: argparse.Namespace,
               views: list[View]) -> list[Path]:
    """Save every example's figures for one run and log them to its W&B run; returns the files written."""
    out = Path(args.out) if args.out else run.run_dir / "attention"
    cfg = run.cfg
    tracker = None
    if not args.no_wandb and cfg.logger.mode != "disabled":
        tracker = Tracker(cfg.logger, run.run_dir, OmegaConf.to_container(cfg, resolve=True),
                          name=f"{cfg.task.name}-{cfg.model.name}-s{cfg.seed}")
    title = f"{model_title(run)}, step {run.step}, {'greedy' if args.beam == 1 else f'beam {args.beam}'}"
    if args.note:
        title += f"\n{args.note}"
    written: list[Path] = []
    for ex, amap in zip(items, maps):
        paths = save(figures(amap, f"{ex.label}: {title}", views, args.words), out, f"{ex.name}_{tag}_beam{args.beam}")
        if tracker:
            # One key per figure: W&B wants one image size per key. No step: W&B refuses steps
            # below the run's last, and training logged steps after its best checkpoint.
            for suffix, path in paths.items():
                tracker.images("/".join(filter(None, ("attention", ex.name, suffix))), [path])
        written += paths.values()
    if tracker:
        tracker.finish()
    return written


def render_runs(args: argparse.Namespace, command: str) -> list[Path]:
    """Decode every example with every run, save and log the PNGs and write the page; returns the files written."""
    views = [parse_view(v) for v in args.views]
    runs = [load_run(d) for d in args.runs]
    for run in runs:
        if shape(run)[0]:
            for view in views:
                check_view(view, *shape(run))
    items = pick_examples(runs, args)
    tags = run_tags(runs)
    maps = [[attention_map(run, ex.src, args.beam) for ex in items] for run in runs]
    written = [path for run, tag, run_maps in zip(runs, tags, maps)
               for path in write_pngs(run, tag, items, run_maps, args, views)]
    if args.html or args.examples:
        split = None if args.text is not None else {
            "key": args.split, "name": runs[0].cfg.task.splits[args.split], "size": len(runs[0].data.split(args.split))}
        shown = [shown_path(r) for r in args.runs]  # not this machine's absolute paths: a reader's own runs folder
        data = attention_page.page_data(runs[0].cfg.task, split, page_runs(runs, shown, tags, args.beam), items,
                                        maps, args.note, command)
        target = (Path(args.out) if args.out else runs[0].run_dir / "attention") / "attention.html"
        write_text(target, attention_page.render(data))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-attention", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or checkpoint files)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="a source sentence to decode")
    source.add_argument("--index", type=int, help="an example of --split")
    source.add_argument("--examples", type=int, metavar="K", help="the first K examples of --split, plus the page")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam", type=int, default=1, help="1: greedy (default); K > 1: beam search")
    parser.add_argument("--out", help="output folder (default: <run dir>/attention/)")
    parser.add_argument("--views", nargs="+", default=["last-layer", "grid"], metavar="VIEW",
                        help="Transformer PNGs: last-layer, all-layers, layerN, layerN-headM, grid "
                             "(default: last-layer grid)")
    parser.add_argument("--words", action="store_true", help="PNGs at word level (pieces merged)")
    parser.add_argument("--html", action="store_true", help="also write attention.html (implied by --examples)")
    parser.add_argument("--note", default="", help="a line shown on the page and in the PNG titles, "
                                                   "e.g. 'not converged: step 1000 of 4000'")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the images to the runs' W&B runs")
    args = parser.parse_args(argv)
    if args.beam < 1 or (args.examples is not None and args.examples < 1):
        parser.error("--beam and --examples must be at least 1")
    try:
        given = sys.argv[1:] if argv is None else argv
        written = render_runs(args, shlex.join(["s2s-attention", *(shown_path(a) if a in args.runs else a
                                                                   for a in given)]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main()
