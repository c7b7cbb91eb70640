"""Each offer's title alone (the dataset's text_title column) and the linear default's title copies
(LinearConfig.title_copies): offers that arrive as a title only (predict.py --text, a feed of names) are
scored by a model that has seen titles alone."""

import gzip
import io
import json
import zipfile

import numpy as np
import pytest
from datasets import load_from_disk

from category_classification import build_lspc_dataset, train_linear_baseline
from category_classification.data.builder import TEXT_BARE_COLUMN, TEXT_TITLE_COLUMN
from category_classification.data.text import offer_text
from tests.test_breadcrumb import build_offer_datasets, write_offers


@pytest.fixture(scope="module")
def mwpd(tmp_path_factory):
    root = tmp_path_factory.mktemp("titles")
    train, test = build_offer_datasets(root, 20, 5, {"on": [], "off": ["--breadcrumb", "off"]})
    return {"root": root, "rows": train + test}


def test_every_mwpd_dataset_holds_each_offers_title_alone(mwpd):
    title_of = {}
    for r in mwpd["rows"]:
        for crumb in (r.get("CategoryText"), None):
            title_of[offer_text(r["Name"], r["Description"], 300, crumb)] = offer_text(r["Name"])
    for name in ("on", "off"):
        dsd = load_from_disk(str(mwpd["root"] / name))
        pairs = [(t, v) for s in dsd.values() for t, v in zip(s["text"], s[TEXT_TITLE_COLUMN])]
        assert len(pairs) == len(mwpd["rows"])
        assert all(title_of[t] == v and t.startswith(v + " ") for t, v in pairs)


def test_lspc_datasets_hold_the_title_under_the_model_text_rule(tmp_path):
    from category_classification.data.synthetic_lspc import write_lspc_zip

    zip_path, map_path, _ = write_lspc_zip(tmp_path / "lspc", n_offers=300, n_members=2, n_clusters=40, seed=3)
    want = {}
    with zipfile.ZipFile(zip_path) as z:
        for member in z.namelist():
            for line in gzip.open(io.BytesIO(z.read(member)), "rt", encoding="utf-8"):
                o = json.loads(line)
                title = o.get("title") or o.get("name")
                want[offer_text(title, o.get("description") or "")] = offer_text(title)
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--map", str(map_path), "--val_size", "0.2",
                                    "--test_size", "0.2", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    dsd = load_from_disk(str(tmp_path / "d"))
    pairs = [(t, v) for s in dsd.values() for t, v in zip(s["text"], s[TEXT_TITLE_COLUMN])]
    assert len(pairs) > 100 and all(want[t] == v for t, v in pairs)
    assert any(t != v for t, v in pairs)  # offers with a description: the title alone differs


