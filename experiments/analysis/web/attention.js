// s2s-attention's page. Everything is drawn here from the JSON in #attention-data; nothing is loaded.
// Views and word merging follow experiments/analysis/attention_views.py; diagnostics and scores come computed.
"use strict";

const DATA = JSON.parse(document.getElementById("attention-data").textContent);
const LABEL_PX = 13; // a column or row needs this much room for its 11 px label, else labels are thinned
const VIEWS = [
  ["last-layer", "last layer (mean of its heads)"],
  ["layer", "one layer (mean of its heads)"],
  ["head", "one head"],
  ["all-layers", "all layers (mean of all heads)"],
  ["grid", "all layers x heads (grid)"],
];
const USES = { layer: ["layer", "head"], head: ["head"] }; // the views each select applies to
const state = {
  words: false,
  views: DATA.runs.map((run) => ({ kind: "last-layer", layer: Math.max(run.layers - 1, 0), head: 0 })),
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value !== false && value != null) node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child != null));
  return node;
}

const range = (n, f) => Array.from({ length: n }, (_, i) => f(i));
const pct = (x) => `${Math.round(100 * x)}%`;
const isTransformer = (run) => run.layers > 0;
const search = (run) => (run.beam === 1 ? "greedy" : `beam ${run.beam}`);
const uniformBits = (out) => Math.log2(out.src.length).toFixed(2);

function colour(w) {
  const n = DATA.colormap.length;
  return DATA.colormap[Math.min(n - 1, Math.max(0, Math.round(w * (n - 1))))];
}

// ---- the matrices: views of the weights and their word-level merge ---------------------------------

function mean(matrices) {
  const sum = (t, s) => matrices.reduce((total, m) => total + m[t][s], 0);
  return matrices[0].map((row, t) => row.map((_, s) => sum(t, s) / matrices.length));
}

/** The (T, S) matrix of one view of an output's weights (the GRU has only one). */
function viewMatrix(out, view) {
  const w = out.w;
  if (!Array.isArray(w[0][0])) return w;
  if (view.kind === "head") return w[view.layer][view.head];
  if (view.kind === "layer") return mean(w[view.layer]);
  if (view.kind === "last-layer") return mean(w[w.length - 1]);
  return mean(w.flat());
}

/** Summed over the pieces of a source word, averaged over the pieces of an output word. */
function mergeWords(matrix, tgtGroups, srcGroups) {
  const rows = Math.max(...tgtGroups) + 1, cols = Math.max(...srcGroups) + 1;
  const out = range(rows, () => new Array(cols).fill(0));
  const count = new Array(rows).fill(0);
  matrix.forEach((row, t) => {
    count[tgtGroups[t]] += 1;
    row.forEach((w, s) => { out[tgtGroups[t]][srcGroups[s]] += w; });
  });
  return out.map((row, t) => row.map((w) => w / count[t]));
}

/** The mean of per-piece values over the pieces of each word, as rows are merged. */
function wordMeans(values, groups) {
  const sum = new Array(Math.max(...groups) + 1).fill(0), count = sum.map(() => 0);
  values.forEach((v, t) => { sum[groups[t]] += v; count[groups[t]] += 1; });
  return sum.map((v, i) => v / count[i]);
}

/** Labels and matrix as shown: pieces, or words when the toggle is on; ``pgen`` (one per row, or null) too. */
function shown(out, matrix, pgen = null) {
  if (!state.words) return { rows: out.tgt, cols: out.src, matrix, pgen };
  return { rows: out.tgtWords.words, cols: out.srcWords.words,
           matrix: mergeWords(matrix, out.tgtWords.groups, out.srcWords.groups),
           pgen: pgen && wordMeans(pgen, out.tgtWords.groups) };
}

// ---- drawing ---------------------------------------------------------------------------------------

/** A heatmap as a CSS grid of cells; labelled maps have a label row and column, grid panels none. With
 * ``view.pgen`` (a copy run) a last column holds each row's p_gen, a bar on the row it belongs to. */
