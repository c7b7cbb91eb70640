"""Streaming batch prediction: read offers from text/JSONL/CSV files or the LSPC zip, write JSONL, resume.

Every input record gets one output line, in input order: its prediction, or {"error": reason, "label": null}
when it is unusable (bad JSON, bad UTF-8, blank, too long), so outputs stay aligned with inputs and one bad
record never fails its neighbours. Output goes to OUT.partial beside OUT and is renamed into place when
complete; `--resume` keeps the complete lines of OUT.partial and continues after them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
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
from category_classification.data.text import (DEFAULT_MAX_DESCRIPTION_CHARS, encodable, model_text, offer_text,
                                               text_problem)

TEXT_FIELDS = ("text", "title", "name", "Title", "Name")  # tried in this order when --text_field is not given
TITLE_FIELDS = ("title", "name", "Title", "Name")  # these get the offer's description added, as in training
DESCRIPTION_FIELDS = ("description", "Description")
BREADCRUMB_FIELDS = ("breadcrumb", "CategoryText")  # read only for models trained with the breadcrumb
# A line longer than this is reported and skipped without being held whole (a 10 MB line once took 1.6 GB);
# shorter ones are cut to MAX_TEXT_CHARS by the text rule.
MAX_LINE_BYTES = 4 << 20
MAX_REPORTED = 10  # bad records printed one by one; the rest only counted
BELOW_THRESHOLD = "(below threshold)"  # the label-count key of predictions whose label is null


@dataclass
class Record:
    """One input offer: `ref` says where it came from (copied to the output), `text` is None when unusable."""

    ref: dict
    text: str | None = None
    reason: str | None = None


def _first_str(obj: dict, fields) -> str | None:
    return next((obj[f] for f in fields if isinstance(obj.get(f), str)), None)


def _text_from_obj(obj, text_field: str | None, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
                   breadcrumb: bool = False) -> tuple[str | None, str | None]:
    """The model text of one JSON record: a title gets its description (and, with `breadcrumb`, the shop's
    breadcrumb) added with `offer_text`, as the builder does."""
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    fields = (text_field,) if text_field else TEXT_FIELDS
    for f in fields:
        value = obj.get(f)
        if value is None:
            continue
        if not isinstance(value, str):
            return None, f"field {f!r} is not a string"
        if f in TITLE_FIELDS:
            crumb = _first_str(obj, BREADCRUMB_FIELDS) if breadcrumb else None
            return offer_text(value, _first_str(obj, DESCRIPTION_FIELDS) or "", max_description_chars, crumb), None
        return value, None
    return None, f"no {' / '.join(fields)} field"


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


def read_jsonl(path: Path, text_field: str | None = None,
               max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, breadcrumb: bool = False) -> Iterator[Record]:
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
        text, reason = _text_from_obj(obj, text_field, max_description_chars, breadcrumb)
        if isinstance(obj, dict) and "id" in obj:
            ref["id"] = obj["id"]
        yield Record(ref, text, reason)


def read_csv(path: Path, text_field: str | None = None,
             max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, breadcrumb: bool = False) -> Iterator[Record]:
    # utf-8-sig drops a byte-order mark; surrogateescape keeps bad bytes visible as lone surrogates
    with open(path, "r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        fields = (text_field,) if text_field else TEXT_FIELDS
        column = next((f for f in fields if f in header), None)
        if column is None:
            raise UserError(f"{path}: no {' / '.join(fields)} column in the CSV header ({', '.join(header)})")
        description = next((d for d in DESCRIPTION_FIELDS if d in header), None) if column in TITLE_FIELDS else None
        crumb_column = next((c for c in BREADCRUMB_FIELDS if c in header), None) if column in TITLE_FIELDS and breadcrumb else None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record({"line": reader.line_num}, reason=f"bad CSV ({exc})")
                continue
            ref = {"line": reader.line_num}
            if row.get("id") is not None:
                ref["id"] = row["id"]
            value = row.get(column)
            if value is None:
                yield Record(ref, reason="too few columns")
            elif encodable(value) != value:
                yield Record(ref, reason="invalid UTF-8")
            else:
                text = _csv_text(value, row, description, crumb_column, max_description_chars)
                yield Record(ref, text)


def _csv_text(title: str, row: dict, description: str | None, crumb_column: str | None,
              max_description_chars: int) -> str:
    """A CSV row's model text: the title with its description (and breadcrumb) added as in training; a cell
    with bad bytes (lone surrogates) is left out."""
    desc, crumb = (row.get(c) if c else None for c in (description, crumb_column))
    desc, crumb = (v if v and encodable(v) == v else None for v in (desc, crumb))
    return offer_text(title, desc or "", max_description_chars, crumb) if desc or crumb else title


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
                 breadcrumb: bool = False) -> Iterator[Record]:
    """The records of whichever source was given: --text values, an input file, or the LSPC zip (all of its
    members, or the listed `members`). Texts built from title + description cut the description to
    `max_description_chars` and add a breadcrumb field when `breadcrumb`: the model's training settings
    (core/artifacts.text_settings)."""
    if texts is not None:
        return (Record({"line": i + 1, "text": model_text(t)}, t) for i, t in enumerate(texts))
    if zip_path is not None:
        p = Path(zip_path)
        if not p.is_file():
            raise UserError(f"zip not found: {p}")
        return read_lspc_zip(p, max_description_chars, members=members)
    p = Path(input_path)
    if not p.is_file():
        raise UserError(f"input file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return read_txt(p)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(p, text_field, max_description_chars, breadcrumb)
    if suffix in (".csv", ".tsv"):
        return read_csv(p, text_field, max_description_chars, breadcrumb)
    raise UserError(f"{p}: unsupported input type {suffix!r} (use .txt, .jsonl or .csv)")


def partial_path(out_path) -> Path:
    """Where a run writes until it is complete: OUT.partial, beside OUT (same file system, so the rename is atomic)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".partial")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # symlinks, hard links and relative spellings alike
    return a.resolve() == b.resolve()


