"""The attention page in a real browser: headless Chromium opens the generated file from disk and runs its script.

Checked from the rendered DOM: no script errors and no network requests,
the cells of every view are the weights of that view (compared with
``experiments.analysis.attention_views`` on the page's own data), switching the head
changes the cells, hovering reads out pieces and weight and highlights the
row and column in every map, the word toggle merges pieces, and the layout
fits a 1024 px window, stacks on a narrow one and prints one example per page.
Screenshots go to $S2S_SCREENSHOTS (or a pytest temporary folder, printed).

Needs Debian's ``chromium`` package (``.ci/run`` installs it where it can); skipped without it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from experiments.analysis.attention import main
from experiments.analysis.attention_views import View, merge_words, select
from tests.browser import Chromium, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="headless Chromium not found: install Debian's chromium package (apt-get install chromium), "
           "as .ci/run does where apt-get is available, or point $CHROMIUM at a Chromium or Chrome binary")

EXAMPLES = 3
GRU, TRANSFORMER = 0, 1  # run indices on the page
WORDY = "bade figo gu"  # toy_reverse's tokenizer cuts the first two words into pieces
A4_CONTENT_PX = 700  # A4 (210 mm) less the page's 12 mm margins, at 96 px per inch: 703 px


@pytest.fixture(scope="module")
def page(attention_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page")
    main([str(attention_runs["gru"]), str(attention_runs["transformer"]), "--examples", str(EXAMPLES),
          "--out", str(out), "--no-wandb"])
    return out / "attention.html"


@pytest.fixture(scope="module")
def text_page(attention_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A page for one given sentence whose words "bade" and "figo" are several pieces each."""
    out = tmp_path_factory.mktemp("text-page")
    main([str(attention_runs["gru"]), str(attention_runs["transformer"]), "--text", WORDY, "--html",
          "--out", str(out), "--no-wandb"])
    return out / "attention.html"


def read_data(page: Path) -> dict:
    raw = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(raw[1])


@pytest.fixture(scope="module")
def data(page: Path) -> dict:
    return read_data(page)


@pytest.fixture(scope="module")
def browser():
    with Chromium(1024, 768) as chromium:
        yield chromium


@pytest.fixture
def opened(browser: Chromium, page: Path) -> Chromium:
    """The page freshly loaded at 1024 x 768; after the test, no script error may have happened."""
    browser.resize(1024, 768)
    browser.print_media(False)
    browser.errors.clear()
    browser.open(page.as_uri())
    yield browser
    assert browser.errors == []


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("S2S_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots of the attention page: {folder}")
    return folder


def panel(run: int, example: int | None = None) -> str:
    where = ".example.current" if example is None else f'.example[data-example="{example}"]'
    return f'{where} .panel[data-run="{run}"]'


def cells(browser: Chromium, selector: str) -> np.ndarray:
    """The weights the cells of one map show, as a (T, S) array read from the DOM."""
    found = browser.js(f"[...document.querySelectorAll({json.dumps(selector + ' .cell')})]"
                       ".map(c => [+c.dataset.r, +c.dataset.c, +c.dataset.w])")
    assert found, f"no cells under {selector}"
    shown = np.full((max(r for r, _, _ in found) + 1, max(c for _, c, _ in found) + 1), np.nan)
    for r, c, w in found:
        shown[r, c] = w
    return shown


def weights(data: dict, run: int, example: int = 0) -> np.ndarray:
    return np.asarray(data["examples"][example]["outputs"][run]["w"])


def choose(browser: Chromium, run: int, **fields: str | int) -> None:
    """Set view selects of a run as a user would (value, then a change event)."""
    for field, value in fields.items():
        browser.js(f"(() => {{ const box = document.querySelector('{panel(run)} select[data-field={field}]');"
                   f" box.value = {json.dumps(str(value))};"
                   " box.dispatchEvent(new Event('change', {bubbles: true})); })()")
    browser.settle()


def hidden(browser: Chromium, selector: str) -> bool:
    return browser.js(f"document.querySelector({json.dumps(selector)}).hidden")