function drawMap(view, info, labelled) {
  const off = labelled ? 2 : 1; // grid line of the first cell
  const pgen = labelled && view.pgen;
  const map = el("div", { class: `map${labelled ? "" : " mini"}${pgen ? " with-pgen" : ""}`, role: "group",
                          "aria-label": info.caption, "data-layer": info.layer, "data-head": info.head });
  map.style.setProperty("--cols", view.cols.length);
  Object.assign(map, { info, view, off });
  if (labelled) {
    map.append(el("div", { class: "corner", text: "output \u2193 source \u2192" }));
    view.cols.forEach((label, c) => map.append(el("div", { class: "xl", "data-c": c, text: label })));
    if (pgen) map.append(el("div", { class: "pgh", title: COPY_HELP, text: "p_gen" }));
  }
  view.matrix.forEach((row, r) => {
    if (labelled) map.append(el("div", { class: "yl", "data-r": r, text: view.rows[r] }));
    row.forEach((w, c) => {
      const cell = el("div", { class: "cell", "data-r": r, "data-c": c, "data-w": w.toFixed(3) });
      cell.style.color = colour(w); // drawn as background and a hairline shadow: no seams between cells
      map.append(cell);
    });
    if (pgen) map.append(pgenCell(view.pgen[r], r));
  });
  map.append(el("div", { class: "hl hl-row", hidden: "" }), el("div", { class: "hl hl-col", hidden: "" }));
  if (labelled) thinning.observe(map);
  return map;
}

/** Hide all but every k-th label of a map whose cells are smaller than a label. */
function thin(map) {
  const cell = map.querySelector(".cell");
  const size = cell ? cell.getBoundingClientRect().width : 0;
  if (!size) return; // not laid out (another example, hidden)
  const every = Math.max(1, Math.ceil(LABEL_PX / size));
  map.querySelectorAll(".xl").forEach((l) => l.classList.toggle("thin", l.dataset.c % every !== 0));
  map.querySelectorAll(".yl, .pv").forEach((l) => l.classList.toggle("thin", l.dataset.r % every !== 0));
}
const thinning = new ResizeObserver((entries) => entries.forEach((entry) => thin(entry.target)));
// Printing lays the maps out anew (every example, other widths): thin for that layout before it is drawn.
window.matchMedia("print").addEventListener("change", () => document.querySelectorAll(".map:not(.mini)").forEach(thin));

function colourBar() {
  const n = DATA.colormap.length;
  const bar = el("div", { class: "bar" });
  bar.style.background = `linear-gradient(to right, ${DATA.colormap.map((c, i) => `${c} ${(100 * i) / (n - 1)}%`)})`;
  const ticks = el("div", { class: "ticks" }, ...["0", "0.25", "0.5", "0.75", "1"].map((t) => el("span", { text: t })));
  return el("div", { class: "colourbar", "aria-label": "colour scale: attention weight from 0 to 1" },
    el("span", { class: "what", text: "weight" }), el("div", {}, bar, ticks));
}

function scoreText(scores) {
  const entries = Object.entries(scores);
  return entries.length ? entries.map(([k, v]) => `${k} ${v.toFixed(1)}`).join(" \u00b7 ") : "no reference";
}

