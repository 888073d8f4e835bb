"""``s2s-translate``: translate raw source lines from standard input, line by line.

    echo "Ein Mann fährt Fahrrad." | s2s-translate RUN
    s2s-translate GRU_RUN TRANSFORMER_RUN < test.de > test.en      # an ensemble of the two
    s2s-translate RUN --n-best 5 < test.de > nbest.tsv              # index, rank, score, hypothesis
    s2s-translate RUN --attention < test.de > test.jsonl            # one JSON object a line
    s2s-translate RUN                                               # at a terminal: a sentence in, its translation out

Every line is decoded as soon as it arrives and its output flushed, so the
command works in a pipeline and interactively alike. Outputs are detokenized.
The beam is the run's ``decoding.beam_size`` unless ``--beam`` (1: greedy);
length rules come from the run's config (the first run's, for an ensemble).
``--n-best N`` writes TSV lines (sentence index from 0, rank from 1, score,
hypothesis). ``--attention`` writes one JSON object a line: index, source,
hypothesis, score, src_pieces and tgt_pieces (both ending in ``</s>``),
``attention`` (per model: GRU [T][S], Transformer [layer][head][T][S]) and
``alignment`` (per model, Pharaoh ``i-j`` word links from the GRU map or the
Transformer's mean map), plus ``n_best`` with --n-best.

A line that cannot be translated (empty, not valid UTF-8, more pieces than the
model's ``task.max_src_len``) gets one message on stderr naming it, an empty
output line (an ``{"index", "error"}`` object with --attention, nothing in
n-best TSV) so outputs stay line-aligned, and the stream goes on; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, BinaryIO, TextIO

import numpy as np

from experiments.evaluation.align import member_weights, named_maps, pharaoh, word_links
from experiments.data.batching import collate
from experiments.evaluation.builders import autocast_for
from experiments.evaluation.ensemble import load_models, run_label
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import LoadedRun, n_best_tsv, search


def check_line(raw: bytes, number: int, run: LoadedRun) -> tuple[str, list[int]]:
    """The text and source ids of input line ``number`` (from 1); ``ValueError`` says why it cannot be translated."""
    raw = raw.rstrip(b"\r\n")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"line {number}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})") from None
    if not text.strip():
        raise ValueError(f"line {number}: empty")
    ids = run.data.tokenizer.encode_src([text])[0]
    limit = run.cfg.task.max_src_len
    if len(ids) > limit:
        raise ValueError(f"line {number}: {len(ids)} pieces, more than the model's limit of {limit} "
                         "(task.max_src_len); shorten or split it")
    return text, ids


def translate(run: LoadedRun, label: str, text: str, ids: list[int], beam: int, n_best: int,
              attention: bool) -> dict[str, Any]:
    """Decode one source; returns the best hypothesis, its score and, when asked, the n best and the attention."""
    data = run.data
    batch = collate([ids], [[]], np.zeros(1), max_src_len=len(ids), max_tgt_len=1, pad_id=data.pad_id,
                    bos_id=data.bos_id, eos_id=data.eos_id).to(run.device)
    hyps = search(run.model, batch, data, run.cfg.decoding, autocast_for(run.device, run.cfg.trainer.precision),
                  beam, return_attention=attention, n_best=n_best)
    texts = data.tokenizer.decode_tgt(hyps.tokens)
    scores = hyps.scores.tolist()
    out: dict[str, Any] = {"source": text, "hypothesis": texts[0], "score": scores[0]}
    if n_best > 1:
        out["n_best"] = [{"rank": k + 1, "score": s, "hypothesis": t} for k, (s, t) in enumerate(zip(scores, texts))]
    if attention:
        tok = data.tokenizer
        src_pieces, tgt_pieces = tok.src_pieces(ids), tok.tgt_pieces(hyps.tokens[0])
        maps = member_weights(run, label, hyps.attention[0])
        out.update(src_pieces=src_pieces + ["</s>"], tgt_pieces=tgt_pieces + ["</s>"],
                   attention={name: w.double().numpy().round(4).tolist() for name, w in maps.items()},
                   alignment={name: pharaoh(word_links(next(iter(named_maps(w).values())), src_pieces, tgt_pieces))
                              for name, w in maps.items()})
    return out


def translate_stream(run: LoadedRun, label: str, lines: BinaryIO, out: TextIO, err: TextIO, *, beam: int,
                     n_best: int = 1, attention: bool = False) -> int:
    """Translate every line of ``lines`` into ``out`` (flushed per line); returns the number of lines skipped."""
    skipped = 0
    for index, raw in enumerate(lines):
        try:
            text, ids = check_line(raw, index + 1, run)
        except ValueError as e:
            print(f"s2s-translate: {e}; skipped", file=err, flush=True)
            skipped += 1
            if attention:
                out.write(json.dumps({"index": index, "error": str(e)}) + "\n")
            elif n_best == 1:
                out.write("\n")
            out.flush()
            continue
        result = translate(run, label, text, ids, beam, n_best, attention)
        if attention:
            out.write(json.dumps({"index": index, **result}, ensure_ascii=False) + "\n")
        elif n_best > 1:
            out.write(n_best_tsv(index, [(h["score"], h["hypothesis"]) for h in result["n_best"]]))
        else:
            out.write(result["hypothesis"] + "\n")
        out.flush()
    return skipped


class Translator:
    """``s2s-translate`` from Python (a notebook, a script): load once, translate strings.

        from experiments.evaluation.translate import Translator
        translator = Translator("RUN")                  # several runs: their ensemble, as the command takes them
        translator("Ein Mann fährt Fahrrad.")           # the best hypothesis, detokenized
        translator.translate(texts, beam=1, n_best=1, attention=True)  # dicts: what --attention writes a line

    Same decoding as the command (the run's beam unless ``beam``; length rules
    from the run's config). A text that cannot be translated (empty, more
    pieces than ``task.max_src_len``) is a ``ValueError`` naming its position.
    """

    def __init__(self, *runs: str | os.PathLike[str], overrides: list[str] | None = None) -> None:
        self.run, members = load_models([os.fspath(r) for r in runs], overrides)
        self.label = run_label(members[0])

    def translate(self, texts: list[str], beam: int | None = None, n_best: int = 1,
                  attention: bool = False) -> list[dict[str, Any]]:
        """Each text's result: ``source``, ``hypothesis``, ``score``; ``n_best`` and the attention when asked."""
        beam = int(self.run.cfg.decoding.beam_size) if beam is None else beam
        if beam < 1 or not 1 <= n_best <= beam:
            raise ValueError(f"need beam >= 1 and 1 <= n_best <= beam, got beam {beam} and n_best {n_best}")
        if isinstance(texts, str):
            raise TypeError("translate takes a list of texts; for one text, call the Translator itself")
        results = []
        for index, text in enumerate(texts):
            try:
                _, ids = check_line(text.encode("utf-8"), index + 1, self.run)
            except ValueError as e:
                raise ValueError(f"texts[{index}]: {str(e).split(': ', 1)[1]}") from None
            results.append(translate(self.run, self.label, text, ids, beam, n_best, attention))
        return results

    def __call__(self, text: str, beam: int | None = None) -> str:
        return self.translate([text], beam)[0]["hypothesis"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s2s-translate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder or checkpoint; several: an ensemble")
    parser.add_argument("--beam", type=int, help="beam size (default: the run's decoding.beam_size; 1: greedy)")
    parser.add_argument("--n-best", type=int, default=1, help="hypotheses per line, as TSV (at most the beam)")
    parser.add_argument("--attention", action="store_true", help="one JSON object a line, with attention and alignment")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run, members = load_models(args.runs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    beam = run.cfg.decoding.beam_size if args.beam is None else args.beam  # --beam 0 is an error, not "the default"
    if beam < 1 or not 1 <= args.n_best <= beam:
        parser.error(f"need --beam >= 1 and 1 <= --n-best <= beam, got beam {beam} and --n-best {args.n_best}")
    try:
        skipped = translate_stream(run, run_label(members[0]), sys.stdin.buffer, sys.stdout, sys.stderr,
                                   beam=beam, n_best=args.n_best, attention=args.attention)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    sys.exit(1 if skipped else 0)


if __name__ == "__main__":
    main()
