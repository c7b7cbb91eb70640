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
from pathlib import Path

from category_classification.core.cli import UserError, require_file
from category_classification.data.lspc import parse_json_object
from category_classification.data.text import (BREADCRUMB_FIELDS, DEFAULT_MAX_DESCRIPTION_CHARS, DESCRIPTION_FIELDS,
                                               TITLE_FIELDS, clean, group_id, has_visible_text, normalize_title,
                                               offer_field, offer_id, offer_text)

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
# JSON number, with spaces around it, or with a space, "-" or ":" for the "_" ("67000000 Clothing"): the code
# names the class in all of them. A code before a name is a GS1 (GPC) code, 8 digits: any other label is a
# name of a user's own catalog, kept whole ("2000000 Lumens Flashlight", "100000 Piece Puzzle", "Men_Shoes"
# were read as a code and a name, and classes of the same name after it merged into one).
_GS1_LABEL = re.compile(r"\s*(\d+)\s*|\s*(\d{8})(?:\s*[_:-]\s*|\s+)(.*)", re.S)


def _code_and_name(value) -> tuple[str | None, str]:
    """(the GS1 code a level label starts with or None, the label's name without it, stripped)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, ""
    text = str(value)
    match = _GS1_LABEL.fullmatch(text)
    if not match:
        return None, text.strip()
    return match.group(1) or match.group(2), (match.group(3) or "").strip()


def gs1_code(value) -> str | None:
    """The GS1 code a level label starts with ("67000000" of "67000000_Clothing", "67000000 Clothing",
    " 67000000 " or 67000000)."""
    return _code_and_name(value)[0]


def _name_key(value) -> str:
    """The class name of a level label without its code, case and spacing ignored."""
    return " ".join(_code_and_name(clean(value))[1].casefold().split())


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
    value = _raw_level(offer.get(level))
    if value is None:
        return None
    # "67000000_Clothing", "67000000 Clothing": the name; "67000000": the code; a label of no GS1 code: whole
    code, name = _code_and_name(value)
    return name or code


# A file that is one JSON array is parsed whole (a JSON array of tiny objects takes ~50x its size in Python
# objects), so arrays are capped; JSON lines, the MWPD format, are read line by line at any size.
MAX_ARRAY_BYTES = 32 << 20


_BOM = b"\xef\xbb\xbf"


def _lstrip_bom(data: bytes) -> bytes:
    """`data` without leading whitespace and a UTF-8 byte-order mark (which Windows tools write before a JSON
    array: the array was read as one line that is not an object, or each of its lines as malformed JSON)."""
    data = data.lstrip()
    return data[len(_BOM):].lstrip() if data.startswith(_BOM) else data


def _gzip_starts_an_array(path) -> bool:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            head = b""
            while block := fh.read(1 << 16):  # leading whitespace of any length
                head = _lstrip_bom(head + block)
                if head.strip() and head != _BOM[:len(head)]:
                    return head[:1] == b"["
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
    cut gzip file keeps the lines read before the damage and is counted as `corrupt_file`; a line (or an
    array's offer) over lspc.MAX_LINE_BYTES comes back as lspc.OVERLONG_LINE (parse_json_object counts it),
    plain or gzip alike: the plain file's line was kept, so one file gave two test sets."""
    from category_classification.data.lspc import MAX_LINE_BYTES, OVERLONG_LINE, _gunzip_lines, _zlib

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
    stripped = _lstrip_bom(data)
    if stripped[:1] == b"[":  # one JSON array instead of JSON lines
        if len(stripped) > MAX_ARRAY_BYTES:
            raise UserError(f"{path}: a JSON array of more than {MAX_ARRAY_BYTES >> 20} MB; write it as JSON lines "
                            "(one offer per line), which is read at any size")
        try:
            lines = [json.dumps(o).encode() for o in json.loads(stripped)]
        except (ValueError, RecursionError):
            lines = data.splitlines()  # line by line, so the bad lines are counted
    else:
        lines = data.splitlines()
    return [line if len(line) <= MAX_LINE_BYTES else OVERLONG_LINE for line in lines]


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
        gs1 = {level: _raw_level(offer.get(level)) for level in GS1_LEVELS}
        labels = {level: gs1_label(gs1, level) for level in LABEL_LEVELS}
        bare = offer_text(title, description, max_description_chars)
        crumb = offer_field(offer, BREADCRUMB_FIELDS) if breadcrumb else ""
        text = offer_text(title, description, max_description_chars, crumb) if crumb else bare
        yield OfferRecord(text, group=group_id(normalize_title(title)), category=labels["lvl1"] or NO_LEVEL1,
                          labels=labels, ref={"line": n, "id": offer_id(offer)}, bare_text=bare if breadcrumb else None,
                          title_text=offer_text(title), gs1=gs1)


