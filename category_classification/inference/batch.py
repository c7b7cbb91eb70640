"""Streaming batch prediction: read offers from text/JSONL/CSV files or the LSPC zip, write JSONL, resume.

Memory stays bounded: offers are read lazily and predicted a chunk at a time. A malformed input line is
counted and reported, never fatal. `--resume` counts the complete lines already in the output and skips
that many readable offers, so a killed run continues exactly where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from category_classification.core.cli import UserError

TEXT_FIELDS = ("text", "title", "name")  # tried in this order when --text_field is not given
MAX_REPORTED = 10  # malformed lines printed one by one; the rest only counted


@dataclass
class Record:
    """One input offer: `ref` says where it came from (copied to the output), `text` is None when unusable."""

    ref: dict
    text: str | None = None
    reason: str | None = None


def _text_from_obj(obj, text_field: str | None) -> tuple[str | None, str | None]:
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    fields = (text_field,) if text_field else TEXT_FIELDS
    for f in fields:
        value = obj.get(f)
        if value is None:
            continue
        if not isinstance(value, str):
            return None, f"field {f!r} is not a string"
        if not value.strip():
            return None, "empty text"
        return value, None
    return None, f"no {' / '.join(fields)} field"


def _lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, decoded line) pairs; a line that is not valid UTF-8 comes back as None."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield n, None


def read_txt(path: Path) -> Iterator[Record]:
    for n, line in _lines(path):
        if line is None:
            yield Record({"line": n}, reason="invalid UTF-8")
        elif not line.strip():
            yield Record({"line": n}, reason="empty line")
        else:
            yield Record({"line": n}, line)


def read_jsonl(path: Path, text_field: str | None = None) -> Iterator[Record]:
    for n, line in _lines(path):
        if line is None:
            yield Record({"line": n}, reason="invalid UTF-8")
            continue
        if not line.strip():
            continue  # blank lines in JSONL are layout, not records
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            yield Record({"line": n}, reason="not valid JSON")
            continue
        text, reason = _text_from_obj(obj, text_field)
        ref = {"line": n}
        if isinstance(obj, dict) and "id" in obj:
            ref["id"] = obj["id"]
        yield Record(ref, text, reason)


def read_csv(path: Path, text_field: str | None = None) -> Iterator[Record]:
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        fields = (text_field,) if text_field else TEXT_FIELDS
        column = next((f for f in fields if f in header), None)
        if column is None:
            raise UserError(f"{path}: no {' / '.join(fields)} column in the CSV header ({', '.join(header)})")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record({"line": reader.line_num}, reason=f"bad CSV ({exc})")
                continue
            ref = {"line": reader.line_num}
            if "id" in row and row["id"] is not None:
                ref["id"] = row["id"]
            value = row.get(column)
            if value is None:
                yield Record(ref, reason="too few columns")
            elif "\ufffd" in value:
                yield Record(ref, reason="invalid UTF-8")
            elif not value.strip():
                yield Record(ref, reason="empty text")
            else:
                yield Record(ref, value)


def read_lspc_zip(path: Path, max_description_chars: int | None = None) -> Iterator[Record]:
    """Offers of every *.json.gz member of the LSPC zip, read by the dataset builder's own source
    (data/sources.py), so each text is the one the builder trains on; unusable lines carry a reason."""
    from category_classification.data.sources import SOURCES
    from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS

    chars = DEFAULT_MAX_DESCRIPTION_CHARS if max_description_chars is None else max_description_chars
    for rec in SOURCES["lspc"].records(path, chars):
        yield Record(rec.ref, rec.text, rec.reason)


def _read_lspc_zip_minimal(path: Path) -> Iterator[Record]:
    """The former stand-in reader's name, now the same reader as read_lspc_zip."""
    return read_lspc_zip(path)


def open_records(input_path=None, texts=None, zip_path=None, text_field: str | None = None) -> Iterator[Record]:
    """The records of whichever source was given: --text values, an input file, or the LSPC zip."""
    if texts is not None:
        return (Record({"line": i + 1, "text": t}, t) if t.strip() else Record({"line": i + 1}, reason="empty text")
                for i, t in enumerate(texts))
    if zip_path is not None:
        p = Path(zip_path)
        if not p.is_file():
            raise UserError(f"zip not found: {p}")
        return read_lspc_zip(p)
    p = Path(input_path)
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return read_txt(p)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(p, text_field)
    if suffix in (".csv", ".tsv"):
        return read_csv(p, text_field)
    raise UserError(f"{p}: unsupported input type {suffix!r} (use .txt, .jsonl or .csv)")


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


@dataclass
class Summary:
    read: int = 0
    predicted: int = 0
    resumed_after: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"read": self.read, "predicted": self.predicted, "resumed_after": self.resumed_after,
                "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped),
                "seconds": round(self.seconds, 2),
                "titles_per_s": round(self.predicted / self.seconds, 1) if self.seconds > 0 else None}

    def line(self) -> str:
        d = self.as_dict()
        reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.most_common()) or "none"
        return (f"read {d['read']}, predicted {d['predicted']}, skipped {d['skipped']} ({reasons}), "
                f"resumed after {d['resumed_after']}, {d['seconds']}s, {d['titles_per_s']} titles/s")


def predict_stream(predictor, records: Iterable[Record], out_path, batch_size: int = 64, top_k: int = 1,
                   threshold: float | None = None, resume: bool = False, keep_text: bool = False,
                   chunk_batches: int = 16, total: int | None = None, progress: bool = True,
                   log=None) -> Summary:
    """Predict every usable record and append one JSON line per record to `out_path`.

    Records are predicted `chunk_batches * batch_size` at a time (the predictor sorts each chunk by length,
    so bigger chunks pad less) and written in input order.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    skip = completed_lines(out_path) if resume else 0
    summary.resumed_after = skip
    chunk_size = max(1, batch_size * chunk_batches)
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="line", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    reported = 0
    usable_seen = 0
    if skip:
        log(f"resuming: {skip} offers already in {out_path}")

    def usable():
        nonlocal usable_seen, reported
        for rec in records:
            summary.read += 1
            bar.update(1)
            if rec.text is None:
                summary.skipped[rec.reason or "unusable"] += 1
                if reported < MAX_REPORTED:
                    where = " ".join(f"{k} {v}" for k, v in rec.ref.items() if k in ("member", "line"))
                    log(f"skipped {where}: {rec.reason}")
                    reported += 1
                    if reported == MAX_REPORTED:
                        log("(further malformed lines are only counted)")
                continue
            usable_seen += 1
            if usable_seen <= skip:
                continue
            yield rec

    with open(out_path, "a" if resume else "w", encoding="utf-8") as out:
        it = usable()
        while True:
            chunk = list(islice(it, chunk_size))
            if not chunk:
                break
            results = predictor.predict([r.text for r in chunk], top_k=top_k, threshold=threshold)
            lines = []
            for rec, res in zip(chunk, results):
                row = dict(rec.ref)
                if keep_text:
                    row["text"] = rec.text
                row.update(res)
                lines.append(json.dumps(row, ensure_ascii=False))
            out.write("\n".join(lines) + "\n")
            out.flush()
            summary.predicted += len(chunk)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
