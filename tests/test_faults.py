"""Fault injection, data side: every bad corpus file fails at start with one line naming file, line and remedy.

Each test builds the bad input in a temp folder. Where a fault could leave
something behind (a cache entry, a temporary), the test also checks that the
next good run does not trust it. Checkpoints, resume, W&B and the command
line: tests/test_faults_runs.py.
"""

from __future__ import annotations

import errno
import gzip
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from experiments.data import sources
from experiments.core.errors import ConfigError, DataError, StorageError
from experiments.training.train import run
from experiments.training.preflight import check_limits
from experiments.training.trainer import Trainer
from tests.conftest import HUNG_S, REPO, compose_cfg
from tests.faults import jsonl, load_all, multi30k, multi30k_task, no_temporaries, read_only, sentences

# ---------------------------------------------------------------------------
# Text files: normalised on read, or refused with file, line and column.


def val(root: Path) -> dict[str, list]:
    """Parse (and validate) the val split of the Multi30k folder under ``root``."""
    return sources.multi30k_split(multi30k_task(root).task, "val", root).build()


def test_bom_crlf_and_cr_only_line_ends_are_normalised_and_logged(tmp_path: Path, caplog) -> None:
    de = b"\xef\xbb\xbf" + sentences(40, "de").replace(b"\n", b"\r\n")  # saved on Windows, with a BOM
    en = sentences(40, "en").replace(b"\n", b"\r")  # classic Mac line ends
    multi30k(tmp_path, val_de=de, val_en=en)
    with caplog.at_level(logging.INFO, logger="experiments.data.textfiles"):
        valid, _ = sources.raw_split(multi30k_task(tmp_path).task, "val", tmp_path, tmp_path / "cache")
    assert valid["src"][0] == "ein zwei 0" and valid["tgt"][0] == "a two 0"
    assert len(valid) == 40 and not any("\r" in s or "\ufeff" in s for s in [*valid["src"], *valid["tgt"]])
    assert "val.de.gz: dropped a UTF-8 byte-order mark; read 40 CRLF line ends" in caplog.text
    assert "val.en.gz: read 40 CR-only line ends" in caplog.text


@pytest.mark.parametrize("content, message", [
    (b"ein Hund\nzwei \x00Katzen\n", r"val\.de\.gz, line 2, column 6: a NUL byte"),
    (b"ein Hund\nzwei \x1b[1mKatzen\n", r"val\.de\.gz, line 2, column 6: control character U\+001B"),
    (b"ein Hund\nzwei \xc2\x85Katzen\n", r"line 2, column 6: control character U\+0085"),
    (b"ein Hund\nzwei \xff Katzen\n", r"val\.de\.gz, line 2: not valid UTF-8 \(byte 5"),
    ("ein Hund\n".encode("utf-16"), r"line 1: not valid UTF-8 .*looks like UTF-16"),
    (b"ein Hund\n\nzwei Katzen\n", r"val\.de\.gz, line 2: empty line.*remove the line from both sides"),
    (b"ein Hund\r\n\r\nzwei\r\n", r"val\.de\.gz, line 2: empty line"),
    (b"ein Hund\r\rzwei\r", r"val\.de\.gz, line 2: empty line"),
    (b"", r"val\.de\.gz: the file is empty"),
])
def test_bad_text_names_file_line_and_what_to_do(tmp_path: Path, content: bytes, message: str) -> None:
    multi30k(tmp_path, val_de=content)
    with pytest.raises(DataError, match=message):
        val(tmp_path)


