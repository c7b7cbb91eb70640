"""Reading the LSPC V2020 corpus: the zip of gzipped JSON-lines members and the cluster -> category map.

Offers are streamed member by member in bounded batches; every line that cannot be used is skipped and
counted by reason, and a corrupt member keeps the offers read before the damage.
"""

from __future__ import annotations

import json as _json
import re
from array import array
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
import numpy as np

from category_classification.core.cli import UserError, require_file
from category_classification.data.records import OFFER_ID_COLUMN, TEXT_TITLE_COLUMN
from category_classification.data.text import (DEFAULT_MAX_DESCRIPTION_CHARS, DESCRIPTION_FIELDS, TITLE_FIELDS, clean,
                                               offer_field, offer_id, offer_texts)

try:  # ISA-L inflates gzip about twice as fast as zlib, same streams and API
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency
    _zlib = zlib

try:  # orjson parses offers 2-3x faster; the standard library is the fallback
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _loads = _json.loads

# Reasons an offer line is skipped, in the order they are checked.
SKIP_REASONS = (
    "line_too_long", "empty_line", "invalid_utf8", "malformed_json", "not_an_object", "missing_cluster_id",
    "bad_cluster_id", "not_in_map", "no_category", "outside_categories", "missing_title", "corrupt_member",
)
NOT_IN_MAP = "(not in map)"  # source category of an offer whose cluster the map lacks
NO_CATEGORY_NAME = "(no category)"  # ... and of an offer without a `category` field
_NO_CATEGORY = {"", "not found", "null", "none"}
# A line longer than this is skipped (reported as line_too_long) without being held whole; real offers are
# under 100 kB, and a 10 MB line once took 1.6 GB to predict.
MAX_LINE_BYTES = 4 << 20
# Most of the corpus is outside the map; its cluster id is read from the raw bytes and, when the map
# lacks it, the line is dropped without a JSON parse. Lines the pattern misses take the full path.
# Both patterns are matched where bytes.find puts the key (twice as fast as a regex search).
_CLUSTER_RE = re.compile(rb'"cluster_id"\s*:\s*"?(-?\d{1,18})"?\s*[,}]')
_CLUSTER_KEY = b'"cluster_id"'
# WDC's own category; `null` is read as no category. Escaped values take the full parse.
_CATEGORY_RE = re.compile(rb'"category"\s*:\s*(?:null|"([^"\\]*)")')
_CATEGORY_KEY = b'"category"'


def _cluster_match(raw: bytes):
    """The fast path's cluster id match, or None where the line needs a full parse: no key, or a second
    "cluster_id" key (a nested object's) that makes the first one found possibly not the offer's own."""
    i = raw.find(_CLUSTER_KEY)
    # a brace between the line's first byte and the key: the key may be a nested object's (an offer without
    # its own key once took a nested one); a brace inside a string, or leading blanks, only cost the full parse
    if i < 0 or raw.find(_CLUSTER_KEY, i + len(_CLUSTER_KEY)) >= 0 or raw.find(b"{", 1, i) >= 0:
        return None
    return _CLUSTER_RE.match(raw, i)


def _utf8(raw: bytes) -> bool:
    """The line is UTF-8 (it could be JSON): a Latin-1 line must not vote for its cluster's category
    before the full parse skips it as invalid_utf8. Called on non-ASCII lines only."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _whole_object(raw: bytes) -> bool:
    """A cheap sign that a line is one whole JSON object (a cut line is the usual damage): it may vote for
    its cluster's category without a full parse. Called on every line in field mode: no copy of the line
    unless it has surrounding whitespace."""
    if raw[:1] != b"{":
        raw = raw.lstrip()
    return raw[:1] == b"{" and (raw[-1:] == b"}" or raw.rstrip()[-1:] == b"}")


_DIGITS = re.compile(r"-?[0-9]+")


@dataclass
class CategoryMap:
    """cluster id -> category index (into `names`), as two sorted arrays (a few bytes per cluster, cheap to
    send to workers)."""

    names: list[str]
    clusters: np.ndarray  # int64, sorted
    labels: np.ndarray  # int32, label index per cluster
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
    """An int from a JSON int or ASCII digit string; None for anything else (bools, floats, text, and
    digits `str.isdigit` accepts but `int` refuses, such as '²' or Arabic-Indic digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, str):
        s = value.strip()
        # one optional minus, then ASCII digits ("--5" passed a lstrip test and crashed int()); the int
        # range as for JSON ints, so an id written as text in one member and as a number in another agrees
        if len(s) <= 20 and _DIGITS.fullmatch(s):
            n = int(s)
            return n if -(1 << 63) <= n < (1 << 63) else None
    return None