def _raw_level(value) -> str | None:
    """A GS1 level label as its file writes it, as text (a JSON number: its digits); None when it has none."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def respell_levels(records, training) -> dict:
    """Give each of `records` (the held-out file's offers) the GS1 level labels of `training` where they name
    the same class (same_classes: the same code, or the same name ignoring case and spacing), its 6-class
    label and level-1 category following: a file writing "67000000" or "clothing" for the training files'
    "67000000_Clothing" had every offer of a level build scored as a class of its own, a miss. Returns
    {level: offers respelled}."""
    known = {lv: {r.gs1.get(lv) for r in training} - {None} for lv in GS1_LEVELS}
    respell = {lv: same_classes({r.gs1.get(lv) for r in records} - {None}, known[lv]) for lv in GS1_LEVELS}
    changed = Counter()
    for rec in records:
        gs1 = {lv: respell[lv].get(rec.gs1.get(lv), rec.gs1.get(lv)) for lv in GS1_LEVELS}
        if gs1 != rec.gs1:
            changed.update(lv for lv in GS1_LEVELS if gs1[lv] != rec.gs1.get(lv))
            rec.gs1, rec.labels = gs1, {level: gs1_label(gs1, level) for level in LABEL_LEVELS}
            rec.category = rec.labels["lvl1"] or NO_LEVEL1
    return {lv: changed[lv] for lv in GS1_LEVELS}


def level_missing(rec, level: str) -> bool:
    """Whether the offer lacks the GS1 level its label at `level` is read from, so it can be told neither a
    target nor out of scope: no lvl1 code (or, in a segment where a 6-class rule reads level 3, no lvl3 code)
    for the 6 classes; the level itself for lvl1/lvl2/lvl3; any level for 'all'. Such an offer (a null or
    missing label) was taken for Other, or counted as outside the label set."""
    if level == "all":
        return not all(rec.labels[lv] for lv in GS1_LEVELS)
    if level != "six":
        return rec.labels[level] is None
    if rec.labels["six"] is not None:
        return False
    lvl1, lvl3 = gs1_code(rec.gs1.get("lvl1")), gs1_code(rec.gs1.get("lvl3"))
    return lvl1 is None or (lvl3 is None and any(f == "lvl3" and c[:2] == lvl1[:2] for f, c, _ in _SIX_RULES))


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


def _read_files(args, targets, config) -> tuple[list, dict]:
    """(path, is_test, [(record, label)], counts) per file, the test file first so its titles can be
    kept out of train/validation, its labels in the training files' spelling (respell_levels); and
    {level: test offers respelled}."""
    files = [(f, False) for f in args.mwpd] + ([(args.mwpd_test, True)] if args.mwpd_test else [])
    for f, _ in files:
        require_file(f, "MWPD file")
    files.sort(key=lambda f: not f[1])
    read = []
    for path, is_test in files:
        counts: Counter = Counter()
        read.append((path, is_test, list(iter_records(path, counts, config.max_description_chars, config.breadcrumb)),
                     counts))
    respelled = {}
    if args.mwpd_test:
        respelled = respell_levels(read[0][2], [r for _, is_test, recs, _ in read if not is_test for r in recs])
    out, test_groups = [], set()
    for path, is_test, records, counts in read:
        kept = []
        for rec in records:
            if level_missing(rec, args.label_level):
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
    return out, respelled


def check_test_file(files, config) -> None:
    """A --mwpd_test file none of whose offers is kept is refused (--allow_empty_splits: a warning and an
    empty test split): the builder then cut the test split from the training files, and the figures the
    user took for the held-out file's were those of offers out of the files trained on."""
    for path, is_test, kept, counts in files:
        if is_test and not kept:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "lines_read" and v)
            msg = (f"--mwpd_test {path}: none of its {counts.get('lines_read', 0):,} lines is an offer of the label "
                   f"set ({reasons or 'no offers'}), so there is nothing to score")
            if not config.allow_empty_splits:
                raise UserError(msg + "; check its lvl1/lvl2/lvl3 labels, --categories and --other_label")
            print(f"WARNING: {msg}; the test split is empty", file=sys.stderr, flush=True)


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

    from category_classification.data.builder import (FINE_COLUMN, OFFER_ID_COLUMN, TEXT_BARE_COLUMN, TEXT_TITLE_COLUMN,
                                                      LabelPlan, Shard, ShardWriter)
    from category_classification.data.records import ReadResult, parse_categories

    targets = parse_categories(args.categories, default=None)
    files, respelled = _read_files(args, targets, config)
    check_test_file(files, config)
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
    # FILE of an offer's FILE:LINE id: the file's name, or its path as given where two files share that name
    # (shop_a/offers.jsonl, shop_b/offers.jsonl gave their offers the same ids)
    names = [Path(path).name for path, *_ in files]
    file_ids = [name if names.count(name) == 1 else str(path) for name, (path, *_) in zip(names, files)]
    for i, (path, is_test, kept, counts) in enumerate(files):
        categories = sorted({rec.category for rec, _ in kept})
        code = {c: k for k, c in enumerate(categories)}
        writer = ShardWriter(tmp / f"mwpd-{i}.arrow", levels=tuple(plan.levels), bare_text=config.breadcrumb,
                             fine_category=fine, title_text=True, offer_id=True)
        columns = {"text": [rec.text for rec, _ in kept], TEXT_TITLE_COLUMN: [rec.title_text for rec, _ in kept],
                   "label": np.array([index[lab] for _, lab in kept], dtype=np.int64),
                   "cluster": np.array([rec.group for rec, _ in kept], dtype=np.int64),
                   "source": np.array([code[rec.category] for rec, _ in kept], dtype=np.int32)}
        # the file's own ID, else where the offer stands in it
        columns[OFFER_ID_COLUMN] = [rec.ref["id"] or f"{file_ids[i]}:{rec.ref['line']}" for rec, _ in kept]
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
    if args.mwpd_test:
        extra["test_labels_respelled"] = respelled
    return ReadResult(shards, plan, source, extra)
