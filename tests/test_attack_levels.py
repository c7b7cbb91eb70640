"""The GS1 hierarchy and the open-set path attacked on purpose: hierarchy model folders whose path or label
files were edited or mixed with another training's, a path decoding that chooses another level-1 label than
the most probable one, and build_ensemble.py over level models and over datasets it cannot score. Tiny
MWPD-format files written here."""

import gzip
import json
import random
import shutil

import numpy as np
import pytest

from category_classification import build_ensemble, build_lspc_dataset, evaluate, predict, train_linear_baseline
from category_classification.core.cli import UserError, run
from category_classification.models.hierarchical import HierarchicalLinear
from category_classification.models.registry import load_predictor

# (lvl1, lvl2, lvl3, title words); Footwear has two paths, so a path can lose to a level-1 label's two paths
PATHS = [("67000000_Clothing", "67010000_Clothing", "67010800_Lower Body Wear", ["jeans", "trousers", "shorts"]),
         ("67000000_Clothing", "67010000_Clothing", "67010900_Upper Body Wear", ["shirt", "tee", "blouse"]),
         ("77000000_Automotive", "77010000_Auto Parts", "77010100_Brakes", ["brake", "pads", "disc"]),
         ("63000000_Footwear", "63010000_Footwear", "63010100_Sneakers", ["sneakers", "trainers", "runners"]),
         ("63000000_Footwear", "63010000_Footwear", "63010200_Boots", ["boots", "wellies", "chelsea"])]
TITLES = ["jeans trousers item 1", "brake pads item 2", "boots chelsea item 3"]


def write_mwpd(path, n_per_path, seed):
    rnd = random.Random(seed)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for l1, l2, l3, words in PATHS:
            for i in range(n_per_path):
                title = f"{rnd.choice(words)} {rnd.choice(words)} item {seed}{i}"
                fh.write(json.dumps({"ID": f"{seed}-{i}", "Name": title, "Description": "", "lvl1": l1, "lvl2": l2,
                                     "lvl3": l3}) + "\n")