def _map_lines(fh, report: Counter):
    """Decoded lines of a map file; a UTF-8 byte-order mark on the first line is dropped, not a bad row."""
    for lineno, raw in enumerate(fh, 1):
        try:
            yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            report["bad_map_row"] += 1


def load_category_map(path) -> CategoryMap:
    """Read `cluster_id<TAB>category` rows; bad rows are counted, an optional header is allowed."""
    path = require_file(path, "category map")
    report: Counter = Counter()
    pairs: dict[int, str] = {}
    try:
        with open(path, "rb") as fh:
            for lineno, line in _map_lines(fh, report):
                if not line or line.startswith("#"):
                    continue
                parts = line.split("\t")
                cid = parse_cluster_id(parts[0]) if len(parts) == 2 else None
                category = parts[1].strip() if len(parts) == 2 else ""
                # the names the reader gives offers without a category are not categories a map can name
                reserved = category in (NOT_IN_MAP, NO_CATEGORY_NAME) or category.lower() in _NO_CATEGORY
                if cid is None or not category or reserved:
                    report["header_rows" if lineno == 1 and len(parts) == 2 and not reserved else "bad_map_row"] += 1
                    continue
                if pairs.setdefault(cid, category) != category:
                    report["conflicting_map_row"] += 1  # first row wins
                report["map_rows"] += 1
    except OSError as exc:
        raise UserError(f"cannot read category map {path}: {exc.strerror or exc}") from None
    if not pairs:
        raise UserError(f"category map has no valid `cluster_id<TAB>category` rows: {path}")
    return category_map_from_pairs(pairs, report)


def category_map_from_pairs(pairs: dict, report: Counter | None = None) -> CategoryMap:
    """A CategoryMap from {cluster_id: category name}; the names, sorted, are the category indices."""
    report = Counter() if report is None else report
    names = sorted(set(pairs.values()))
    index = {n: i for i, n in enumerate(names)}
    clusters = np.fromiter(pairs.keys(), dtype=np.int64, count=len(pairs))
    labels = np.fromiter((index[c] for c in pairs.values()), dtype=np.int32, count=len(pairs))
    order = np.argsort(clusters, kind="stable")
    report["clusters"] = len(pairs)
    return CategoryMap(names, clusters[order], labels[order], report)


def list_members(zip_path) -> list[str]:
    """The `*.json.gz` members of the corpus zip, in name order (the build's deterministic order)."""
    zip_path = require_file(zip_path, "corpus zip")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [i.filename for i in zf.infolist() if i.filename.endswith(".json.gz") and not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"not a readable zip file: {zip_path} ({exc})") from None
    if not names:
        raise UserError(f"no *.json.gz members in {zip_path}")
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:  # members are read by name: one of two namesakes would be read twice, the other never
        raise UserError(f"{zip_path} holds more than one member named {twice[0]!r}; repack it with unique names")
    return sorted(names)


class _Overlong(bytes):
    """The stand-in a member's line longer than MAX_LINE_BYTES becomes (empty bytes of their own type)."""


OVERLONG_LINE = _Overlong()


def _gunzip_lines(raw, counts: Counter, chunk_size: int = 1 << 20):
    """Lines of a gzip stream (several concatenated gzip members allowed), counted as `lines_read`. On
    damage the lines read before it are kept, the incomplete last line is dropped and the member is
    counted as corrupt. Output is inflated a chunk at a time, so a line over MAX_LINE_BYTES (a gzip bomb
    compresses 600 MB of one line into 600 kB) is never held whole: it comes back as OVERLONG_LINE."""
    decomp, fed = _zlib.decompressobj(wbits=47), False  # 47 = 32 + 15: gzip header, full window
    tail, overlong = b"", False  # overlong: inside a line already over the limit, dropping its bytes
    while chunk := raw.read(chunk_size):
        more = True
        while more:
            if not fed:  # zeros between or after members: padding that gzip accepts
                chunk = chunk.lstrip(b"\x00")
                if not chunk:
                    break
            data, fed = decomp.decompress(chunk, chunk_size), True
            chunk = decomp.unconsumed_tail
            # a full output buffer may leave output inside the inflater although the input is all taken
            more = bool(chunk) or len(data) == chunk_size
            if decomp.eof:  # end of one gzip member; the rest of the chunk starts the next one
                chunk = decomp.unused_data
                decomp, fed, more = _zlib.decompressobj(wbits=47), False, bool(decomp.unused_data)
            if not data:
                continue
            if overlong:
                cut = data.find(b"\n")
                if cut < 0:
                    continue
                data, overlong = data[cut + 1:], False
                counts["lines_read"] += 1
                yield OVERLONG_LINE
            if len(tail) + len(data) > MAX_LINE_BYTES and data.find(b"\n") < 0:
                tail, overlong = b"", True  # not even joined: the line is already too long
                continue
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            if len(tail) > MAX_LINE_BYTES:
                tail, overlong = b"", True
            counts["lines_read"] += len(lines)  # counted per chunk: a per-line count costs 5% of a build
            for line in lines:
                yield line if len(line) <= MAX_LINE_BYTES else OVERLONG_LINE
    if fed:  # the stream ended inside a gzip member: truncated
        counts["corrupt_member"] += 1
        return
    if tail or overlong:
        counts["lines_read"] += 1
        yield OVERLONG_LINE if overlong else tail


