"""Word alignments from cross-attention, and ``s2s-align``.

    s2s-align RUN --src test.de --tgt test.en > test.align                # Pharaoh "i-j", one line a pair
    s2s-align RUN --src test.de --tgt test.en --map L2H5                  # one Transformer layer and head
    s2s-align GRU_RUN TRANSFORMER_RUN --eflomal --split test --out results/alignment

The attention is the decoder's while it scores the given target (teacher
forcing, as ``s2s-score``): row t is the step that predicts target piece t.
Pieces are merged back into words (a SentencePiece piece starting with "▁"
starts a word; the words are the whitespace-separated tokens of the text): a
source word's weight is the sum over its pieces, a target word's row the mean
of its pieces' rows, and the eos row and column are dropped. Each target word
is then linked to the source word it attends to most: ``i-j`` with i the source
and j the target word, from 0. Maps: the GRU's one map (``attention``); for the
Transformer ``mean`` (over every decoder layer and head, the default) or
``L<l>H<h>`` (layer l, head h, from 1).

``--eflomal`` trains eflomal on the task's training split plus ``--split``
(whitespace words, lowercased by eflomal), symmetrizes its two directions with
grow-diag-final-and, and reports how well every map of every run agrees with
it on ``--split`` (precision, recall, F1, AER): ``<out>.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
from torch import Tensor

from experiments.atomic import write_text
from experiments.errors import UserError
from experiments.evaluate import LoadedRun, load_run
from experiments.score import check_source_lengths, forced_decode, read_pairs

Links = set[tuple[int, int]]  # (source word, target word)


def word_ids(pieces: list[str]) -> list[int]:
    """The word of each piece: a piece starting with "▁" (SentencePiece's space) begins a new word."""
    ids, word = [], -1
    for k, piece in enumerate(pieces):
        word += k == 0 or piece.startswith("\u2581")
        ids.append(word)
    return ids


def _one_hot(ids: list[int]) -> np.ndarray:
    return np.eye(ids[-1] + 1)[ids]  # (pieces, words)


def word_links(weights: np.ndarray, src_pieces: list[str], tgt_pieces: list[str]) -> Links:
    """Hard word alignment from one piece-level map (T + 1, S + 1): eos row and column last, dropped."""
    if not src_pieces or not tgt_pieces:
        return set()
    w = weights[: len(tgt_pieces), : len(src_pieces)]
    src, tgt = _one_hot(word_ids(src_pieces)), _one_hot(word_ids(tgt_pieces))
    words = (tgt.T @ (w @ src)) / tgt.sum(axis=0)[:, None]  # (target words, source words)
    return {(int(i), j) for j, i in enumerate(words.argmax(axis=1))}


def pharaoh(links: Links) -> str:
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def parse_pharaoh(line: str) -> Links:
    return {(int(i), int(j)) for i, j in (link.split("-") for link in line.split())}


def named_maps(weights: Tensor) -> dict[str, np.ndarray]:
    """One model's maps by name: GRU (T, S) -> ``attention``; Transformer (L, H, T, S) -> ``mean`` and ``L<l>H<h>``."""
    w = weights.float().numpy()
    if w.ndim == 2:
        return {"attention": w}
    maps = {"mean": w.mean(axis=(0, 1))}
    maps.update({f"L{layer + 1}H{head + 1}": w[layer, head] for layer, head in np.ndindex(*w.shape[:2])})
    return maps


def member_weights(run: LoadedRun, label: str, weights: Tensor) -> dict[str, Tensor]:
    """A hypothesis's attention by model: an ensemble's split into its members', a single run's under ``label``."""
    split = getattr(run.model, "split_attention", None)
    return split(weights) if split else {label: weights}


def attention_links(run: LoadedRun, sources: list[str], targets: list[str], where: str) -> list[dict[str, Links]]:
    """Per pair, the word links of every map of ``run`` (one model) for the given target."""
    tok = run.data.tokenizer
    src_ids, tgt_ids = tok.encode_src(sources), tok.encode_tgt(targets)
    check_source_lengths(where, src_ids, run.cfg.task.max_src_len)
    forced = forced_decode(run, src_ids, tgt_ids, return_attention=True)
    out = []
    for s, t, weights in zip(src_ids, tgt_ids, forced.attention):
        src_pieces, tgt_pieces = tok.src_pieces(s), tok.tgt_pieces(t)
        out.append({name: word_links(w, src_pieces, tgt_pieces) for name, w in named_maps(weights).items()})
    return out


def align_files(target: str, src: Path, tgt: Path, which: str | None) -> list[str]:
    """Pharaoh lines for the pairs of ``src`` / ``tgt`` from map ``which`` of one run (None: its default map)."""
    run = load_run(target)
    sources, targets = read_pairs(src, tgt)
    links = attention_links(run, sources, targets, str(src))
    which = which or ("attention" if "attention" in links[0] else "mean")
    if which not in links[0]:
        raise UserError(f"--map {which}: the {run.cfg.model.name} run {target} has the maps "
                        f"{', '.join(sorted(links[0]))}")
    return [pharaoh(pair[which]) for pair in links]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-align", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder or checkpoint (one, or several with --eflomal)")
    parser.add_argument("--src", type=Path, help="source sentences, one a line")
    parser.add_argument("--tgt", type=Path, help="their translations, line-aligned with --src")
    parser.add_argument("--map", default=None, help="attention (GRU), mean (Transformer, default) or L<l>H<h>")
    parser.add_argument("--out", type=Path, help="Pharaoh file (default: standard output); with --eflomal: the "
                        "report's path without suffix (default results/alignment)")
    parser.add_argument("--eflomal", action="store_true", help="report agreement with eflomal on --split")
    parser.add_argument("--split", default="test", help="with --eflomal: the split to align")
    parser.add_argument("--note", default="", help="with --eflomal: a line printed in bold under the header")
    args = parser.parse_args(argv)
    if not args.eflomal and (args.src is None or args.tgt is None or len(args.runs) != 1):
        parser.error("give one RUN with --src and --tgt, or --eflomal")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    command = shlex.join(["s2s-align", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.eflomal:
            # Imported here: only the report needs eflomal and matplotlib (and it imports this module).
            from experiments.alignment_report import write_report

            for path in write_report(args.runs, args.split, args.out or Path("results/alignment"), command, args.note):
                print(path)
            return
        text = "".join(line + "\n" for line in align_files(args.runs[0], args.src, args.tgt, args.map))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
