"""Streaming batch prediction: read offers from text/JSONL/CSV files or the LSPC zip, write JSONL, resume.

Every input record gets one output line, in input order: its prediction, or {"error": reason, "label": null}
when it is unusable (bad JSON, bad UTF-8, blank, too long), so outputs stay aligned with inputs and one bad
record never fails its neighbours. Output goes to OUT.partial beside OUT and is renamed into place when
complete; `--resume` keeps the complete lines of OUT.partial and continues after them.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from category_classification.core.cli import UserError
# A line (or CSV record) longer than MAX_LINE_BYTES is reported and skipped without being held whole (a 10 MB
# line once took 1.6 GB); shorter ones are cut to MAX_TEXT_CHARS by the text rule. One limit for files and zips.
from category_classification.data.lspc import MAX_LINE_BYTES
# An offer's fields are picked by the dataset builder's own rule (text.offer_field, over these spellings): the
# breadcrumb is read only for models trained with it, the URL only for fielded models (the URL's words)
from category_classification.data.text import (BREADCRUMB_FIELDS, DEFAULT_MAX_DESCRIPTION_CHARS, DESCRIPTION_FIELDS,
                                               TITLE_FIELDS, URL_FIELDS, clean, encodable, id_field, literal_value,
                                               model_text, offer_field, offer_text, text_problem)

# tried in this order when --text_field is not given: a ready-made model text, else a title (which gets the
# offer's description and, for a model trained with them, breadcrumb and URL added, as in training)
TEXT_FIELDS = ("text",) + TITLE_FIELDS
_OTHER_FIELDS = DESCRIPTION_FIELDS + BREADCRUMB_FIELDS + URL_FIELDS
# A CSV cannot hold a null: a table written as text spells a missing value so (pandas `astype(str)` writes
# "nan", `str(None)` "None", SQL exports NULL). Such a cell is empty, as the offer's JSON line has null there:
# a "nan" title is a blank text, a "nan" description is no description.
MISSING_CELLS = frozenset({"nan", "NaN", "-nan", "None", "none", "null", "NULL", "<NA>"})
MAX_REPORTED = 10  # bad records printed one by one; the rest only counted
BELOW_THRESHOLD = "(below threshold)"  # the label-count key of predictions whose label is null


@dataclass
class Record:
    """One input offer: `ref` says where it came from (copied to the output), `text` is None when unusable."""

    ref: dict
    text: str | None = None
    reason: str | None = None


def _main_field(obj: dict, fields) -> tuple[str | None, bool, str | None]:
    """(value, is_title, problem) of the field an offer's text is made from: the first of `fields` with
    visible text by the builder's rule (text.offer_field: blank and non-string values count as absent), a
    ready-made text before a title. Without one: the first string value given (blank: refused as a blank text,
    whatever the other fields hold; no trainer learns from an offer without a title), else the problem."""
    # `text`, or a --text_field: a model text as given (as --text and serve.py take one); offer fields are
    # read by the builder's rule, an N-Triples literal ('"Nike Air"@en') unwrapped as the LSPC reader does
    ready = offer_field(obj, [f for f in fields if f not in TITLE_FIELDS], literals=False)
    if ready:
        return ready, False, None
    title = offer_field(obj, [f for f in fields if f in TITLE_FIELDS])
    if title:
        return title, True, None
    name = next((f for f in fields if obj.get(f) is not None), None)
    if name is None:
        return None, False, f"no {' / '.join(fields)} field"
    if not isinstance(obj[name], str):
        return None, False, f"field {name!r} is not a string"
    return literal_value(obj[name]) if name in TITLE_FIELDS else obj[name], False, None  # '"  "@en' is blank


def _offer_text(obj: dict, title: str, max_description_chars: int, breadcrumb: bool, fielded: bool) -> str:
    """A title's model text: its description (and, with `breadcrumb`, the shop's breadcrumb) added with
    `offer_text`, each field picked by the builder's rule; for a `fielded` model the breadcrumb and URL go
    behind their markers (`fielded_text`, as its trainer does)."""
    description = offer_field(obj, DESCRIPTION_FIELDS)
    crumb = offer_field(obj, BREADCRUMB_FIELDS) if breadcrumb or fielded else ""
    if fielded:
        from category_classification.models.fielded import fielded_text

        return fielded_text(title, description, crumb, offer_field(obj, URL_FIELDS), max_description_chars)
    # the title alone is left as given: the predictor cleans every text (model_text), as offer_text would
    return offer_text(title, description, max_description_chars, crumb) if description or crumb else title


def _text_from_obj(obj, text_field: str | None, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
                   breadcrumb: bool = False, fielded: bool = False) -> tuple[str | None, str | None]:
    """The model text of one JSON record (`_main_field`, `_offer_text`): the text the builder trains on."""
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    value, is_title, problem = _main_field(obj, (text_field,) if text_field else TEXT_FIELDS)
    if not is_title:
        return value, problem
    return _offer_text(obj, value, max_description_chars, breadcrumb, fielded), None


def _lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, decoded line, problem) triples: a UTF-8 byte-order mark on line 1 is dropped, a line
    that is not valid UTF-8 or is over MAX_LINE_BYTES comes back as None with the reason."""
    with open(path, "rb") as fh:
        n = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            n += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # drop the rest of the line a block at a time
                    raw = fh.readline(1 << 20)
                yield n, None, f"line longer than {MAX_LINE_BYTES >> 20} MB"
                continue
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n"), None
            except UnicodeDecodeError:
                yield n, None, "invalid UTF-8"


