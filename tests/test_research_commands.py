"""s2s-ensemble, s2s-translate, s2s-score, s2s-align, s2s-compare and s2s-eval's n-best on tiny trained runs.

The tiny GRU and Transformer of the attention tests (``attention_runs``, one
tokenizer), plus a two-step run with a BPE vocabulary for the mismatch error.
Scores are compared in fp32 (``FP32``), whatever precision "auto" picks here.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.evaluation import align, ensemble, score, translate
from experiments.analysis import align_command, compare
from experiments.evaluation.builders import autocast_for
from experiments.evaluation.ensemble import load_models
from experiments.core.errors import UserError
from experiments.evaluation.evaluate import LoadedRun, decode_split, evaluate_checkpoint, load_run, search
from experiments.core.runtime import git_commit
from experiments.training.train import run as train
from models.ensemble import Ensemble
from tests.attention_runs import tiny
from tests.conftest import REPO, compose_cfg

OTHER_VOCAB = tiny("task.tokenizer.model_type=bpe", "trainer.max_steps=2", "trainer.eval_every=2",
                   "trainer.test_after_training=false", "logger.mode=disabled")
FP32 = ["trainer.precision=fp32"]
COMMANDS = {"s2s-ensemble": ensemble.main, "s2s-translate": translate.main, "s2s-score": score.main,
            "s2s-align": align_command.main, "s2s-compare": compare.main}


@pytest.fixture(scope="module")
def runs(attention_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
         shared_cache: Path) -> dict[str, Path]:
    other = tmp_path_factory.mktemp("other")
    train(compose_cfg(OTHER_VOCAB + [f"cache_dir={shared_cache}"]), other)
    return {**attention_runs, "other": other}


@pytest.fixture(scope="module")
def loaded(runs: dict[str, Path]) -> dict[str, LoadedRun]:
    return {name: load_run(runs[name], FP32) for name in ("gru", "transformer")}


@pytest.fixture(scope="module")
def pair(runs: dict[str, Path]) -> LoadedRun:
    """The GRU + Transformer ensemble."""
    return load_models([str(runs["gru"]), str(runs["transformer"])], FP32)[0]


def decode(run: LoadedRun, beam: int, **kwargs):
    return decode_split(run.model, run.data, "test", run.cfg.decoding, run.device,
                        autocast_for(run.device, run.cfg.trainer.precision), beam_size=beam, **kwargs)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# --- ensembles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beam", [1, 2])
def test_ensemble_of_one_run_is_that_run(loaded: dict[str, LoadedRun], beam: int) -> None:
    for run in loaded.values():
        alone = decode(run, beam)
        one = LoadedRun(run.cfg, run.data, Ensemble([run.model]).eval(), run.device, run.run_dir, run.step)
        assert decode(one, beam).hypotheses == alone.hypotheses
        assert any(alone.hypotheses)


def test_gru_plus_transformer_ensemble_report(runs: dict[str, Path], pair: LoadedRun, tmp_path: Path) -> None:
    gru, transformer = str(runs["gru"]), str(runs["transformer"])
    out = tmp_path / "ensembles"
    ensemble.main(["--system", gru, "--system", transformer, "--system", gru, transformer, "--beam", "2",
                   "--out", str(out), "--note", "tiny runs", "--hyps", str(tmp_path / "hyps")])
    report = json.loads(out.with_suffix(".json").read_text())
    assert [len(s["members"]) for s in report["systems"]] == [1, 1, 2]
    assert [m["model"] for m in report["systems"][2]["members"]] == ["gru", "transformer"]
    hypotheses = decode(pair, 2).hypotheses
    assert report["systems"][2]["bleu"] == pytest.approx(score_of(pair, hypotheses))
    assert (tmp_path / "hyps" / "3.txt").read_text() == "".join(h + "\n" for h in hypotheses)
    md = out.with_suffix(".md").read_text()
    assert md.count("\n| gru ") == 2 and "**tiny runs**" in md and f"`s2s-ensemble --system {gru}" in md
    # Provenance: where it was decoded, and the commit each member was trained at (from its results.json).
    trained = json.loads((runs["gru"] / "results.json").read_text())["commit"]
    assert report["systems"][0]["members"][0]["trained_at"] == trained
    assert report["systems"][0]["decoded_on"]["commit"] == git_commit()
    assert f"Decoded at commit {git_commit()} on " in md and f"trained at commit {trained}." in md


def score_of(run: LoadedRun, hypotheses: list[str]) -> float:
    from experiments.evaluation.evaluate import score as corpus_score

    return corpus_score(run.data, "test", hypotheses)["bleu"]


def test_mismatched_vocabularies_name_both_runs(runs: dict[str, Path], capsys) -> None:
    gru, other = str(runs["gru"]), str(runs["other"])
    with pytest.raises(UserError, match="different tokenizers") as error:
        load_models([gru, other])
    assert gru in str(error.value) and other in str(error.value)
    for argv in (["--system", gru, other], [gru, other, "--src", "x", "--tgt", "y"]):
        main = ensemble.main if argv[0] == "--system" else score.main
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "different tokenizers" in capsys.readouterr().err


def test_members_of_two_tasks_are_refused_even_with_one_tokenizer(runs: dict[str, Path], tmp_path: Path) -> None:
    """de->en and en->de share the joint tokenizer; averaging their predictions is no ensemble of either."""
    import shutil

    from experiments.evaluation import checkpoint

    other = tmp_path / "other-task"
    shutil.copytree(runs["gru"], other)
    state = checkpoint.load(other)
    state["config"]["task"]["name"] = "toy_reverse_the_other_way"
    checkpoint.save({k: v for k, v in state.items() if k != "format"}, checkpoint.resolve(other))
    with pytest.raises(UserError, match="trained on task 'toy_reverse' and .* on 'toy_reverse_the_other_way'"):
        load_models([str(runs["gru"]), str(other)])


def test_an_averaged_checkpoint_is_a_member_like_any_other(runs: dict[str, Path], tmp_path: Path) -> None:
    from experiments.training.averaging import average_files

    ckpt = runs["gru"] / "checkpoints"
    averaged = ckpt / "average-research-test.pt"
    average_files([ckpt / "best.pt", ckpt / "last.pt"], averaged, {"by": "test", "n": 2})
    sources = load_run(runs["gru"]).data.split("test").sources()[:3]
    src = write_lines(tmp_path / "src", sources)
    out = io.StringIO()
    run, members = load_models([str(averaged), str(runs["transformer"])])
    assert isinstance(run.model, Ensemble) and members[0].run_dir == runs["gru"]
    translate.translate_stream(run, "pair", io.BytesIO(src.read_bytes()), out, io.StringIO(), beam=2)
    records, _ = score.score_files([str(averaged)], src, write_lines(tmp_path / "tgt", out.getvalue().splitlines()))
    assert len(records) == 3 and all(r["score"] < 0 for r in records)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_missing_run_and_foreign_checkpoint(name: str, tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    src = write_lines(tmp_path / "src.txt", ["ba de"])
    for target, message in ((tmp_path / "missing", "no checkpoint at"),
                            (foreign, "not an s2s-compare checkpoint")):
        argv = {"s2s-ensemble": ["--system", str(target)], "s2s-compare": [str(target), str(target)],
                "s2s-translate": [str(target)]}.get(name, [str(target), "--src", str(src), "--tgt", str(src)])
        with pytest.raises(SystemExit) as exit_:
            COMMANDS[name](argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_an_example(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        COMMANDS[name](["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}") and f"\n    {name} " in out


# --- n-best ------------------------------------------------------------------------------------------


def test_s2s_eval_writes_the_n_best_whose_first_is_the_one_best(runs: dict[str, Path]) -> None:
    for name in ("gru", "transformer"):
        result = evaluate_checkpoint(str(runs[name]), ["split=test", "decoding.beam_size=3", "decoding.n_best=3"])
        eval_dir = runs[name] / "eval"
        best = (eval_dir / "test-beam3.txt").read_text().split("\n")[:-1]
        rows = [line.split("\t") for line in (eval_dir / "test-beam3.nbest.tsv").read_text().splitlines()]
        assert len(rows) == 3 * len(best) and result["n_best"] == 3
        for i, hyp in enumerate(best):
            mine = rows[3 * i: 3 * i + 3]
            assert [r[0] for r in mine] == [str(i)] * 3 and [r[1] for r in mine] == ["1", "2", "3"]
            assert mine[0][3] == hyp
            scores = [float(r[2]) for r in mine]
            assert scores == sorted(scores, reverse=True)
        one_best = evaluate_checkpoint(str(runs[name]), ["split=test", "decoding.beam_size=3"])
        assert one_best["bleu"] == result["bleu"]


def test_n_best_larger_than_the_beam_is_a_config_error(runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="decoding.n_best=4 must be between 1 and decoding.beam_size=3"):
        evaluate_checkpoint(str(runs["gru"]), ["decoding.beam_size=3", "decoding.n_best=4"])


# --- forced decoding ---------------------------------------------------------------------------------


def greedy_outputs(run: LoadedRun, n: int = 40) -> tuple[list[list[int]], list[list[int]], list[float], list[str]]:
    """Source ids, greedy output ids and scores, and the sources' text, of the first ``n`` test sentences."""
    data = run.data
    batch = next(data.batches("test", [np.arange(n)]))
    hyps = search(run.model, batch, data, run.cfg.decoding, autocast_for(run.device, run.cfg.trainer.precision), 1)
    src_ids = [row[row.ne(data.pad_id)].tolist()[:-1] for row in batch.src]  # without the eos
    return src_ids, hyps.tokens, hyps.scores.tolist(), data.split("test").sources()[:n]


