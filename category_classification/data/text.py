"""Offer text: the model input built from title, description and (MWPD) the shop's breadcrumb, and the
normalized title used as a group key.

One place for these rules so the builder, the profiler, the predictor and the service agree on what "text"
means, including the rule for hostile text (docs/reliability.md): code points that cannot be encoded (lone
UTF-16 surrogates, which crawled JSON holds) become U+FFFD, control characters become spaces, whitespace
collapses, the model text is capped at MAX_TEXT_CHARS, and a text that ends up blank is refused by callers
(`text_problem`), never given a label.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

DEFAULT_MAX_DESCRIPTION_CHARS = 300
# Every model reads at most a few hundred tokens; longer input only costs memory (a 10 MB title once
# took 1.6 GB in the predictor), so the model text is cut here for every path.
MAX_TEXT_CHARS = 2000
# The shop's breadcrumb (MWPD `CategoryText`) is appended after this separator, cut to this many characters:
# the format bench/mwpd_benchmark.py measured (docs/benchmarks.md, "What each field adds").
BREADCRUMB_SEPARATOR = " | "
MAX_BREADCRUMB_CHARS = 300
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# Control characters and the zero-width space and non-joiner (word breaks: ZWNJ separates Persian words) become
# spaces
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c]")
# Invisible marks that carry no meaning in a product title (soft hyphen, direction marks and embeddings,
# invisible operators, byte-order marks) are dropped; the zero-width joiner and tag characters are kept
# (emoji sequences, flags, Indic scripts)
_DROP = re.compile("[\u00ad\u061c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")
# Every format character (Unicode category Cf): a text of only these is blank
_FORMAT = re.compile("[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
                     "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
                     "\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
                     "\U000e0020-\U000e007f]")


def encodable(value: str) -> str:
    """`value` with every code point UTF-8 cannot encode (lone surrogates) replaced by U+FFFD."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)