def read_txt(path: Path) -> Iterator[Record]:
    for n, line, problem in _lines(path):
        yield Record({"line": n}, line, problem)


def read_jsonl(path: Path, text_field: str | None = None, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
               breadcrumb: bool = False, fielded: bool = False) -> Iterator[Record]:
    for n, line, problem in _lines(path):
        ref = {"line": n}
        if line is None:
            yield Record(ref, reason=problem)
            continue
        if not line.strip():
            yield Record(ref, reason="empty line")
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            yield Record(ref, reason="not valid JSON")
            continue
        except RecursionError:
            yield Record(ref, reason="JSON nested too deep")
            continue
        yield _json_record(obj, ref, text_field, max_description_chars, breadcrumb, fielded)


def _json_record(obj, ref: dict, text_field, max_description_chars: int, breadcrumb: bool, fielded: bool) -> Record:
    text, reason = _text_from_obj(obj, text_field, max_description_chars, breadcrumb, fielded)
    key = id_field(obj) if isinstance(obj, dict) else None
    if key is not None:
        ref["id"] = obj[key]
    return Record(ref, text, reason)


def _starts_an_array(path: Path) -> bool:
    """True when the file's first character (after a byte-order mark and whitespace) opens a JSON array."""
    with open(path, "rb") as fh:
        first = True
        while block := fh.read(1 << 16):  # leading whitespace of any length
            if first and block.startswith(codecs.BOM_UTF8):
                block = block[len(codecs.BOM_UTF8):]
            first = False
            if block.strip():
                return block.lstrip()[:1] == b"["
    return False


def read_json_array(path: Path, text_field: str | None = None,
                    max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, breadcrumb: bool = False,
                    fielded: bool = False) -> Iterator[Record]:
    """The offers of a file that is one JSON array (as the MWPD files may be; the builder reads them), parsed
    whole, so at most MAX_ARRAY_BYTES (larger: a user error, before any work); `line` is the offer's position
    in the array. A file that does not parse as an array is read as JSON lines, each bad line reported."""
    from category_classification.data.mwpd import MAX_ARRAY_BYTES

    if path.stat().st_size > MAX_ARRAY_BYTES:
        raise UserError(f"{path}: a JSON array of more than {MAX_ARRAY_BYTES >> 20} MB; write it as JSON lines "
                        "(one offer per line), which is read at any size")
    try:
        items = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        items = None
    if not isinstance(items, list):
        return read_jsonl(path, text_field, max_description_chars, breadcrumb, fielded)
    return (_json_record(obj, {"line": n}, text_field, max_description_chars, breadcrumb, fielded)
            for n, obj in enumerate(items, 1))


