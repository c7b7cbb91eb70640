"""A hostile user's offers with more than a title: predict.py (JSON lines, JSON arrays, CSV) and evaluate.py
build the text each model was trained on from the offer's fields (the breadcrumb models' " | ", the fielded
model's markers and URL words), and a blank title is a blank text whatever the other fields hold."""

import csv
import io
import json

import pytest

from category_classification import evaluate, predict, train_fielded_linear, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data.text import offer_text
from category_classification.models.fielded import fielded_text, mwpd_fielded_text
from category_classification.models.registry import load_predictor
from tests.test_breadcrumb import build_offer_datasets
from tests.test_fielded import offers as fielded_offers
from tests.test_fielded import write as write_gz


def _predict(model, *args):
    return run(predict.main, ["--model", str(model), "--no_progress", *map(str, args)])


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A fielded model whose offers are told apart by breadcrumb and URL; MWPD train/test files (breadcrumb on
    most offers), a dataset built from them with the breadcrumb (the MWPD default), a linear model trained
    without it and a six-class fielded model trained on the same files."""
    root = tmp_path_factory.mktemp("fields")
    fielded = root / "fielded"
    # no title copies: taught each toy title alone, the model would lean on the titles, and these tests are
    # about the breadcrumb and URL reaching it
    assert train_fielded_linear.main(["--data", str(write_gz(root / "f.json.gz", fielded_offers())),
                                      "--out", str(fielded), "--no_title_copies"]) == 0
    _, test_rows = build_offer_datasets(root, 20, 5, {"on": [], "off": ["--breadcrumb", "off"]})
    assert train_linear_baseline.main(["--data", str(root / "off"), "--out", str(root / "linear_off")]) == 0
    assert train_linear_baseline.main(["--data", str(root / "on"), "--out", str(root / "linear_on")]) == 0
    assert train_fielded_linear.main(["--data", str(root / "train.json.gz"), "--out", str(root / "fielded_six"),
                                      "--label_level", "six"]) == 0
    return {"root": root, "fielded": fielded, "test_rows": test_rows}


def _uninformative_offers():
    """MWPD offers whose title says nothing: only the breadcrumb and the URL tell Automotive from Clothing."""
    rows = fielded_offers(2, start=500)
    for i, r in enumerate(rows):
        r["Name"], r["Description"] = f"thing {i}", "nice"
    return rows


def test_predict_gives_a_fielded_model_the_breadcrumb_and_url_of_jsonl_csv_and_array_offers(models, tmp_path):
    rows = _uninformative_offers()
    want_texts = [mwpd_fielded_text(r) for r in rows]
    predictor = load_predictor(models["fielded"])
    want = [r["label"] for r in predictor.predict(want_texts)]
    assert want == [r["lvl1"].split("_", 1)[1] for r in rows]  # the fields decide
    jsonl = tmp_path / "mwpd.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    other_spelling = tmp_path / "plain.jsonl"  # title / description / breadcrumb / url
    other_spelling.write_text("".join(json.dumps({"title": r["Name"], "description": r["Description"],
                                                  "breadcrumb": r["CategoryText"], "url": r["URL"]}) + "\n"
                                      for r in rows))
    table = tmp_path / "offers.csv"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["ID", "Name", "Description", "CategoryText", "URL"])
    writer.writerows([r["ID"], r["Name"], r["Description"], r["CategoryText"], r["URL"]] for r in rows)
    table.write_text(buf.getvalue())
    array = tmp_path / "offers.json"  # the MWPD files may be one JSON array, which the trainer reads
    array.write_text(json.dumps(rows, indent=1))
    for src in (jsonl, other_spelling, table, array):
        out = tmp_path / f"{src.name}.preds.jsonl"
        assert _predict(models["fielded"], "--input", src, "--out", out, "--keep_text") == 0
        got = _rows(out)
        assert [r["text"] for r in got] == want_texts, src.name
        assert [r["label"] for r in got] == want, src.name
    assert predictor.describe()["fielded"] is True  # GET /model says what the texts carry


def test_a_blank_title_is_a_blank_text_whatever_its_breadcrumb_or_description(models, tmp_path):
    model = models["root"] / "linear_on"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(o) for o in (
        {"title": "", "CategoryText": "Home > Boots > Sale"},
        {"Name": "  \t", "Description": "leather boots for men", "CategoryText": "Home > Boots > Sale"},
        {"title": "\u200b", "breadcrumb": "Home > Shirts > Sale"},
        {"Name": "brake pads item", "CategoryText": "Home > Brakes > Sale"})) + "\n")
    out = tmp_path / "out.jsonl"
    assert _predict(model, "--input", src, "--out", out) == 0
    assert [(r["label"], r.get("error")) for r in _rows(out)][:3] == [(None, "blank text")] * 3
    assert _rows(out)[3]["label"] is not None
    table = tmp_path / "in.csv"
    table.write_text("title,description,CategoryText\n,,Home > Boots > Sale\n  ,nice boots,\nbrake pads,,\n")
    assert _predict(model, "--input", table, "--out", out) == 0
    assert [r.get("error") for r in _rows(out)] == ["blank text", "blank text", None]
    # the fielded model too: no label from the breadcrumb and URL alone
    fielded_src = tmp_path / "f.jsonl"
    fielded_src.write_text(json.dumps({"Name": " ", "CategoryText": "Car Parts > Brakes", "URL": "http://x.com/brakes"})
                           + "\n")
    assert _predict(models["fielded"], "--input", fielded_src, "--out", out) == 0
    assert _rows(out) == [{"line": 1, "error": "blank text", "label": None}]


def _texts_scored_by_evaluate(model, data, monkeypatch, tmp_path) -> list[str]:
    from category_classification.inference import predictors

    seen, real = [], predictors.load_predictor

    def spying(*args, **kwargs):
        p = real(*args, **kwargs)
        scores = p.scores
        p.scores = lambda texts: (seen.extend(texts), scores(texts))[1]
        return p

    monkeypatch.setattr(predictors, "load_predictor", spying)
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--split", "test"]) == 0
    return seen


def test_evaluate_scores_the_texts_predict_builds_from_the_same_offers(models, monkeypatch, tmp_path):
    rows = models["test_rows"]  # the test split of both datasets is this file
    src = tmp_path / "test.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for model, want in (
            # trained without the breadcrumb: predict.py leaves the field out, so evaluate.py must too
            ("linear_off", [offer_text(r["Name"], r["Description"]) for r in rows]),
            # the fielded model reads the breadcrumb behind its marker, never after " | " (no URLs in these rows)
            ("fielded_six", [fielded_text(r["Name"], r["Description"], r.get("CategoryText")) for r in rows]),
            ("linear_on", [offer_text(r["Name"], r["Description"], 300, r.get("CategoryText")) for r in rows])):
        model = models["root"] / model
        out = tmp_path / f"{model.name}.jsonl"
        assert _predict(model, "--input", src, "--out", out, "--keep_text") == 0
        predicted = sorted(r["text"] for r in _rows(out))
        assert predicted == sorted(want), model.name
        assert sorted(_texts_scored_by_evaluate(model, models["root"] / "on", monkeypatch, tmp_path)) == predicted, \
            model.name


def test_a_json_array_file_is_read_offer_by_offer_and_an_oversized_one_is_one_line(models, tmp_path, monkeypatch,
                                                                                   capsys):
    model = models["root"] / "linear_on"
    src = tmp_path / "in.json"
    src.write_bytes(b"\xef\xbb\xbf \n[{\"Name\": \"brake pads item\", \"ID\": 7},\n {\"Name\": \"\"}, 5,\n"
                    b" {\"title\": \"boots\", \"CategoryText\": \"Home > Boots > Sale\"}]\n")
    out = tmp_path / "out.jsonl"
    assert _predict(model, "--input", src, "--out", out, "--keep_text") == 0
    got = _rows(out)
    assert [(r["line"], r.get("id"), r.get("error")) for r in got] == [
        (1, 7, None), (2, None, "blank text"), (3, None, "not a JSON object"), (4, None, None)]
    assert got[3]["text"] == "boots | Home > Boots > Sale"
    # JSON lines whose first line is an array stay JSON lines: that line is one bad record
    lines = tmp_path / "lines.json"
    lines.write_text('[1, 2]\n{"title": "boots"}\n')
    assert _predict(model, "--input", lines, "--out", out) == 0
    assert [r.get("error") for r in _rows(out)] == ["not a JSON object", None]
    from category_classification.data import mwpd

    monkeypatch.setattr(mwpd, "MAX_ARRAY_BYTES", 16)
    capsys.readouterr()
    assert _predict(model, "--input", src, "--out", tmp_path / "big.jsonl") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "JSON lines" in err[0]
    assert not (tmp_path / "big.jsonl").exists()