def _train(data, out, *flags):
    assert train_linear_baseline.main(["--data", str(data), "--out", str(out), "--class_split", "none",
                                       "--other_bias", "auto", *flags]) == 0
    info = json.loads((out / "category_model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["title_copies"] == info["title_copies"]
    with np.load(out / "linear_weights.npz") as w:
        return info["breadcrumb_copies"], info["title_copies"], w["weights"].copy()


def test_the_linear_default_fits_each_title_once_beside_the_bare_copies(mwpd, tmp_path):
    data = mwpd["root"] / "on"
    train = load_from_disk(str(data))["train"]
    bare_differ = sum(t != b for t, b in zip(train["text"], train[TEXT_BARE_COLUMN]))
    title_differ = sum(v not in (t, b) for t, b, v in zip(train["text"], train[TEXT_BARE_COLUMN],
                                                           train[TEXT_TITLE_COLUMN]))
    assert 0 < title_differ <= len(train)
    bc, tc, both = _train(data, tmp_path / "both")
    assert (bc, tc) == (bare_differ, title_differ)
    bc, tc, no_titles = _train(data, tmp_path / "no_titles", "--no_title_copies")
    assert (bc, tc) == (bare_differ, 0) and not np.allclose(both, no_titles)
    bc, tc, _ = _train(data, tmp_path / "titles_only", "--no_breadcrumb_copies")
    # without the bare copies a title equal to its bare text (an offer without a description) is a copy again
    assert bc == 0 and tc == sum(v != t for t, v in zip(train["text"], train[TEXT_TITLE_COLUMN]))
    # a dataset built before the column existed trains exactly as with --no_title_copies
    old = tmp_path / "old_data"
    load_from_disk(str(data)).remove_columns(TEXT_TITLE_COLUMN).save_to_disk(str(old))
    (old / "build_report.json").write_text((data / "build_report.json").read_text())
    bc, tc, old_weights = _train(old, tmp_path / "old_model")
    assert (bc, tc) == (bare_differ, 0) and np.array_equal(old_weights, no_titles)


def test_with_copies_skips_repeats_and_values_that_are_not_texts():
    from category_classification.models.linear import with_copies

    texts, cols, counts = with_copies(["a b | c", "d e", "f"], [["a b", "d e", None], ["a", "d", "f"]],
                                      {"y": [0, 1, 2]})
    # offer 2's bare text is its text, offer 3's is not a text; offer 3's title is its text
    assert texts == ["a b | c", "d e", "f", "a b", "a", "d"] and cols == {"y": [0, 1, 2, 0, 0, 1]}
    assert counts == [1, 2]
    assert with_copies(["x"], [["x y"], ["x y"]], {"y": [4]}) == (["x", "x y"], {"y": [4, 4]}, [1, 0])


def test_the_benchmark_fits_the_copies_the_trainer_fits(monkeypatch, tmp_path):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from bench.mwpd_benchmark import fit_copies, read_offers
    from category_classification.models.linear import LinearConfig

    rows = write_offers(tmp_path / "t.json.gz", 3, 0)
    offers = read_offers(tmp_path / "t.json.gz", breadcrumb=True)
    assert len(offers) == len(rows)
    texts, cols = fit_copies(offers, LinearConfig(), {"y": list(range(len(offers)))})
    crumbs = sum(o["bare"] != o["text"] for o in offers)
    assert 0 < crumbs < len(offers) and len(texts) == 2 * len(offers) + crumbs
    assert texts[len(offers):] == [o["bare"] for o in offers if o["bare"] != o["text"]] + [o["title"] for o in offers]
    assert cols["y"][len(offers):] == [i for i, o in enumerate(offers) if o["bare"] != o["text"]] + list(range(len(offers)))
    plain, _ = fit_copies(offers, LinearConfig(breadcrumb_copies=False, title_copies=False), {"y": [0] * len(offers)})
    assert plain == [o["text"] for o in offers]


def test_evaluate_titles_only_scores_the_titles_and_refuses_a_dataset_without_them(mwpd, tmp_path, capsys):
    from category_classification import evaluate
    from category_classification.core.cli import run

    data = mwpd["root"] / "on"
    model = tmp_path / "m"
    _train(data, model)
    preds = {}
    for flags in ([], ["--titles_only"]):
        out = tmp_path / f"p{len(flags)}.jsonl"
        assert evaluate.main(["--model", str(model), "--data", str(data), "--split", "test",
                              "--save_preds", str(out), *flags]) == 0
        preds[bool(flags)] = [json.loads(x) for x in out.read_text().splitlines()]
    test = load_from_disk(str(data))["test"]
    from category_classification.models.registry import load_predictor

    want = load_predictor(model).predict(test[TEXT_TITLE_COLUMN], top_k=1, threshold=None)
    names = test.features["label"].names
    assert [names[p["pred"]] for p in preds[True]] == [r["label"] for r in want]
    # the titles are what is scored: a dataset whose titles all name boots is all Shoes, whatever its texts
    boots = tmp_path / "boots"
    dsd = load_from_disk(str(data))
    dsd["test"] = dsd["test"].map(lambda r: {TEXT_TITLE_COLUMN: "boots sandals sneakers"})
    dsd.save_to_disk(str(boots))
    (boots / "build_report.json").write_text((data / "build_report.json").read_text())
    for flags, shoes in (([], sum(names[y] == "Shoes" for y in dsd["test"]["label"])), (["--titles_only"], 20)):
        out = tmp_path / f"b{len(flags)}.jsonl"
        assert evaluate.main(["--model", str(model), "--data", str(boots), "--split", "test", "--save_preds", str(out),
                              *flags]) == 0
        assert sum(names[json.loads(x)["pred"]] == "Shoes" for x in out.read_text().splitlines()) == shoes < 21
    old = tmp_path / "old_data"
    load_from_disk(str(data)).remove_columns(TEXT_TITLE_COLUMN).save_to_disk(str(old))
    (old / "build_report.json").write_text((data / "build_report.json").read_text())
    assert run(evaluate.main, ["--model", str(model), "--data", str(old), "--titles_only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--titles_only needs a dataset with a text_title column" in err[0]


def test_the_fielded_model_fits_each_title_alone_unless_told_not_to(tmp_path, monkeypatch):
    import category_classification.models.fielded as fielded
    from category_classification.train_fielded_linear import main as train_fielded
    from tests.test_fielded import offers, write

    rows = offers()
    rows[0].update(Description="", CategoryText="", URL="")  # its text is its title: no copy
    rows[1]["Name"] = "  Red   Cotton Shirt "  # the title by the one field rule, as predict.py reads it
    data = write(tmp_path / "train.json.gz", rows)
    seen = []
    real = fielded.with_copies
    monkeypatch.setattr(fielded, "with_copies", lambda texts, variants, cols: seen.append(variants[0]) or
                        real(texts, variants, cols))
    assert train_fielded(["--data", str(data), "--out", str(tmp_path / "m")]) == 0
    info = json.loads((tmp_path / "m" / "category_model.json").read_text())
    assert info["config"]["title_copies"] is True and info["title_copies"] == len(rows) - 1
    from category_classification.data.text import TITLE_FIELDS, offer_field
    assert seen == [[fielded.fielded_text(offer_field(r, TITLE_FIELDS), None) for r in rows]]
    assert seen[0] == [fielded.mwpd_title_text(r) for r in rows]
    assert "[category]" not in seen[0][2] and seen[0][1] == "Red Cotton Shirt"
    assert train_fielded(["--data", str(data), "--out", str(tmp_path / "n"), "--no_title_copies"]) == 0
    info = json.loads((tmp_path / "n" / "category_model.json").read_text())
    assert info["config"]["title_copies"] is False and info["title_copies"] == 0 and len(seen) == 1
