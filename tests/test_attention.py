"""s2s-attention on one tiny trained GRU and one tiny trained Transformer (``attention_runs``, trained once).

The page's behaviour in a browser is tested in test_attention_page.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from experiments.analysis.attention import AttentionMap, attention_map, main
from experiments.analysis.attention_page import script_json, sentence_scores
from experiments.analysis.attention_plots import figures
from experiments.analysis.attention_views import View, head_stats, merge_words, parse_view, select, word_groups
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import LoadedRun, load_run
from tests.conftest import REPO
from tests.test_copy import mixture_parts

TEXT = "ba de fi go gu"
PNG = b"\x89PNG\r\n\x1a\n"
DEFAULT_VIEWS = [View("last-layer"), View("grid")]


@pytest.fixture(scope="module")
def runs(attention_runs: dict[str, Path]) -> dict[str, Path]:
    return attention_runs


@pytest.fixture(scope="module")
def loaded(runs: dict[str, Path]) -> dict[str, LoadedRun]:
    return {name: load_run(d) for name, d in runs.items()}


# ---- views, words and diagnostics (no model needed)


def test_views_parse_from_their_names_and_select_the_right_mean() -> None:
    weights = np.random.default_rng(0).dirichlet(np.ones(5), size=(3, 4, 6))  # (L, H, T, S)
    for name, expected in (("last-layer", weights[2].mean(axis=0)), ("all-layers", weights.mean(axis=(0, 1))),
                           ("layer2", weights[1].mean(axis=0)), ("layer3-head4", weights[2, 3]), ("grid", weights)):
        view = parse_view(name)
        assert view.name == name
        np.testing.assert_allclose(select(weights, view), expected)
    for bad in ("last", "layer0", "layer2-head0", "head3"):
        with pytest.raises(UserError, match="unknown view"):
            parse_view(bad)


def test_word_groups_start_at_the_word_mark_and_at_eos() -> None:
    groups, words = word_groups(["\u2581Ein", "\u2581Spiel", "haus", ".", "</s>"])
    assert groups == [0, 1, 1, 1, 2]
    assert words == ["Ein", "Spielhaus.", "</s>"]


def test_merge_words_sums_source_pieces_and_averages_output_pieces() -> None:
    matrix = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.1, 0.3], [0.0, 0.0, 0.0, 1.0]])
    merged = merge_words(matrix, tgt_groups=[0, 0, 1], src_groups=[0, 1, 1, 2])
    np.testing.assert_allclose(merged, [[0.3, 0.35, 0.35], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(merged.sum(axis=1), 1.0)


def test_head_stats_are_entropy_in_bits_and_the_share_on_eos() -> None:
    uniform = np.full((2, 4), 0.25)
    one_hot_eos = np.tile([0.0, 0.0, 0.0, 1.0], (2, 1))
    entropy, eos = head_stats(np.stack([uniform, one_hot_eos]))
    np.testing.assert_allclose(entropy, [2.0, 0.0])
    np.testing.assert_allclose(eos, [0.25, 1.0])


def test_sentence_scores_are_sentence_bleu_chrf_or_rouge() -> None:
    assert sentence_scores("translation", "a man rides a bike", ["a man rides a bike"]) == pytest.approx(
        {"BLEU": 100.0, "chrF": 100.0})
    assert sentence_scores("translation", "a dog", ["a man rides a bike"])["BLEU"] < 20
    assert sentence_scores("translation", "x", []) == {}
    rouge = sentence_scores("summarization", "the cat sat", ["the cat sat on the mat"])
    assert set(rouge) == {"R-1", "R-2", "R-Lsum"} and 0 < rouge["R-2"] < rouge["R-1"] < 100


def test_script_json_cannot_end_the_script_element() -> None:
    data = {"src": "</script><script>alert(1)</script> <!-- x"}
    text = script_json(data)
    assert "<" not in text
    assert json.loads(text) == data


# ---- decoding and the files


def check_map(amap: AttentionMap, run: LoadedRun, text: str) -> None:
    pieces = run.data.tokenizer.src_pieces(run.data.tokenizer.encode_src([text])[0])
    assert amap.src_labels == pieces + ["</s>"]
    assert len(amap.tgt_labels) > 2 and amap.tgt_labels[-1] == "</s>"
    assert run.data.tokenizer.tgt.decode_pieces(amap.tgt_labels[:-1]) == amap.hypothesis
    assert amap.weights.shape[-2:] == (len(amap.tgt_labels), len(amap.src_labels))
    np.testing.assert_allclose(amap.weights.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_map_shapes_labels_and_rows(loaded: dict[str, LoadedRun], beam: int) -> None:
    gru = attention_map(loaded["gru"], TEXT, beam)
    check_map(gru, loaded["gru"], TEXT)
    assert gru.weights.ndim == 2
    transformer = attention_map(loaded["transformer"], TEXT, beam)
    check_map(transformer, loaded["transformer"], TEXT)
    assert transformer.weights.shape[:2] == (2, 2)  # decoder layers, heads


def test_map_is_the_attention_that_produced_the_output(loaded: dict[str, LoadedRun]) -> None:
    """Teacher-forcing the emitted tokens reproduces the greedy decoder's attention step by step."""
    import torch

    for run in loaded.values():
        amap = attention_map(run, TEXT)
        src = torch.tensor([run.data.tokenizer.encode_src([TEXT])[0] + [run.data.eos_id]])
        emitted = [run.data.tokenizer.tgt.piece_to_id(p) for p in amap.tgt_labels[:-1]]
        tgt_in = torch.tensor([[run.data.bos_id] + emitted])
        with torch.inference_mode():
            _, forced = run.model(src, src.ne(run.data.pad_id), tgt_in)
        np.testing.assert_allclose(forced[0].numpy(), amap.weights, atol=1e-5)


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_figures_show_each_view_with_piece_labels(loaded: dict[str, LoadedRun]) -> None:
    gru = attention_map(loaded["gru"], TEXT)
    (fig,) = figures(gru, "title", DEFAULT_VIEWS).values()
    (ax,) = panels(fig)
    np.testing.assert_allclose(ax.images[0].get_array(), gru.weights)
    assert [t.get_text() for t in ax.get_xticklabels()] == gru.src_labels
    assert [t.get_text() for t in ax.get_yticklabels()] == gru.tgt_labels

    amap = attention_map(loaded["transformer"], TEXT)
    figs = figures(amap, "title", DEFAULT_VIEWS + [View("head", 0, 1)])
    assert list(figs) == ["last-layer", "grid", "layer1-head2"]
    np.testing.assert_allclose(panels(figs["last-layer"])[0].images[0].get_array(), amap.weights[-1].mean(axis=0))
    np.testing.assert_allclose(panels(figs["layer1-head2"])[0].images[0].get_array(), amap.weights[0, 1])
    grid = panels(figs["grid"])
    assert len(grid) == 2 * 2 and len(figs["grid"].axes) == 2 * 2 + 1  # one colour bar for the grid
    for (layer, head), ax in zip(np.ndindex(2, 2), grid):
        np.testing.assert_allclose(ax.images[0].get_array(), amap.weights[layer, head])
        assert bool(ax.get_xticklabels()) == (layer == 1)  # shared axes: only the outer panels are labelled
        assert bool(ax.get_yticklabels()) == (head == 0)
    assert [t.get_text() for t in grid[-1].get_xticklabels()] == amap.src_labels