/** Entropy and share on </s> of every head; a head is a button that shows it, a layer label its mean. */
function headTable(run, out, r) {
  const maxBits = Math.log2(out.src.length);
  const table = el("table", { class: "heads" },
    el("tr", {}, el("th", {}), ...range(run.heads, (h) => el("th", { text: `H${h + 1}` }))));
  out.entropy.forEach((row, l) => {
    const layer = el("button", { class: "layer", "data-run": r, "data-layer": l,
                                 title: `layer ${l + 1}: mean of its heads`, text: `L${l + 1}` });
    table.append(el("tr", {}, el("th", {}, layer), ...row.map((bits, h) => {
      const eos = out.eos[l][h], idle = eos >= 0.5 || bits >= 0.9 * maxBits;
      const title = `layer ${l + 1} head ${h + 1}: ${bits.toFixed(2)} bits, ${pct(eos)} of the weight on </s>`;
      return el("td", {}, el("button", {
        class: idle ? "head idle" : "head", "data-run": r, "data-layer": l, "data-head": h,
        title: idle ? `${title} (attends to nothing in particular)` : title,
      }, el("span", { text: bits.toFixed(2) }), el("span", { text: pct(eos) })));
    })));
  });
  const caption = `per head: entropy in bits (uniform: ${uniformBits(out)}) / share on </s>`;
  return el("div", { class: "heads-box" }, el("p", { class: "cap", text: caption }), table);
}

function select(field, r, options, label) {
  const box = el("select", { "data-run": r, "data-field": field, "aria-label": label });
  options.forEach(([value, text]) => box.append(el("option", { value, text })));
  return el("label", {}, `${label} `, box);
}

function controls(run, r, out) {
  const numbered = (n, what) => range(n, (i) => [i, `${what} ${i + 1}`]);
  return el("div", { class: "controls" },
    el("div", { class: "selects" }, select("kind", r, VIEWS, "view"),
      select("layer", r, numbered(run.layers, "layer"), "layer"), select("head", r, numbered(run.heads, "head"), "head")),
    headTable(run, out, r));
}

function viewCaption(run, view) {
  if (!isTransformer(run)) return "the GRU's attention";
  const name = VIEWS.find(([kind]) => kind === view.kind)[1];
  if (view.kind === "layer") return `${name}: layer ${view.layer + 1}`;
  if (view.kind === "head") return `${name}: layer ${view.layer + 1} head ${view.head + 1}`;
  return name;
}

function drawGrid(run, out, base) {
  const grid = el("div", { class: "grid" });
  grid.style.setProperty("--heads", run.heads);
  const label = (what, short, i) => el("div", { class: "gh", title: `${what} ${i + 1}`, text: `${short}${i + 1}` });
  grid.append(el("div", {}), ...range(run.heads, (h) => label("head", "H", h)));
  out.w.forEach((layer, l) => {
    grid.append(label("layer", "L", l));
    layer.forEach((matrix, h) => {
      const caption = `layer ${l + 1} head ${h + 1}`;
      const map = drawMap(shown(out, matrix), { ...base, caption, layer: l, head: h }, false);
      map.title = `${caption}: click to show this head alone`;
      grid.append(map);
    });
  });
  const hint = "Hover a cell for its pieces and weight; click a panel to show that head.";
  return [grid, el("p", { class: "hint", text: hint })];
}

// ---- copy (pointer-generator): p_gen per output and the copy distribution ---------------------------

const COPY_HELP = "p_gen: probability of generating from the vocabulary; 1 \u2212 p_gen is copied from the source";

/** Row r's p_gen: a bar, generate (p_gen) then copy (1 - p_gen), and the value. */
function pgenCell(p, r) {
  const cell = el("div", { class: "pg", "data-r": r, "data-p": p.toFixed(3) }, el("div", { class: "pbar" }),
    el("span", { class: "pv", "data-r": r, text: p.toFixed(2) }));
  cell.style.setProperty("--p", p);
  return cell;
}

function swatch(kind, text) {
  return el("span", { class: "swatch" }, el("i", { class: kind }), text);
}

/** Under a copy run's attention: what p_gen is and where the copy distribution is (the Transformer's own map). */
function copyParts(out, base) {
  const where = out.copy ? "Copy distribution: the copy attention below (one head over the source, queried by " +
    "the decoder's top state), not the cross-attention above; p_gen beside it." : "Copy distribution: the GRU " +
    "copies with its attention, the map above; p_gen beside it.";
  const parts = [el("h4", { text: "copy mechanism" }),
    el("p", { class: "cap" }, `${COPY_HELP}: `, swatch("gen", "generate (p_gen)"), " ",
      swatch("cpy", "copy (1 \u2212 p_gen)")), el("p", { class: "cap", text: where })];
  if (out.copy) parts.push(drawMap(shown(out, out.copy, out.pgen), { ...base, caption: "copy distribution", copy: true },
    true));
  return parts;
}

