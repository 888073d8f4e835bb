"""Reading corpus files: normalised on read, validated line by line, every fault one line naming file and line.

Normalisation (logged once per file): a UTF-8 byte-order mark at the start
is dropped, and CRLF (Windows) and CR-only (classic Mac) line ends read as
plain line ends. Everything else that a text file of sentences cannot
hold is a ``DataError``: bytes that are not UTF-8, control characters (NUL,
escape, ...; a tab is allowed), empty lines, and in JSON lines any line that
is not one JSON object with the expected non-empty string fields.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from experiments.core.errors import DataError

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# C0 controls but tab and newline, DEL, C1 controls. Text fields of JSON lines may also hold \r.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
FIELD_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def describe_control(char: str) -> str:
    return "a NUL byte" if char == "\0" else f"control character U+{ord(char):04X}"


class TextFile:
    """The lines of a (gzipped) UTF-8 file as ``(number, text)``, normalised and checked for encoding faults."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bom = False
        self.crlf = 0  # lines ended by CR LF
        self.cr = 0  # lines ended by CR alone

    def __iter__(self) -> Iterator[tuple[int, str]]:
        opener = gzip.open if self.path.suffix == ".gz" else open
        number = 0
        try:
            with opener(self.path, "rb") as f:
                for raw in f:
                    if number == 0 and raw.startswith(BOM):
                        raw, self.bom = raw[len(BOM):], True
                    if raw.endswith(b"\r\n"):
                        body, self.crlf = raw[:-2], self.crlf + 1
                    else:
                        body = raw.removesuffix(b"\n")
                    pieces = body.split(b"\r")  # a CR alone ends a line too
                    self.cr += len(pieces) - 1
                    if len(pieces) > 1 and not raw.endswith(b"\n") and pieces[-1] == b"":
                        pieces.pop()  # the CR that ends the file's last line
                    for piece in pieces:
                        number += 1
                        yield number, self.decode(piece, number)
        except FileNotFoundError:
            raise
        except IsADirectoryError:
            raise DataError(f"{self.path} is a folder, not a data file: point the task at the file itself") from None
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{self.path}, after line {number}: cannot be read ({e}); the file is truncated or "
                            "damaged: replace it with a complete copy") from None
        self.report()

    def decode(self, raw: bytes, number: int) -> str:
        where = f"{self.path}, line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            utf16 = " It looks like UTF-16 (it starts with a UTF-16 byte-order mark)." \
                if number == 1 and raw.startswith(UTF16_BOMS) else ""
            raise DataError(f"{where}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r}).{utf16} "
                            "Re-encode the file as UTF-8 (or re-download it).") from None
        bad = CONTROL.search(text)
        if bad:
            raise DataError(f"{where}, column {bad.start() + 1}: {describe_control(bad.group())}, which text "
                            "cannot hold (a binary or UTF-16 file?). Remove it, or re-save the file as UTF-8 text.")
        return text

    def report(self) -> None:
        notes = (["dropped a UTF-8 byte-order mark"] if self.bom else []) \
            + ([f"read {self.crlf} CRLF line ends as newlines"] if self.crlf else []) \
            + ([f"read {self.cr} CR-only line ends as newlines"] if self.cr else [])
        if notes:
            log.info("%s: %s", self.path, "; ".join(notes))


def read_lines(path: Path) -> list[str]:
    """Lines of a (gzipped) UTF-8 text file, each checked to be valid and non-empty."""
    lines = []
    for number, line in TextFile(path):
        if not line.strip():
            raise DataError(f"{path}, line {number}: empty line. Every line must hold one sentence; "
                            "remove the line from both sides of the pair.")
        lines.append(line)
    if not lines:
        raise DataError(f"{path}: the file is empty; it must hold one sentence a line")
    return lines


def preview(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_field(where: str, name: str, value: Any) -> None:
    """A text field: a non-empty string, or a non-empty list of them (several references)."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, str):
            raise DataError(f"{where}: field {name!r} holds a JSON {JSON_KINDS.get(type(v), type(v).__name__)} "
                            f"({preview(v)}); expected a string (or a list of strings)")
        bad = FIELD_CONTROL.search(v)
        if bad:
            raise DataError(f"{where}: field {name!r} holds {describe_control(bad.group())} at character "
                            f"{bad.start() + 1}; remove it")
    if not values or not all(v.strip() for v in values):
        raise DataError(f"{where}: field {name!r} is empty. Remove the record or fill the field.")


def read_jsonl(path: Path, fields: Sequence[str], optional: Sequence[str] = ()) -> dict[str, list]:
    """Named fields of a (gzipped) JSON-lines file, one record per line.

    ``optional`` fields are read when the first record has them (evaluation
    splits carry extra references, training splits do not); every later
    record must then have them too.
    """
    wanted = list(fields)
    columns: dict[str, list] = {}
    shape = "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"
    for number, line in TextFile(path):
        where = f"{path}, line {number}"
        if not line.strip():
            raise DataError(f"{where}: empty line; each line must hold one JSON object like {shape}")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must hold one "
                            f"JSON object like {shape}") from None
        if not isinstance(record, dict):
            kind = JSON_KINDS.get(type(record), type(record).__name__)
            raise DataError(f"{where}: holds a JSON {kind} ({preview(record)}), not an object; each line must "
                            f"hold one JSON object like {shape}")
        if number == 1:
            wanted += [f for f in optional if f in record]
            columns = {f: [] for f in wanted}
        missing = [name for name in wanted if name not in record]
        if missing:
            raise DataError(f"{where}: no field {missing[0]!r}; the record has {sorted(record)}. "
                            "Set the task's field names to ones the data has.")
        for name in wanted:
            check_field(where, name, record[name])
            columns[name].append(record[name])
    if not columns:
        raise DataError(f"{path}: the file holds no records")
    return columns
