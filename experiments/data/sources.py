"""Raw corpora: each task split becomes an Arrow dataset of (src, tgt[, refs]) text.

Loaders (``task.loader``):

* ``toy_reverse``: generated in code from a seed, needs no files;
* ``multi30k``: the gzipped line-aligned text files of Multi30k Task 1,
  downloaded from upstream (sha256-verified) when absent from the data root;
* ``jsonl``: gzipped JSON lines with named source / target / extra-reference
  fields (SAMSum, AESLC);
* ``hf``: any Hugging Face dataset, by hub name or local folder / files; it
  stays in the Arrow files ``datasets`` writes (under ``<cache>/hf``), so a
  corpus larger than memory works.

Every file is normalised and validated line by line (``textfiles.py``:
UTF-8, no control characters, non-empty, aligned counts) and any fault is
reported as a ``DataError`` naming the file and line; a file that fails its
published checksum is checked the same way, so the message says what is wrong
with it. A parsed split is saved with ``save_to_disk`` under a key derived
from the content hashes of its files, written atomically, and memory-mapped on
later runs, so a second run neither re-parses text nor trusts a half-written
cache; a file that changes while it is parsed is refused, not cached.
"""

from __future__ import annotations

import hashlib
import os
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from experiments.core.atomic import atomic_path, failed_write, owned_temporary, remove_stale
from experiments.core.errors import DataError
from experiments.data.textfiles import read_jsonl, read_lines

CHECKSUM_DIR = Path(__file__).parent / "checksums"
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{file}"
# Bump when the parsing below changes, so old caches are not reused.
PARSER_VERSION = "2"  # 2: BOM dropped, CR-only line ends, control characters refused

datasets.disable_progress_bars()


def default_data_root() -> Path:
    env = os.environ.get("S2S_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "s2s-compare" / "data"


def default_cache_dir() -> Path:
    env = os.environ.get("S2S_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "s2s-compare" / "cache"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a data file: point the task at the file itself") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); make it readable or point the task elsewhere") \
            from None
    return digest.hexdigest()


def known_checksums(name: str) -> dict[str, str]:
    """File name -> sha256 from ``experiments/data/checksums/<name>.sha256``."""
    sums = {}
    for line in (CHECKSUM_DIR / f"{name}.sha256").read_text().splitlines():
        digest, file = line.split()
        sums[file] = digest
    return sums


@dataclass
class RawSplit:
    """Where a split's text comes from and the key that identifies its content."""

    key: str
    build: Callable[[], dict[str, list]]  # the parsed (and validated) columns
    files: tuple[tuple[Path, str], ...] = ()  # (file, sha256) the key was made from


# ---------------------------------------------------------------------------
# Files: presence, checksums, stability


def present(path: Path) -> bool:
    """Whether ``path`` exists; a symbolic link to nothing (or a loop of links) is an error, not an absent file:
    it was put there on purpose, and downloading over it would hide the mistake."""
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist or loops back: "
                        "point the link at the data file, or remove it")
    return path.exists()


def require(path: Path, hint: str) -> Path:
    if not path.parent.exists():
        raise DataError(f"data root folder {path.parent} does not exist. {hint}")
    if not present(path):
        raise DataError(f"missing data file {path}. {hint}")
    return path


def verified(paths: list[Path], checksums: dict[str, str] | None, structure: Callable[[], Any],
             remedy: str) -> list[str]:
    """The files' sha256, checked against the published sums when given.

    On a mismatch ``structure`` (the parser) runs too, so the message says
    what is wrong with the file, if anything, besides its checksum.
    """
    digests = [sha256_file(p) for p in paths]
    for path, digest in zip(paths, digests):
        published = (checksums or {}).get(path.name)
        if published is None or published == digest:
            continue
        try:
            structure()
            found = "its content passes the structural checks, so it is most likely another version of the data"
        except DataError as e:
            found = f"the structural check finds: {e}"
        raise DataError(f"{path}: sha256 {digest} does not match the published {published}; {found}. {remedy}, "
                        "or set task.verify_checksums=false if you changed it on purpose.")
    return digests