/** Redraw a panel's maps and bring its controls up to date with the state. */
function updatePanel(panel) {
  const r = +panel.dataset.run, run = DATA.runs[r], view = state.views[r];
  const out = DATA.examples[panel.dataset.example].outputs[r];
  const grid = isTransformer(run) && view.kind === "grid";
  panel.classList.toggle("wide", grid);
  panel.querySelectorAll("select").forEach((box) => {
    box.value = String(view[box.dataset.field]);
    box.disabled = box.dataset.field !== "kind" && !USES[box.dataset.field].includes(view.kind);
  });
  panel.querySelectorAll("button.head").forEach((b) => b.setAttribute("aria-pressed",
    view.kind === "head" && +b.dataset.layer === view.layer && +b.dataset.head === view.head));
  panel.querySelectorAll("button.layer").forEach((b) => b.setAttribute("aria-pressed",
    view.kind === "layer" && +b.dataset.layer === view.layer));
  // Maps of one example highlight the same column where they share the source pieces.
  const base = { run: r, srcKey: (state.words ? out.srcWords.words : out.src).join("\u0001") };
  panel.querySelector(".maparea").replaceChildren(...(grid ? drawGrid(run, out, base)
    : [drawMap(shown(out, viewMatrix(out, view), out.copy ? null : out.pgen),
      { ...base, caption: viewCaption(run, view) }, true)]));
  if (out.pgen) panel.querySelector(".copyarea").replaceChildren(...copyParts(out, base));
}

function panel(example, i, r) {
  const run = DATA.runs[r], out = example.outputs[r];
  return el("section", { class: "panel", "data-run": r, "data-example": i },
    el("h3", { text: run.title }),
    el("p", { class: "sub", text: `step ${run.step} \u00b7 ${search(run)}` }),
    el("p", { class: "hyp" }, el("span", { text: out.hyp || "(empty)" }), " ",
      el("span", { class: "score", text: scoreText(out.scores) })),
    isTransformer(run) ? controls(run, r, out) : el("p", { class: "stats",
      text: `entropy ${out.entropy.toFixed(2)} bits (uniform: ${uniformBits(out)}) \u00b7 ${pct(out.eos)} on </s>` }),
    el("div", { class: "maparea" }), out.pgen ? el("div", { class: "copyarea" }) : null);
}

function exampleSection(example, i) {
  const words = el("label", { class: "toggle" }, el("input", { type: "checkbox", "data-field": "words" }),
    " words (merge pieces)");
  return el("section", { class: "example", "data-example": i },
    el("h2", { text: example.label }),
    el("p", { class: "src" }, el("b", { text: "source " }), example.src),
    ...example.refs.map((ref) => el("p", { class: "ref" }, el("b", { text: "reference " }), ref)),
    el("div", { class: "toolbar" }, words, colourBar()),
    el("div", { class: "panels" }, ...DATA.runs.map((_, r) => panel(example, i, r))));
}

// ---- the page around the maps ----------------------------------------------------------------------

