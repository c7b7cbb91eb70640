"""The one record type every data source yields, and what a source's read pass hands the builder.

Kept apart from sources.py so the readers (lspc.py, mwpd.py) can build records without importing the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from category_classification.core.cli import UserError

DEFAULT_CATEGORIES = ("Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes")  # the seed's six
# Each offer's title alone under the model text rule (= `text` when it has no description or breadcrumb), so a
# trainer can also learn from offers that arrive as a title only (LinearConfig.title_copies). Named here, where
# every reader sees it: the LSPC reader's batches carry it (data/builder.py writes it).
TEXT_TITLE_COLUMN = "text_title"
# Each offer's own id (the MWPD file's ID, the LSPC offer's id), so per-offer predictions (evaluate.py
# --save_preds) join back to the offers they score; an MWPD offer without one is named FILE:LINE.
OFFER_ID_COLUMN = "offer_id"


@dataclass
class OfferRecord:
    """One offer as every reader sees it. `text` is the model text (None when unusable, `reason` says
    why); `group` keeps duplicates in one split (LSPC cluster id, MWPD title hash); `category` is the
    source's own category (WDC `category` field, MWPD GS1 level 1); `labels` holds MWPD's classes by
    level; `ref` says where the offer came from; `bare_text` is the text without the shop's breadcrumb
    (None when the reader added none to `text`; equal to it when the offer has none); `title_text` is the
    title alone under the same text rule (equal to `text` when the offer has nothing else); `gs1` holds an
    MWPD offer's GS1 level labels as its file spells them ("67000000_Clothing"; None where it has none)."""

    text: str | None
    group: int | None = None
    category: str | None = None
    labels: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)
    reason: str | None = None
    bare_text: str | None = None
    title_text: str | None = None
    gs1: dict = field(default_factory=dict)


@dataclass
class ReadResult:
    shards: list
    plan: object  # builder.LabelPlan
    source: dict  # what was read, for build_report.json
    extra: dict = field(default_factory=dict)


def parse_categories(value: str | None, default=DEFAULT_CATEGORIES) -> list | None:
    """--categories A,B,..: a list of names; 'all' is None (every category); unset gives `default`."""
    if value is None:
        return None if default is None else list(default)
    if value.strip().lower() == "all":
        return None
    names = sorted({c.strip() for c in value.split(",") if c.strip()})
    if not names:
        raise UserError("--categories needs comma-separated category names (or 'all')")
    return names