def iter_member_lines(zip_path, member: str, counts: Counter):
    """Raw lines of one gzipped member; a corrupt, truncated, encrypted or unreadable (a compression method
    Python lacks) member ends the stream and is counted."""
    try:
        with zipfile.ZipFile(zip_path) as zf, zf.open(member) as raw:
            yield from _gunzip_lines(raw, counts)
    except (zlib.error, _zlib.error, zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError):
        counts["corrupt_member"] += 1


def parse_json_object(raw: bytes, counts: Counter) -> dict | None:
    """One JSON-lines line as a dict, or None with the reason counted (shared with the MWPD reader).

    A UTF-8 byte-order mark is dropped; a line orjson refuses only for a lone surrogate escape ("\ud800",
    which real crawls hold) is read by the standard library, and text.clean later makes it U+FFFD."""
    if raw is OVERLONG_LINE:
        counts["line_too_long"] += 1
        return None
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    if not raw.strip():
        counts["empty_line"] += 1
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        counts["invalid_utf8"] += 1
        return None
    try:
        obj = _loads(text)
    except ValueError:
        try:
            obj = _json.loads(text)
        except (ValueError, RecursionError):
            counts["malformed_json"] += 1
            return None
    if not isinstance(obj, dict):
        counts["not_an_object"] += 1
        return None
    return obj


def offer_title_description(obj: dict) -> tuple[str, str]:
    """(title, description) of an offer, each picked by the one field rule (text.offer_field: `title`, else
    `name`, ..., an N-Triples literal such as '"Nike Air"@en' unwrapped); a title is '' or holds visible text."""
    return offer_field(obj, TITLE_FIELDS), offer_field(obj, DESCRIPTION_FIELDS)


def offer_model_texts(obj: dict, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS) -> tuple[str, str]:
    """(THE model text of an LSPC offer, for the builder and for `predict.py --zip`; its title alone, the
    dataset's text_title), ('', '') without a title."""
    title, description = offer_title_description(obj)
    return offer_texts(title, description, max_description_chars) if title else ("", "")


def category_of(obj: dict) -> str | None:
    """The offer's own Web Data Commons `category`, None when absent or 'not found'."""
    value = obj.get("category")
    if not isinstance(value, str):
        return None
    value = clean(value, 200)
    return None if value.casefold() in _NO_CATEGORY else value


def cluster_of(obj: dict, counts: Counter) -> int | None:
    """The offer's cluster id, or None with `missing_cluster_id` / `bad_cluster_id` counted."""
    value = obj.get("cluster_id")
    if value is None:
        counts["missing_cluster_id"] += 1
        return None
    cid = parse_cluster_id(value)
    if cid is None:
        counts["bad_cluster_id"] += 1
    return cid


def parse_offer(raw: bytes, counts: Counter):
    """(cluster_id, title, description) of one line, or None with the reason counted."""
    obj = parse_json_object(raw, counts)
    cid = cluster_of(obj, counts) if obj is not None else None
    if cid is None:
        return None
    return (cid, *offer_title_description(obj))


@dataclass
class ReadPlan:
    """Which offers a read worker keeps: by the map's category of their cluster (`cmap` given) or by
    their own `category` field. `keep_categories` None keeps every category (the Other class)."""

    cmap: CategoryMap | None = None
    keep_categories: frozenset | None = None
    keep_unmapped: bool = False  # offers without a category, or whose cluster the map lacks
    max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS


