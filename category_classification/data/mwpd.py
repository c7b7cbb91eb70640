"""Reading the MWPD 2020 offers (data/mwpd): GS1-labelled WDC offers, mapped to our label sets.

The 6-class rules are the table in data/mwpd/README.md; `lvl1`/`lvl2`/`lvl3` keep the GS1 class names.
The group key is the normalized title, so duplicate offers never straddle splits. With `breadcrumb` the
model text ends with the shop's breadcrumb (`CategoryText`), by text.offer_text's rule.
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from collections import Counter

from category_classification.core.cli import UserError, require_file
from category_classification.data.lspc import parse_json_object
from category_classification.data.text import (BREADCRUMB_FIELDS, DEFAULT_MAX_DESCRIPTION_CHARS, DESCRIPTION_FIELDS,
                                               TITLE_FIELDS, clean, group_id, has_visible_text, normalize_title,
                                               offer_field, offer_text)

BREADCRUMB_FIELD = "CategoryText"  # the MWPD files' spelling; readers take any of text.BREADCRUMB_FIELDS

LABEL_LEVELS = ("six", "lvl1", "lvl2", "lvl3")
GS1_LEVELS = ("lvl1", "lvl2", "lvl3")
NO_LEVEL1 = "(no lvl1)"  # source category of an offer without a GS1 level-1 class
SIX_CLASSES = ("Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes")
# (field, GS1 code, class): first match wins; see data/mwpd/README.md
_SIX_RULES = (
    ("lvl1", "77000000", "Automotive"),
    ("lvl1", "54000000", "Baby"),
    ("lvl3", "60010200", "Books"),
    ("lvl1", "67000000", "Clothing"),
    ("lvl3", "64010100", "Jewelry"),
    ("lvl3", "64010300", "Jewelry"),
    ("lvl1", "63000000", "Shoes"),
)


# A GS1 level label is "CODE_Name" in the MWPD files; a file from elsewhere may write the code alone, as a
# JSON number, or with spaces around it: the code names the class in all of them.
_GS1_CODE = re.compile(r"\s*(\d+)\s*(?:_|$)")


def gs1_code(value) -> str | None:
    """The GS1 code a level label starts with ("67000000" of "67000000_Clothing", " 67000000 " or 67000000)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    match = _GS1_CODE.match(str(value))
    return match.group(1) if match else None


def _name_key(value) -> str:
    """The class name of a level label without its code, case and spacing ignored."""
    text = clean(value)
    name = text.partition("_")[2] if gs1_code(text) else text
    return " ".join(name.casefold().split())


def same_classes(labels, known) -> dict:
    """{label: the `known` label of the same class} for each of `labels` spelled otherwise: the same GS1 code,
    or (a label without one) the same name ignoring case and spacing. A label that matches no known label,
    or more than one, is left out: a class of its own."""
    by_code, by_name = {}, {}
    for k in known:
        if gs1_code(k):
            by_code.setdefault(gs1_code(k), set()).add(k)
        if _name_key(k):
            by_name.setdefault(_name_key(k), set()).add(k)
    out = {}
    for label in labels:
        if label in known:
            continue
        found = by_code.get(gs1_code(label)) if gs1_code(label) else by_name.get(_name_key(label))
        if found and len(found) == 1:
            out[label] = next(iter(found))
    return out


def gs1_label(offer: dict, level: str) -> str | None:
    """The offer's class at `level`, or None when it has none (outside the 6 classes, or unlabelled)."""
    if level == "six":
        for fld, code, name in _SIX_RULES:
            if gs1_code(offer.get(fld)) == code:
                return name
        return None
    value = offer.get(level)
    if isinstance(value, int) and not isinstance(value, bool):  # a bare code written as a JSON number
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    code, _, name = value.partition("_")
    return (name or code).strip()


# A file that is one JSON array is parsed whole (a JSON array of tiny objects takes ~50x its size in Python
# objects), so arrays are capped; JSON lines, the MWPD format, are read line by line at any size.
MAX_ARRAY_BYTES = 32 << 20


def _gzip_starts_an_array(path) -> bool:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 16):  # leading whitespace of any length
                if block.strip():
                    return block.lstrip()[:1] == b"["
    except (OSError, EOFError, zlib.error):
        pass
    return False