def test_page_draws_every_map_without_errors_or_network(opened: Chromium, data: dict) -> None:
    assert all(url.startswith("file:") for url in opened.requests), opened.requests
    assert opened.js("document.querySelectorAll('.example').length") == EXAMPLES
    assert opened.js("document.querySelectorAll('.example.current').length") == 1
    colours = data["colormap"]
    for i in range(EXAMPLES):
        np.testing.assert_allclose(cells(opened, panel(GRU, i)), weights(data, GRU, i), atol=1e-9)
        expected = select(weights(data, TRANSFORMER, i), View("last-layer"))  # the default view
        np.testing.assert_allclose(cells(opened, panel(TRANSFORMER, i)), expected, atol=1.5e-3)
    drawn = opened.js(f"[...document.querySelectorAll('{panel(GRU)} .cell')].map(c => [+c.dataset.w, c.style.color])")
    to_rgb = lambda h: f"rgb({int(h[1:3], 16)}, {int(h[3:5], 16)}, {int(h[5:7], 16)})"  # noqa: E731
    assert all(colour == to_rgb(colours[round(w * (len(colours) - 1))]) for w, colour in drawn)


def test_switching_head_layer_and_view_changes_the_cells(opened: Chromium, data: dict) -> None:
    w = weights(data, TRANSFORMER)
    default = cells(opened, panel(TRANSFORMER))
    opened.click(f'{panel(TRANSFORMER)} button.head[data-layer="0"][data-head="1"]')
    head = cells(opened, panel(TRANSFORMER))
    np.testing.assert_allclose(head, w[0, 1], atol=1e-9)
    assert np.abs(head - default).max() > 0.01
    opened.click(f'{panel(TRANSFORMER)} button.head[data-layer="0"][data-head="0"]')
    np.testing.assert_allclose(cells(opened, panel(TRANSFORMER)), w[0, 0], atol=1e-9)
    assert np.abs(cells(opened, panel(TRANSFORMER)) - head).max() > 0.01
    # The view is the run's, not the example's: the other examples show the same head.
    np.testing.assert_allclose(cells(opened, panel(TRANSFORMER, 1)), weights(data, TRANSFORMER, 1)[0, 0], atol=1e-9)

    choose(opened, TRANSFORMER, kind="layer", layer=0)
    np.testing.assert_allclose(cells(opened, panel(TRANSFORMER)), w[0].mean(axis=0), atol=1.5e-3)
    choose(opened, TRANSFORMER, kind="all-layers")
    np.testing.assert_allclose(cells(opened, panel(TRANSFORMER)), w.mean(axis=(0, 1)), atol=1.5e-3)
    assert opened.js(f"document.querySelector('{panel(TRANSFORMER)} select[data-field=head]').disabled")

    choose(opened, TRANSFORMER, kind="grid")
    minis = opened.js(f"document.querySelectorAll('{panel(TRANSFORMER)} .map.mini').length")
    assert minis == w.shape[0] * w.shape[1]
    for layer, head_ in np.ndindex(*w.shape[:2]):
        mini = f'{panel(TRANSFORMER)} .map.mini[data-layer="{layer}"][data-head="{head_}"]'
        np.testing.assert_allclose(cells(opened, mini), w[layer, head_], atol=1e-9, err_msg=mini)
    opened.click(f'{panel(TRANSFORMER)} .map.mini[data-layer="1"][data-head="0"]')
    np.testing.assert_allclose(cells(opened, panel(TRANSFORMER)), w[1, 0], atol=1e-9)
    assert opened.js(f"[...document.querySelectorAll('{panel(TRANSFORMER)} select')].map(s => s.value)") == [
        "head", "1", "0"]


def test_hover_reads_out_the_weight_and_highlights_row_and_column(opened: Chromium, data: dict) -> None:
    out = data["examples"][0]["outputs"][GRU]
    r, c = 1, 2
    opened.hover(f'{panel(GRU)} .cell[data-r="{r}"][data-c="{c}"]')
    tip = opened.js("document.getElementById('tip').innerText")
    assert not hidden(opened, "#tip")
    assert f"weight {out['w'][r][c]:.3f}" in tip
    assert f"output {out['tgt'][r]} (row {r + 1})" in tip and f"source {out['src'][c]} (column {c + 1})" in tip

    def band(run: int, kind: str) -> list | None:
        """Left, top, right, bottom of a run's highlighted row or column band; None when hidden."""
        return opened.js(f"(() => {{ const b = document.querySelector('{panel(run)} .hl-{kind}');"
                         " if (b.hidden) return null; const r = b.getBoundingClientRect();"
                         " return [r.left, r.top, r.right, r.bottom]; })()")

    def cells_box(run: int, kind: str, index: int) -> list:
        """The box around all cells of a row (``r``) or column (``c``) of a run's map: what its band must cover."""
        found = json.dumps(f'{panel(run)} .cell[data-{kind}="{index}"]')
        return opened.js(f"(() => {{ const boxes = [...document.querySelectorAll({found})]"
                         ".map(c => c.getBoundingClientRect());"
                         " return [Math.min(...boxes.map(b => b.left)), Math.min(...boxes.map(b => b.top)),"
                         " Math.max(...boxes.map(b => b.right)), Math.max(...boxes.map(b => b.bottom))]; })()")

    def covers(run: int, kind: str, index: int) -> bool:
        shown = band(run, {"r": "row", "c": "col"}[kind])
        return shown is not None and shown == pytest.approx(cells_box(run, kind, index), abs=1.5)

    assert covers(GRU, "r", r) and covers(GRU, "c", c)
    assert covers(TRANSFORMER, "c", c)  # the same source piece in the other map
    assert band(TRANSFORMER, "row") is None  # a different output: no row to match

    opened.hover(f'{panel(TRANSFORMER)} .yl[data-r="1"]')  # an output token: its row, in its own run's maps
    assert hidden(opened, "#tip") and band(GRU, "row") is None and band(TRANSFORMER, "col") is None
    assert covers(TRANSFORMER, "r", 1)
    opened.hover(f'{panel(TRANSFORMER)} .xl[data-c="0"]')  # a source token: its column, in every map
    assert covers(GRU, "c", 0) and covers(TRANSFORMER, "c", 0) and band(GRU, "row") is None
    opened.hover("h1")
    assert band(GRU, "col") is None and band(TRANSFORMER, "col") is None