@pytest.mark.parametrize("name", ["gru", "transformer", "ensemble"])
def test_forced_score_of_the_greedy_output_is_the_greedy_score(loaded: dict[str, LoadedRun], pair: LoadedRun,
                                                                name: str) -> None:
    run = pair if name == "ensemble" else loaded[name]
    src_ids, tokens, scores, _ = greedy_outputs(run)
    forced = score.forced_decode(run, src_ids, tokens)
    assert [len(lp) for lp in forced.token_logprobs] == [len(t) + 1 for t in tokens]
    np.testing.assert_allclose([sum(lp) for lp in forced.token_logprobs], scores, atol=1e-4)


def test_s2s_score_writes_per_sentence_and_per_token_scores(runs: dict[str, Path], loaded: dict[str, LoadedRun],
                                                            tmp_path: Path, capsys) -> None:
    src_ids, tokens, _, sources = greedy_outputs(loaded["transformer"])
    run = load_run(runs["transformer"])  # as s2s-score loads it
    tok = run.data.tokenizer
    texts = tok.decode_tgt(tokens)
    sources, texts, tokens = sources + [sources[0]], texts + [""], tokens + [[]]  # an empty output scores its eos
    src, tgt, out = write_lines(tmp_path / "src", sources), write_lines(tmp_path / "tgt", texts), tmp_path / "s.jsonl"
    score.main([str(runs["transformer"]), "--src", str(src), "--tgt", str(tgt), "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads(capsys.readouterr().err)
    assert summary["sentences"] == len(sources) and summary["tokens"] == sum(r["n_tokens"] for r in records)
    forced = score.forced_decode(run, tok.encode_src(sources), tok.encode_tgt(texts))
    for record, ids, logprobs in zip(records, tok.encode_tgt(texts), forced.token_logprobs):
        assert record["token_logprobs"] == pytest.approx(logprobs)
        assert record["score"] == pytest.approx(sum(logprobs))
        assert record["pieces"] == tok.tgt_pieces(ids) + ["</s>"]
    assert sum(ids == t for ids, t in zip(tok.encode_tgt(texts), tokens)) >= len(texts) // 2  # text round-trips
    assert records[-1]["pieces"] == ["</s>"] and records[-1]["n_tokens"] == 1


def test_s2s_score_rejects_bad_files_naming_the_line(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    good = write_lines(tmp_path / "good", ["ba de", "fi go"])
    bad = tmp_path / "bad"
    cases = [(b"ba de\n\n", "src", "bad, line 2: empty line"),
             (b"ba de\n\xff\xfe\n", "src", "bad, line 2: not valid UTF-8"),
             (("ba " * 70 + "\nfi\n").encode(), "src", "bad, line 1: 70 pieces, more than the model's limit of 64"),
             (b"ba de\n", "tgt", "good has 2 lines but")]
    for content, side, message in cases:
        bad.write_bytes(content)
        src, tgt = (bad, good) if side == "src" else (good, bad)
        with pytest.raises(SystemExit) as exit_:
            score.main([str(runs["gru"]), "--src", str(src), "--tgt", str(tgt)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and message in err, err


# --- translate from standard input ------------------------------------------------------------------


def test_translate_stream_reports_bad_lines_and_goes_on(pair: LoadedRun, loaded: dict[str, LoadedRun]) -> None:
    run = loaded["gru"]
    sources = run.data.split("test").sources()[:2]
    lines = [sources[0].encode(), b"", b"ba \xff de", ("ba " * 70).encode(), sources[1].encode()]
    out, err = io.StringIO(), io.StringIO()
    skipped = translate.translate_stream(run, "gru", io.BytesIO(b"\n".join(lines) + b"\n"), out, err, beam=2)
    expected = decode(run, 2, limit=2).hypotheses
    assert skipped == 3
    assert out.getvalue().split("\n") == [expected[0], "", "", "", expected[1], ""]
    messages = err.getvalue().splitlines()
    assert [m.split(":")[1].strip() for m in messages] == ["line 2", "line 3", "line 4"]
    assert "empty" in messages[0] and "UTF-8" in messages[1] and "limit of 64" in messages[2]


def test_translate_n_best_and_attention(pair: LoadedRun, loaded: dict[str, LoadedRun]) -> None:
    sources = loaded["gru"].data.split("test").sources()[:3]
    stdin = "".join(s + "\n" for s in sources).encode()
    plain, tsv, jsonl = io.StringIO(), io.StringIO(), io.StringIO()
    for out, kwargs in ((plain, {}), (tsv, {"n_best": 3}), (jsonl, {"n_best": 3, "attention": True})):
        translate.translate_stream(pair, "pair", io.BytesIO(stdin), out, io.StringIO(), beam=3, **kwargs)
    best = plain.getvalue().splitlines()
    rows = [line.split("\t") for line in tsv.getvalue().splitlines()]
    assert [r[3] for r in rows if r[1] == "1"] == best and len(rows) == 9
    objects = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    assert [o["hypothesis"] for o in objects] == best
    for o in objects:
        assert list(o["attention"]) == list(o["alignment"]) == pair.model.names
        gru, transformer = (np.array(o["attention"][name]) for name in pair.model.names)
        shape = (len(o["tgt_pieces"]), len(o["src_pieces"]))
        assert gru.shape == shape and transformer.shape == (2, 2, *shape)
        n_src, n_tgt = (len(set(align.word_ids(p[:-1]))) for p in (o["src_pieces"], o["tgt_pieces"]))
        links = align.parse_pharaoh(o["alignment"][pair.model.names[0]])
        assert sorted(j for _, j in links) == list(range(n_tgt)) and all(i < n_src for i, _ in links)
        assert [h["hypothesis"] for h in o["n_best"]][0] == o["hypothesis"]


def test_s2s_translate_flushes_each_line_and_exits_1_after_a_bad_line(runs: dict[str, Path],
                                                                       loaded: dict[str, LoadedRun]) -> None:
    """Interactive use: the answer to a line arrives before the next line is written."""
    source = loaded["gru"].data.split("test").sources()[0]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.evaluation.translate", str(runs["gru"]), "--beam", "2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdin.write((source + "\n").encode())
    proc.stdin.flush()
    first = proc.stdout.readline().decode().rstrip("\n")  # would block forever without the flush
    run = load_run(runs["gru"])  # as s2s-translate loads it
    ids = run.data.tokenizer.encode_src([source])[0]
    assert first == translate.translate(run, "gru", source, ids, 2, 1, False)["hypothesis"]
    out, err = proc.communicate(b"\n", timeout=600)
    assert proc.returncode == 1 and out == b"\n" and b"line 2: empty; skipped" in err
    zero = subprocess.run([sys.executable, "-m", "experiments.evaluation.translate", str(runs["gru"]), "--beam", "0"],
                          input="x\n", capture_output=True, text=True, cwd=REPO)  # not "the run's beam"
    assert zero.returncode == 2 and "need --beam >= 1" in zero.stderr and not zero.stdout


def test_translator_from_python_gives_what_the_command_gives(runs: dict[str, Path],
                                                              loaded: dict[str, LoadedRun]) -> None:
    sources = loaded["gru"].data.split("test").sources()[:3]
    stdin = "".join(s + "\n" for s in sources).encode()
    for members in (["gru"], ["gru", "transformer"]):  # one run, and an ensemble
        translator = translate.Translator(*(runs[m] for m in members))
        out = io.StringIO()  # what s2s-translate prints for the same lines, from the same loaded models
        translate.translate_stream(translator.run, translator.label, io.BytesIO(stdin), out, io.StringIO(), beam=2)
        assert [r["hypothesis"] for r in translator.translate(sources, beam=2)] == out.getvalue().splitlines()
        assert translator(sources[0], beam=2) == out.getvalue().splitlines()[0]
    assert translator.label == ensemble.run_label(load_run(runs["gru"]))  # as the command labels an ensemble
    with_attention = translator.translate(sources[:1], beam=3, n_best=2, attention=True)[0]
    assert len(with_attention["n_best"]) == 2 and set(with_attention["attention"]) == set(translator.run.model.names)
    with pytest.raises(ValueError, match=r"texts\[1\]: empty"):
        translator.translate([sources[0], "  "])
    with pytest.raises(ValueError, match="n_best <= beam"):
        translator.translate(sources, beam=2, n_best=3)
    with pytest.raises(TypeError, match="list of texts"):
        translator.translate(sources[0])


# --- alignments -------------------------------------------------------------------------------------


def test_alignment_of_a_diagonal_map_is_the_diagonal() -> None:
    pieces = ["\u2581a", "\u2581b", "\u2581c", "\u2581d"]
    assert align.word_links(np.eye(5), pieces, pieces) == {(0, 0), (1, 1), (2, 2), (3, 3)}
    assert align.pharaoh(align.word_links(np.eye(5), pieces, pieces)) == "0-0 1-1 2-2 3-3"
    # Pieces merged back into words: source words "▁ab|c", "▁d"; target "▁x", "▁y|z".
    src, tgt = ["\u2581ab", "c", "\u2581d"], ["\u2581x", "\u2581y", "z"]
    weights = np.array([[0.5, 0.4, 0.1, 0.0], [0.1, 0.1, 0.8, 0.0], [0.0, 0.2, 0.7, 0.1], [0, 0, 0, 1.0]])
    assert align.word_ids(src) == [0, 0, 1] and align.word_links(weights, src, tgt) == {(0, 0), (1, 1)}
    # The eos column is dropped: mass there does not make a link.
    assert align.word_links(np.array([[0.1, 0.9], [0, 1.0]]), ["\u2581a"], ["\u2581x"]) == {(0, 0)}


def test_symmetrize_and_agreement() -> None:
    from experiments.analysis.alignment_report import agreement, symmetrize

    forward = {(0, 0), (0, 1), (3, 3)}
    reverse = {(0, 0), (2, 3)}
    # From the intersection (0, 0), grow adds the neighbour (0, 1) (its target word is new); final-and adds
    # (3, 3), both of whose words are unaligned, and then not (2, 3), whose target word (3, 3) has aligned.
    assert symmetrize(forward, reverse) == {(0, 0), (0, 1), (3, 3)}
    assert symmetrize({(0, 0), (1, 1)}, {(0, 0), (1, 1)}) == {(0, 0), (1, 1)}
    scores = agreement([{(0, 0), (1, 1)}, {(0, 1)}], [{(0, 0)}, {(0, 1), (1, 1)}])
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["aer"] == pytest.approx(1 - scores["f1"])


def test_eflomal_links_stay_within_the_sentences() -> None:
    from experiments.analysis.alignment_report import eflomal_links

    src = ["das haus ist klein", "ein haus", "der mann ist gross"] * 20
    tgt = ["the house is small", "a house", "the man is tall"] * 20
    links = eflomal_links(src, tgt)
    assert len(links) == len(src) and links[1] == {(0, 0), (1, 1)}
    for s, t, pair in zip(src, tgt, links):
        assert all(i < len(s.split()) and j < len(t.split()) for i, j in pair)


def test_s2s_align_writes_pharaoh_for_every_map(runs: dict[str, Path], loaded: dict[str, LoadedRun],
                                               tmp_path: Path, capsys) -> None:
    split = loaded["gru"].data.split("test")
    src = write_lines(tmp_path / "src", split.sources()[:5])
    tgt = write_lines(tmp_path / "tgt", [r[0] for r in split.references()[:5]])
    for name, maps in (("gru", [None, "attention"]), ("transformer", [None, "mean", "L2H1"])):
        outputs = []
        for which in maps:
            align_command.main([str(runs[name]), "--src", str(src), "--tgt", str(tgt), *(["--map", which] if which else [])])
            outputs.append(capsys.readouterr().out.splitlines())
        assert outputs[0] == outputs[1] and all(len(o) == 5 for o in outputs)
        for line, target in zip(outputs[-1], tgt.read_text().splitlines()):
            assert sorted(j for _, j in align.parse_pharaoh(line)) == list(range(len(target.split())))
    with pytest.raises(SystemExit) as exit_:
        align_command.main([str(runs["gru"]), "--src", str(src), "--tgt", str(tgt), "--map", "L1H1"])
    assert exit_.value.code == 2 and "has the maps attention" in capsys.readouterr().err


def test_s2s_align_eflomal_report(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "alignment"
    align_command.main([str(runs["gru"]), str(runs["transformer"]), "--eflomal", "--out", str(out), "--note", "tiny"])
    report = json.loads(out.with_suffix(".json").read_text())
    maps = [(r["model"], r["map"]) for r in report["rows"]]
    assert maps == [("gru", "attention"), ("transformer", "mean")] + [
        ("transformer", f"L{layer}H{head}") for layer in (1, 2) for head in (1, 2)]
    assert report["pairs"] + report["skipped"] == 100 and report["eflomal"]["pairs"] == 2100
    assert all(0 <= r["f1"] <= 1 and r["aer"] == pytest.approx(1 - r["f1"]) for r in report["rows"])
    assert "`s2s-align " in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


# --- compare-mt -------------------------------------------------------------------------------------


def test_compare_mt_bleu_agrees_with_ours_overall_and_by_length() -> None:
    """The same numbers from compare-mt and from experiments.evaluation.metrics on the same buckets (reference length),
    on outputs of 4 tokens or more; on shorter ones compare-mt's BLEU is lower, as s2s-compare's page says."""
    from compare_mt import bucketers, scorers

    from experiments.evaluation import metrics

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)] + [",", "."]
    refs = [" ".join(rng.choice(words, size=rng.integers(4, 25))) for _ in range(300)]
    hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(words) for w in r.split()[: rng.integers(4, 26)])
            for r in refs]
    bleu = scorers.create_scorer_from_profile("bleu")

    def theirs(hyps: list[str], refs: list[str]) -> float:
        return bleu.score_corpus([r.split() for r in compare.tokenize_13a(refs)],
                                 [h.split() for h in compare.tokenize_13a(hyps)])[0]

    def ours(hyps: list[str], refs: list[str]) -> float:
        return metrics.corpus_bleu(hyps, [[r] for r in refs])["bleu"]

    assert theirs(hyps, refs) == pytest.approx(ours(hyps, refs))
    ref_tok = [r.split() for r in compare.tokenize_13a(refs)]
    hyp_tok = [h.split() for h in compare.tokenize_13a(hyps)]
    cutoffs = [8, 12, 16, 20]
    bucketer = bucketers.create_sentence_bucketer_from_profile("length", bucket_cutoffs=cutoffs)
    by_length = [bleu.score_corpus(r, o)[0] for o, r, _ in bucketer.create_bucketed_corpus(hyp_tok, ref=ref_tok)]
    buckets = metrics.length_buckets([len(r) for r in ref_tok], "translation", hyps, [[r] for r in refs],
                                     edges=cutoffs)
    assert [b["score"] for b in buckets] == pytest.approx(by_length)
    assert all(b["count"] > 20 for b in buckets)
    short = hyps[:-1] + ["w1 w2"]
    assert theirs(short, refs) < ours(short, refs)


def test_s2s_compare_writes_the_html_report(runs: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("outputs/compare_mt")  # the default (never results/): relative, as compare-mt runs in another folder
    hyps = []
    for name in ("gru", "transformer"):
        evaluate_checkpoint(str(runs[name]), ["split=test", "decoding.beam_size=2"])
        hyps.append(str(runs[name] / "eval" / "test-beam2.txt"))
    capsys.readouterr()
    compare.main([str(runs["gru"]), str(runs["transformer"]), "--hyps", *hyps, "--note", "tiny"])
    assert capsys.readouterr().out.startswith(f"wrote {out}/: ")
    page = (out / "index.html").read_text()
    assert "Produced by <code>s2s-compare " in page and "gru-" in page and "transformer-" in page
    assert "<p><b>tiny</b></p>" in page
    assert "BLEU" in page and list(out.glob("*.png"))
    text = (out / "report.txt").read_text()
    assert text.startswith("Produced by s2s-compare")
    with pytest.raises(SystemExit):
        compare.main([str(runs["gru"]), str(runs["transformer"]), "--hyps", hyps[0], str(tmp_path / "none")])