def _gunzip_whole(path, counts: Counter) -> bytes:
    """A gzipped JSON array, inflated whole, at most MAX_ARRAY_BYTES (a gzip bomb stops there)."""
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read(MAX_ARRAY_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        counts["corrupt_file"] += 1
        print(f"WARNING: {path}: damaged gzip data ({exc})", file=sys.stderr, flush=True)
        return b""
    return data


def file_lines(path, counts: Counter | None = None) -> list[bytes]:
    """The raw lines of an MWPD file (JSON lines, plain or gzip; one JSON array works too). A damaged or
    cut gzip file keeps the lines read before the damage and is counted as `corrupt_file`; a line over
    lspc.MAX_LINE_BYTES comes back as lspc.OVERLONG_LINE (parse_json_object counts it)."""
    from category_classification.data.lspc import _gunzip_lines, _zlib

    path = require_file(path, "MWPD file")
    counts = Counter() if counts is None else counts
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
            fh.seek(0)
            if not gz:
                data, lines = fh.read(), None
            elif _gzip_starts_an_array(path):  # one JSON array (maybe one line of megabytes): read it whole
                data, lines = _gunzip_whole(path, counts), None
            else:
                data, lines, inner = None, [], Counter()  # the lines are counted by the caller
                try:  # small input pieces: damage costs the lines after it, not the whole piece around it
                    lines.extend(_gunzip_lines(fh, inner, chunk_size=1 << 16))
                except (zlib.error, _zlib.error, EOFError) as exc:
                    inner["corrupt_member"] += 1
                    print(f"WARNING: {path}: damaged gzip data ({exc}); kept the {len(lines):,} lines before it",
                          file=sys.stderr, flush=True)
                if inner["corrupt_member"]:
                    counts["corrupt_file"] += 1
    except OSError as exc:
        raise UserError(f"cannot read MWPD file {path}: {exc.strerror or exc}") from None
    if data is None:
        return lines
    stripped = data.lstrip()
    if stripped[:1] == b"[":  # one JSON array instead of JSON lines
        if len(stripped) > MAX_ARRAY_BYTES:
            raise UserError(f"{path}: a JSON array of more than {MAX_ARRAY_BYTES >> 20} MB; write it as JSON lines "
                            "(one offer per line), which is read at any size")
        try:
            return [json.dumps(o).encode() for o in json.loads(stripped)]
        except (ValueError, RecursionError):
            pass  # fall back to line by line, so the bad lines are counted
    return data.splitlines()


def iter_records(path, counts: Counter | None = None, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
                 breadcrumb: bool = True):
    """Yield an OfferRecord for each usable offer of an MWPD file (JSON lines, plain or gzip; a single
    JSON array works too): the model text (ending with the offer's breadcrumb unless `breadcrumb` is False;
    on is the builder's MWPD default; then `bare_text` is the same text without it; `title_text` is the title
    alone), the title's group id,
    and the class at every level in `labels` (None where it has none). Skipped lines are counted in `counts`
    by reason."""
    from category_classification.data.records import OfferRecord

    counts = Counter() if counts is None else counts
    for n, raw in enumerate(file_lines(path, counts), 1):
        counts["lines_read"] += 1
        offer = parse_json_object(raw, counts)
        if offer is None:
            continue
        title = clean(offer_field(offer, TITLE_FIELDS))  # the one field rule, as predict.py reads the offer
        if not title or not has_visible_text(title):
            counts["missing_title"] += 1
            continue
        description = clean(offer_field(offer, DESCRIPTION_FIELDS))
        labels = {level: gs1_label(offer, level) for level in LABEL_LEVELS}
        bare = offer_text(title, description, max_description_chars)
        crumb = offer_field(offer, BREADCRUMB_FIELDS) if breadcrumb else ""
        text = offer_text(title, description, max_description_chars, crumb) if crumb else bare
        yield OfferRecord(text, group=group_id(normalize_title(title)), category=labels["lvl1"] or NO_LEVEL1,
                          labels=labels, ref={"line": n}, bare_text=bare if breadcrumb else None,
                          title_text=offer_text(title))


def read_mwpd(path, level: str = "six", counts: Counter | None = None,
              max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, breadcrumb: bool = True):
    """Yield (text, label_name, group_id) for each offer of an MWPD file with a class at `level`."""
    if level not in LABEL_LEVELS:
        raise UserError(f"--label_level must be one of {', '.join(LABEL_LEVELS)}, got {level!r}")
    counts = Counter() if counts is None else counts
    for rec in iter_records(path, counts, max_description_chars, breadcrumb):
        label = rec.labels[level]
        if label is None:
            counts["outside_label_set"] += 1
            continue
        yield rec.text, label, rec.group


def _label_for(rec, level: str, targets, other_label):
    """The record's label name: its class at `level` ('all': level 1) when a target, else Other (None:
    dropped)."""
    name = rec.labels["lvl1" if level == "all" else level]
    if name is not None and (targets is None or name in targets):
        return name
    return other_label


def _read_files(args, targets, config) -> list:
    """(path, is_test, [(record, label)], counts) per file, the test file first so its titles can be
    kept out of train/validation."""
    files = [(f, False) for f in args.mwpd] + ([(args.mwpd_test, True)] if args.mwpd_test else [])
    for f, _ in files:
        require_file(f, "MWPD file")
    files.sort(key=lambda f: not f[1])
    out, test_groups = [], set()
    for path, is_test in files:
        counts: Counter = Counter()
        kept = []
        for rec in iter_records(path, counts, config.max_description_chars, config.breadcrumb):
            if args.label_level == "all" and not all(rec.labels[lv] for lv in GS1_LEVELS):
                counts["missing_level"] += 1
                continue
            label = _label_for(rec, args.label_level, targets, args.other_label)
            if label is None:
                counts["outside_label_set"] += 1
                continue
            if not is_test and rec.group in test_groups:
                counts["duplicate_of_test"] += 1
                continue
            kept.append((rec, label))
            if is_test:
                test_groups.add(rec.group)
        counts["records_kept"] += len(kept)
        out.append((path, is_test, kept, counts))
    return out


def hierarchy(records) -> dict:
    """hierarchy.json: each lvl3 class's lvl2 parent and each lvl2 class's lvl1 parent (the most
    frequent pairing, should the data disagree)."""
    pairs = {"lvl3": Counter(), "lvl2": Counter()}
    for rec in records:
        pairs["lvl3"][(rec.labels["lvl3"], rec.labels["lvl2"])] += 1
        pairs["lvl2"][(rec.labels["lvl2"], rec.labels["lvl1"])] += 1
    parents: dict = {"lvl3": {}, "lvl2": {}}
    for level, counter in pairs.items():
        for (child, parent), _ in counter.most_common():
            parents[level].setdefault(child, parent)
    return {"levels": list(GS1_LEVELS), "parents": {k: dict(sorted(v.items())) for k, v in parents.items()}}


def read_mwpd_files(args, config, tmp):
    """Pass 1 of the builder for MWPD: one shard per file, rows labelled, `source` = GS1 level 1 (and for the
    6 classes or with an Other class, FINE_COLUMN = GS1 level 3)."""
    import numpy as np

    from category_classification.data.builder import (FINE_COLUMN, TEXT_BARE_COLUMN, TEXT_TITLE_COLUMN, LabelPlan,
                                                      Shard, ShardWriter)
    from category_classification.data.records import ReadResult, parse_categories

    targets = parse_categories(args.categories, default=None)
    files = _read_files(args, targets, config)
    found = sorted({label for _, _, kept, _ in files for _, label in kept if label != args.other_label})
    if not found:
        raise UserError("no offer of the MWPD files belongs to the chosen label set")
    plan = LabelPlan(targets or found, args.other_label)
    records = [rec for _, _, kept, _ in files for rec, _ in kept]
    level = "lvl1" if args.label_level == "all" else args.label_level
    if args.other_label and any(r.labels[level] == args.other_label for r in records) and (
            targets is None or args.other_label in targets):
        raise UserError(f"--other_label {args.other_label} is also a class of the data; choose another name")
    if args.label_level == "all":
        plan.levels = {lv: sorted({r.labels[lv] for r in records}) for lv in GS1_LEVELS}
        plan.parents = hierarchy(records)
    index = {n: i for i, n in enumerate(plan.names)}
    # the target classes' sub-classes (LinearConfig.class_split): coarse classes only, not GS1 levels
    fine = bool(args.other_label) or args.label_level == "six"
    shards = []
    for i, (path, is_test, kept, counts) in enumerate(files):
        categories = sorted({rec.category for rec, _ in kept})
        code = {c: k for k, c in enumerate(categories)}
        writer = ShardWriter(tmp / f"mwpd-{i}.arrow", levels=tuple(plan.levels), bare_text=config.breadcrumb,
                             fine_category=fine, title_text=True)
        columns = {"text": [rec.text for rec, _ in kept], TEXT_TITLE_COLUMN: [rec.title_text for rec, _ in kept],
                   "label": np.array([index[lab] for _, lab in kept], dtype=np.int64),
                   "cluster": np.array([rec.group for rec, _ in kept], dtype=np.int64),
                   "source": np.array([code[rec.category] for rec, _ in kept], dtype=np.int32)}
        if config.breadcrumb:
            columns[TEXT_BARE_COLUMN] = [rec.bare_text for rec, _ in kept]
        if fine:  # GS1 level 3 ("" where the offer has none): sub-classes for the trainer
            columns[FINE_COLUMN] = [rec.labels["lvl3"] or "" for rec, _ in kept]
        for lv, names in plan.levels.items():
            pos = {n: k for k, n in enumerate(names)}
            columns[lv] = np.array([pos[rec.labels[lv]] for rec, _ in kept], dtype=np.int64)
        writer.add(columns)
        shards.append(Shard(writer.path, writer.close(), forced_test=is_test, source=str(path),
                            counts=dict(counts), categories=categories))
    source = {"mwpd": [str(f) for f in args.mwpd], "mwpd_test": args.mwpd_test, "label_level": args.label_level}
    extra = {"files": [{"file": s.source, "test": s.forced_test, **s.counts} for s in shards]}
    return ReadResult(shards, plan, source, extra)
