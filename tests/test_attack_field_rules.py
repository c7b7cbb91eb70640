"""One rule picks an offer's fields (text.offer_field) for the dataset builder (MWPD and LSPC readers), the
fielded trainer and predict.py (JSON lines, CSV): the first spelling holding a string with visible text, a
blank or non-string value counting as absent. They used to differ: `{"title": "", "Name": "X"}` trained as
"X" but was a blank text in predict.py, a blank `breadcrumb` or `description` hid the `CategoryText` or
`Description` the builder read, and a numeric breadcrumb or description became text in the builder only."""

import csv
import gzip
import io
import json
import zipfile
from collections import Counter

import pytest
from datasets import load_from_disk

from category_classification import build_lspc_dataset, predict, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data import lspc
from category_classification.inference.batch import read_jsonl
from predict_fixtures import make_linear
from tests.test_breadcrumb import write_offers
from tests.test_mwpd_benchmark import PATHS

CRUMB = "Home > Boots > Sale"
# (offer, its model text for a model trained with the breadcrumb; None: no title, an error line)
ODD_OFFERS = [
    ({"title": "", "Name": "odd boots one"}, "odd boots one"),
    ({"Name": " \t", "title": "odd boots two"}, "odd boots two"),
    ({"Name": "odd boots three", "breadcrumb": "", "CategoryText": CRUMB}, f"odd boots three | {CRUMB}"),
    ({"Name": "odd boots four", "description": "  ", "Description": "leather"}, "odd boots four leather"),
    ({"Name": "odd boots five", "Description": 7, "CategoryText": 5}, "odd boots five"),
    ({"Name": "odd boots six", "Description": True, "CategoryText": False, "breadcrumb": 2.5}, "odd boots six"),
    ({"Title": "odd boots seven", "breadcrumb": CRUMB}, f"odd boots seven | {CRUMB}"),
    ({"Name": "odd boots eight", "description": "soft", "Description": "hard"}, "odd boots eight soft"),
    ({"title": 5, "name": "odd boots nine", "Name": None}, "odd boots nine"),
    # a blank title stays a blank text, whatever the other fields hold
    ({"title": "", "Name": "\u200b", "description": "leather", "CategoryText": CRUMB}, None),
    ({"Name": 12345, "Description": "leather"}, None),
]
CSV_COLUMNS = ["ID", "title", "name", "Title", "Name", "description", "Description", "breadcrumb", "CategoryText"]