class _RecordTooLong(Exception):
    """A CSV record over its limits: one physical line over MAX_LINE_BYTES, or a record spanning more than
    MAX_RECORD_LINES lines or MAX_RECORD_BYTES (a quote opened and not closed in that window is taken for a
    stray one: each failure then re-reads at most that window, so time stays linear in the file)."""


MAX_RECORD_LINES = 256  # lines of one record (a quoted field with newlines): a description, not a book
MAX_RECORD_BYTES = 1 << 20


class _CsvLines:
    """The physical lines of a CSV file for csv.reader, numbered, remembering the lines of the record being
    read (`record`) so a record that fails can be reported at its first line and its other lines read again
    (`replay`). A record over its limits raises _RecordTooLong, so memory stays bounded."""

    def __init__(self, fh):
        from collections import deque

        self.fh, self.n, self.replay = fh, 0, deque()
        self.record: list[tuple[int, str]] = []
        self.size = 0

    def __iter__(self):
        return self

    def next_record(self) -> list[tuple[int, str]]:
        done, self.record, self.size = self.record, [], 0
        return done

    def __next__(self) -> str:
        if self.replay:
            n, line = self.replay.popleft()
        else:
            line = self.fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                raise StopIteration
            self.n += 1
            n = self.n
            if n == 1 and line.startswith("\ufeff"):  # a byte-order mark is not part of the header
                line = line[1:]
            if len(line) > MAX_LINE_BYTES and not line.endswith(("\n", "\r")):  # drop the rest of the line
                while (more := self.fh.readline(1 << 20)) and not more.endswith(("\n", "\r")):
                    pass
                self.record.append((n, ""))
                raise _RecordTooLong()
        self.record.append((n, line))
        self.size += len(line)
        if len(self.record) > 1 and (len(self.record) > MAX_RECORD_LINES or self.size > MAX_RECORD_BYTES):
            raise _RecordTooLong()
        return line


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(first line number, cells, problem) of each record of a CSV file, by the csv module's own rules (a
    quote opens a quoted field only at its start: `Monitor 27" LED` is one plain field; any line ending).
    Blank lines are not records. A record that does not parse (a quote that never closes, text after a
    closing quote) or outgrows its window (_RecordTooLong) is reported at its first line and reading starts
    again on its next line, so a stray quote costs one line, never the rest of the file; a one-line record that only
    strict parsing refuses (`"abc"def`) is read leniently, as before."""
    quoting = csv.QUOTE_MINIMAL  # also for TSV: pandas and spreadsheets quote its fields the same way
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES + 1))
    with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        lines = _CsvLines(fh)
        while True:
            reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
            try:
                for cells in reader:
                    record = lines.next_record()
                    if cells:  # a blank line is no record (a row of empty cells is: its title is blank)
                        yield record[0][0], cells, None
                return
            except (csv.Error, _RecordTooLong) as exc:
                record = lines.next_record()
                if not record:
                    return
                first = record[0][0]
                if isinstance(exc, csv.Error) and len(record) == 1:
                    try:  # one line only: no other record can be swallowed by reading it leniently
                        yield first, next(csv.reader([record[0][1]], delimiter=delimiter, quoting=quoting), []), None
                        continue
                    except csv.Error:
                        pass
                lines.replay.extendleft(reversed(record[1:]))
                yield first, None, ("record too long (a quote that never closes?)" if isinstance(exc, _RecordTooLong)
                                    else f"bad CSV ({exc})")


def read_csv(path: Path, text_field: str | None = None, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
             breadcrumb: bool = False, fielded: bool = False) -> Iterator[Record]:
    """The records of a CSV (or, by its suffix, tab-separated) file with a header row. The header is read
    now, so a file without a text column is refused before any work; the records as they are iterated."""
    delimiter = "\t" if Path(path).suffix.lower() == ".tsv" else ","
    records = _csv_records(path, delimiter)
    header = next(records, (0, None, None))[1] or []
    fields = (text_field,) if text_field else TEXT_FIELDS
    if not any(f in header for f in fields):
        shown = ", ".join(clean(h, 80) for h in header[:20]) or "empty or unreadable"  # one line
        raise UserError(f"{path}: no {' / '.join(fields)} column in the header row ({shown})")
    at = {name: i for i, name in enumerate(header)}  # a repeated name: its last column, as csv.DictReader
    return _csv_rows(records, at, fields, max_description_chars, breadcrumb, fielded)


def _csv_rows(records, at: dict, fields, max_description_chars: int, breadcrumb: bool = False,
              fielded: bool = False) -> Iterator[Record]:
    """Each row's model text by the JSON records' rule (`_main_field`, `_offer_text`), row by row: a blank
    title cell never hides a filled one. The text or title cell picked holding bad bytes (lone surrogates)
    makes the row `invalid UTF-8`; another cell with bad bytes is left out."""
    for line, cells, problem in records:
        ref = {"line": line}
        if cells is None:
            yield Record(ref, reason=problem)
            continue
        row = {name: "" if cells[i].strip() in MISSING_CELLS else cells[i] for name, i in at.items() if i < len(cells)}
        key = id_field(row)
        if key is not None:
            ref["id"] = encodable(row[key])
        value, is_title, _ = _main_field(row, fields)
        if value is None:
            yield Record(ref, reason="too few columns")  # the header names a text column, this row lacks it
        elif encodable(value) != value:
            yield Record(ref, reason="invalid UTF-8")
        elif not is_title:
            yield Record(ref, value)
        else:
            usable = {k: row[k] for k in _OTHER_FIELDS if k in row and encodable(row[k]) == row[k]}
            yield Record(ref, _offer_text(usable, value, max_description_chars, breadcrumb, fielded))


def read_lspc_zip(path: Path, max_description_chars: int | None = None, members=None) -> Iterator[Record]:
    """Offers of every *.json.gz member of the LSPC zip (or of `members` only, in that order), read by the
    dataset builder's own source (data/sources.py), so each text is the one the builder trains on; unusable
    lines carry a reason."""
    from category_classification.data.sources import SOURCES
    chars = DEFAULT_MAX_DESCRIPTION_CHARS if max_description_chars is None else max_description_chars
    for rec in SOURCES["lspc"].records(path, chars, members=members):
        yield Record(rec.ref, rec.text, rec.reason)


def _read_lspc_zip_minimal(path: Path) -> Iterator[Record]:
    """The former stand-in reader's name, now the same reader as read_lspc_zip."""
    return read_lspc_zip(path)