def download(url: str, target: Path, expected_sha256: str | None) -> None:
    """Fetch ``url`` to ``target`` atomically, checking its sha256 before it lands."""
    try:
        with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=60) as response:
            with open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
            if expected_sha256 is not None and sha256_file(tmp) != expected_sha256:
                raise DataError(f"download of {url} does not match its published sha256; try again later.")
    except (urllib.error.URLError, OSError) as e:
        raise DataError(
            f"missing data file {target}, and downloading it from {url} failed ({e}). "
            f"Connect to the internet, or copy the file there (or point S2S_DATA_DIR at a folder holding it)."
        ) from None


# ---------------------------------------------------------------------------
# Loaders: each returns the RawSplit for one upstream split name.


def toy_reverse_split(task: Any, split: str) -> RawSplit:
    """Random "sentences" of syllable words; the target is the sentence reversed.

    Deterministic in ``(toy.seed, split)``: the splits never share a seed.
    """
    toy = task.toy
    sizes = {"train": toy.train_size, "valid": toy.eval_size, "test": toy.eval_size}
    words = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"][: toy.vocab]
    params = (PARSER_VERSION, split, sizes[split], toy.seed, toy.vocab, toy.min_len, toy.max_len)
    key = hashlib.sha256(repr(params).encode()).hexdigest()[:16]

    def build() -> dict[str, list]:
        rng = random.Random(f"{toy.seed}-{split}")
        src, tgt = [], []
        for _ in range(sizes[split]):
            sentence = [rng.choice(words) for _ in range(rng.randint(toy.min_len, toy.max_len))]
            src.append(" ".join(sentence))
            tgt.append(" ".join(reversed(sentence)))
        return {"src": src, "tgt": tgt}

    return RawSplit(key, build)


def multi30k_split(task: Any, split: str, data_root: Path) -> RawSplit:
    folder = data_root / "multi30k"
    sums = known_checksums("multi30k")
    paths = [folder / f"{split}.{lang}.gz" for lang in (task.src_lang, task.tgt_lang)]
    for path in paths:
        if not present(path):
            if not task.download:
                require(path, "Set S2S_DATA_DIR (or task.data_root) to a folder holding multi30k/, "
                        "or set task.download=true to fetch it.")
            download(MULTI30K_URL.format(file=path.name), path, sums.get(path.name))

    def build() -> dict[str, list]:
        src, tgt = (read_lines(p) for p in paths)
        if len(src) != len(tgt):
            raise DataError(
                f"{paths[0]} has {len(src)} lines but {paths[1]} has {len(tgt)}: "
                "the two sides must be line-aligned translations. Re-download or fix the shorter file."
            )
        return {"src": src, "tgt": tgt}

    digests = verified(paths, sums if task.verify_checksums else None, build, "Delete it to download it again")
    key = hashlib.sha256(repr((PARSER_VERSION, digests)).encode()).hexdigest()[:16]
    return RawSplit(key, build, tuple(zip(paths, digests)))


def jsonl_split(task: Any, split: str, data_root: Path) -> RawSplit:
    path = require(
        data_root / task.dataset_dir / f"{split}.jsonl.gz",
        f"Set S2S_DATA_DIR (or task.data_root) to a folder holding {task.dataset_dir}/ "
        "(see docs/design.md, Data, for where to obtain it).",
    )
    sums = known_checksums(task.checksums) if task.checksums and task.verify_checksums else None
    fields = [task.src_field, task.tgt_field]

    def build() -> dict[str, list]:
        # Only evaluation splits carry the extra references: read them when this one has them.
        raw = read_jsonl(path, fields, optional=list(task.ref_fields))
        ref_fields = [r for r in task.ref_fields if r in raw]
        columns = {"src": raw[task.src_field], "tgt": raw[task.tgt_field]}
        if ref_fields:
            columns["refs"] = [
                [t] + [r for field in ref_fields for r in (raw[field][i] if isinstance(raw[field][i], list) else [raw[field][i]])]
                for i, t in enumerate(columns["tgt"])
            ]
        return columns

    (digest,) = verified([path], sums, build, "Replace it with the published file")
    key = hashlib.sha256(repr((PARSER_VERSION, digest, fields, list(task.ref_fields))).encode()).hexdigest()[:16]
    return RawSplit(key, build, ((path, digest),))


