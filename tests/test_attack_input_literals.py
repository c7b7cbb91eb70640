"""A user's feed of offers whose fields are RDF (N-Triples) literals, as the LSPC corpus writes some of them
('"Nike Air"@en'), or whose CSV spells a missing value "nan", given to predict.py --input, the dataset
builders and evaluate.py: one offer gets one text whatever its wrapping, and a text no model is given (blank,
invisible) is skipped and counted, never scored. Each test holds the input that broke the old code."""

import csv
import io
import json
from collections import Counter

import pytest

from category_classification import evaluate, predict
from category_classification.core.cli import run
from category_classification.data import lspc, mwpd
from category_classification.data.text import offer_text
from predict_fixtures import make_linear
from tests.test_attack_field_rules import _lspc_zip
from tests.test_attack_user_datasets import _linear, save, three

XSD_STRING = "^^<http://www.w3.org/2001/XMLSchema#string>"


def _predict(model, *args):
    return run(predict.main, ["--model", str(model), "--no_progress", *map(str, args)])


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _texts(path):
    return [r.get("text") if "error" not in r else None for r in _rows(path)]


def _jsonl(path, offers):
    path.write_text("".join(json.dumps(o) + "\n" for o in offers), encoding="utf-8")
    return path


def _csv(path, offers, columns):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, restval="")
    writer.writeheader()
    writer.writerows(offers)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _builder_texts(corpus):
    """The LSPC builder's texts, by its own reader of a member (its read workers run this)."""
    batches = list(lspc.read_member(corpus, "offers/part-0.json.gz", lspc.ReadPlan(), Counter()))[:-1]
    return [t for b in batches for t in b["text"]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_linear(tmp_path_factory.mktemp("literals") / "model")


PLAIN = [
    {"title": "Nike Air Zoom running shoe", "description": "leichter Laufschuh"},
    {"title": "gold ring pendant", "description": "silver necklace"},
    {"title": "paperback novel", "description": "first edition"},
]
WRAPPED = [
    {"title": '"Nike Air Zoom running shoe"@en', "description": '"leichter Laufschuh"@de'},
    {"title": '"gold ring pendant"@en-GB', "description": '"silver necklace"@en'},
    {"title": '"paperback novel"', "description": '"first edition"@en'},
]


def test_an_offer_gets_the_same_text_and_label_with_and_without_rdf_literals(model, tmp_path):
    """Before: --input kept the wrapping ('"Nike Air Zoom running shoe"@en "leichter Laufschuh"@de') that
    the builder and --zip strip, so one offer had two texts."""
    want_texts = [offer_text(o["title"], o["description"]) for o in PLAIN]
    corpus = _lspc_zip(tmp_path / "lspc.zip", WRAPPED)
    assert _builder_texts(corpus) == want_texts
    sources = {"plain": ["--input", _jsonl(tmp_path / "plain.jsonl", PLAIN)],
               "zip": ["--zip", corpus],
               "jsonl": ["--input", _jsonl(tmp_path / "wrapped.jsonl", WRAPPED)],
               "csv": ["--input", _csv(tmp_path / "wrapped.csv", WRAPPED, ["title", "description"])]}
    got = {}
    for name, source in sources.items():
        out = tmp_path / f"{name}.preds.jsonl"
        assert _predict(model, *source, "--out", out, "--keep_text") == 0
        got[name] = [(r.get("text"), r["label"]) for r in _rows(out)]
    assert [t for t, _ in got["plain"]] == want_texts
    assert got["zip"] == got["jsonl"] == got["csv"] == got["plain"], got
    # the MWPD reader (builder and fielded trainer) reads the same offer the same way
    assert [r.text for r in mwpd.iter_records(tmp_path / "wrapped.jsonl", breadcrumb=False)] == want_texts


# (the offer's fields, the text every path must give it; None: no title, an error line)
HOSTILE = [
    ({"title": '"Say \\"Hi\\" cotton shirt"@en'}, 'Say "Hi" cotton shirt'),  # escaped quotes
    ({"title": '""@en', "name": "gold ring"}, "gold ring"),  # a literal that is a language tag only
    ({"title": '"  "@en-GB', "name": '"\u200b"@en'}, None),  # blank literals: no title at all
    ({"title": '"Chaussures de course"@es-419'}, "Chaussures de course"),  # a tag with a digit subtag
    ({"title": "info@en.example.com gold ring"}, "info@en.example.com gold ring"),  # "@en" in a real title
    ({"title": '"info@en.example.com"@en'}, "info@en.example.com"),
    ({"title": '"The Hobbit" and "The Silmarillion"'}, '"The Hobbit" and "The Silmarillion"'),  # own quotes
    ({"title": '"Nike Air Max"@en "Nike Air Max DE"@de'}, "Nike Air Max"),  # several literals in one value
    ({"title": ['"Nike"@en', '"Nike"@de'], "name": '"gold ring"@en'}, "gold ring"),  # a list is not a string
    ({"title": '"\\u00e9t\\u00e9 dress"@fr'}, "\u00e9t\u00e9 dress"),  # \u escapes
    ({"title": '"gold ring"' + XSD_STRING}, "gold ring"),  # a typed literal
    ({"title": 12345, "name": '"12345"^^<http://www.w3.org/2001/XMLSchema#integer>'}, "12345"),
    ({"title": '\ufeff"gold ring"@en\u200b'}, "gold ring"),  # invisible characters around it
    ({"title": '"' + "gold ring " * 300 + '"@en'}, offer_text("gold ring " * 300)),  # longer than a text
]


def test_hostile_literals_give_one_text_in_the_builder_and_every_predict_input(model, tmp_path):
    """Before: the builder kept the backslashes of escaped quotes and \\u escapes, a tag like es-419, the
    second literal of a value, a datatype, and the opening quote of a title over 2,000 characters; it cut
    the quotes of a title holding its own ('The Hobbit" and "The Silmarillion'); --input unwrapped nothing
    ('""@en' was labelled Books)."""
    offers = [o for o, _ in HOSTILE]
    want = [t for _, t in HOSTILE]
    corpus = _lspc_zip(tmp_path / "lspc.zip", offers)
    assert _builder_texts(corpus) == [t for t in want if t is not None]
    assert [lspc.offer_model_texts(o)[0] or None for o in offers] == want
    got = {}
    for name, source in (("zip", ["--zip", corpus]), ("jsonl", ["--input", _jsonl(tmp_path / "o.jsonl", offers)])):
        out = tmp_path / f"{name}.preds.jsonl"
        assert _predict(model, *source, "--out", out, "--keep_text") == 0
        got[name] = _texts(out)
    assert got["zip"] == got["jsonl"] == want
    mwpd_texts = [r.text for r in mwpd.iter_records(tmp_path / "o.jsonl", breadcrumb=False)]
    assert mwpd_texts == [t for t in want if t is not None]


def test_a_csv_cell_spelling_a_missing_value_is_empty_as_in_the_json_line(model, tmp_path):
    """Before: a table written with pandas' astype(str) gave 'gold ring nan | NaN' for the JSON line's
    'gold ring', and a title of "nan" got a label (Baby)."""
    jsonl = tmp_path / "o.jsonl"
    jsonl.write_text('{"title": "gold ring", "description": NaN, "breadcrumb": null}\n'
                     '{"title": NaN, "description": "leather boot"}\n'
                     '{"title": "brake pad", "description": "engine oil"}\n', encoding="utf-8")
    table = tmp_path / "o.csv"
    table.write_text("title,description,breadcrumb\n"
                     "gold ring,nan,NaN\n"
                     "nan,leather boot,None\n"
                     "brake pad,engine oil,<NA>\n", encoding="utf-8")
    got = {}
    for src in (jsonl, table):
        out = tmp_path / f"{src.name}.preds.jsonl"
        assert _predict(model, "--input", src, "--out", out, "--keep_text") == 0
        got[src.suffix] = _rows(out)
    texts = [r.get("text") if "error" not in r else None for r in got[".csv"]]
    assert texts == [r.get("text") if "error" not in r else None for r in got[".jsonl"]]
    assert texts == ["gold ring", None, "brake pad engine oil"]
    assert got[".csv"][1]["error"] == "blank text"


def _spy_on_scores(monkeypatch) -> list:
    """The texts evaluate.py gives its model, recorded."""
    from category_classification.inference import predictors

    seen, real = [], predictors.load_predictor

    def load(*args, **kwargs):
        predictor = real(*args, **kwargs)
        scores = predictor.scores

        def spy(texts, *a, **k):
            seen.extend(texts)
            return scores(texts, *a, **k)

        predictor.scores = spy
        return predictor

    monkeypatch.setattr(predictors, "load_predictor", load)
    return seen


BLANK = ["", "   ", "\t\n", "\u200b\ufeff", "\u2063"]


def test_evaluate_skips_blank_texts_as_it_skips_null_ones(tmp_path, capsys, monkeypatch):
    """Before: the null text was skipped ("skipped 1 test offers without a text"), the blank and invisible
    ones scored: 20 of 21 offers, each blank one given a label."""
    splits = three()
    splits["test"][0]["text"] = None
    for i, blank in enumerate(BLANK, 1):
        splits["test"][i]["text"] = blank
    data = save(tmp_path / "d", splits)
    assert _linear(data, tmp_path / "m") == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert (metrics["splits"] if "splits" in metrics else metrics)["test"]["n"] == 15  # the trainer's figures too
    capsys.readouterr()
    seen = _spy_on_scores(monkeypatch)
    preds = tmp_path / "p.jsonl"
    assert run(evaluate.main, ["--model", str(tmp_path / "m"), "--data", str(data), "--split", "test",
                               "--save_preds", str(preds), "--no_lang_metrics"]) == 0
    assert "note: skipped 6 test offers without a text and 0 without a label" in capsys.readouterr().out
    assert len(seen) == 15 and not set(seen) & set(BLANK)
    assert [json.loads(x)["row"] for x in preds.read_text().splitlines()] == list(range(6, 21))


def test_evaluate_never_scores_a_blank_bare_text(tmp_path, monkeypatch):
    """Before: a model trained without the breadcrumb was given a hand-made `text_bare` of "" (its offer's
    text "... | Shoes" starts with it) and the blank text was scored and labelled."""
    from datasets import Value

    assert _linear(save(tmp_path / "clean", three()), tmp_path / "m") == 0  # no breadcrumb
    splits = three()
    for rows in splits.values():
        for r in rows:
            r["text_bare"] = r["text"]
    first = splits["test"][0]
    first["text"], first["text_bare"] = first["text"] + " | Shoes", ""
    data = save(tmp_path / "d", splits, extra={"text_bare": Value("string")})
    seen = _spy_on_scores(monkeypatch)
    assert run(evaluate.main, ["--model", str(tmp_path / "m"), "--data", str(data), "--split", "test",
                               "--no_lang_metrics"]) == 0
    assert len(seen) == 21 and "" not in seen
    assert seen[0] == first["text"]  # a blank bare text counts as missing: the text as it is