def test_truncated_or_plain_gzip_and_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    folder = multi30k(tmp_path)
    whole = (folder / "val.de.gz").read_bytes()
    (folder / "val.de.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"val\.de\.gz, after line \d+: cannot be read .*truncated or damaged"):
        val(tmp_path)
    (folder / "val.de.gz").write_bytes(sentences(40, "de"))  # not compressed, although named .gz
    with pytest.raises(DataError, match=r"val\.de\.gz, after line 0: cannot be read \(Not a gzipped file"):
        val(tmp_path)
    (folder / "val.de.gz").unlink()
    (folder / "val.de.gz").mkdir()
    with pytest.raises(DataError, match=r"val\.de\.gz is a folder, not a data file"):
        val(tmp_path)


def test_misaligned_sides_give_both_counts(tmp_path: Path) -> None:
    multi30k(tmp_path, val_en=sentences(39, "en"))
    with pytest.raises(DataError, match=r"val\.de\.gz has 40 lines but .*val\.en\.gz has 39"):
        val(tmp_path)


# ---------------------------------------------------------------------------
# Checksums: a mismatch also says what the structural check finds.


@pytest.mark.parametrize("content, finding", [
    (sentences(40, "de").replace(b"\n", b"\n\n", 1), r"the structural check finds: .*val\.de\.gz, line 2: empty"),
    (sentences(40, "de")[:-1] + b"\xff\n", r"the structural check finds: .*line 40: not valid UTF-8"),
    (sentences(41, "de"), r"the structural check finds: .*val\.de\.gz has 41 lines but .*val\.en\.gz has 40"),
    (sentences(40, "de"), r"its content passes the structural checks, so it is most likely another version"),
])
def test_checksum_mismatch_reports_the_structural_finding(tmp_path: Path, content: bytes, finding: str) -> None:
    multi30k(tmp_path, val_de=content)  # val.de.gz has a published sha256, which this content does not match
    cfg = multi30k_task(tmp_path, "task.verify_checksums=true")
    with pytest.raises(DataError, match=r"val\.de\.gz: sha256 \w+ does not match the published \w+; " + finding
                       + r".*Delete it to download it again, or set task\.verify_checksums=false"):
        sources.multi30k_split(cfg.task, "val", tmp_path)


# ---------------------------------------------------------------------------
# JSON lines: any line, any JSON type, one line naming file, line and what was expected.

GOOD = b'{"dialogue": "A: hi\\nB: hello", "summary": "They greet."}'


@pytest.mark.parametrize("lines, message", [
    ([b"not json", GOOD], r"line 1: not valid JSON \(Expecting value at column 1\); each line must hold one JSON "
                          r'object like \{"dialogue": "...", "summary": "..."\}'),
    ([GOOD, GOOD, b'{"dialogue": "x", "summary": '], r"line 3: not valid JSON"),
    ([b"42", GOOD], r"line 1: holds a JSON number \(42\), not an object"),
    ([GOOD, b"[1, 2]"], r"line 2: holds a JSON array \(\[1, 2\]\), not an object"),
    ([GOOD, b'"text"'], r'line 2: holds a JSON string \("text"\), not an object'),
    ([GOOD, b"null"], r"line 2: holds a JSON null"),
    ([GOOD, b""], r"line 2: empty line; each line must hold one JSON object"),
    ([GOOD, b'{"dialogue": "x", "summary": 7}'], r"line 2: field 'summary' holds a JSON number \(7\); expected a "
                                                 r"string"),
    ([GOOD, b'{"dialogue": "x", "summary": "  "}'], r"line 2: field 'summary' is empty"),
    ([GOOD, b'{"dialogue": "x\\u0000y", "summary": "s"}'], r"line 2: field 'dialogue' holds a NUL byte at character 2"),
    ([GOOD, b'{"dialogue": "x"}'], r"line 2: no field 'summary'; the record has \['dialogue'\]"),
    ([b"\xef\xbb\xbf" + GOOD, GOOD + b"\r", b"\x00" + GOOD], r"line 3, column 1: a NUL byte"),
])
def test_bad_json_lines(tmp_path: Path, lines: list[bytes], message: str) -> None:
    path = jsonl(tmp_path, "validation", lines)
    cfg = compose_cfg(["task=samsum", f"task.data_root={tmp_path}", "task.verify_checksums=false"])
    with pytest.raises(DataError, match=rf"{path}, " + message):
        sources.jsonl_split(cfg.task, "validation", tmp_path).build()


def test_json_lines_with_bom_and_crlf_read_clean(tmp_path: Path) -> None:
    jsonl(tmp_path, "validation", [b"\xef\xbb\xbf" + GOOD + b"\r", GOOD + b"\r"])
    cfg = compose_cfg(["task=samsum", f"task.data_root={tmp_path}", "task.verify_checksums=false"])
    columns = sources.jsonl_split(cfg.task, "validation", tmp_path).build()
    assert columns["src"] == ["A: hi\nB: hello"] * 2 and columns["tgt"] == ["They greet."] * 2


# ---------------------------------------------------------------------------
# Every split before the first update; cheap once cached.


@pytest.mark.parametrize("fault, message", [
    ({"test_2016_flickr_en": sentences(20, "en") + b"\n" + sentences(19, "en")}, r"test_2016_flickr\.en\.gz, line 21"),
    ({"val_de": None}, r"missing data file .*val\.de\.gz"),
    ({"val_en": b"\xef\xbb\xbfa dog\r\n\x00\r\n"}, r"val\.en\.gz, line 2, column 1: a NUL byte"),
])
def test_a_bad_valid_or_test_file_stops_the_run_before_the_first_update(tmp_path: Path, monkeypatch, fault,
                                                                         message) -> None:
    folder = multi30k(tmp_path, **{k: v for k, v in fault.items() if v is not None})
    for key in (k for k, v in fault.items() if v is None):
        (folder / f"{key.replace('_', '.')}.gz").unlink()
    monkeypatch.setattr(Trainer, "train_step", lambda *a: pytest.fail("trained before every split was checked"))
    cfg = multi30k_task(tmp_path, "model=transformer_tiny", "trainer=debug", f"cache_dir={tmp_path / 'cache'}",
                        "logger.mode=disabled")
    with pytest.raises(DataError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_every_split_is_parsed_once_and_then_read_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    multi30k(tmp_path)
    cfg = multi30k_task(tmp_path)
    load_all(cfg, tmp_path / "cache")
    monkeypatch.setattr(sources, "read_lines", lambda *a: pytest.fail("parsed again although cached and unchanged"))
    assert len(load_all(cfg, tmp_path / "cache").split("test")) == 40


def test_an_eval_cap_above_the_validation_size_validates_the_whole_split(tmp_path: Path, shared_cache: Path,
                                                                         caplog) -> None:
    from tests.faults import TINY

    cfg = compose_cfg([*TINY, f"cache_dir={shared_cache}", "trainer.max_steps=2", "trainer.eval_every=2",
                       "trainer.eval_max_sentences=150"])
    with caplog.at_level(logging.INFO, logger="experiments.training.preflight"):
        run(cfg, tmp_path)
    assert "trainer.eval_max_sentences=150 is more than the 20 sentences of the validation split (valid): " \
           "validating on all of them" in caplog.text
    assert len((tmp_path / "hyps" / "valid-step2.txt").read_text().splitlines()) == 20


@pytest.mark.parametrize("overrides, message", [
    (["trainer.batch_tokens=8"], r"longest train example has \d+ tokens, more than trainer\.batch_tokens=8"),
    (["decoding.beam_batch_tokens=40", "decoding.beam_size=5"], r"decoding\.beam_batch_tokens=40 leaves 8 tokens a "
                                                                r"batch at beam 5, less than the \d+ of the longest "
                                                                r"test example"),
    (["decoding.batch_tokens=4", "trainer.val_beam_size=1"], r"decoding\.batch_tokens=4 leaves 4 tokens a batch at "
                                                             r"beam 1, less than the \d+ of the longest valid example"),
    (["trainer.eval_max_sentences=-5"], r"trainer\.eval_max_sentences=-5 must be 0 \(the whole split\) or more"),
])
def test_limits_are_checked_against_the_splits_at_start(make_cfg, shared_cache, overrides, message) -> None:
    from tests.faults import TINY

    cfg = make_cfg(*TINY, *overrides)
    with pytest.raises(ConfigError, match=message):
        check_limits(cfg, load_all(cfg, shared_cache))


def test_an_empty_split_is_refused(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"split 'valid' of task 'toy_reverse' has no examples"):
        load_all(make_cfg("task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=0"), tmp_path)


# ---------------------------------------------------------------------------
# Files that change, disks that fill, folders that cannot be written.


def test_a_file_that_grows_while_read_is_refused_and_not_cached(tmp_path: Path, monkeypatch) -> None:
    folder = multi30k(tmp_path)
    real = sources.read_lines

    def writer_still_busy(path: Path) -> list[str]:
        lines = real(path)
        if path.name == "val.en.gz":  # another process appends while we parse
            path.write_bytes(gzip.compress(sentences(41, "en")))
        return lines

    monkeypatch.setattr(sources, "read_lines", writer_still_busy)
    task, cache = multi30k_task(tmp_path).task, tmp_path / "cache"
    with pytest.raises(DataError, match=r"val\.en\.gz changed while it was read: wait until whatever writes it has "
                                        r"finished, then run again"):
        sources.raw_split(task, "val", tmp_path, cache)
    assert not list((cache / "raw").glob("*-val-*"))
    monkeypatch.setattr(sources, "read_lines", real)
    (folder / "val.de.gz").write_bytes(gzip.compress(sentences(41, "de")))  # the writer finished both sides
    assert len(sources.raw_split(task, "val", tmp_path, cache)[0]) == 41


def test_a_full_disk_while_caching_keeps_nothing_half_written(tmp_path: Path, make_cfg, monkeypatch) -> None:
    task = make_cfg("task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20").task
    real_save = datasets.Dataset.save_to_disk

    def disk_full(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", disk_full)
    with pytest.raises(StorageError, match=r"cannot write .*raw/toy_reverse-train-\w+: No space left on device\. "
                                           r"Free disk space .*nothing half-written was kept"):
        sources.raw_split(task, "train", tmp_path, tmp_path)
    assert not list((tmp_path / "raw").iterdir())
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real_save)
    assert len(sources.raw_split(task, "train", tmp_path, tmp_path)[0]) == 300


def only_caches(folder: Path) -> bool:
    """``folder`` (cache/tokenized) holds finished cache files and nothing else."""
    return all(p.is_file() and p.suffix == ".arrow" and not p.name.startswith(("tmp", ".")) for p in folder.iterdir())


def test_a_full_disk_while_tokenizing_keeps_nothing_half_written(tmp_path: Path, make_cfg, monkeypatch) -> None:
    cfg = make_cfg("task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20")
    load_all(cfg, tmp_path)  # the raw splits and the tokenizer: cached
    tokenized = tmp_path / "tokenized"
    shutil.rmtree(tokenized)

    def disk_full(self, *args, **kwargs):  # datasets' writer, also when it closes its file after a failure
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.arrow_writer.ArrowWriter, "finalize", disk_full)
    with pytest.raises(StorageError, match=r"cannot write .*tokenized/toy_reverse-train-\w+-\w+\.arrow: No space "
                                           r"left on device\. Free disk space .*nothing half-written was kept"):
        load_all(cfg, tmp_path)
    assert only_caches(tokenized)


KILLED_TOKENIZATION = """
import sys, time
from pathlib import Path
import datasets
from experiments.data import pipeline as data
from experiments.core.config import validate
from tests.conftest import compose_cfg

def stuck(*args, **kwargs):
    Path(sys.argv[2]).write_text("tokenizing")
    time.sleep(3600)

cfg = validate(compose_cfg(["task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20"]))
task_data = data.TaskData(cfg.task, sys.argv[1])  # the raw split and the tokenizer, cached
datasets.arrow_writer.ArrowWriter.finalize = stuck  # the tokenized rows are written; the file is not closed yet
task_data.split("train")
"""


def test_a_killed_tokenization_leaves_nothing_the_next_run_keeps(tmp_path: Path, make_cfg) -> None:
    cache, started = tmp_path / "cache", tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", KILLED_TOKENIZATION, str(cache), str(started)], cwd=REPO)
    try:
        deadline = time.monotonic() + HUNG_S
        while not started.exists():  # killed while it tokenizes
            assert child.poll() is None and time.monotonic() < deadline, "the child ended before tokenizing"
            time.sleep(0.2)
    finally:
        child.kill()
        child.wait()
    tokenized = cache / "tokenized"
    assert not only_caches(tokenized)  # what the killed writer left
    cfg = make_cfg("task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20")
    assert len(load_all(cfg, cache).split("train")) == 300
    assert only_caches(tokenized)


def test_a_read_only_cache_folder_is_named_with_the_setting_to_change(tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg("task=toy_reverse", "task.toy.train_size=300", "task.toy.eval_size=20")
    cache = tmp_path / "cache"
    with read_only(cache):
        with pytest.raises(StorageError, match=rf"cannot write {cache}/.*: .*\. Make {cache}\S* writable, or write "
                                               r"elsewhere .*cache_dir=\.\.\. or S2S_CACHE_DIR"):
            load_all(cfg, cache)
    assert load_all(cfg, cache).split("valid") is not None  # writable again: a good run builds the cache
    with read_only(cache):  # a complete cache is only read: it works from a read-only folder
        assert len(load_all(cfg, cache).split("test")) == 20
    assert no_temporaries(cache)


def test_a_file_where_the_cache_folder_should_be(tmp_path: Path, make_cfg) -> None:
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(StorageError, match=r"cannot write .*cache/raw/toy_reverse-train-\w+: a file stands where a "
                                           r"folder must be .*; move it away, or write elsewhere"):
        load_all(make_cfg("task=toy_reverse", "task.toy.train_size=300"), tmp_path / "cache")


def test_results_of_a_cached_split_are_the_files_content(tmp_path: Path) -> None:
    """No later run trusts a cache of other content: a changed file gets a new key and is parsed again."""
    folder = multi30k(tmp_path)
    task, cache = multi30k_task(tmp_path).task, tmp_path / "cache"
    first = sources.raw_split(task, "val", tmp_path, cache)[0]["src"][:]
    (folder / "val.de.gz").write_bytes(gzip.compress(sentences(40, "de").replace(b"Hund", b"Wolf")))
    second = sources.raw_split(task, "val", tmp_path, cache)[0]["src"][:]
    assert second == [s.replace("Hund", "Wolf") for s in first] != first