def _predict(model, *args):
    return run(predict.main, ["--model", str(model), "--no_progress", *map(str, args)])


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _labelled(offers):
    """The offers as MWPD test-file offers: an ID and the GS1 levels of the footwear path."""
    l1, l2, l3, _ = PATHS[2]
    return [{"ID": f"odd-{i}", **o, "lvl1": l1, "lvl2": l2, "lvl3": l3} for i, o in enumerate(offers)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An MWPD dataset (breadcrumb on, the default) whose test split is the odd offers, and the fast default
    trained on it (so predict.py adds the breadcrumb, `category_model.json` `"breadcrumb": true`)."""
    root = tmp_path_factory.mktemp("rules")
    write_offers(root / "train.json.gz", 12, 0)
    test = root / "odd.jsonl"
    test.write_text("".join(json.dumps(o) + "\n" for o in _labelled([o for o, _ in ODD_OFFERS])))
    assert build_lspc_dataset.main(["--mwpd", str(root / "train.json.gz"), "--mwpd_test", str(test),
                                    "--val_size", "0.2", "--quiet", "--out", str(root / "ds")]) == 0
    assert train_linear_baseline.main(["--data", str(root / "ds"), "--out", str(root / "model")]) == 0
    return root


def test_builder_and_predict_jsonl_give_an_offer_the_same_text(built, tmp_path):
    trained = sorted(load_from_disk(str(built / "ds"))["test"]["text"])
    out = tmp_path / "preds.jsonl"
    assert _predict(built / "model", "--input", built / "odd.jsonl", "--out", out, "--keep_text") == 0
    got = _rows(out)
    texts = [r.get("text") if "error" not in r else None for r in got]
    assert sorted(t for t in texts if t is not None) == trained  # what was trained on is what is predicted
    assert texts == [t for _, t in ODD_OFFERS]
    assert [r.get("error") for r in got][-2:] == ["blank text", "field 'Name' is not a string"]
    report = json.loads((built / "ds" / "build_report.json").read_text())
    assert next(f for f in report["files"] if f["test"])["missing_title"] == 2


def test_a_csv_row_gives_the_text_of_the_same_offer_as_a_json_line(built, tmp_path):
    """CSV cells are strings: the offers whose fields are all strings, as rows with every other cell empty."""
    cases = [(o, t) for o, t in ODD_OFFERS if all(isinstance(v, str) for v in o.values())]
    assert len(cases) == 7  # the last one: a blank title, an error line
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, restval="", extrasaction="ignore")  # no level columns
    writer.writeheader()
    writer.writerows(_labelled([o for o, _ in cases]))
    table = tmp_path / "odd.csv"
    table.write_text(buf.getvalue(), encoding="utf-8")
    out = tmp_path / "csv.jsonl"
    assert _predict(built / "model", "--input", table, "--out", out, "--keep_text") == 0
    got = _rows(out)
    texts = [r.get("text") if "error" not in r else None for r in got]
    assert set(texts) - {None} <= set(load_from_disk(str(built / "ds"))["test"]["text"])  # the trained texts
    assert texts == [t for _, t in cases]
    assert [r["id"] for r in got] == [f"odd-{i}" for i in range(len(cases))]


def _lspc_zip(path, offers):
    data = gzip.compress("".join(json.dumps({"cluster_id": 100 + i, "category": "Shoes", **o}) + "\n"
                                 for i, o in enumerate(offers)).encode())
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("offers/part-0.json.gz", data)
    return path


LSPC_OFFERS = [  # (offer, its model text; None: no title)
    ({"title": "", "name": "lspc boots one"}, "lspc boots one"),
    ({"title": "\u200b", "name": "lspc boots two"}, "lspc boots two"),
    ({"title": 5, "name": "lspc boots three"}, "lspc boots three"),
    ({"title": "lspc boots four", "description": "", "Description": "leather"}, "lspc boots four leather"),
    ({"title": "lspc boots five", "description": 5}, "lspc boots five"),
    ({"title": " ", "description": "leather boots"}, None),
]


def test_the_lspc_builder_and_predict_jsonl_give_an_offer_the_same_text(tmp_path):
    offers = [o for o, _ in LSPC_OFFERS]
    corpus = _lspc_zip(tmp_path / "lspc.zip", offers)
    counts: Counter = Counter()  # the builder's own reader of a member (its read workers run this)
    batches = list(lspc.read_member(corpus, "offers/part-0.json.gz", lspc.ReadPlan(), counts))[:-1]
    trained = [t for b in batches for t in b["text"]]
    model = make_linear(tmp_path / "model")
    lines = tmp_path / "lspc.jsonl"
    lines.write_text("".join(json.dumps(o) + "\n" for o in offers))
    texts = {}
    for name, source in (("zip", ["--zip", corpus]), ("jsonl", ["--input", lines])):
        out = tmp_path / f"{name}.preds.jsonl"
        assert _predict(model, *source, "--out", out, "--keep_text") == 0
        texts[name] = [r.get("text") if "error" not in r else None for r in _rows(out)]
    assert [t for t in texts["jsonl"] if t is not None] == trained
    assert texts["zip"] == texts["jsonl"] == [t for _, t in LSPC_OFFERS]
    assert counts["missing_title"] == 1


def test_the_fielded_trainer_reads_an_offer_as_predict_does(tmp_path):
    from category_classification.models.fielded import fielded_text
    from category_classification.train_fielded_linear import read_offers

    offers = _labelled([o for o, _ in ODD_OFFERS] + [{"title": "odd boots url", "url": "http://x.com/boots/1"},
                                                     {"Name": "odd boots url two", "url": "", "URL": "http://x.com/b"}])
    src = tmp_path / "odd.jsonl"
    src.write_text("".join(json.dumps(o) + "\n" for o in offers))
    counts: Counter = Counter()
    trained = [o[0] for o in read_offers(src, ("lvl1",), counts)]
    predicted = [r.text for r in read_jsonl(src, fielded=True) if r.reason is None and r.text.strip()]
    assert trained == predicted and counts["no_title"] == 2
    assert predicted[2] == fielded_text("odd boots three", "", CRUMB)
    assert predicted[-2:] == [fielded_text("odd boots url", "", None, "http://x.com/boots/1"),
                              fielded_text("odd boots url two", "", None, "http://x.com/b")]