def open_records(input_path=None, texts=None, zip_path=None, text_field: str | None = None,
                 max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, members=None,
                 breadcrumb: bool = False, fielded: bool = False) -> Iterator[Record]:
    """The records of whichever source was given: --text values, an input file, or the LSPC zip (all of its
    members, or the listed `members`). Texts built from title + description cut the description to
    `max_description_chars` and add a breadcrumb field when `breadcrumb`, the breadcrumb and URL fields
    behind their markers when `fielded`: the model's training settings (core/artifacts.text_settings)."""
    if texts is not None:
        return (Record({"line": i + 1, "text": model_text(t)}, t) for i, t in enumerate(texts))
    if zip_path is not None:
        p = Path(zip_path)
        if not p.is_file():
            raise UserError(f"zip not found: {p}")
        from category_classification.data.lspc import list_members

        # the member list now: a file that is not a zip, or holds no members, is refused before any work
        return read_lspc_zip(p, max_description_chars, members=list_members(p) if members is None else members)
    p = Path(input_path)
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return read_txt(p)
    if suffix in (".jsonl", ".json", ".ndjson"):
        # one JSON array: a .json file only (a JSON-lines file may start with a stray array line)
        reader = read_json_array if suffix == ".json" and _starts_an_array(p) else read_jsonl
        return reader(p, text_field, max_description_chars, breadcrumb, fielded)
    if suffix in (".csv", ".tsv"):
        return read_csv(p, text_field, max_description_chars, breadcrumb, fielded)
    raise UserError(f"{p}: unsupported input type {suffix!r} (use .txt, .jsonl, .csv or .tsv)")