def _written_by_us(path: Path) -> bool:
    """True for an empty file or one whose first line is a prediction line of ours (a dict with `label`)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
        return not first.strip() or (isinstance(obj := json.loads(first), dict) and "label" in obj)
    except (OSError, ValueError):
        return False


def check_output_path(out_path, sources: Iterable, overwrite: bool = False) -> None:
    """Refuse, before any work, an --out that is a folder, is (or would overwrite) an input, cannot be written,
    or is an existing file that is not an earlier prediction output (unless `overwrite`)."""
    out = Path(out_path)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; name a file, e.g. {out / 'predictions.jsonl'}")
    for src in sources:
        if src is not None and (_same_file(out, Path(src)) or _same_file(partial_path(out), Path(src))):
            raise UserError(f"--out {out} is the input {src}: writing it would destroy the input; choose another --out")
    if out.is_file() and not overwrite and not _written_by_us(out):
        raise UserError(f"--out {out} exists and is not a predictions file of predict.py; "
                        f"choose another --out, or pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):  # the one reliable test of writability (root ignores modes)
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


def _safe_ref(ref: dict) -> dict:
    # ids come from the input: a lone surrogate in one must not make the output line unwritable
    return {k: encodable(v) if isinstance(v, str) else v for k, v in ref.items()}


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
    with open(partial, "rb") as fh:
        sizes = [len(c) for c in chunks((json.loads(line) for line in fh), chunk_size, lambda row: row.get("member"))]
    return sum(sizes) - (sizes[-1] if sizes[-1] < chunk_size else 0)


def _recount(partial: Path, summary: Summary) -> None:
    """Count the rows a killed run already wrote, so a resumed run's summary covers the whole output."""
    with open(partial, "rb") as fh:
        for line in fh:
            summary.count(json.loads(line))


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
    with open(partial, "ab" if skip else "wb") as out:
        for rows in rows_it:
            for row in rows:
                summary.count(row)
                if "error" in row and sum(summary.skipped.values()) <= MAX_REPORTED:
                    where = " ".join(f"{k} {v}" for k, v in row.items() if k in ("member", "line"))
                    log(f"skipped {where}: {row['error']}" + (" (further ones only counted)"
                        if sum(summary.skipped.values()) == MAX_REPORTED else ""))
            out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
            out.flush()
            bar.update(len(rows))
        os.fsync(out.fileno())
    os.replace(partial, out_path)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