class MemberRows:
    """Rows a worker keeps from one member (text, title text, offer id, cluster, source-category code), handed out in
    batches; `vocab` names the codes; the votes (cluster, category code) make the majority map."""

    def __init__(self, plan: ReadPlan, counts: Counter):
        self.plan, self.counts = plan, counts
        self.texts: list[str] = []
        self.titles: list[str] = []
        self.ids: list[str] = []
        self.clusters: list[int] = []
        self.sources: list[int] = []
        self.vote_cid = array("q")  # one (cluster, category code) vote per offer with a category
        self.vote_code = array("i")
        names = list(plan.cmap.names) + [NOT_IN_MAP] if plan.cmap is not None else [NO_CATEGORY_NAME]
        self.vocab: dict[str, int] = {n: i for i, n in enumerate(names)}
        self.keep_code = [self._wanted(n) for n in names]
        self.by_bytes: dict[bytes, int] = {}

    def _wanted(self, name: str) -> bool:
        if name in (NOT_IN_MAP, NO_CATEGORY_NAME):
            return self.plan.keep_unmapped
        return self.plan.keep_categories is None or name in self.plan.keep_categories

    def code(self, name: str | None) -> int:
        """Code of a category name (registered on first sight); None is 'no category'."""
        if name is None:
            return 0
        code = self.vocab.get(name)
        if code is None:
            code = self.vocab[name] = len(self.vocab)
            self.keep_code.append(self._wanted(name))
        return code

    def code_of_bytes(self, value: bytes) -> int:
        code = self.by_bytes.get(value)
        if code is None:
            text = value.decode("utf-8", "replace")
            code = self.by_bytes[value] = self.code(category_of({"category": text}))
        return code

    def votes(self) -> tuple | None:
        """(cluster ids, category codes, offers) with one entry per distinct pair, None without votes."""
        if not self.vote_cid:
            return None
        cids = np.frombuffer(self.vote_cid, dtype=np.int64)
        codes = np.frombuffer(self.vote_code, dtype=np.int32)
        return count_pairs(cids, codes, np.ones(cids.size, dtype=np.int64))

    def keep(self, obj: dict, cid: int, code: int) -> None:
        text, title_text = offer_model_texts(obj, self.plan.max_description_chars)
        if not text:
            self.counts["missing_title"] += 1
            return
        self.texts.append(text)
        self.titles.append(title_text)  # what the model text is for an offer that arrives as a title only
        self.ids.append(offer_id(obj))
        self.clusters.append(cid)
        self.sources.append(code)

    def take(self) -> dict:
        out = {"text": self.texts, TEXT_TITLE_COLUMN: self.titles, OFFER_ID_COLUMN: self.ids,
               "cluster": np.asarray(self.clusters, dtype=np.int64), "source": np.asarray(self.sources, dtype=np.int32)}
        self.counts["records_kept"] += len(self.texts)
        self.texts, self.titles, self.ids, self.clusters, self.sources = [], [], [], [], []
        return out


def count_pairs(cids: np.ndarray, codes: np.ndarray, votes: np.ndarray) -> tuple:
    """(cluster, code, votes) with one entry per distinct (cluster, code), sorted by both (a lexsort:
    ten times faster than np.unique over rows)."""
    order = np.lexsort((codes, cids))
    cids, codes, votes = cids[order], codes[order], votes[order]
    starts = np.flatnonzero(np.r_[True, (cids[1:] != cids[:-1]) | (codes[1:] != codes[:-1])])
    return cids[starts], codes[starts], np.add.reduceat(votes, starts) if votes.size else votes


def _read_by_field(lines, rows: MemberRows, batch_lines: int):
    """Field mode: cluster id and category read from the raw bytes; only kept offers are parsed."""
    counts, category_at = rows.counts, _CATEGORY_RE.match
    vote_cid, vote_code, keep_code, by_bytes = rows.vote_cid, rows.vote_code, rows.keep_code, rows.by_bytes
    for raw in lines:
        j = raw.find(_CATEGORY_KEY)
        m = _cluster_match(raw)
        c = category_at(raw, j) if j >= 0 else None
        # no usable pattern, a second "category" key (keyValuePairs), a nested one or an escaped value, or a
        # line that is not one whole UTF-8 object (a cut or Latin-1 line must not vote for its cluster's
        # category): full parse
        if (m is None or (j >= 0 and (c is None or raw.find(_CATEGORY_KEY, j + 10) >= 0 or raw.find(b"{", 1, j) >= 0))
                or not _whole_object(raw) or not (raw.isascii() or _utf8(raw))):
            if not raw.strip() and raw is not OVERLONG_LINE:
                counts["empty_line"] += 1
                continue
            obj = parse_json_object(raw, counts)
            cid = cluster_of(obj, counts) if obj is not None else None
            if cid is None:
                continue
            code = rows.code(category_of(obj))
        else:
            obj, cid = None, int(m.group(1))
            value = c.group(1) if c is not None else None
            code = 0 if value is None else by_bytes.get(value)
            if code is None:
                code = rows.code_of_bytes(value)
        if code:
            vote_cid.append(cid)
            vote_code.append(code)
        if not keep_code[code]:
            counts["outside_categories" if code else "no_category"] += 1
            continue
        if obj is None:
            obj = parse_json_object(raw, counts)
            if obj is None:
                continue
        rows.keep(obj, cid, code)
        if len(rows.texts) >= batch_lines:
            yield rows.take()


