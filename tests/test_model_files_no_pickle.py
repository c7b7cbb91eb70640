"""Model folders of kinds linear ("tfidf"), hierarchical_linear and fielded_linear hold no pickle: they load back
to identical probabilities, and a folder an older version pickled is refused before anything is unpickled."""

import json
import pickle

import numpy as np
import pytest

from category_classification.core.cli import UserError
from category_classification.models.fielded import FieldedConfig, FieldedLinear, fielded_text, load_fielded
from category_classification.models.hierarchical import HierarchicalLinear, load_hierarchical
from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
from category_classification.models.registry import load_predictor

TEXTS = ["red cotton shirt size M", "blue denim jeans slim", "brake pad set front", "oil filter for cars",
         "Größe L T-Shirt weiß", "trousers chino beige", "brake disc rear 280mm", "shirt linen white"] * 3
Y = [0, 1, 2, 2, 0, 1, 2, 0] * 3
QUERIES = TEXTS[:8] + ["unseen wörds ü brake shirt", "", "x"]


class Payload:
    """Unpickling this writes a marker file: proof that a loader ran pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_pickle(path, marker):
    path.write_bytes(pickle.dumps(Payload(marker)))


def assert_plain_files(folder):
    for f in folder.rglob("*"):
        assert f.suffix in (".json", ".npz", "") or f.name.endswith(".json.gz"), f
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                assert all(z[k].dtype != object for k in z.files)


def linear_model():
    model = LinearTextClassifier(["shirt", "trousers", "brakes"], LinearConfig(features="tfidf")).fit(TEXTS, Y)
    model.calibrate(TEXTS, Y)
    return model


def test_tfidf_linear_loads_back_identical_probabilities(tmp_path):
    model = linear_model()
    model.save(tmp_path / "m")
    assert_plain_files(tmp_path / "m")
    again = load_linear(tmp_path / "m")
    assert np.array_equal(again.predict_proba(QUERIES), model.predict_proba(QUERIES))
    assert np.allclose(load_predictor(tmp_path / "m").predict_proba(QUERIES), model.predict_proba(QUERIES),
                       atol=1e-6)
    vocabulary = tmp_path / "m" / "linear_vocabulary.json.gz"
    vocabulary.write_bytes(vocabulary.read_bytes()[:100])
    with pytest.raises(UserError, match="linear_vocabulary.json.gz is damaged"):
        load_predictor(tmp_path / "m")


def test_hierarchical_loads_back_identical_and_declares_level_files(tmp_path):
    y = {"lvl1": [0 if v < 2 else 1 for v in Y], "lvl2": [0 if v < 2 else 1 for v in Y], "lvl3": Y}
    labels = {"lvl1": ["Clothing", "Auto"], "lvl2": ["Clothes", "Parts"], "lvl3": ["shirt", "trousers", "brakes"]}
    model = HierarchicalLinear(labels, LinearConfig(features="tfidf")).fit(TEXTS, y)
    model.calibrate(TEXTS, y)
    model.save(tmp_path / "h")
    assert_plain_files(tmp_path / "h")
    again = load_hierarchical(tmp_path / "h")
    assert np.array_equal(again.level_marginals(QUERIES), model.level_marginals(QUERIES))
    (tmp_path / "h" / "lvl2" / "linear_vocabulary.json.gz").unlink()
    with pytest.raises(UserError, match="lvl2/linear_vocabulary.json.gz is missing"):
        load_predictor(tmp_path / "h")


def test_fielded_loads_back_identical_with_an_empty_field(tmp_path):
    # no URL in any offer: the URL block has an empty vocabulary, which must survive the round trip
    texts = [fielded_text(t, "", "Men > Shirts" if v < 2 else "Car > Parts") for t, v in zip(TEXTS, Y)]
    y = {"lvl1": [0 if v < 2 else 1 for v in Y], "lvl3": Y}
    model = FieldedLinear({"lvl1": ["Clothing", "Auto"], "lvl3": ["shirt", "trousers", "brakes"]},
                          FieldedConfig(prune_below=0.0)).fit(texts, y)
    model.calibrate(texts, y)
    model.save(tmp_path / "f")
    assert_plain_files(tmp_path / "f")
    again = load_fielded(tmp_path / "f")
    queries = texts[:8] + [fielded_text("brake shirt", "x", "Car", "http://a.de/brakes/1")]
    for lv, p in model.predict_levels(queries).items():
        assert np.array_equal(again.predict_levels(queries)[lv], p)


def test_old_pickled_folders_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pickled code ran"
    linear_model().save(tmp_path / "lin")
    info = json.loads((tmp_path / "lin" / "category_model.json").read_text())
    info["weights"] = "linear_model.joblib"  # what older versions wrote for features "tfidf"
    (tmp_path / "lin" / "category_model.json").write_text(json.dumps(info))
    plant_pickle(tmp_path / "lin" / "linear_model.joblib", marker)

    texts = [fielded_text(t, "") for t in TEXTS]
    FieldedLinear({"lvl1": ["a", "b", "c"]}).fit(texts, {"lvl1": Y}).save(tmp_path / "fl")
    info = json.loads((tmp_path / "fl" / "category_model.json").read_text())
    for key in ("weights", "vocabulary"):  # older versions named no files
        del info[key]
    (tmp_path / "fl" / "category_model.json").write_text(json.dumps(info))
    plant_pickle(tmp_path / "fl" / "fielded_model.joblib", marker)
    for folder in (tmp_path / "lin", tmp_path / "fl"):
        with pytest.raises(UserError, match="re-train or re-save: pickled model files are no longer loaded"):
            load_predictor(folder)
    assert not marker.exists()