def test_word_toggle_merges_pieces_in_every_map(browser: Chromium, text_page: Path) -> None:
    data = read_data(text_page)
    groups = data["examples"][0]["outputs"][GRU]["srcWords"]["groups"]
    assert len(set(groups)) < len(groups)  # some source word is several pieces
    browser.resize(1024, 768)
    browser.errors.clear()
    browser.open(text_page.as_uri())
    browser.click(".example.current input[data-field=words]")
    assert browser.js("[...document.querySelectorAll('input[data-field=words]')].every(b => b.checked)")
    for run, view in ((GRU, None), (TRANSFORMER, View("last-layer"))):
        out = data["examples"][0]["outputs"][run]
        matrix = weights(data, run) if view is None else select(weights(data, run), view)
        expected = merge_words(matrix, out["tgtWords"]["groups"], out["srcWords"]["groups"])
        np.testing.assert_allclose(cells(browser, panel(run)), expected, atol=1.5e-3)
        assert browser.js(f"[...document.querySelectorAll('{panel(run)} .xl')].map(l => l.textContent)") == out[
            "srcWords"]["words"]
    # Both directions of the merge, on pieces the tiny model never outputs: the page's own function.
    matrix, tgt_groups, src_groups = [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]], [0, 0, 1], [0, 1, 1]
    merged = browser.js(f"mergeWords({json.dumps(matrix)}, {tgt_groups}, {src_groups})")
    np.testing.assert_allclose(merged, merge_words(np.array(matrix), tgt_groups, src_groups), atol=1e-12)
    assert browser.errors == []


def test_labels_are_thinned_not_shrunk_when_cells_get_small(opened: Chromium) -> None:
    opened.js("document.documentElement.style.setProperty('--cell', '5px')")  # as a long source would make them
    opened.settle()
    for axis, label, position in (("x", "xl", "left"), ("y", "yl", "top")):
        shown = opened.js(f"[...document.querySelectorAll('{panel(GRU)} .{label}')].map(l => [l.classList.contains("
                          f"'thin'), l.getBoundingClientRect().{position}, parseFloat(getComputedStyle(l).fontSize)])")
        visible = [(at, size) for thin, at, size in shown if not thin]
        assert 1 < len(visible) < len(shown), axis  # every k-th label stays
        assert min(size for _, size in visible) >= 11
        assert min(np.diff(sorted(at for at, _ in visible))) >= 11, axis  # and they do not overlap


SMALLEST_TEXT = """[...document.querySelectorAll('body *')].filter(e =>
  [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()) && e.getClientRects().length
  && getComputedStyle(e).visibility !== 'hidden').map(e => parseFloat(getComputedStyle(e).fontSize))
  .reduce((a, b) => Math.min(a, b), 99)"""
WIDE = "[document.documentElement.scrollWidth, window.innerWidth]"


