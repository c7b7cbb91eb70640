"""Offer text: the model input built from title and description, and the normalized title used as a group key.

One place for these rules so the builder, the profiler and the predictor agree on what "text" means.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

DEFAULT_MAX_DESCRIPTION_CHARS = 300
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def clean(value) -> str:
    """A field as one line of text: str() of scalars, whitespace collapsed, '' for None/containers."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    if not isinstance(value, str):
        value = str(value)
    return " ".join(value.split())


def offer_text(title: str, description: str = "", max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS) -> str:
    """title + " " + description, the description cut to `max_description_chars` (0 = whole)."""
    title = clean(title)
    if max_description_chars:  # cut before cleaning: descriptions can be pages long
        description = description[: 2 * max_description_chars + 64] if isinstance(description, str) else ""
    description = clean(description)
    if max_description_chars and len(description) > max_description_chars:
        description = description[:max_description_chars].rstrip()
    return f"{title} {description}" if description else title


def normalize_title(title: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form: near-duplicate titles map to the same key."""
    t = unicodedata.normalize("NFKC", title).casefold()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", t)).strip()


def group_id(key: str) -> int:
    """A stable signed 64-bit id for a string key (same on every machine and Python run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)
