"""Reading the LSPC V2020 corpus: the zip of gzipped JSON-lines members and the cluster -> category map.

Offers are streamed member by member in bounded batches; every line that cannot be used is skipped and
counted by reason, and a corrupt member keeps the offers read before the damage.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
import numpy as np

from category_classification.core.cli import UserError, require_file
from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS, clean, offer_text

try:  # ISA-L inflates gzip about twice as fast as zlib, same streams and API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency
    _zlib = zlib

try:  # orjson parses offers 2-3x faster; the standard library is the fallback
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency
    import json

    _loads = json.loads

# Reasons an offer line is skipped, in the order they are checked.
SKIP_REASONS = (
    "empty_line", "invalid_utf8", "malformed_json", "not_an_object", "missing_cluster_id",
    "bad_cluster_id", "not_in_map", "missing_title", "corrupt_member",
)
# Most of the corpus is outside the map; its cluster id is read from the raw bytes and, when the map
# lacks it, the line is dropped without a JSON parse. Lines the pattern misses take the full path.
_CLUSTER_RE = re.compile(rb'"cluster_id"\s*:\s*"?(-?\d{1,18})"?\s*[,}]')
_LITERAL = re.compile(r'^"(.*)"(@[A-Za-z-]+)?$', re.S)  # N-Triples style "value"@en in some crawls


@dataclass
class CategoryMap:
    """cluster id -> label index, as two sorted arrays (a few bytes per cluster, cheap to send to workers)."""

    names: list[str]
    clusters: np.ndarray  # int64, sorted
    labels: np.ndarray  # int16, label index per cluster
    report: Counter = field(default_factory=Counter)

    def lookup(self, cluster_ids: np.ndarray) -> np.ndarray:
        """Label index for each cluster id, -1 where the map has no entry."""
        cluster_ids = np.asarray(cluster_ids, dtype=np.int64)
        if self.clusters.size == 0:
            return np.full(cluster_ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.clusters, cluster_ids)
        pos = np.minimum(pos, self.clusters.size - 1)
        found = self.clusters[pos] == cluster_ids
        return np.where(found, self.labels[pos].astype(np.int64), -1)


def parse_cluster_id(value) -> int | None:
    """An int from a JSON int or digit string; None for anything else (bools, floats, text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.lstrip("-").isdigit() and len(s) <= 19:
            return int(s)
    return None


def load_category_map(path) -> CategoryMap:
    """Read `cluster_id<TAB>category` rows; bad rows are counted, an optional header is allowed."""
    path = require_file(path, "category map")
    report: Counter = Counter()
    pairs: dict[int, str] = {}
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                report["bad_map_row"] += 1
                continue
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            cid = parse_cluster_id(parts[0]) if len(parts) == 2 else None
            category = parts[1].strip() if len(parts) == 2 else ""
            if cid is None or not category:
                if lineno == 1 and len(parts) == 2:
                    report["header_rows"] += 1
                else:
                    report["bad_map_row"] += 1
                continue
            previous = pairs.setdefault(cid, category)
            if previous != category:
                report["conflicting_map_row"] += 1  # first row wins
            report["map_rows"] += 1
    if not pairs:
        raise UserError(f"category map has no valid `cluster_id<TAB>category` rows: {path}")
    names = sorted(set(pairs.values()))
    index = {n: i for i, n in enumerate(names)}
    clusters = np.fromiter(pairs.keys(), dtype=np.int64, count=len(pairs))
    labels = np.fromiter((index[c] for c in pairs.values()), dtype=np.int16, count=len(pairs))
    order = np.argsort(clusters, kind="stable")
    report["clusters"] = len(pairs)
    return CategoryMap(names, clusters[order], labels[order], report)


def list_members(zip_path) -> list[str]:
    """The `*.json.gz` members of the corpus zip, in name order (the build's deterministic order)."""
    zip_path = require_file(zip_path, "corpus zip")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [i.filename for i in zf.infolist() if i.filename.endswith(".json.gz") and not i.is_dir()]
    except zipfile.BadZipFile as exc:
        raise UserError(f"not a readable zip file: {zip_path} ({exc})") from None
    if not names:
        raise UserError(f"no *.json.gz members in {zip_path}")
    return sorted(names)


def _strip_literal(value: str) -> str:
    m = _LITERAL.match(value)
    return m.group(1) if m else value


def _gunzip_lines(raw, counts: Counter, chunk_size: int = 1 << 20):
    """Lines of a gzip stream (several concatenated gzip members allowed). On damage the lines read
    before it are kept, the incomplete last line is dropped and the member is counted as corrupt."""
    decomp, fed = _zlib.decompressobj(wbits=47), False  # 47 = 32 + 15: gzip header, full window
    tail = b""
    while chunk := raw.read(chunk_size):
        while chunk:
            data, fed = decomp.decompress(chunk), True
            chunk = b""
            if decomp.eof:  # end of one gzip member; the rest of the chunk starts the next one
                chunk = decomp.unused_data
                decomp, fed = _zlib.decompressobj(wbits=47), False
            if data:
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                yield from lines
    if fed:  # the stream ended inside a gzip member: truncated
        counts["corrupt_member"] += 1
        return
    if tail:
        yield tail


def iter_member_lines(zip_path, member: str, counts: Counter):
    """Raw lines of one gzipped member; a corrupt or truncated member ends the stream and is counted."""
    try:
        with zipfile.ZipFile(zip_path) as zf, zf.open(member) as raw:
            yield from _gunzip_lines(raw, counts)
    except (zlib.error, _zlib.error, zipfile.BadZipFile, EOFError, OSError):
        counts["corrupt_member"] += 1


def parse_json_object(raw: bytes, counts: Counter) -> dict | None:
    """One JSON-lines line as a dict, or None with the reason counted (shared with the MWPD reader)."""
    if not raw.strip():
        counts["empty_line"] += 1
        return None
    try:
        obj = _loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        counts["invalid_utf8"] += 1
        return None
    except ValueError:
        counts["malformed_json"] += 1
        return None
    if not isinstance(obj, dict):
        counts["not_an_object"] += 1
        return None
    return obj


def parse_offer(raw: bytes, counts: Counter):
    """(cluster_id, title, description) of one line, or None with the reason counted."""
    obj = parse_json_object(raw, counts)
    if obj is None:
        return None
    if obj.get("cluster_id") is None:
        counts["missing_cluster_id"] += 1
        return None
    cid = parse_cluster_id(obj["cluster_id"])
    if cid is None:
        counts["bad_cluster_id"] += 1
        return None
    title = obj.get("title")
    if not isinstance(title, str) or not title.strip():
        title = obj.get("name")
    title = _strip_literal(clean(title))
    description = obj.get("description")
    description = _strip_literal(description.strip()) if isinstance(description, str) else ""
    return cid, title, description


def read_member(zip_path, member: str, cmap: CategoryMap, counts: Counter,
                max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, batch_lines: int = 16384):
    """Yield (texts, labels, clusters) batches of the mapped offers of one member; counts every line."""
    texts, labels, clusters = [], [], []

    def keep(raw, label=None):
        offer = parse_offer(raw, counts)
        if offer is None:
            return
        cid, title, description = offer
        if label is None:  # the fast pattern missed this line: look its cluster up now
            label = int(cmap.lookup(np.array([cid]))[0])
            if label < 0:
                counts["not_in_map"] += 1
                return
        if not title:
            counts["missing_title"] += 1
            return
        texts.append(offer_text(title, description, max_description_chars))
        labels.append(label)
        clusters.append(cid)

    def flush(ids, raws):
        found = cmap.lookup(np.fromiter(ids, dtype=np.int64, count=len(ids)))
        hits = np.flatnonzero(found >= 0)
        counts["not_in_map"] += len(ids) - hits.size
        for i in hits.tolist():  # only the mapped tenth of the corpus is parsed
            keep(raws[i], int(found[i]))

    def emit():
        out = (list(texts), np.asarray(labels, dtype=np.int64), np.asarray(clusters, dtype=np.int64))
        counts["records_kept"] += len(texts)
        texts.clear(), labels.clear(), clusters.clear()
        return out

    search = _CLUSTER_RE.search
    ids: list[int] = []
    raws: list[bytes] = []
    n = 0
    for raw in iter_member_lines(zip_path, member, counts):
        n += 1
        m = search(raw)
        if m is not None:
            ids.append(int(m.group(1)))
            raws.append(raw)
            if len(ids) >= batch_lines:
                flush(ids, raws)
                ids, raws = [], []
                if texts:
                    yield emit()
        elif not raw.strip():
            counts["empty_line"] += 1
        else:
            keep(raw)
    counts["lines_read"] += n
    if ids:
        flush(ids, raws)
    if texts:
        yield emit()


def iter_offers(zip_path, limit: int | None = None, counts: Counter | None = None, members=None):
    """Every offer of the zip as a dict (for profiling): bad lines counted, at most `limit` offers."""
    counts = Counter() if counts is None else counts
    n = 0
    for member in members or list_members(zip_path):
        for raw in iter_member_lines(zip_path, member, counts):
            counts["lines_read"] += 1
            obj = parse_json_object(raw, counts)
            if obj is None:
                continue
            yield obj
            n += 1
            if limit and n >= limit:
                return