def test_layout_fits_1024_px_stacks_when_narrow_and_prints_one_example_per_page(opened: Chromium,
                                                                                  shots: Path) -> None:
    width, window = opened.js(WIDE)
    assert width <= window == 1024
    assert opened.js(SMALLEST_TEXT) >= 11
    opened.screenshot(shots / "attention-1024.png")
    opened.hover(f'{panel(TRANSFORMER)} .cell[data-r="1"][data-c="1"]')
    opened.screenshot(shots / "attention-1024-hover.png", full_page=False)
    for kind in ("grid", "head"):
        choose(opened, TRANSFORMER, kind=kind)
        width, window = opened.js(WIDE)
        assert width <= window, kind
        assert opened.js(SMALLEST_TEXT) >= 11, kind
    opened.click(".example.current input[data-field=words]")
    assert opened.js(WIDE)[0] <= 1024
    choose(opened, TRANSFORMER, kind="grid")
    opened.screenshot(shots / "attention-1024-grid-words.png")

    opened.resize(360, 800)  # a phone: the maps must shrink to fit
    width, window = opened.js(WIDE)
    assert width <= window == 360
    first, second = (opened.js(f"document.querySelector('{panel(run)}').getBoundingClientRect().toJSON()")
                     for run in (GRU, TRANSFORMER))
    assert second["top"] >= first["bottom"]  # stacked
    opened.screenshot(shots / "attention-360.png")

    opened.resize(A4_CONTENT_PX, 1000)
    opened.print_media(True)
    assert opened.js(WIDE)[0] <= A4_CONTENT_PX
    assert opened.js("[...document.querySelectorAll('.example')].map(e => getComputedStyle(e).display + ' '"
                     " + getComputedStyle(e).breakBefore)") == ["block page"] * EXAMPLES
    opened.screenshot(shots / "attention-print.png")
    pdf = opened.pdf(shots / "attention.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1 + EXAMPLES  # legend and list, then one per example


@pytest.fixture(scope="module")
def copy_page(copy_attention_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("copy-page")
    main([str(copy_attention_runs["gru"]), str(copy_attention_runs["transformer"]), "--examples", "2",
          "--out", str(out), "--no-wandb"])
    return out / "attention.html"


def test_copy_runs_show_p_gen_beside_their_copy_distribution_and_others_show_none(
        browser: Chromium, copy_page: Path, page: Path, shots: Path) -> None:
    """A p_gen column (bar and value) on every row of the map of the copy distribution: the GRU's attention, the
    Transformer's own copy map, whose cells are the copy weights; words average p_gen over a word's pieces;
    hovering a bar reads it out. A page of runs without copy has no copy section, no column, no legend row."""
    data = read_data(copy_page)
    browser.resize(1024, 768)
    browser.errors.clear()
    browser.open(copy_page.as_uri())

    def column(selector: str) -> list[float]:
        return browser.js(f"[...document.querySelectorAll({json.dumps(selector + ' .pg')})].map(c => +c.dataset.p)")

    for i, example in enumerate(data["examples"]):
        gru, transformer = example["outputs"]
        np.testing.assert_allclose(column(f"{panel(GRU, i)} .maparea"), gru["pgen"], atol=1e-9)
        np.testing.assert_allclose(cells(browser, f"{panel(GRU, i)} .maparea"), gru["w"], atol=1e-9)
        assert browser.js(f"document.querySelectorAll('{panel(GRU, i)} .copyarea .map').length") == 0
        assert column(f"{panel(TRANSFORMER, i)} .maparea") == []
        np.testing.assert_allclose(column(f"{panel(TRANSFORMER, i)} .copyarea"), transformer["pgen"], atol=1e-9)
        np.testing.assert_allclose(cells(browser, f"{panel(TRANSFORMER, i)} .copyarea"), transformer["copy"],
                                   atol=1e-9)
    legend = browser.js("[...document.querySelectorAll('.legend dt')].map(d => d.textContent)")
    assert "p_gen" in legend and "copy distribution" in legend
    browser.screenshot(shots / "attention-copy-1024.png")

    browser.hover(f'{panel(TRANSFORMER)} .copyarea .pg[data-r="1"]')
    tip = browser.js("document.getElementById('tip').innerText")
    p = data["examples"][0]["outputs"][TRANSFORMER]["pgen"][1]
    assert not hidden(browser, "#tip") and f"p_gen {p:.3f}" in tip and f"copied from the source with {1 - p:.3f}" in tip

    browser.click(".example.current input[data-field=words]")
    out = data["examples"][0]["outputs"][GRU]
    groups = np.asarray(out["tgtWords"]["groups"])
    means = [np.mean(np.asarray(out["pgen"])[groups == g]) for g in range(groups.max() + 1)]
    np.testing.assert_allclose(column(f"{panel(GRU)} .maparea"), means, atol=1e-3)
    assert browser.errors == []

    browser.open(page.as_uri())  # runs without copy
    assert browser.js("document.querySelectorAll('.copyarea, .pg, .pgh').length") == 0
    assert "p_gen" not in browser.js("document.querySelector('.legend').textContent")
    assert browser.errors == []