def _read_by_map(lines, rows: MemberRows, batch_lines: int):
    """Map mode: cluster ids looked up a batch at a time; only offers of kept categories are parsed."""
    cmap, counts = rows.plan.cmap, rows.counts
    not_in_map = len(cmap.names)
    ids: list[int] = []
    raws: list[bytes] = []

    def flush():
        codes = cmap.lookup(np.fromiter(ids, dtype=np.int64, count=len(ids)))
        codes[codes < 0] = not_in_map
        for cid, raw, code in zip(ids, raws, codes.tolist()):
            if not rows.keep_code[code]:
                counts["not_in_map" if code == not_in_map else "outside_categories"] += 1
                continue
            obj = parse_json_object(raw, counts)
            if obj is not None:
                rows.keep(obj, cid, code)
        ids.clear(), raws.clear()

    for raw in lines:
        m = _cluster_match(raw)
        if m is not None:
            ids.append(int(m.group(1)))
            raws.append(raw)
            if len(ids) >= batch_lines:
                flush()
                if rows.texts:
                    yield rows.take()
        elif not raw.strip() and raw is not OVERLONG_LINE:
            counts["empty_line"] += 1
        else:  # the fast pattern missed this line: parse it and look its cluster up alone
            obj = parse_json_object(raw, counts)
            cid = cluster_of(obj, counts) if obj is not None else None
            if cid is not None:
                ids.append(cid)
                raws.append(raw)
    if ids:
        flush()


def read_member(zip_path, member: str, plan: ReadPlan, counts: Counter, batch_lines: int = 16384):
    """Yield column batches {"text", "text_title", "offer_id", "cluster", "source"} of the kept offers of one
    member, then a last item: the MemberRows (its category vocabulary and cluster votes). Every line is counted."""
    rows = MemberRows(plan, counts)
    reader = _read_by_map if plan.cmap is not None else _read_by_field
    yield from reader(iter_member_lines(zip_path, member, counts), rows, batch_lines)
    if rows.texts:
        yield rows.take()
    yield rows


def iter_records(zip_path, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, members=None):
    """Every line of every member as an OfferRecord, with the text the builder trains on (for
    `predict.py --zip` and tests); a line that cannot be used carries its reason instead of a text."""
    from category_classification.data.records import OfferRecord

    for member in members or list_members(zip_path):
        counts: Counter = Counter()
        n = 0
        for raw in iter_member_lines(zip_path, member, counts):
            n += 1
            ref = {"member": member, "line": n}
            before = dict(counts)
            obj = parse_json_object(raw, counts)
            if obj is None:
                yield OfferRecord(None, ref=ref, reason=_new_reason(before, counts))
                continue
            for key in ("id", "cluster_id"):
                if isinstance(obj.get(key), (int, str)):
                    ref[key] = obj[key]
            # the title alone as the builder keeps it (text_title): the one record type carries it for every source
            text, title = offer_model_texts(obj, max_description_chars)
            group = parse_cluster_id(obj.get("cluster_id"))
            yield OfferRecord(text or None, group=group, category=category_of(obj), ref=ref,
                              reason=None if text else "missing_title", title_text=title or None)
        if counts["corrupt_member"]:
            yield OfferRecord(None, ref={"member": member, "line": n + 1}, reason="corrupt_member")


def _new_reason(before: dict, counts: Counter) -> str:
    return next((k for k, v in counts.items() if v != before.get(k, 0)), "unusable")


def iter_offers(zip_path, limit: int | None = None, counts: Counter | None = None, members=None):
    """Every offer of the zip as a dict (for profiling): bad lines counted, at most `limit` offers."""
    counts = Counter() if counts is None else counts
    n = 0
    for member in members or list_members(zip_path):
        for raw in iter_member_lines(zip_path, member, counts):
            obj = parse_json_object(raw, counts)
            if obj is None:
                continue
            yield obj
            n += 1
            if limit and n >= limit:
                return