def hf_split(task: Any, split: str, cache_dir: Path) -> datasets.Dataset:
    """Upstream split ``split`` of a Hugging Face dataset, its source / target fields as columns src / tgt.

    ``task.hf.path`` is a hub name (``wmt/wmt14``), a local folder of data
    files, or a builder (``json``, ``parquet``, ``csv``) given
    ``task.hf.data_files``. Nested fields are named with dots
    (``translation.de``). The fields are picked by flattening and renaming
    Arrow columns, so no row is copied and the result stays memory-mapped.
    """
    hf = task.hf
    data_files = {name: list(files) for name, files in hf.data_files.items()} if hf.data_files else None
    where = f"Hugging Face dataset {hf.path!r}" + (f" (config {hf.name!r})" if hf.name else "")
    try:
        ds = datasets.load_dataset(hf.path, hf.name, data_files=data_files, split=split,
                                   cache_dir=str(cache_dir / "hf"))
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise DataError(f"{where}, split {split!r}: {e}") from None
    flat = ds.flatten()  # nested fields become columns named "translation.de"
    fields = {task.src_field: "src", task.tgt_field: "tgt"}
    for field in fields:
        if field not in flat.column_names:
            raise DataError(
                f"{where}, split {split!r}: no field {field!r}; its fields are {flat.column_names}. "
                "Set task.src_field / task.tgt_field to two of them."
            )
        feature = flat.features[field]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise DataError(f"{where}, split {split!r}: field {field!r} holds {feature}, not text.")
        missing = flat.data.column(field).null_count
        if missing:
            raise DataError(f"{where}, split {split!r}: field {field!r} is missing in {missing} rows.")
    return flat.select_columns(list(fields)).rename_columns(fields)


def raw_split(task: Any, split: str, data_root: Path, cache_dir: Path) -> tuple[datasets.Dataset, str]:
    """The Arrow dataset for upstream split ``split`` and its content key.

    Built once, saved atomically under the key, and memory-mapped after that.
    """
    if task.loader == "hf":
        ds = hf_split(task, split, cache_dir)
        if not len(ds):
            raise DataError(f"split {split!r} of task {task.name!r} has no examples")
        return ds, ds._fingerprint  # datasets derives it from the files (or hub revision) and the steps above
    loaders = {
        "toy_reverse": lambda: toy_reverse_split(task, split),
        "multi30k": lambda: multi30k_split(task, split, data_root),
        "jsonl": lambda: jsonl_split(task, split, data_root),
    }
    raw = loaders[task.loader]()
    target = cache_dir / "raw" / f"{task.name}-{split}-{raw.key}"
    if not (target / "dataset_info.json").exists():
        remove_stale(target.parent)
        columns = raw.build()
        if not columns["src"]:
            raise DataError(f"split {split!r} of task {task.name!r} has no examples")
        for path, digest in raw.files:
            if sha256_file(path) != digest:
                raise DataError(f"{path} changed while it was read: wait until whatever writes it has finished, "
                                "then run again (nothing was cached from it)")
        publish_dataset(target, lambda into: datasets.Dataset.from_dict(columns).save_to_disk(str(into)))
    return datasets.load_from_disk(str(target)), raw.key


def publish_dataset(target: Path, write: Callable[[Path], None]) -> None:
    """Write a dataset folder named by its content key beside ``target`` and rename it there, unless another
    process (a grid's other job on a fresh cache) has put the same folder there first: theirs stays.

    Replacing it instead (``atomic_path``) would leave, for an instant, no folder where the other process is about
    to read one.
    """
    with owned_temporary(target) as tmp:
        try:
            write(tmp / target.name)
            os.rename(tmp / target.name, target)
        except OSError as e:
            if not (target / "dataset_info.json").exists():
                raise failed_write(target, e) from None  # not the other process's copy: a real failure to write


def iter_text(ds: datasets.Dataset, column: str, batch_size: int = 10_000) -> Iterator[str]:
    """Stream one text column without materialising the whole split."""
    ds = ds.select_columns([column])
    for start in range(0, len(ds), batch_size):
        yield from ds[start : start + batch_size][column]