def test_word_level_figures_merge_the_pieces(loaded: dict[str, LoadedRun]) -> None:
    amap = attention_map(loaded["transformer"], TEXT)
    figs = figures(amap, "title", [View("last-layer")], words=True)
    (ax,) = panels(figs["last-layer_words"])
    tgt_groups, tgt_words = word_groups(amap.tgt_labels)
    src_groups, src_words = word_groups(amap.src_labels)
    assert [t.get_text() for t in ax.get_xticklabels()] == src_words
    assert [t.get_text() for t in ax.get_yticklabels()] == tgt_words
    np.testing.assert_allclose(ax.images[0].get_array(),
                               merge_words(amap.weights[-1].mean(axis=0), tgt_groups, src_groups))


def test_cli_writes_pngs_and_logs_them_to_wandb(runs: dict[str, Path], loaded: dict[str, LoadedRun]) -> None:
    for name, run_dir in runs.items():
        step = loaded[name].step  # the best checkpoint's: where it falls depends on the CPU's arithmetic
        result = subprocess.run([sys.executable, "-m", "experiments.analysis.attention", str(run_dir), "--text", TEXT],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        pngs = sorted((run_dir / "attention").glob("text-*.png"))
        expected = [""] if name == "gru" else ["_grid", "_last-layer"]
        assert [p.name.split(f"{name}-seed1-step{step}_beam1")[1] for p in pngs] == [f"{s}.png" for s in expected]
        assert all(p.read_bytes().startswith(PNG) and matplotlib.image.imread(p).ndim == 3 for p in pngs)
        logged = b"".join(f.read_bytes() for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        stem = pngs[0].name.split("_")[0]
        for suffix in expected:
            assert f"attention/{stem}{suffix.replace('_', '/')}".encode() in logged
        assert not (run_dir / "attention" / "attention.html").exists()  # --text writes a page only with --html


def page_data(path: Path) -> dict:
    raw = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', path.read_text(), re.S)
    return json.loads(raw[1])


def test_html_page_embeds_every_run_and_example_as_data(runs: dict[str, Path], loaded: dict[str, LoadedRun],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2S_RUNS_DIR", str(runs["gru"].parent))  # both runs live in this runs folder
    main([str(runs["gru"]), str(runs["transformer"]), "--examples", "2", "--out", str(tmp_path), "--no-wandb"])
    page = (tmp_path / "attention.html").read_text()
    assert not re.search(r"<(link|img)\b|\bsrc=|https?://|@import|url\(", page)  # nothing to fetch
    data = page_data(tmp_path / "attention.html")
    split = loaded["gru"].data.split("test")
    assert data["split"] == {"key": "test", "name": "test", "size": len(split)}
    steps = {name: run.step for name, run in loaded.items()}  # the best checkpoints': CPU-dependent
    assert [r["tag"] for r in data["runs"]] == [f"gru-seed1-step{steps['gru']}",
                                               f"transformer-seed1-step{steps['transformer']}"]
    assert [(r["layers"], r["heads"]) for r in data["runs"]] == [(0, 0), (2, 2)]
    # Paths as a reader elsewhere needs them: relative to the runs folder, never this machine's absolute path.
    assert [r["path"] for r in data["runs"]] == [runs["gru"].name, runs["transformer"].name]
    assert str(runs["gru"]) not in page and f"s2s-attention {runs['gru'].name} {runs['transformer'].name} " \
        in data["command"]
    for i, example in enumerate(data["examples"]):
        assert example["src"] == split.sources()[i] and example["refs"] == split.references()[i]
        for out, run in zip(example["outputs"], loaded.values()):
            amap = attention_map(run, example["src"])
            assert out["hyp"] == amap.hypothesis and out["src"] == amap.src_labels and out["tgt"] == amap.tgt_labels
            np.testing.assert_allclose(out["w"], amap.weights, atol=5e-4)
            np.testing.assert_allclose(out["entropy"], head_stats(amap.weights)[0], atol=5e-4)
            assert "pgen" not in out and "copy" not in out  # no copy: the data as before copy was shown
            assert out["scores"]["BLEU"] == round(sentence_scores("translation", amap.hypothesis,
                                                                  example["refs"])["BLEU"], 1)
    assert len(list(tmp_path.glob(f"test-1_transformer-seed1-step{steps['transformer']}_beam1_last-layer.png"))) == 1


def test_copy_runs_show_the_p_gen_and_copy_distribution_their_mixture_used(
        copy_attention_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With copy, one p_gen per output row, in (0, 1), and a copy distribution over the real source positions
    (the Transformer's own, the GRU's its attention), equal to what solving the mixture identity gives on the
    log-probabilities the model's decode_step returns along the hypothesis, the same path as the search's."""
    import torch

    monkeypatch.setenv("S2S_RUNS_DIR", str(copy_attention_runs["gru"].parent))
    main([str(copy_attention_runs["gru"]), str(copy_attention_runs["transformer"]), "--examples", "2",
          "--out", str(tmp_path), "--no-wandb"])
    data = page_data(tmp_path / "attention.html")
    runs = {name: load_run(d) for name, d in copy_attention_runs.items()}
    for example in data["examples"]:
        for (name, run), out in zip(runs.items(), example["outputs"]):
            amap = attention_map(run, example["src"])
            T, S = len(amap.tgt_labels), len(amap.src_labels)
            src = torch.tensor([run.data.tokenizer.encode_src([example["src"]])[0] + [run.data.eos_id]])
            emitted = [run.data.tokenizer.tgt.piece_to_id(p) for p in amap.tgt_labels[:-1]]
            p_gen, copied = mixture_parts(run.model, src, src.ne(run.data.pad_id),
                                          torch.tensor([[run.data.bos_id] + emitted]))
            assert amap.p_gen.shape == (T,) and ((amap.p_gen > 0) & (amap.p_gen < 1)).all()
            np.testing.assert_allclose(amap.p_gen, p_gen[0].numpy(), atol=1e-5)
            copy = amap.weights if name == "gru" else amap.copy  # the GRU copies with its attention
            assert copy.shape == (T, S)
            np.testing.assert_allclose(copy.sum(axis=-1), 1.0, atol=1e-5)
            by_piece = torch.zeros(T, copied.size(-1)).index_add_(1, src[0], torch.from_numpy(copy).float())
            np.testing.assert_allclose(by_piece.numpy(), copied[0].numpy(), atol=1e-4)
            # the page shows them, rounded: p_gen per row, and the Transformer's copy map beside its attention
            np.testing.assert_allclose(out["pgen"], amap.p_gen, atol=5e-4)
            assert ("copy" in out) == (name == "transformer")
            if name == "transformer":
                np.testing.assert_allclose(out["copy"], amap.copy, atol=5e-4)


def test_errors_are_one_line_with_exit_2(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.analysis.attention", str(tmp_path / "missing"), "--text", "x"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no checkpoint at") and "Traceback" not in result.stderr
    for args, message in ((["--index", "100"], "--index 100 is out of range: split 'test' has 100 examples"),
                          (["--text", "x", "--views", "layer3"], "view layer3: the Transformer has 2 decoder layers"),
                          (["--text", "x", "--views", "mean"], "unknown view 'mean'"),
                          (["--text", ""], "--text is empty"),
                          (["--text", " ".join(["ba de fi"] * 400)], "shorten it")):
        with pytest.raises(SystemExit) as exit_:
            main([str(runs["transformer"]), *args, "--no-wandb"])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
