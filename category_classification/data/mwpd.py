"""Reading the MWPD 2020 offers (data/mwpd): GS1-labelled WDC offers, mapped to our label sets.

The 6-class rules are the table in data/mwpd/README.md; `lvl1`/`lvl2`/`lvl3` keep the GS1 class names.
The group key is the normalized title, so duplicate offers never straddle splits.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter

from category_classification.core.cli import UserError, require_file
from category_classification.data.lspc import parse_json_object
from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS, clean, group_id, normalize_title, offer_text

LABEL_LEVELS = ("six", "lvl1", "lvl2", "lvl3")
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


def gs1_label(offer: dict, level: str) -> str | None:
    """The offer's class at `level`, or None when it has none (outside the 6 classes, or unlabelled)."""
    if level == "six":
        for fld, code, name in _SIX_RULES:
            value = offer.get(fld)
            if isinstance(value, str) and value.split("_", 1)[0] == code:
                return name
        return None
    value = offer.get(level)
    if not isinstance(value, str) or not value.strip():
        return None
    code, _, name = value.partition("_")
    return (name or code).strip()


def _open_lines(path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_mwpd(path, level: str = "six", counts: Counter | None = None,
              max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS):
    """Yield (text, label_name, group_id) for each usable offer of an MWPD file (JSON lines, plain or gzip).

    Skipped lines are counted in `counts` by reason; a file that is a single JSON array works too.
    """
    if level not in LABEL_LEVELS:
        raise UserError(f"--label_level must be one of {', '.join(LABEL_LEVELS)}, got {level!r}")
    path = require_file(path, "MWPD file")
    counts = Counter() if counts is None else counts
    try:
        with _open_lines(path) as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read MWPD file {path}: {exc}") from None
    lines = data.splitlines()
    stripped = data.lstrip()
    if stripped[:1] == b"[":  # one JSON array instead of JSON lines
        try:
            lines = [json.dumps(o).encode() for o in json.loads(stripped)]
        except ValueError:
            pass  # fall back to line by line, so the bad lines are counted
    for raw in lines:
        counts["lines_read"] += 1
        offer = parse_json_object(raw, counts)
        if offer is None:
            continue
        title = clean(offer.get("Name") or offer.get("name") or offer.get("title"))
        if not title:
            counts["missing_title"] += 1
            continue
        label = gs1_label(offer, level)
        if label is None:
            counts["outside_label_set"] += 1
            continue
        description = clean(offer.get("Description") or offer.get("description"))
        yield offer_text(title, description, max_description_chars), label, group_id(normalize_title(title))