def clean(value, max_chars: int = 0) -> str:
    """A field as one line of text: str() of scalars, unencodable code points replaced, control characters
    and whitespace runs made single spaces, '' for None/containers; cut to `max_chars` when given."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    if not isinstance(value, str):
        value = str(value)
    if max_chars:  # cut before the work below: a field can be megabytes long
        value = value[: 2 * max_chars + 64]
    value = encodable(value)
    if not value.isascii():
        value = _DROP.sub("", value)
    value = " ".join(_CONTROL.sub(" ", value).split())
    return value[:max_chars].rstrip() if max_chars and len(value) > max_chars else value


def has_visible_text(text: str) -> bool:
    """False for a text of only whitespace, control and invisible format characters (the builders' and the
    predictors' one test of a blank title). A printable ASCII first character is visible text: most values are
    judged by it alone, with no cleaning (the builders' hot path)."""
    if "!" <= text[:1] <= "~":
        return True
    visible = clean(text.lstrip(), 64)
    return bool(visible) and (visible.isascii() or bool(_FORMAT.sub("", visible).strip()))


def text_problem(text) -> str | None:
    """Why `text` cannot be classified (None when it can): the one check every prediction path applies."""
    if not isinstance(text, str):
        return "text is not a string"
    if not has_visible_text(text):
        return "blank text"
    return None


# An offer's fields, each spelling tried in this order (the MWPD files write Name, Description, CategoryText,
# URL; the LSPC corpus title, name, description; predict.py also takes a ready-made `text`). Every reader of
# offers and every prediction path picks a field with `offer_field`, so one offer gives one model text.
TITLE_FIELDS = ("title", "name", "Title", "Name")
DESCRIPTION_FIELDS = ("description", "Description")
BREADCRUMB_FIELDS = ("breadcrumb", "CategoryText")
URL_FIELDS = ("url", "URL")
ID_FIELDS = ("id", "ID", "Id")  # an offer's own id (MWPD files write "ID"): the first with a value


def id_field(record: dict) -> str | None:
    """Which of ID_FIELDS a record's id comes from: the first holding a value (not null, not empty), else the
    first present (its null or empty value is copied as given), else None."""
    present = [k for k in ID_FIELDS if k in record]
    return next((k for k in present if record[k] not in (None, "")), present[0] if present else None)


def offer_id(record: dict) -> str:
    """The record's id as text, as a dataset's offer_id column holds it ("" without one): a string as given, a
    number as its digits, any other JSON value as its JSON."""
    value = record.get("id")  # the corpus's own spelling, first in ID_FIELDS: the builder's hot path
    if value is None or value == "":
        key = id_field(record)
        value = None if key is None else record[key]
    return id_text(value)


def id_text(value) -> str:
    """An id value as text, by offer_id's rule ("" for None); also for the offer_id column of a dataset made by
    hand, whose cells may be bytes, dates or NaN, which a JSON line cannot hold as they are."""
    if value is None:
        return ""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return encodable(value.decode("utf-8", "replace"))
    try:
        return encodable(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):  # not a JSON value (a date, a decimal): its own spelling
        return encodable(str(value))


# Some crawls (the LSPC corpus) write a field as an RDF (N-Triples) literal: "value", "value"@en or "value"@es-419
# (a language tag: letters, then subtags of letters or digits), "value"^^<datatype>, the quotes and backslashes
# inside escaped (\" \\ \n \u00e9 ...). Only a whole value of that form is unwrapped: a title with quotes of its own
# ('"The Hobbit" and "Smaug"', '27" monitor') or "@en" inside a word ("info@en.example.com") stays as given.
_LITERAL_END = re.compile(r'"(@[A-Za-z]+(?:-[A-Za-z0-9]+)*|\^\^<[^<>"\s]*>)?\Z')
_TAGGED_LITERAL = r'"((?:[^"\\]|\\.)*)"(?:@[A-Za-z]+(?:-[A-Za-z0-9]+)*|\^\^<[^<>"\s]*>)'
_LITERALS = re.compile(r"(?:%s[\s,]*)+" % _TAGGED_LITERAL, re.S)  # "Nike"@en "Nike"@de: several values in one
_ONE_LITERAL = re.compile(_TAGGED_LITERAL, re.S)
_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([tbnrf"\'\\]))')
_ESCAPED = {"t": "\t", "b": "\b", "n": "\n", "r": "\r", "f": "\f", '"': '"', "'": "'", "\\": "\\"}
# a literal's value is unescaped up to this many characters: every field is cleaned to at most MAX_TEXT_CHARS,
# from its first 2 * MAX_TEXT_CHARS + 64 characters (`clean`), and an escape is at most 10 characters long
_MAX_LITERAL_CHARS = 10 * (2 * MAX_TEXT_CHARS + 64)
_MAX_LITERALS_CHARS = 1 << 16  # a value of several literals is a title or a description, not a book


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value

    def one(m):
        code = m.group(1) or m.group(2)
        if code is None:
            return _ESCAPED[m.group(3)]
        n = int(code, 16)
        return chr(n) if n < 0x110000 else "\ufffd"

    value = _ESCAPE.sub(one, value)
    if _SURROGATE.search(value):  # a pair of \u escapes is one character; a lone one becomes U+FFFD
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def _literal(value: str) -> str | None:
    """The value of `value` when it is a whole RDF literal (or several, tagged: the first with visible text),
    else None."""
    end = _LITERAL_END.search(value, max(1, len(value) - 256)) if value[:1] == '"' else None
    if end is None:
        return None
    inner, tagged = value[1:end.start()], end.group(1) is not None
    plain = inner.replace("\\\\", "")
    if plain.endswith("\\"):  # the closing quote is escaped: no literal
        return None
    if '"' in plain.replace('\\"', ""):  # a quote inside that is not escaped
        if not tagged:
            return None  # '"The Hobbit" and "Smaug"': a title with quotes of its own
        if len(value) <= _MAX_LITERALS_CHARS and _LITERALS.fullmatch(value):
            values = [_unescape(v) for v in _ONE_LITERAL.findall(value)]
            return next((v for v in values if has_visible_text(v)), "")
        # one tagged literal whose quotes were not escaped: '"27" monitor"@en'
    return _unescape(inner[:_MAX_LITERAL_CHARS])


def literal_value(value: str) -> str:
    """`value` unwrapped when it is an RDF literal ('"Nike Air"@en' -> 'Nike Air', '""@en' -> ''), else as
    given: the rule every reader of offer fields applies (`offer_field`)."""
    first = value[:1]
    if first != '"' and "!" <= first <= "~":  # most values: no literal
        return value
    stripped = value.strip()
    found = _literal(stripped)
    if found is None and (stripped[:1] == '"' or _CONTROL.match(stripped) or _FORMAT.match(stripped)):
        found = _literal(clean(stripped))  # invisible or control characters around the literal
    return value if found is None else found


def offer_field(offer, fields, literals: bool = True) -> str:
    """The value of the first of `fields` that holds a string with visible text, as given ('' when none
    does), an RDF literal unwrapped first (`literal_value`; not with `literals=False`, for a ready-made model
    text): '""@en' is blank. A blank value, or one that is not a string (a number, true/false, null, an
    object, a list), counts as absent: it never hides another spelling, and a number never becomes text. (A
    CSV cell is always a string, so a number there is text: `12345` in a CSV title column is a title, in JSON
    it is absent.)"""
    for name in fields:
        value = offer.get(name)
        if not isinstance(value, str):
            continue
        if literals:
            value = literal_value(value)
        if value and has_visible_text(value):
            return value
    return ""


def model_text(text) -> str:
    """A ready-made text (a --text title, a line of a .txt file, an API request) under the same rule as
    `offer_text`: cleaned and capped, so prediction sees what training saw."""
    return clean(text, MAX_TEXT_CHARS)


def breadcrumb_text(value) -> str:
    """The shop's breadcrumb as it enters any model text: cleaned like every field, cut to MAX_BREADCRUMB_CHARS."""
    return clean(value, MAX_BREADCRUMB_CHARS)


def offer_text(title: str, description: str = "", max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
               breadcrumb=None) -> str:
    """title + " " + description, the description cut to `max_description_chars` (0 = whole), then
    " | " + the breadcrumb when one is given and not blank (no separator without one)."""
    return offer_texts(title, description, max_description_chars, breadcrumb)[0]


def offer_texts(title: str, description: str = "", max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS,
                breadcrumb=None) -> tuple[str, str]:
    """(offer_text, the title alone under the same rule: offer_text(title)), the title cleaned once (the
    LSPC builder keeps both for every offer)."""
    title = clean(title, MAX_TEXT_CHARS)
    description = clean(description, max_description_chars or MAX_TEXT_CHARS)
    text = (f"{title} {description}" if description else title)[:MAX_TEXT_CHARS].rstrip()
    crumb = breadcrumb_text(breadcrumb) if breadcrumb is not None else ""
    if crumb and len(text) + len(BREADCRUMB_SEPARATOR) < MAX_TEXT_CHARS:  # room for more than the separator
        text = f"{text}{BREADCRUMB_SEPARATOR}{crumb}"[:MAX_TEXT_CHARS].rstrip()
    return text, title[:MAX_TEXT_CHARS].rstrip()


def normalize_title(title: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form: near-duplicate titles map to the same key."""
    t = unicodedata.normalize("NFKC", title).casefold()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", t)).strip()


def group_id(key: str) -> int:
    """A stable signed 64-bit id for a string key (same on every machine and Python run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)