function legend() {
  const split = DATA.split;
  const checkpoints = DATA.runs.map((run) => el("div", {
    text: `${run.title}: ${run.path}, step ${run.step} of max_steps ${run.maxSteps}` }));
  const decoding = [...new Set(DATA.runs.map((run) => run.decoding))].map((text) => el("div", { text }));
  const rows = [
    ["rows", "output pieces, top to bottom, ending in </s>: the attention of the decoder step that emitted each " +
      "one (the search's own, not a re-run); a row sums to 1"],
    ["columns", "source pieces, ending in </s>"],
    ["\u2581", "starts a word; a piece without it continues the word before. \u201cwords\u201d merges pieces: " +
      "summed over a source word, averaged over an output word"],
    ["test set", split ? `${split.name} (split \u201c${split.key}\u201d of ${DATA.task.name}, ${split.size} ` +
      "sentences); #N is its sentence N, from 0" : "sentences given on the command line"],
    ["checkpoints", el("div", {}, ...checkpoints)],
    ["decoding", el("div", {}, ...decoding)],
    ["scores", `sentence-level ${DATA.task.kind === "translation" ? "sacreBLEU and chrF" : "ROUGE F1"} ` +
      "against the reference(s)"],
    ["per head", "mean entropy of its rows in bits, and its share of weight on the source </s>; greyed: half " +
      "or more on </s>, or entropy within 10% of uniform (a head that attends to nothing in particular)"],
    ["colour", colourBar()],
    ...(DATA.examples.some((ex) => ex.outputs.some((out) => out.pgen)) ? [
      ["p_gen", "runs trained with copy (a pointer-generator): for each output piece, the probability of " +
        "generating it from the vocabulary; 1 \u2212 p_gen is copied from the source, spread over the source " +
        "pieces by the copy distribution. A column beside that distribution's map: a bar, generate (blue) then " +
        "copy (orange), and the value; words: the mean over a word's pieces"],
      ["copy distribution", "the Transformer's dedicated copy attention (rows sum to 1); the GRU copies with its " +
        "attention, the map itself. Both from a teacher-forced pass over the output, the same numbers as the " +
        "search's steps"]] : []),
    ["made by", el("code", { text: DATA.command })],
  ];
  return el("details", { class: "about", open: "" }, el("summary", { text: "How to read this page" }),
    el("dl", { class: "legend" }, ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])));
}

function exampleTable() {
  const head = el("tr", {}, el("th", { text: "#" }), el("th", { text: "source / reference" }),
    ...DATA.runs.map((run) => el("th", { text: run.title })));
  const body = DATA.examples.map((ex, i) => el("tr", { "data-example": i },
    el("td", {}, el("button", { class: "pick", "data-example": i, text: ex.label.split(" ").pop() })),
    el("td", { "data-label": "source / reference" }, el("div", { text: ex.src }),
      ...ex.refs.map((ref) => el("div", { class: "ref", text: ref }))),
    ...ex.outputs.map((out, r) => el("td", { "data-label": DATA.runs[r].title },
      el("div", { text: out.hyp || "(empty)" }), el("div", { class: "score", text: scoreText(out.scores) })))));
  return el("div", { class: "examples-wrap" }, el("table", { class: "examples" },
    el("caption", { text: "Examples \u2014 pick one to see its maps" }), el("thead", {}, head),
    el("tbody", {}, ...body)));
}

function showExample(i) {
  document.querySelectorAll(".example, .examples tbody tr").forEach((node) =>
    node.classList.toggle("current", +node.dataset.example === i));
  document.querySelectorAll("button.pick").forEach((b) => b.setAttribute("aria-pressed", +b.dataset.example === i));
}

function redraw(runs) {
  document.querySelectorAll(".panel").forEach((p) => { if (!runs || runs.includes(+p.dataset.run)) updatePanel(p); });
  document.querySelectorAll("input[data-field=words]").forEach((box) => { box.checked = state.words; });
}

// ---- hover: tooltip and highlighted rows / columns in every map of the example ----------------------

const tip = document.getElementById("tip");