@pytest.fixture(scope="module")
def gs1(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack_levels")
    write_mwpd(root / "train.json.gz", 16, 0)
    write_mwpd(root / "test.json.gz", 4, 1)
    data = root / "data"
    assert build_lspc_dataset.main(["--mwpd", str(root / "train.json.gz"), "--mwpd_test", str(root / "test.json.gz"),
                                    "--label_level", "all", "--breadcrumb", "off", "--out", str(data),
                                    "--val_size", "0.2", "--quiet"]) == 0
    assert train_linear_baseline.main(["--data", str(data), "--out", str(root / "hier"), "--hierarchy"]) == 0
    assert train_linear_baseline.main(["--data", str(data), "--out", str(root / "flat")]) == 0
    return root


def _edit_json(path, change):
    obj = json.loads(path.read_text(encoding="utf-8"))
    change(obj)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _swap_levels(d):
    shutil.rmtree(d / "lvl2")
    shutil.copytree(d / "lvl3", d / "lvl2")


PATHS_FILE = "hierarchy_paths.json"
DAMAGES = {
    "a path past the level's labels": (PATHS_FILE, lambda p: _edit_json(p, lambda o: o["paths"].append([0, 0, 99]))),
    "a negative path index": (PATHS_FILE, lambda p: _edit_json(p, lambda o: o["paths"][0].__setitem__(2, -1))),
    "a fractional path index": (PATHS_FILE, lambda p: _edit_json(p, lambda o: o["paths"][0].__setitem__(2, 0.5))),
    "no paths": (PATHS_FILE, lambda p: _edit_json(p, lambda o: o.__setitem__("paths", []))),
    "no mode": (PATHS_FILE, lambda p: _edit_json(p, lambda o: o.pop("mode"))),
    "a list, not an object": (PATHS_FILE, lambda p: p.write_text("[[0, 0, 0]]")),
    "labels reordered": ("category_model.json", lambda p: _edit_json(p, lambda o: o["labels"].reverse())),
    "lvl1 level labels reordered": ("category_model.json",
                                    lambda p: _edit_json(p, lambda o: o["level_labels"]["lvl1"].reverse())),
    "a level's labels cut": ("category_model.json",
                             lambda p: _edit_json(p, lambda o: o["level_labels"].__setitem__("lvl3", ["Brakes"]))),
    "no level labels": ("category_model.json", lambda p: _edit_json(p, lambda o: o.pop("level_labels"))),
    "a level folder of another level": (".", _swap_levels),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_hierarchy_folder_with_edited_paths_or_labels_is_one_line_error(gs1, tmp_path, capsys, damage):
    """Before: IndexError / KeyError / TypeError tracebacks at the first prediction, or (negative or fractional
    indices, reordered labels) other classes named with exit 0, `label` and `top_k` naming different classes."""
    model = tmp_path / "hier"
    shutil.copytree(gs1 / "hier", model)
    rel, damage_it = DAMAGES[damage]
    damage_it(model / rel)
    with pytest.raises(UserError, match="retrain"):
        load_predictor(model)
    capsys.readouterr()
    assert run(predict.main, ["--model", str(model), "--text", TITLES[0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(model) in err[0]


@pytest.fixture
def path_beats_marginal(monkeypatch):
    """Every offer decoded so the best path (Automotive, 0.4) is not the most probable level-1 label (Footwear:
    its two paths 0.3 + 0.3). Path decoding does this on real data (6 of 200 MWPD validation offers)."""
    def decode(self, texts):
        names = self.level_labels["lvl1"]
        auto, foot = names.index("Automotive"), names.index("Footwear")
        first = {auto: [], foot: []}
        for k, path in enumerate(self.paths):
            if path[0] in first:
                first[path[0]].append(k)
        assert len(first[foot]) == 2 and len(first[auto]) == 1
        post = np.zeros((len(texts), len(self.paths)))
        post[:, first[auto][0]] = 0.4
        post[:, first[foot]] = 0.3
        return np.full(len(texts), first[auto][0]), post

    monkeypatch.setattr(HierarchicalLinear, "decode", decode)


def test_the_score_and_threshold_are_those_of_the_label_path_decoding_chose(gs1, path_beats_marginal):
    """Before: label Automotive with score 0.6 (Footwear's probability), kept at threshold 0.5."""
    pred = load_predictor(gs1 / "hier")
    row = pred.predict(TITLES[:1], top_k=2)[0]
    assert row["label"] == "Automotive" == row["levels"]["lvl1"]["label"]
    assert row["score"] == pytest.approx(0.4) and row["top_k"][0] == {"label": "Footwear", "prob": pytest.approx(0.6)}
    kept = pred.predict(TITLES[:1], threshold=0.5)[0]
    assert kept["label"] is None and kept["levels"]["lvl1"]["label"] == "Automotive"


def test_evaluate_scores_and_thresholds_the_label_a_level_model_gives(gs1, tmp_path, path_beats_marginal):
    """Before: --save_preds wrote score 0.6 for the Automotive predictions, and the threshold chosen for full
    coverage was 0.6, which predict.py then applied to the 0.4 of the label it writes."""
    preds = tmp_path / "preds.jsonl"
    assert run(evaluate.main, ["--model", str(gs1 / "hier"), "--data", str(gs1 / "data"), "--split", "test",
                               "--save_preds", str(preds), "--out", str(tmp_path / "ev"), "--target_coverage", "1"]) == 0
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert rows and all(r["levels"]["lvl1"] == "Automotive" and r["score"] == pytest.approx(0.4) for r in rows)
    threshold = json.loads((tmp_path / "ev" / "metrics.json").read_text())["threshold"]
    assert threshold["threshold"] == pytest.approx(0.4) and threshold["coverage"] == 1.0


def test_build_ensemble_scores_a_level_member_by_the_label_it_gives(gs1, tmp_path, path_beats_marginal, capsys):
    """Before: the hierarchical member was scored by the argmax of its level-1 probabilities (Footwear here),
    not by the label predict.py and evaluate.py give (Automotive), so its figures beside the ensemble's were
    another model's."""
    assert run(evaluate.main, ["--model", str(gs1 / "hier"), "--data", str(gs1 / "data"), "--split", "test",
                               "--out", str(tmp_path / "ev")]) == 0
    alone = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]
    assert run(build_ensemble.main, ["--models", str(gs1 / "hier"), str(gs1 / "flat"), "--data", str(gs1 / "data"),
                                     "--splits", "test", "--out", str(tmp_path / "ens")]) == 0
    member = json.loads((tmp_path / "ens" / "metrics.json").read_text())["members"][str(gs1 / "hier")]["test"]
    assert member["accuracy"] == pytest.approx(alone["accuracy"]) == pytest.approx(0.2)  # the Automotive offers
    assert member["macro_f1"] == pytest.approx(alone["macro_f1"])


def test_build_ensemble_refuses_a_dataset_it_cannot_score_before_writing(gs1, tmp_path, capsys):
    """Before: the ensemble was written (an earlier one in --out replaced), then the run failed with exit 2."""
    other = tmp_path / "clothing_only"
    assert build_lspc_dataset.main(["--mwpd", str(gs1 / "train.json.gz"), "--label_level", "all", "--categories",
                                    "Clothing,Footwear", "--breadcrumb", "off", "--out", str(other), "--quiet"]) == 0
    out = tmp_path / "ens"
    models = ["--models", str(gs1 / "hier"), str(gs1 / "flat")]
    for bad in (["--data", str(other)], ["--data", str(gs1 / "data"), "--splits", "test", "nosuch"]):
        capsys.readouterr()
        assert run(build_ensemble.main, models + bad + ["--out", str(out)]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not out.exists()
    assert run(build_ensemble.main, models + ["--out", str(out)]) == 0  # an earlier ensemble, no figures
    before = (out / "category_model.json").read_bytes()
    assert run(build_ensemble.main, ["--models", str(gs1 / "flat"), str(gs1 / "hier"), "--data", str(other),
                                     "--out", str(out)]) == 2
    assert (out / "category_model.json").read_bytes() == before and not (out / "metrics.json").exists()


def test_a_level_model_on_an_empty_split(gs1, tmp_path):
    """Before: evaluate.py (and build_ensemble.py) on an empty split of a dataset built with
    --allow_empty_splits: a ValueError traceback from the vectorizer (a linear model gives its figures)."""
    data = tmp_path / "no_val"
    assert build_lspc_dataset.main(["--mwpd", str(gs1 / "train.json.gz"), "--mwpd_test", str(gs1 / "test.json.gz"),
                                    "--label_level", "all", "--breadcrumb", "off", "--val_size", "0",
                                    "--allow_empty_splits", "--out", str(data), "--quiet"]) == 0
    assert load_predictor(gs1 / "hier").predict([]) == []
    assert run(evaluate.main, ["--model", str(gs1 / "hier"), "--data", str(data), "--split", "validation",
                               "--save_preds", str(tmp_path / "p.jsonl")]) == 0
    assert (tmp_path / "p.jsonl").read_text() == ""
    assert run(build_ensemble.main, ["--models", str(gs1 / "hier"), str(gs1 / "flat"), "--data", str(data),
                                     "--out", str(tmp_path / "ens")]) == 0


def test_evaluate_gives_an_open_models_open_set_figures(gs1, tmp_path, capsys):
    """Before: evaluate.py on an --other_label dataset printed and wrote macro-F1 over the classes with Other
    among them, never the open-set figures (accepted precision, in-scope recall, out-of-scope offers given a
    label) the trainer writes for the same split and the README compares models by."""
    data, model = tmp_path / "open", tmp_path / "linear_other"
    assert build_lspc_dataset.main(["--mwpd", str(gs1 / "train.json.gz"), "--mwpd_test", str(gs1 / "test.json.gz"),
                                    "--categories", "Clothing,Footwear", "--label_level", "lvl1", "--other_label",
                                    "Other", "--breadcrumb", "off", "--out", str(data), "--quiet"]) == 0
    assert train_linear_baseline.main(["--data", str(data), "--out", str(model), "--other_bias", "auto"]) == 0
    capsys.readouterr()
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--split", "test",
                               "--out", str(tmp_path / "ev")]) == 0
    assert "open set (out of scope = Other)" in capsys.readouterr().out
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test"]["open_set"]
    trained = json.loads((model / "metrics.json").read_text())["test"]["open_set"]
    assert got == trained and got["n_out_of_scope"] == 4  # the Automotive test offers
    assert (tmp_path / "ev" / "open_set_test.png").is_file()
    # an ensemble of open models gets them too, the same as evaluate.py gives the ensemble
    assert train_linear_baseline.main(["--data", str(data), "--out", str(tmp_path / "other2"), "--other_bias", "auto",
                                       "--C", "2"]) == 0
    assert run(build_ensemble.main, ["--models", str(model), str(tmp_path / "other2"), "--data", str(data),
                                     "--out", str(tmp_path / "ens")]) == 0
    ens = json.loads((tmp_path / "ens" / "metrics.json").read_text())["test"]["open_set"]
    assert run(evaluate.main, ["--model", str(tmp_path / "ens"), "--data", str(data), "--split", "test",
                               "--out", str(tmp_path / "ev_ens")]) == 0
    assert json.loads((tmp_path / "ev_ens" / "metrics.json").read_text())["test"]["open_set"] == ens


def test_hierarchy_training_on_a_dataset_whose_label_is_not_level_1_is_one_line(gs1, tmp_path, capsys):
    """Before: --label_level all with --categories and --other_label makes `label` the chosen classes plus
    Other while lvl1 keeps every GS1 class; --hierarchy scored lvl1 ids against `label`: an IndexError."""
    data, out = tmp_path / "open_all", tmp_path / "hier_open"
    assert build_lspc_dataset.main(["--mwpd", str(gs1 / "train.json.gz"), "--mwpd_test", str(gs1 / "test.json.gz"),
                                    "--label_level", "all", "--categories", "Clothing,Footwear", "--other_label",
                                    "Other", "--breadcrumb", "off", "--out", str(data), "--quiet"]) == 0
    capsys.readouterr()
    assert run(train_linear_baseline.main, ["--data", str(data), "--out", str(out), "--hierarchy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label column is GS1 level 1" in err[0]
    assert not (out / "category_model.json").exists()


def test_get_model_of_a_level_model_lists_every_levels_labels(gs1):
    """Before: GET /model (Predictor.describe) of a hierarchical model listed the level-1 labels only, though
    every answer names a level-2 and a level-3 class too."""
    from fastapi.testclient import TestClient

    from category_classification.serve import create_app

    predictor = load_predictor(gs1 / "hier")
    with TestClient(create_app(predictor)) as client:
        got = client.get("/model").json()
    assert got["labels"] == got["level_labels"]["lvl1"]
    assert sorted(got["level_labels"]) == ["lvl1", "lvl2", "lvl3"]
    assert sorted(got["level_labels"]["lvl3"]) == sorted({p[2].partition("_")[2] for p in PATHS})  # names, no codes
    assert "level_labels" not in load_predictor(gs1 / "flat").describe()
