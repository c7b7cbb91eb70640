"""The fielded_linear kind (models/fielded.py) and its trainer, on tiny MWPD-format files written here."""

import gzip
import json

import numpy as np
import pytest

from category_classification.models.fielded import fielded_text, split_fields, url_words
from category_classification.models.registry import load_predictor
from category_classification.train_fielded_linear import main

# (title words, breadcrumb, url word, lvl1, lvl2, lvl3): two lvl1 classes, three lvl3 paths
KINDS = [
    ("red cotton shirt", "Men > Shirts", "shirts", "67000000_Clothing", "67010000_Clothing", "67010800_Shirts"),
    ("blue denim jeans", "Men > Trousers", "jeans", "67000000_Clothing", "67010000_Clothing", "67010900_Trousers"),
    ("brake pad set", "Car Parts > Brakes", "brakes", "77000000_Automotive", "77010000_Automotive Parts",
     "77010200_Brakes"),
]


def offers(n_per_kind=8, start=0):
    out = []
    for k, (title, crumb, word, l1, l2, l3) in enumerate(KINDS):
        for i in range(n_per_kind):
            out.append({"ID": str(start + 100 * k + i), "Name": f"{title} model {i}", "Description": f"item {i}",
                        "CategoryText": crumb, "URL": f"http://www.example.com/{word}/item-{i}.html",
                        "lvl1": l1, "lvl2": l2, "lvl3": l3})
    return out


def write(path, rows, extra_lines=()):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def test_fields_round_trip_and_plain_text():
    text = fielded_text("Nike Air", "running shoe", "Shoes > Running", "https://www.shop.com/running-shoes/p/1.html")
    assert text == "Nike Air running shoe [category] Shoes > Running [url] running shoes"
    assert split_fields(text) == ("Nike Air running shoe", "Shoes > Running", "running shoes")
    assert split_fields("just a title") == ("just a title", "", "")
    assert fielded_text("Nike Air", None, "", None) == "Nike Air"
    assert url_words("http://www.acme.com/index.php?id=3") == "acme"


