"""GS1 levels through every output path (predictor, predict.py, serve.py, evaluate.py) and the description
length a model was trained with, on tiny MWPD files and a tiny synthetic LSPC zip written here."""

import asyncio
import gzip
import json
import random
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from category_classification import build_lspc_dataset, evaluate, predict, train_fielded_linear
from category_classification import train_linear_baseline
from category_classification.data.text import offer_text
from category_classification.inference.base import LevelScores
from category_classification.models.registry import load_predictor
from category_classification.serve import MicroBatcher, create_app
from tests.test_mwpd_benchmark import PATHS

LEVELS = ("lvl1", "lvl2", "lvl3")
FILLER = "quality product fast shipping great price original new".split()


def write_mwpd(path, n_per_path, seed):
    """MWPD-format offers whose descriptions run past 50 characters, the class words in the title."""
    rnd = random.Random(seed)
    rows = []
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for l1, l2, l3, words in PATHS:
            for i in range(n_per_path):
                # titles unique across files: the builder drops training offers that duplicate a test title
                row = {"ID": f"{seed}-{l3}-{i}", "Name": f"{rnd.choice(words)} {rnd.choice(words)} item {seed}{i}",
                       "Description": " ".join(rnd.choice(FILLER) for _ in range(30)), "CategoryText": words[0],
                       "lvl1": l1, "lvl2": l2, "lvl3": l3}
                rows.append(row)
                fh.write(json.dumps(row) + "\n")
    return rows


@pytest.fixture(scope="module")
def gs1(tmp_path_factory):
    """An all-levels dataset built with --max_description_chars 50 (and no breadcrumb: these offers' breadcrumb
    names the class, which would leave no offer in doubt), a hierarchical_linear model trained on it, a plain
    linear one on its lvl1 label, and a fielded_linear model trained on the MWPD files themselves."""
    root = tmp_path_factory.mktemp("gs1")
    train_rows = write_mwpd(root / "train.json.gz", 24, 0)
    write_mwpd(root / "test.json.gz", 6, 1)
    data = root / "data"
    assert build_lspc_dataset.main(["--mwpd", str(root / "train.json.gz"), "--mwpd_test", str(root / "test.json.gz"),
                                    "--label_level", "all", "--max_description_chars", "50", "--breadcrumb", "off",
                                    "--out", str(data), "--val_size", "0.2", "--quiet"]) == 0
    models = {"hierarchical_linear": root / "hier", "linear": root / "linear", "fielded_linear": root / "fielded"}
    assert train_linear_baseline.main(["--data", str(data), "--out", str(models["hierarchical_linear"]),
                                       "--hierarchy"]) == 0
    assert train_linear_baseline.main(["--data", str(data), "--out", str(models["linear"])]) == 0
    assert train_fielded_linear.main(["--data", str(root / "train.json.gz"), "--out",
                                      str(models["fielded_linear"])]) == 0
    return {"root": root, "data": data, "models": models, "train_rows": train_rows}


# the last title mixes two classes' words: a score below 1 even from a model calibrated on separable data
TITLES = ["jeans trousers item 5", "brake pads item 2", "   ", "sneakers boots item 9", "shirt tee item 1",
          "pads shirt item 4"]


@pytest.mark.parametrize("kind", ["hierarchical_linear", "fielded_linear"])
def test_serve_returns_the_levels_predict_returns(gs1, kind):
    model = gs1["models"][kind]
    direct = load_predictor(model).predict([t for t in TITLES if t.strip()], top_k=2)
    assert all(set(r["levels"]) == set(LEVELS) for r in direct)
    with TestClient(create_app(load_predictor(model), max_wait_ms=1)) as client:
        got = client.post("/predict", json={"titles": TITLES, "top_k": 2}).json()["predictions"]
        assert got[2]["label"] is None and "error" in got[2] and "levels" not in got[2]
        assert [g for g in got if "error" not in g] == direct  # JSON keeps every float exactly
        assert got[0]["levels"]["lvl3"]["label"].endswith("Lower Body Wear") and got[0]["label"].endswith("Clothing")
        # below the threshold the label is null, the levels stay (what predict.py writes too)
        vague = direct[-1]
        assert vague["score"] < 1.0 - 1e-6
        low = client.post("/predict", json={"titles": TITLES[-1:], "threshold": vague["score"] + 1e-6}
                          ).json()["predictions"][0]
        assert low["label"] is None and low["levels"] == vague["levels"] and low["top_k"] == vague["top_k"][:1]
        assert client.get("/model").json()["kind"] == kind