function highlight(source, r, c) {
  source.closest(".example").querySelectorAll(".map").forEach((map) => {
    const row = r !== null && map.info.run === source.info.run;
    const col = c !== null && map.info.srcKey === source.info.srcKey;
    const [rowBand, colBand] = map.querySelectorAll(".hl");
    rowBand.hidden = !row;
    colBand.hidden = !col;
    // Grid lines: cells start at line `off` in both directions (after the labels, if any).
    const rows = map.view.rows.length, cols = map.view.cols.length, off = map.off;
    if (row) rowBand.style.gridArea = `${r + off} / ${off} / ${r + off + 1} / ${cols + off}`;
    if (col) colBand.style.gridArea = `${off} / ${c + off} / ${rows + off} / ${c + off + 1}`;
    map.querySelectorAll(".xl, .yl").forEach((l) => l.classList.toggle("on",
      (row && l.dataset.r === String(r)) || (col && l.dataset.c === String(c))));
  });
}

function clearHover() {
  tip.hidden = true;
  document.querySelectorAll(".hl").forEach((band) => { band.hidden = true; });
  document.querySelectorAll(".xl.on, .yl.on").forEach((l) => l.classList.remove("on"));
}

function placeTip(event) {
  const below = event.clientY + 18 + tip.offsetHeight <= window.innerHeight;
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 4);
  tip.style.left = `${Math.max(4, x)}px`;
  tip.style.top = `${Math.max(4, below ? event.clientY + 18 : event.clientY - tip.offsetHeight - 10)}px`;
}

document.addEventListener("pointerover", (event) => {
  const target = event.target, map = target.closest && target.closest(".map");
  const r = target.dataset?.r !== undefined ? +target.dataset.r : null;
  const c = target.dataset?.c !== undefined ? +target.dataset.c : null;
  if (!map || (r === null && c === null)) return clearHover();
  highlight(map, r, c);
  const pg = target.closest(".pg");
  tip.hidden = !target.classList.contains("cell") && !pg;
  if (tip.hidden) return;
  if (pg) {
    const p = +pg.dataset.p;
    tip.replaceChildren(el("div", { text: `output ${map.view.rows[r]} (row ${r + 1})` }),
      el("div", { class: "w", text: `p_gen ${p.toFixed(3)}` }),
      el("div", { text: `generated from the vocabulary with probability ${p.toFixed(3)}, copied from the source ` +
        `with ${(1 - p).toFixed(3)}` }));
    return placeTip(event);
  }
  const where = map.info.layer !== undefined || map.info.copy ? ` (${map.info.caption})` : "";
  tip.replaceChildren(
    el("div", { text: `output ${map.view.rows[r]} (row ${r + 1}) \u2192 ` +
      `source ${map.view.cols[c]} (column ${c + 1})${where}` }),
    el("div", { class: "w", text: `weight ${target.dataset.w}` }));
  placeTip(event);
});
document.addEventListener("pointermove", (event) => { if (!tip.hidden) placeTip(event); });

// ---- input -------------------------------------------------------------------------------------------

document.addEventListener("change", (event) => {
  const box = event.target, field = box.dataset.field;
  if (field === "words") {
    state.words = box.checked;
    redraw(null);
  } else if (field) {
    state.views[+box.dataset.run][field] = field === "kind" ? box.value : +box.value;
    redraw([+box.dataset.run]);
  }
});

document.addEventListener("click", (event) => {
  const target = event.target.closest("button, .map.mini, .examples tbody tr");
  if (!target) return;
  if (target.matches(".examples tbody tr, button.pick")) return showExample(+target.dataset.example);
  const r = +(target.dataset.run ?? target.info?.run), at = target.info ?? target.dataset;
  if (target.matches(".map.mini, button.head")) {
    Object.assign(state.views[r], { kind: "head", layer: +at.layer, head: +at.head });
  } else if (target.matches("button.layer")) {
    Object.assign(state.views[r], { kind: "layer", layer: +at.layer });
  } else return;
  redraw([r]);
});

document.getElementById("app").append(
  el("header", {}, el("h1", { text: DATA.title }), DATA.note ? el("p", { class: "note", text: DATA.note }) : null,
    legend(), exampleTable()),
  el("main", {}, ...DATA.examples.map(exampleSection)));
redraw(null);
showExample(0);