def test_train_refit_save_load_predict_all_levels(tmp_path, capsys):
    train = write(tmp_path / "train.json.gz", offers(), ["not json", '{"Name": "no labels"}'])
    val = offers(3, start=50)
    val[0]["lvl3"] = "67011000_Unseen"  # a validation class absent from training: a miss, named, no stop
    val = write(tmp_path / "val.json.gz", val)
    out = tmp_path / "model"
    # without the title copies: on these toy offers a model also taught each title alone leans on the titles
    # alone, and the assertions below are about the breadcrumb reaching the model (tests/test_title_copies.py)
    assert main(["--data", str(train), "--validation", str(val), "--out", str(out), "--refit",
                 "--no_title_copies"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["validation"]
    assert metrics["lvl3"]["unseen_labels"] == ["Unseen"]
    assert metrics["lvl1"]["weighted_f1"] == 1.0
    info = json.loads((out / "category_model.json").read_text())
    assert info["kind"] == "fielded_linear" and info["refit"] and info["train_size"] == 24 + 9
    assert info["skipped"]["outside_label_set"] == 1
    predictor = load_predictor(out)
    # the breadcrumb alone decides: the title says nothing, the [category] field does
    res = predictor.predict(["thing [category] Car Parts > Brakes", "thing [category] Men > Trousers"])
    assert [r["label"] for r in res] == ["Automotive", "Clothing"]
    assert res[0]["levels"]["lvl3"]["label"] == "Brakes" and res[1]["levels"]["lvl3"]["label"] == "Trousers"
    assert res[1]["levels"]["lvl2"]["label"] == "Clothing"
    probs = predictor.predict_proba(["red cotton shirt", "brake pad set"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_paths_decoding_keeps_levels_on_one_path(tmp_path):
    train = write(tmp_path / "train.json.gz", offers())
    out = tmp_path / "model"
    assert main(["--data", str(train), "--out", str(out)]) == 0
    predictor = load_predictor(out)
    seen = {(k[3].split("_", 1)[1], k[4].split("_", 1)[1], k[5].split("_", 1)[1]) for k in KINDS}
    texts = ["red shirt brakes", "jeans brake", "cotton pad", "denim shirt [url] brakes", "x"]
    for r in predictor.predict(texts):
        lv = r["levels"]
        assert (lv["lvl1"]["label"], lv["lvl2"]["label"], lv["lvl3"]["label"]) in seen
        assert r["label"] == lv["lvl1"]["label"]


def test_six_classes_and_user_errors(tmp_path, capsys):
    train = write(tmp_path / "train.json.gz", offers())
    out = tmp_path / "six"
    assert main(["--data", str(train), "--out", str(out), "--label_level", "six"]) == 0
    res = load_predictor(out).predict(["blue denim jeans"])
    assert res[0]["label"] == "Clothing" and "levels" not in res[0]
    from category_classification.core.cli import run

    assert run(main, ["--data", str(train), "--out", str(tmp_path / "x"), "--refit"]) == 2
    assert run(main, ["--data", str(tmp_path / "missing.json.gz"), "--out", str(tmp_path / "x")]) == 2
    empty = write(tmp_path / "empty.json.gz", [], ["not json"])
    assert run(main, ["--data", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_benchmark_predictions_labels_every_test_offer(tmp_path):
    from category_classification.train_fielded_linear import benchmark_predictions

    train = write(tmp_path / "train.json.gz", offers(12))
    test_rows = offers(2, start=70)
    test_rows[0]["lvl1"] = "10000000_Other"  # not one of the 6 classes: in the GS1 lists, not in "six"
    test = write(tmp_path / "test.json.gz", test_rows)
    for val in (None, str(write(tmp_path / "val.json.gz", offers(3, start=50)))):
        pred = benchmark_predictions(str(train), str(test), val)
        assert [len(pred[lv]) for lv in ("lvl1", "lvl2", "lvl3", "six")] == [6, 6, 6, 5]
        assert pred["lvl3"][1:] == ["67010800_Shirts"] + ["67010900_Trousers"] * 2 + ["77010200_Brakes"] * 2
        assert pred["six"][-1] == "Automotive"


def test_damaged_or_missing_model_file_is_one_line(tmp_path):
    from category_classification.core.cli import UserError

    out = tmp_path / "model"
    assert main(["--data", str(write(tmp_path / "train.json.gz", offers())), "--out", str(out)]) == 0
    for name in ("fielded_weights.npz", "fielded_vocabulary.json.gz"):
        blob = (out / name).read_bytes()
        for damaged in (blob[: len(blob) // 2], b"", b"not an array file"):
            (out / name).write_bytes(damaged)
            with pytest.raises(UserError, match=f"{name} is damaged"):
                load_predictor(out)
        (out / name).write_bytes(blob)
    (out / "fielded_weights.npz").unlink()
    with pytest.raises(UserError, match="fielded_weights.npz is missing"):
        load_predictor(out)


def test_a_path_table_naming_labels_the_model_lacks_is_one_line(tmp_path):
    """Before: paths edited (or saved beside another training's labels) indexed past a level's labels, an
    IndexError at the first prediction, or with a negative index named another class with no error."""
    from category_classification.core.cli import UserError

    out = tmp_path / "model"
    assert main(["--data", str(write(tmp_path / "train.json.gz", offers())), "--out", str(out)]) == 0
    weights = out / "fielded_weights.npz"
    with np.load(weights, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    good = arrays["paths"].copy()
    for bad in (good + np.array([0, 0, 9]), good - np.array([0, 0, 3]), good[:, :2]):
        np.savez_compressed(weights, **{**arrays, "paths": bad})
        with pytest.raises(UserError, match="paths of fielded_weights.npz are damaged"):
            load_predictor(out)
    np.savez_compressed(weights, **arrays)
    assert load_predictor(out).predict(["blue denim jeans"])[0]["label"] == "Clothing"
