"""How well attention alignments agree with a statistical aligner: ``s2s-align RUN ... --eflomal``.

eflomal (Östling & Tiedemann, 2016; PyPI ``eflomal``) is trained on the task's
training pairs plus the pairs of the evaluated split, in both directions; the
two directions are symmetrized with grow-diag-final-and (``symmetrize``, after
Koehn et al., 2005). Its links G on the split are the reference: a map's links A
score precision |A∩G| / |A|, recall |A∩G| / |G|, F1, and the alignment error
rate AER = 1 - 2|A∩G| / (|A| + |G|), which is 1 - F1 since every reference link
counts as sure. Counts are summed over the split (micro average). Pairs whose
pieces do not merge back into their whitespace words are left out, for every run.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib
from eflomal import Aligner

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from experiments.evaluation.align import Links, attention_links, parse_pharaoh, word_ids  # noqa: E402
from experiments.core.atomic import atomic_path, write_text  # noqa: E402
from experiments.core.errors import UserError  # noqa: E402
from experiments.evaluation.evaluate import LoadedRun, load_run  # noqa: E402
from experiments.data.tokenizer import Tokenizer  # noqa: E402

NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def symmetrize(forward: Links, reverse: Links) -> Links:
    """grow-diag-final-and: start from the intersection, grow into neighbouring union links that align an
    unaligned word, then add the links of ``forward``, then of ``reverse``, whose both words are still unaligned."""
    union, links = forward | reverse, forward & reverse
    src_done, tgt_done = {i for i, _ in links}, {j for _, j in links}

    def add(i: int, j: int) -> None:
        links.add((i, j))
        src_done.add(i)
        tgt_done.add(j)

    grew = True
    while grew:
        grew = False
        for i, j in sorted(links):
            for di, dj in NEIGHBOURS:
                p = (i + di, j + dj)
                if p in union and p not in links and (p[0] not in src_done or p[1] not in tgt_done):
                    add(*p)
                    grew = True
    for direction in (forward, reverse):
        for i, j in sorted(direction):
            if i not in src_done and j not in tgt_done:
                add(i, j)
    return links


def eflomal_links(sources: list[str], targets: list[str]) -> list[Links]:
    """Symmetrized eflomal links of every pair (whitespace words)."""
    with tempfile.TemporaryDirectory() as tmp:
        fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
        Aligner().align([" ".join(s.split()) + "\n" for s in sources], [" ".join(t.split()) + "\n" for t in targets],
                        links_filename_fwd=str(fwd), links_filename_rev=str(rev))
        forward, reverse = fwd.read_text().splitlines(), rev.read_text().splitlines()
    if len(forward) != len(sources) or len(reverse) != len(sources):
        raise UserError(f"eflomal returned {len(forward)} / {len(reverse)} alignments for {len(sources)} pairs")
    return [symmetrize(parse_pharaoh(f), parse_pharaoh(r)) for f, r in zip(forward, reverse)]


def agreement(predicted: list[Links], reference: list[Links]) -> dict[str, float]:
    hits = sum(len(a & g) for a, g in zip(predicted, reference))
    n_a, n_g = sum(map(len, predicted)), sum(map(len, reference))
    precision, recall = hits / max(n_a, 1), hits / max(n_g, 1)
    f1 = 2 * hits / max(n_a + n_g, 1)
    return {"precision": precision, "recall": recall, "f1": f1, "aer": 1 - f1, "links": n_a}


def words_match(tok: Tokenizer, src: str, tgt: str) -> bool:
    """True when the pieces of both sides merge back into exactly their whitespace words."""
    pieces = (tok.src_pieces(tok.encode_src([src])[0]), tok.tgt_pieces(tok.encode_tgt([tgt])[0]))
    return all(p and word_ids(p)[-1] + 1 == len(text.split()) for p, text in zip(pieces, (src, tgt)))


def measure(runs: list[LoadedRun], split: str) -> dict[str, Any]:
    data = runs[0].data
    train, test = data.split("train"), data.split(split)
    src_test, tgt_test = test.sources(), [refs[0] for refs in test.references()]
    src_all = train.sources() + src_test
    tgt_all = [refs[0] for refs in train.references()] + tgt_test
    reference = eflomal_links(src_all, tgt_all)[-len(src_test):]
    keep = [i for i in range(len(src_test)) if all(words_match(r.data.tokenizer, src_test[i], tgt_test[i])
                                                   for r in runs)]
    gold = [reference[i] for i in keep]
    rows = []
    for run in runs:
        links = attention_links(run, [src_test[i] for i in keep], [tgt_test[i] for i in keep], f"split {split}")
        for name in links[0]:
            rows.append({"run": str(run.run_dir), "model": run.cfg.model.name, "step": run.step, "map": name,
                         **agreement([pair[name] for pair in links], gold)})
    return {"task": runs[0].cfg.task.name, "split": split, "upstream_split": runs[0].cfg.task.splits[split],
            "eflomal": {"version": version("eflomal"), "pairs": len(src_all),
                        "symmetrization": "grow-diag-final-and", "links": sum(map(len, gold))},
            "pairs": len(keep), "skipped": len(src_test) - len(keep), "rows": rows}


def markdown(result: dict[str, Any], command: str, note: str, plot: str) -> str:
    e = result["eflomal"]
    lines = [
        "# Attention alignments against eflomal", "",
        f"Produced by `{command}`.", "",
        f"Task `{result['task']}`, split `{result['split']}` ({result['upstream_split']}): {result['pairs']} "
        f"sentence pairs with their references ({result['skipped']} left out: their pieces do not merge back "
        f"into their words). Reference: eflomal {e['version']} trained on {e['pairs']} pairs (train + "
        f"{result['split']}), {e['symmetrization']}, {e['links']} links. A map's hard alignment links each "
        "reference word to the source word it attends to most while the model scores the reference; "
        "AER = 1 - F1 here (every eflomal link counts as sure). "
        f"Plot: `{plot}`.",
    ]
    if note:
        lines += ["", f"**{note}**"]
    lines += ["", "| model | step | map | precision | recall | F1 | AER |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} ({Path(r['run']).name}) | {r['step']} | {r['map']} | {r['precision']:.3f} "
                     f"| {r['recall']:.3f} | {r['f1']:.3f} | {r['aer']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """F1 of every run's overall map (bars), and of every Transformer layer and head (one heatmap per run)."""
    by_run: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_run.setdefault(row["run"], []).append(row)
    grids = [rows for rows in by_run.values() if len(rows) > 1]
    fig = Figure(figsize=(4 + 4.5 * len(grids), 3.2), layout="constrained")
    axes = fig.subplots(1, 1 + len(grids), squeeze=False)[0]
    overall = [rows[0] for rows in by_run.values()]
    names = [f"{r['model']} {Path(r['run']).name}\n{r['map']}" for r in overall]
    axes[0].bar(range(len(overall)), [r["f1"] for r in overall], color="tab:blue")
    axes[0].set_xticks(range(len(overall)), names, fontsize=8)
    axes[0].set_ylabel("F1 against eflomal")
    axes[0].set_ylim(0, 1)
    for ax, rows in zip(axes[1:], grids):
        heads = [r for r in rows if r["map"].startswith("L")]
        n_layers = max(int(r["map"][1:].split("H")[0]) for r in heads)
        n_heads = max(int(r["map"].split("H")[1]) for r in heads)
        grid = [[0.0] * n_heads for _ in range(n_layers)]
        for r in heads:
            layer, head = (int(x) for x in r["map"][1:].split("H"))
            grid[layer - 1][head - 1] = r["f1"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for layer, head in ((i, j) for i in range(n_layers) for j in range(n_heads)):
            ax.text(head, layer, f"{grid[layer][head]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(n_heads), [str(h + 1) for h in range(n_heads)])
        ax.set_yticks(range(n_layers), [str(layer + 1) for layer in range(n_layers)])
        ax.set_xlabel("head")
        ax.set_ylabel("decoder layer")
        ax.set_title(f"{rows[0]['model']} {Path(rows[0]['run']).name}: F1 per head (mean map {rows[0]['f1']:.2f})",
                     fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_report(targets: list[str], split: str, out: Path, command: str, note: str = "") -> list[Path]:
    """Measure every run against eflomal on ``split``; write ``out``.md, .json and .png."""
    runs = [load_run(t) for t in targets]
    tasks = sorted({r.cfg.task.name for r in runs})
    if len(tasks) > 1:
        raise UserError(f"the runs {targets} are on different tasks {tasks}: align the runs of one task")
    runs[0].data.split(split)  # an unknown split fails here, listing the valid ones
    result = measure(runs, split)
    result.update(command=command, note=note)
    paths = [out.with_suffix(s) for s in (".md", ".json", ".png")]
    write_text(paths[0], markdown(result, command, note, paths[2].name))
    write_text(paths[1], json.dumps(result, indent=2) + "\n")
    plot(result, paths[2])
    return paths