def test_the_micro_batcher_hands_each_request_its_own_levels(gs1):
    """Concurrent requests share one model call; each gets its rows of the levels, formatted with its top_k."""
    pred = load_predictor(gs1["models"]["hierarchical_linear"])
    requests = [[TITLES[i % 2], TITLES[3 + i % 3]] if i % 3 else [TITLES[1]] for i in range(12)]

    async def scenario():
        batcher = MicroBatcher(pred.scores, max_batch=64, max_wait_ms=50)
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return out, batcher.stats

    results, stats = asyncio.run(scenario())
    assert stats["batches"] < len(requests)  # batched, so slicing matters
    for k, (titles, scores) in enumerate(zip(requests, results)):
        assert isinstance(scores, LevelScores) and len(scores) == len(titles)
        assert pred.format(scores, top_k=1 + k % 3) == pred.predict(titles, top_k=1 + k % 3)


def test_predict_cli_writes_the_levels(gs1, tmp_path):
    out = tmp_path / "p.jsonl"
    assert predict.main(["--model", str(gs1["models"]["hierarchical_linear"]), "--text", TITLES[0], "--text",
                         TITLES[1], "--out", str(out), "--no_progress"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["levels"]["lvl3"]["label"].split("_", 1)[-1] for r in rows] == ["Lower Body Wear", "Brakes"]


def test_evaluate_writes_the_gs1_block_of_level_models_only(gs1, tmp_path):
    data = gs1["data"]
    hier = gs1["models"]["hierarchical_linear"]
    assert evaluate.main(["--model", str(hier), "--data", str(data), "--split", "test", "--out",
                          str(tmp_path / "hier"), "--save_preds", str(tmp_path / "preds.jsonl")]) == 0
    saved = [json.loads(x) for x in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert len(saved) == 24 and all(set(r["levels"]) == set(LEVELS) for r in saved)
    got = json.loads((tmp_path / "hier" / "metrics.json").read_text())["test"]
    assert set(got["gs1"]) == {*LEVELS, "avg_weighted_f1", "avg_macro_f1"}
    assert set(got["gs1"]["lvl3"]) >= {"weighted_f1", "macro_f1"}
    # the same figures the trainer wrote for its test split: one decoding, one metric
    trained = json.loads((hier / "metrics.json").read_text())["test"]
    assert got["gs1"] == trained["gs1"] and got["macro_f1"] == trained["macro_f1"]
    assert got["gs1"]["avg_weighted_f1"] > 0.9
    # a model trained on the MWPD files (it knows only the classes of its training file) scores the same way
    assert evaluate.main(["--model", str(gs1["models"]["fielded_linear"]), "--data", str(data), "--split", "test",
                          "--out", str(tmp_path / "fielded")]) == 0
    assert json.loads((tmp_path / "fielded" / "metrics.json").read_text())["test"]["gs1"]["avg_weighted_f1"] > 0.9
    # a plain model on the same dataset: the usual figures, no gs1 block
    assert evaluate.main(["--model", str(gs1["models"]["linear"]), "--data", str(data), "--split", "test", "--out",
                          str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())["test"]
    assert "gs1" not in plain and plain["macro_f1"] > 0.9


def test_models_record_the_description_length_they_were_trained_with(gs1):
    for kind in ("hierarchical_linear", "linear"):
        info = json.loads((gs1["models"][kind] / "category_model.json").read_text())
        assert info["max_description_chars"] == 50 and info["data"] == str(gs1["data"])
        assert load_predictor(gs1["models"][kind]).describe()["max_description_chars"] == 50
    # trained on files, not a built dataset: nothing recorded, the builder's default applies
    fielded = load_predictor(gs1["models"]["fielded_linear"])
    assert "max_description_chars" not in fielded.info and fielded.describe()["max_description_chars"] == 300


def _texts(out):
    return [json.loads(x).get("text") for x in out.read_text().splitlines()]


def test_predict_jsonl_and_csv_cut_descriptions_as_in_training(gs1, tmp_path):
    rows = gs1["train_rows"][:6]
    jsonl = tmp_path / "offers.jsonl"
    jsonl.write_text("".join(json.dumps({"title": r["Name"], "description": r["Description"],
                                         "breadcrumb": r["CategoryText"]}) + "\n" for r in rows))
    csv = tmp_path / "offers.csv"
    csv.write_text("title,description,breadcrumb\n" + "".join(
        f"{r['Name']},{r['Description']},{r['CategoryText']}\n" for r in rows))
    # the linear model was trained without the breadcrumb in its text (the dataset was built with --breadcrumb
    # off): the field is left out; the fielded model reads it behind its marker, as its trainer built its texts
    from category_classification.models.fielded import fielded_text

    for src in (jsonl, csv):
        for kind, chars in (("linear", 50), ("fielded_linear", 300)):
            out = tmp_path / f"{src.suffix}-{kind}.jsonl"
            assert predict.main(["--model", str(gs1["models"][kind]), "--input", str(src), "--out", str(out),
                                 "--keep_text", "--no_progress"]) == 0
            want = [offer_text(r["Name"], r["Description"], chars) for r in rows] if kind == "linear" else [
                fielded_text(r["Name"], r["Description"], r["CategoryText"]) for r in rows]
            assert _texts(out) == want
    # the texts of the 50-character model are the dataset's own texts of those offers
    from datasets import load_from_disk

    dataset_texts = set(load_from_disk(str(gs1["data"]))["train"]["text"]) | set(
        load_from_disk(str(gs1["data"]))["validation"]["text"])
    assert set(_texts(tmp_path / ".jsonl-linear.jsonl")) <= dataset_texts


def test_predict_zip_cuts_descriptions_as_the_dataset_was_built(tmp_path):
    from datasets import load_from_disk

    from category_classification.data.synthetic_lspc import write_lspc_zip

    zip_path, map_path, _ = write_lspc_zip(tmp_path / "lspc", n_offers=800, n_members=2, n_clusters=200,
                                          mapped_fraction=1.0, seed=5)
    data, model = tmp_path / "data", tmp_path / "model"
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--map", str(map_path), "--out", str(data), "--quiet",
                                    "--max_description_chars", "50"]) == 0
    assert train_linear_baseline.main(["--data", str(data), "--out", str(model)]) == 0
    out = tmp_path / "zip.jsonl"
    assert predict.main(["--model", str(model), "--zip", str(zip_path), "--out", str(out), "--keep_text",
                         "--no_progress"]) == 0
    dsd = load_from_disk(str(data))
    dataset_texts = {t for split in dsd.values() for t in split["text"]}
    texts = [t for t in _texts(out) if t is not None]
    assert len(texts) >= 700 and set(texts) <= dataset_texts
    # the same model without the recorded length (an older folder): the builder's default, other texts
    old = tmp_path / "old"
    shutil.copytree(model, old)
    info = json.loads((old / "category_model.json").read_text())
    del info["max_description_chars"]
    (old / "category_model.json").write_text(json.dumps(info))
    assert predict.main(["--model", str(old), "--zip", str(zip_path), "--out", str(tmp_path / "old.jsonl"),
                         "--keep_text", "--no_progress"]) == 0
    longer = [t for t in _texts(tmp_path / "old.jsonl") if t is not None]
    assert len(longer) == len(texts) and sum(a != b for a, b in zip(longer, texts)) > 10
    assert np.mean([len(a) >= len(b) for a, b in zip(longer, texts)]) == 1.0


def test_an_ensemble_keeps_its_members_description_length(gs1, tmp_path):
    from category_classification.inference.ensemble import write_ensemble

    model = gs1["models"]["linear"]
    shutil.copytree(model, tmp_path / "twin")
    write_ensemble(tmp_path / "ens", [model, tmp_path / "twin"])
    assert load_predictor(tmp_path / "ens").describe()["max_description_chars"] == 50


def test_reported_probabilities_never_exceed_one(gs1):
    """A summed path or sub-class probability can round to 1.0000000012 (seen in fielded_linear's levels)."""
    pred = load_predictor(gs1["models"]["hierarchical_linear"])
    over = 1.0 + 1.2e-9
    probs = np.zeros((1, len(pred.labels)))
    probs[0, 0] = over
    rows = pred.format(LevelScores(probs, {"lvl1": ([pred.labels[0]], np.array([over]))}), top_k=2)
    assert rows[0]["score"] == 1.0 and rows[0]["top_k"][0]["prob"] == 1.0
    assert rows[0]["levels"]["lvl1"]["score"] == 1.0