def partial_path(out_path) -> Path:
    """Where a run writes until it is complete: OUT.partial, beside OUT (same file system, so the rename is atomic)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".partial")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # symlinks, hard links and relative spellings alike
    return a.resolve() == b.resolve()


def _written_by_us(path: Path) -> bool:
    """True for an empty file or one whose first line is an output line of ours: where the record came from
    (`line` or `member`), `label`, and `score` or `error`. A labelled dataset has `label` too, so that
    alone is not enough; anything else is the user's."""
    try:
        if path.stat().st_size == 0:
            return True
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
        obj = json.loads(first)
    except (OSError, ValueError, RecursionError):
        return False
    return (isinstance(obj, dict) and "label" in obj and ("line" in obj or "member" in obj)
            and ("score" in obj or "error" in obj))


def _existing_dir(path: Path) -> Path:
    """The nearest folder of `path` that exists (where a missing --out folder would be created)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        raise UserError(f"cannot write --out under {path}: it is a file, not a folder")
    return path


def check_output_path(out_path, sources: Iterable, overwrite: bool = False) -> None:
    """Refuse, before any work, an --out that is a folder, is (or would overwrite) an input, cannot be written,
    or is an existing file that is not an earlier prediction output (unless `overwrite`)."""
    out = Path(out_path)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; name a file, e.g. {out / 'predictions.jsonl'}")
    for src in sources:
        if src is not None and (_same_file(out, Path(src)) or _same_file(partial_path(out), Path(src))):
            raise UserError(f"--out {out} is the input {src}: writing it would destroy the input; choose another --out")
    for path, what in ((out, "--out"), (partial_path(out), "the unfinished output")):
        if path.exists() and not path.is_file():  # a device, a pipe, a folder: renaming over it destroys it
            raise UserError(f"{what} {path} exists and is not a regular file; choose another --out")
    if out.is_file() and not overwrite and not _written_by_us(out):
        raise UserError(f"--out {out} exists and is not a predictions file of predict.py; "
                        f"choose another --out, or pass --overwrite to replace it")
    if partial_path(out).is_file() and not _written_by_us(partial_path(out)):
        raise UserError(f"{partial_path(out)} (where this run would write until it is done) exists and is not "
                        f"an unfinished output of predict.py; move it away or choose another --out")
    try:  # folders are created when the run writes, not here: a refused run leaves none behind
        with tempfile.TemporaryFile(dir=_existing_dir(out.parent)):  # the one reliable test (root ignores modes)
            pass
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None


def count_lines(path) -> int | None:
    """Lines in a file, read in binary blocks (cheap next to prediction); None for a zip."""
    p = Path(path)
    n = 0
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def completed_lines(out_path: Path) -> int:
    """Complete lines already in the output; a partly written last line (a killed run) is cut off."""
    if not out_path.is_file():
        return 0
    with open(out_path, "rb+") as fh:
        data_end = fh.seek(0, io.SEEK_END)
        if data_end == 0:
            return 0
        # find the last newline from the end without reading the whole file
        pos, block = data_end, 1 << 16
        last_nl = -1
        while pos > 0 and last_nl < 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                last_nl = start + i
            pos = start
        keep = last_nl + 1
        if keep != data_end:
            fh.truncate(keep)
    n = 0
    with open(out_path, "rb") as fh:
        for block_data in iter(lambda: fh.read(1 << 20), b""):
            n += block_data.count(b"\n")
    return n


def keep_first_lines(path: Path, n: int) -> None:
    """Cut `path` after its first `n` lines."""
    offset = 0
    with open(path, "rb+") as fh:
        for i, line in enumerate(fh):
            if i == n:
                break
            offset += len(line)
        fh.truncate(offset)


@dataclass
class Summary:
    read: int = 0
    predicted: int = 0
    resumed_after: int = 0
    skipped: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def count(self, row: dict) -> None:
        """Count one output row: an error by its reason, a prediction by its label (out-of-scope classes too)."""
        self.read += 1
        if "error" in row:
            self.skipped[row["error"]] += 1
        else:
            self.predicted += 1
            self.labels[row["label"] if row["label"] is not None else BELOW_THRESHOLD] += 1

    def as_dict(self) -> dict:
        return {"read": self.read, "predicted": self.predicted, "resumed_after": self.resumed_after,
                "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped),
                "labels": dict(self.labels.most_common()), "seconds": round(self.seconds, 2),
                "titles_per_s": round(self.predicted / self.seconds, 1) if self.seconds > 0 else None}

    def line(self) -> str:
        d = self.as_dict()
        reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.most_common()) or "none"
        labels = ", ".join(f"{k} {v}" for k, v in self.labels.most_common()) or "none"
        return (f"read {d['read']}, predicted {d['predicted']}, skipped {d['skipped']} ({reasons}), "
                f"resumed after {d['resumed_after']}, {d['seconds']}s, {d['titles_per_s']} titles/s; "
                f"labels: {labels}")


def _predict_texts(predictor, texts: list[str], top_k: int, threshold) -> list[dict]:
    """Predictions for one chunk; if the chunk fails, each text alone, so a text the model cannot take
    fails only itself. When every text fails on its own the model is broken, not a record: raise."""
    try:
        return predictor.predict(texts, top_k=top_k, threshold=threshold)
    except Exception as chunk_exc:  # noqa: BLE001 (isolated below, re-raised when systematic)
        results = []
        for t in texts:
            try:
                results.append(predictor.predict([t], top_k=top_k, threshold=threshold)[0])
            except Exception as exc:  # noqa: BLE001
                results.append({"error": f"model failed on this text ({type(exc).__name__})", "label": None})
        if len(texts) > 1 and all("error" in r for r in results):
            raise chunk_exc
        return results


def _safe_value(v, depth: int = 0):
    """An input value (an id) as output JSON can hold it: a lone surrogate replaced, a number JSON has no
    literal for (1e999 reads as inf) as its text, so strict JSON parsers can read every output line."""
    if isinstance(v, str):
        return encodable(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, dict)):
        if depth > 100:  # a deeply nested id: its text, cut (too deep even for that: a note instead)
            try:
                return encodable(json.dumps(v, default=str)[:200])
            except RecursionError:
                return "(an id nested too deep to show)"
        if isinstance(v, list):
            return [_safe_value(x, depth + 1) for x in v]
        return {encodable(str(k)): _safe_value(x, depth + 1) for k, x in v.items()}
    return v


def _safe_ref(ref: dict) -> dict:
    return {k: _safe_value(v) for k, v in ref.items()}


def chunks(items: Iterable, size: int, member_of=lambda rec: rec.ref.get("member")) -> Iterator[list]:
    """`size` items at a time, and a new chunk at each new zip member: a rank of a sharded --zip run starts
    at a member, so it predicts the very chunks (padding, float rounding) of a single process."""
    chunk, member = [], None
    for item in items:
        m = member_of(item)
        if chunk and (len(chunk) == size or m != member):
            yield chunk
            chunk = []
        chunk.append(item)
        member = m
    if chunk:
        yield chunk


def predicted_rows(predictor, records: Iterable[Record], top_k: int = 1, threshold: float | None = None,
                   keep_text: bool = False, chunk_size: int = 1024) -> Iterator[list[dict]]:
    """Output rows, a chunk at a time, one per record in input order. Every text passes the one rule of
    data/text.py (`text_problem`, `model_text`), so the model never sees a blank or enormous text."""
    for chunk in chunks(records, chunk_size):
        rows, todo = [], []
        for rec in chunk:
            row = _safe_ref(rec.ref)
            reason = rec.reason or (text_problem(rec.text) if rec.text is not None else "no text")
            if reason:
                row.update({"error": reason, "label": None})
            else:
                todo.append((row, model_text(rec.text)))
            rows.append(row)
        texts = [t for _, t in todo]
        for (row, text), res in zip(todo, _predict_texts(predictor, texts, top_k, threshold) if texts else []):
            if keep_text:
                row["text"] = text
            row.update(res)
        yield rows


def _resume_point(partial: Path, chunk_size: int) -> int:
    """Lines of OUT.partial in whole chunks (as `chunks` cuts them); a last chunk shorter than `chunk_size`
    may be a kill's cut write, so it is redone and every batch stays the one an uninterrupted run makes."""
    if not completed_lines(partial):
        return 0
    sizes = [len(c) for c in chunks(_output_rows(partial), chunk_size, lambda row: row.get("member"))]
    return sum(sizes) - (sizes[-1] if sizes[-1] < chunk_size else 0)


