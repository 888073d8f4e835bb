"""s2s-attention on one tiny trained GRU and one tiny trained Transformer (trained once for the module)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from experiments.attention import AttentionMap, attention_map, figures, main
from experiments.evaluate import LoadedRun, load_run
from experiments.train import run
from tests.conftest import REPO, compose_cfg
from tests.test_trainer import TINY



def tiny(*overrides: str, drop: tuple[str, ...] = ()) -> list[str]:
    """TINY with ``overrides`` replacing the keys they set, and without the keys starting with ``drop``."""
    keys = tuple(o.split("=")[0] + "=" for o in overrides) + drop
    return [o for o in TINY if not o.startswith(keys)] + list(overrides)


# 300 steps, so that both models emit a few tokens (after 60 the GRU emits only eos).
LONGER = ("trainer.max_steps=300", "trainer.eval_every=100", "trainer.test_after_training=false")
TRANSFORMER = tiny("model.dec_layers=2", *LONGER)
GRU = tiny("model=gru_tiny", "model.dropout=0", "trainer.lr=1e-2", *LONGER, drop=("model.",))
TEXT = "ba de fi go gu"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict[str, Path]:
    dirs = {}
    for name, overrides in (("gru", GRU), ("transformer", TRANSFORMER)):
        dirs[name] = tmp_path_factory.mktemp(name)
        run(compose_cfg(overrides + [f"cache_dir={shared_cache}"]), dirs[name])
    return dirs


@pytest.fixture(scope="module")
def loaded(runs: dict[str, Path]) -> dict[str, LoadedRun]:
    return {name: load_run(d) for name, d in runs.items()}


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


def test_figures_show_the_map_with_piece_labels(loaded: dict[str, LoadedRun]) -> None:
    for name, run in loaded.items():
        amap = attention_map(run, TEXT)
        figs = figures(amap, "title")
        assert set(figs) == ({""} if name == "gru" else {"mean", "layers"})
        panels = [ax for fig in figs.values() for ax in fig.axes if ax.images and ax.get_xticklabels()]
        assert len(panels) == (1 if name == "gru" else 1 + 2 * 2)
        for ax in panels:
            assert ax.images[0].get_array().shape == amap.weights.shape[-2:]
            assert [t.get_text() for t in ax.get_xticklabels()] == amap.src_labels
            assert [t.get_text() for t in ax.get_yticklabels()] == amap.tgt_labels
        if name == "transformer":
            np.testing.assert_allclose(figs["mean"].axes[0].images[0].get_array(), amap.weights.mean(axis=(0, 1)))


def test_cli_writes_pngs_and_logs_them_to_wandb(runs: dict[str, Path]) -> None:
    for name, run_dir in runs.items():
        result = subprocess.run([sys.executable, "-m", "experiments.attention", str(run_dir), "--text", TEXT],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        pngs = sorted((run_dir / "attention").glob("text-*.png"))
        expected = [""] if name == "gru" else ["_layers", "_mean"]
        assert [p.name.split("_beam1")[1] for p in pngs] == [f"{s}.png" for s in expected]
        assert all(p.read_bytes().startswith(PNG) and matplotlib.image.imread(p).ndim == 3 for p in pngs)
        logged = b"".join(f.read_bytes() for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        stem = pngs[0].name.split("_")[0]
        for suffix in expected:
            assert f"attention/{stem}{suffix.replace('_', '/')}".encode() in logged


def test_html_page_compares_runs_per_example(runs: dict[str, Path], loaded: dict[str, LoadedRun],
                                             tmp_path: Path) -> None:
    main([str(runs["gru"]), str(runs["transformer"]), "--examples", "2", "--out", str(tmp_path), "--no-wandb"])
    page = (tmp_path / "attention.html").read_text()
    sources = loaded["gru"].data.split("test").dataset.select(range(2))["src"]
    for src in sources:
        assert src in page
        for run in loaded.values():
            assert attention_map(run, src).hypothesis in page
    assert page.count("data:image/png;base64,iVBORw0KGgo") == 4  # 2 examples x 2 runs, embedded
    assert len(list(tmp_path.glob("test-1_transformer-*_beam1_mean.png"))) == 1


def test_errors_are_one_line_with_exit_2(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    result = subprocess.run([sys.executable, "-m", "experiments.attention", str(tmp_path / "missing"), "--text", "x"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no checkpoint at") and "Traceback" not in result.stderr
    with pytest.raises(SystemExit) as exit_:
        main([str(runs["gru"]), "--index", "100", "--no-wandb"])
    assert exit_.value.code == 2
    assert "--index 100 is out of range: split 'test' has 100 examples" in capsys.readouterr().err