def _output_rows(partial: Path) -> Iterator[dict]:
    """The rows of an earlier run's OUT.partial; a line that is not one of ours stops the resume."""
    with open(partial, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict) or "label" not in row:
                raise UserError(f"{partial} line {n} is not an output line of predict.py, so the run cannot "
                                f"resume from it; move the file away and start again without --resume")
            yield row


def _recount(partial: Path, summary: Summary) -> None:
    """Count the rows a killed run already wrote, so a resumed run's summary covers the whole output."""
    for row in _output_rows(partial):
        summary.count(row)


@contextlib.contextmanager
def _writing(path: Path):
    """A failed write (a full disk, a file system gone read-only) as one line; what was written stays for
    --resume."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; fix that (free space, permissions), "
                        f"then run again with --resume to continue where it stopped") from None


def _output_line(row: dict) -> str:
    """One output line; a row JSON cannot hold (a model's NaN score) becomes that record's error line, so
    every line stays strict JSON."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        keep = {k: row[k] for k in ("member", "line", "id") if k in row}
        row.clear()
        row.update(keep, error="the model gave a score that is not a number", label=None)
        return json.dumps(row, ensure_ascii=False) + "\n"


def predict_stream(predictor, records: Iterable[Record], out_path, batch_size: int = 64, top_k: int = 1,
                   threshold: float | None = None, resume: bool = False, keep_text: bool = False,
                   chunk_batches: int = 16, total: int | None = None, progress: bool = True,
                   log=None) -> Summary:
    """Predict every record into OUT.partial (one JSON line each, input order), then rename it to `out_path`.

    Records are predicted `batch_size * chunk_batches` at a time (every record fills a chunk, bad ones too;
    a new zip member starts a new chunk, see `chunks`).
    With `resume`, the whole chunks of an earlier run's OUT.partial are kept and that many records are skipped,
    so the finished output is byte-identical to an uninterrupted run's with the same --batch_size.
    """
    from tqdm import tqdm

    out_path, partial = Path(out_path), partial_path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    chunk_size = max(1, batch_size * chunk_batches)
    skip = _resume_point(partial, chunk_size) if resume else 0
    if resume and partial.is_file():  # torch models round floats by batch composition: redo a cut chunk whole
        keep_first_lines(partial, skip)
    if skip:
        _recount(partial, summary)
        log(f"resuming: {skip} records already in {partial}")
    elif resume:
        log(f"nothing to resume in {partial}: starting from the first record")
    summary.resumed_after = skip
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=skip, unit="line", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    rows_it = predicted_rows(predictor, islice(records, skip, None), top_k, threshold, keep_text, chunk_size)
    with _writing(partial):
        out = open(partial, "ab" if skip else "wb")
    with out:
        for rows in rows_it:
            lines = "".join(_output_line(r) for r in rows)
            for row in rows:
                summary.count(row)
                if "error" in row and sum(summary.skipped.values()) <= MAX_REPORTED:
                    where = " ".join(f"{k} {v}" for k, v in row.items() if k in ("member", "line"))
                    log(f"skipped {where}: {row['error']}" + (" (further ones only counted)"
                        if sum(summary.skipped.values()) == MAX_REPORTED else ""))
            with _writing(partial):
                out.write(lines.encode("utf-8"))
                out.flush()
            bar.update(len(rows))
        with _writing(partial):
            os.fsync(out.fileno())
    with _writing(out_path):
        os.replace(partial, out_path)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
