"""The fast default classifier: n-gram features, training, save/load/predict, refit, open set, the script;\nthe hierarchical linear model."""

import json
from collections import Counter

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
from category_classification.models.ngram_features import HashedTfidf, NgramSpec, char_ngrams
from category_classification.train_linear_baseline import main as train_main

LABELS = ["Automotive", "Books", "Shoes"]
WORDS = {
    0: ["brake pads", "oil filter", "spark plug", "wiper blade", "car battery", "tow hitch"],
    1: ["hardcover novel", "paperback edition", "cookbook recipes", "poetry anthology", "history book"],
    2: ["running shoes", "leather boots", "sandals summer", "high heels", "sneakers canvas"],
}


def toy_offers(n_per_class=40, seed=0):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            a, b = rng.choice(len(words), 2)
            texts.append(f"{words[a]} {words[b]} model {rng.integers(100, 999)}")
            labels.append(label)
    return texts, labels


def test_char_ngrams_stay_inside_words_like_char_wb():
    rows, cols = char_ngrams(["ab cd"], 3, 3, bits=16)
    # " ab", "ab ", " cd", "cd " but not "b c" (spans two words)
    assert len(rows) == 4
    same = char_ngrams(["AB   cd"], 3, 3, bits=16)[1]  # case and repeated spaces are normalised
    assert sorted(same.tolist()) == sorted(cols.tolist())


def test_hashed_tfidf_rows_are_unit_norm_per_block_and_deterministic():
    texts, _ = toy_offers(5)
    f = HashedTfidf(NgramSpec(bits=12, char_min_df=1)).fit(texts)
    x = f.transform(texts[:3]).toarray()
    half = 1 << 12
    assert np.allclose(np.linalg.norm(x[:, :half], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(x[:, half:], axis=1), 1, atol=1e-5)
    g = HashedTfidf(NgramSpec(bits=12, char_min_df=1)).fit(texts)
    assert np.array_equal(x, g.transform(texts[:3]).toarray())  # no per-process hash seed
    assert f.transform(["", "x"]).shape == (2, 2 * half)  # empty and one-char texts are fine


@pytest.mark.parametrize("features", ["hashed", "tfidf"])
def test_fit_save_load_predict(tmp_path, features):
    texts, labels = toy_offers()
    cfg = LinearConfig(features=features, hash_bits=14, char_min_df=1)
    model = LinearTextClassifier(LABELS, cfg).fit(texts, labels)
    test_texts, test_labels = toy_offers(10, seed=1)
    assert (model.predict(test_texts) == np.array(test_labels)).mean() > 0.95
    model.calibrate(test_texts, test_labels)
    proba = model.predict_proba(test_texts)
    assert proba.shape == (len(test_texts), 3) and np.allclose(proba.sum(axis=1), 1)
    model.save(tmp_path)
    info = json.loads((tmp_path / "category_model.json").read_text())
    assert info["kind"] == "linear" and info["labels"] == LABELS
    again = load_linear(tmp_path)
    assert again.temperature == pytest.approx(model.temperature)
    assert np.allclose(again.predict_proba(test_texts), proba, atol=1e-6)


def test_class_without_training_offers_is_never_predicted_and_named():
    texts, labels = toy_offers(5)
    keep = [i for i, y in enumerate(labels) if y != 1]
    model = LinearTextClassifier(LABELS, LinearConfig()).fit([texts[i] for i in keep], [labels[i] for i in keep])
    assert model.classes_without_training_examples == ["Books"]
    books = [t for t, y in zip(texts, labels) if y == 1]
    assert 1 not in model.predict(books).tolist()
    assert model.predict_proba(books)[:, 1].max() < 1e-6


def test_other_offset_chosen_on_validation_trades_precision_and_recall():
    from category_classification.evaluation.metrics import open_set_metrics

    texts, labels = toy_offers(30)
    # "Shoes" plays the out-of-scope class; ambiguous validation offers mix its words with the targets'
    cfg = LinearConfig(other_label="Shoes", other_weight=2.0)
    model = LinearTextClassifier(LABELS, cfg).fit(texts, labels)
    assert model._class_weight(np.asarray(labels))[2] == pytest.approx(2.0)
    val, val_y = toy_offers(10, seed=3)
    val = [t + (" running shoes" if i % 3 == 0 else "") for i, t in enumerate(val)]
    bias = model.choose_other_bias(val, val_y)
    assert -1.0 <= bias <= 1.0
    m = open_set_metrics(val_y, model.predict(val), LABELS, "Shoes")
    model.other_bias = 0.0
    m0 = open_set_metrics(val_y, model.predict(val), LABELS, "Shoes")
    assert min(m["accepted_precision"], m["in_scope_recall"]) >= min(m0["accepted_precision"], m0["in_scope_recall"])


def test_train_script_end_to_end(tmp_path):
    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64"),
                      "language": Value("string")})

    def split(seed, n):
        texts, labels = toy_offers(n, seed)
        return Dataset.from_dict({"text": texts, "label": labels, "cluster": list(range(len(texts))),
                                  "language": ["en"] * len(texts)}, features=feats)

    DatasetDict({"train": split(0, 30), "validation": split(1, 8), "test": split(2, 8)}).save_to_disk(tmp_path / "data")
    out = tmp_path / "model"
    assert train_main(["--data", str(tmp_path / "data"), "--out", str(out), "--hash_bits", "14",
                       "--lang_min_samples", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["macro_f1"] > 0.9
    assert metrics["test"]["per_language"]["en"]["n"] == 24
    assert (out / "results_category.txt").exists() and (out / "confusion_matrix.png").exists()
    assert load_linear(out).predict(["leather boots sneakers canvas"])[0] == 2

    # retrained into the same folder, killed while it draws its figures: the model and its figures stay the
    # previous ones together (they were published apart: a kill left the new model beside the old figures)
    import category_classification.evaluation.metrics as metrics_module

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    class Killed(BaseException):
        pass

    def die(*_a, **_k):
        raise Killed()

    real = metrics_module.plot_confusion_matrix
    metrics_module.plot_confusion_matrix = die
    try:
        with pytest.raises(Killed):
            train_main(["--data", str(tmp_path / "data"), "--out", str(out), "--hash_bits", "15",
                        "--lang_min_samples", "5"])
    finally:
        metrics_module.plot_confusion_matrix = real
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # a finished retraining continues the results history
    assert train_main(["--data", str(tmp_path / "data"), "--out", str(out), "--hash_bits", "15",
                       "--lang_min_samples", "5"]) == 0
    assert (out / "results_category.txt").read_text().count("=== linear") == 2
    assert json.loads((out / "metrics.json").read_text())["config"]["hash_bits"] == 15


def test_train_script_missing_data_exits_2(tmp_path, capsys):
    from category_classification.core.cli import run

    assert run(train_main, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err


def _toy_dataset(tmp_path, labels=LABELS, other=None):
    feats = Features({"text": Value("string"), "label": ClassLabel(names=labels), "cluster": Value("int64")})

    def split(seed, n):
        texts, y = toy_offers(n, seed)
        return Dataset.from_dict({"text": texts, "label": y, "cluster": list(range(len(texts)))}, features=feats)

    DatasetDict({"train": split(0, 30), "validation": split(1, 8), "test": split(2, 8)}).save_to_disk(tmp_path / "data")
    if other:
        (tmp_path / "data" / "build_report.json").write_text(json.dumps({"other_label": other}))
    return tmp_path / "data"


def test_train_script_refit_and_open_set_block(tmp_path):
    data = _toy_dataset(tmp_path, other="Shoes")
    out = tmp_path / "model"
    assert train_main(["--data", str(data), "--out", str(out), "--refit"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["refit"] is True
    block = metrics["test"]["open_set"]
    assert block["other_label"] == "Shoes" and block["accepted_precision"] > 0.9 and block["curve"]
    assert (out / "open_set_test.png").exists()
    info = json.loads((out / "category_model.json").read_text())
    assert info["other_label"] == "Shoes" and info["refit"] is True


SPLIT_LABELS = ["Automotive", "Books", "Other"]
OTHER_WORDS = {"Furniture": ["oak sofa", "dining table", "armchair velvet", "bookshelf pine", "bed frame"],
               "Phones": ["smartphone dual sim", "phone case", "android handset", "charger usb", "iphone cover"],
               "Pets": ["dog collar", "cat litter"]}


def split_offers(n_per_class=30, seed=0):
    """Automotive and Books as targets, Other from three source categories (Pets: few offers)."""
    rng = np.random.default_rng(seed)
    texts, labels, sources = [], [], []
    groups = [(0, "Automotive", WORDS[0], n_per_class), (1, "Books", WORDS[1], n_per_class)]
    groups += [(2, cat, words, n_per_class if cat != "Pets" else 4) for cat, words in OTHER_WORDS.items()]
    for label, cat, words, n in groups:
        for _ in range(n):
            a, b = rng.choice(len(words), 2)
            texts.append(f"{words[a]} {words[b]} model {rng.integers(100, 999)}")
            labels.append(label)
            sources.append(cat)
    return texts, labels, sources


def calibrated_probs(model):
    """Calibrate and choose the offset on fresh offers; (texts, labels, label probabilities, column probabilities),
    the label probabilities checked to be distributions over the three labels."""
    val, val_y, _ = split_offers(8, seed=1)
    model.calibrate(val, val_y)
    model.choose_other_bias(val, val_y)
    model.calibrate(val, val_y)
    probs = model.predict_proba(val)
    assert probs.shape == (len(val), 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    cols = model.column_scores(val) / model.temperature
    e = np.exp(cols - cols.max(axis=1, keepdims=True))
    return val, val_y, probs, e / e.sum(axis=1, keepdims=True)


def test_other_sub_classes_trained_per_source_and_summed_back(tmp_path):
    texts, labels, sources = split_offers()
    cfg = LinearConfig(other_label="Other", other_split="source", other_min_size=10)
    model = LinearTextClassifier(SPLIT_LABELS, cfg).fit(texts, labels, sources)
    assert model.other_subclasses == ["Furniture", "Phones"]  # Pets (4 offers) stays in Other's own column
    assert model.weights.shape[1] == 5 and model.column_labels.tolist() == [0, 1, 2, 2, 2]
    assert model.classes_without_training_examples == []
    val, val_y, probs, column_probs = calibrated_probs(model)
    # the Other probability is the sum of its columns; decisions and scores agree with it
    assert np.allclose(probs[:, 2], column_probs[:, 2:].sum(axis=1), atol=1e-5)
    assert (model.predict(val) == probs.argmax(axis=1)).all() and set(model.predict(val).tolist()) <= {0, 1, 2}
    assert (probs.argmax(axis=1) == np.asarray(val_y)).mean() > 0.9
    # saved and loaded: the same probabilities; the registry's predictor sees only the three labels
    from category_classification.models.registry import load_predictor

    model.save(tmp_path / "m")
    again = load_linear(tmp_path / "m")
    assert again.other_subclasses == ["Furniture", "Phones"] and np.allclose(again.predict_proba(val), probs, atol=1e-6)
    info = json.loads((tmp_path / "m" / "category_model.json").read_text())
    assert info["labels"] == SPLIT_LABELS
    results = load_predictor(tmp_path / "m").predict(["oak sofa bed frame", "smartphone dual sim", "history book"])
    assert [r["label"] for r in results] == ["Other", "Other", "Books"]


def test_target_classes_split_by_fine_category_and_summed_back(tmp_path):
    """Automotive trained as two fine columns (brakes, engine), Books as one (too few of a second kind),
    Other by source; every probability sums back to the three labels, and the model reloads identically."""
    texts, labels, sources = split_offers(30)
    fine = []
    for t, y in zip(texts, labels):
        fine.append(("brakes" if t.startswith(("brake", "wiper", "tow")) else "engine") if y == 0
                    else ("poetry" if y == 1 and t.startswith("poetry") else "books") if y == 1 else "x")
    cfg = LinearConfig(other_label="Other", other_split="source", other_min_size=5)
    assert LinearConfig().class_split == "fine"  # the default
    model = LinearTextClassifier(SPLIT_LABELS, cfg).fit(texts, labels, sources, fine)
    assert model.other_subclasses == ["Furniture", "Phones"]
    kinds = Counter(f for f, y in zip(fine, labels) if y == 1)
    assert [p for p in model.class_subclasses if p[0] == "Automotive"] == [["Automotive", "brakes"],
                                                                          ["Automotive", "engine"]]
    assert (["Books", "poetry"] in model.class_subclasses) == (kinds["poetry"] >= 5)
    n_cols = 3 + 2 + len(model.class_subclasses)
    assert model.weights.shape[1] == n_cols and model.column_labels.tolist()[:5] == [0, 1, 2, 2, 2]
    assert model.column_labels.tolist()[5:] == [SPLIT_LABELS.index(p[0]) for p in model.class_subclasses]
    val, val_y, probs, column_probs = calibrated_probs(model)
    auto = model.column_labels == 0
    assert np.allclose(probs[:, 0], column_probs[:, auto].sum(axis=1), atol=1e-5) and auto.sum() >= 2
    assert (model.predict(val) == probs.argmax(axis=1)).all() and (probs.argmax(axis=1) == np.asarray(val_y)).mean() > 0.9
    model.save(tmp_path / "m")
    again = load_linear(tmp_path / "m")
    assert again.class_subclasses == model.class_subclasses
    assert np.allclose(again.predict_proba(val), probs, atol=1e-6)
    # without the fine column, or with class_split none: one column per target class
    for plain in (LinearTextClassifier(SPLIT_LABELS, cfg).fit(texts, labels, sources),
                  LinearTextClassifier(SPLIT_LABELS, LinearConfig(other_label="Other", other_min_size=5,
                                                                  class_split="none")).fit(texts, labels, sources, fine)):
        assert plain.class_subclasses == [] and plain.weights.shape[1] == 5


def test_closed_model_splits_target_classes_too(tmp_path):
    """No Other class (a 6-class MWPD dataset has fine_category too): the target classes are still trained as
    fine sub-classes and summed back, sources never make Other columns, and the saved model reloads the same."""
    texts, labels, sources = split_offers(30)
    keep = [i for i, y in enumerate(labels) if y != 2]
    texts, labels, sources = [texts[i] for i in keep], [labels[i] for i in keep], [sources[i] for i in keep]
    fine = [("brakes" if t.startswith(("brake", "wiper", "tow")) else "engine") if y == 0 else "books"
            for t, y in zip(texts, labels)]
    closed = ["Automotive", "Books"]
    model = LinearTextClassifier(closed, LinearConfig(other_min_size=5)).fit(texts, labels, sources, fine)
    assert model.other_subclasses == [] and model.has_subclasses
    assert [p for p in model.class_subclasses if p[0] == "Automotive"] == [["Automotive", "brakes"],
                                                                          ["Automotive", "engine"]]
    assert model.column_labels.tolist() == [0, 1] + [closed.index(p[0]) for p in model.class_subclasses]
    val, val_y, _ = split_offers(8, seed=1)
    val, val_y = [t for t, y in zip(val, val_y) if y != 2], [y for y in val_y if y != 2]
    model.calibrate(val, val_y)
    probs = model.predict_proba(val)
    assert probs.shape == (len(val), 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (model.predict(val) == probs.argmax(axis=1)).all() and (probs.argmax(axis=1) == np.asarray(val_y)).mean() > 0.9
    model.save(tmp_path / "m")
    again = load_linear(tmp_path / "m")
    assert again.class_subclasses == model.class_subclasses and np.allclose(again.predict_proba(val), probs, atol=1e-6)
    # a tampered info file (a sub-class dropped, or the list removed) no longer matches the weights: refused
    from category_classification.core.cli import UserError

    info_file = tmp_path / "m" / "category_model.json"
    info = json.loads(info_file.read_text())
    for bad in ({**info, "class_subclasses": info["class_subclasses"][:-1]},
                {k: v for k, v in info.items() if k != "class_subclasses"}):
        info_file.write_text(json.dumps(bad))
        with pytest.raises(UserError):
            load_linear(tmp_path / "m")


def test_a_model_whose_info_and_weights_disagree_is_refused(tmp_path):
    from category_classification.core.cli import UserError

    texts, labels, sources = split_offers(20)
    fine = ["a" if i % 2 else "b" for i in range(len(texts))]
    model = LinearTextClassifier(SPLIT_LABELS, LinearConfig(other_label="Other", other_min_size=5)).fit(
        texts, labels, sources, fine)
    model.save(tmp_path / "m")
    info_file = tmp_path / "m" / "category_model.json"
    info = json.loads(info_file.read_text())
    for bad in (info["class_subclasses"][:-1], info["class_subclasses"] + [["Nope", "a"]],
                info["class_subclasses"] + [["Other", "a"]], 5, [7], info["class_subclasses"] + [["Books", 3]]):
        info_file.write_text(json.dumps({**info, "class_subclasses": bad}))
        with pytest.raises(UserError):
            load_linear(tmp_path / "m")


def test_other_split_none_or_without_sources_keeps_one_other_class():
    texts, labels, sources = split_offers(20)
    assert LinearConfig().other_split == "source"  # the default, chosen by grouped CV
    plain = LinearTextClassifier(SPLIT_LABELS, LinearConfig(other_label="Other", other_split="none")).fit(
        texts, labels, sources)
    no_src = LinearTextClassifier(SPLIT_LABELS, LinearConfig(other_label="Other", other_split="source")).fit(
        texts, labels)
    for model in (plain, no_src):
        assert model.other_subclasses == [] and model.weights.shape[1] == 3
    assert np.allclose(plain.decision_scores(texts[:5]), no_src.decision_scores(texts[:5]))


def test_other_weight_applies_to_every_other_sub_class():
    texts, labels, sources = split_offers(20)
    cfg = LinearConfig(other_label="Other", other_split="source", other_min_size=10, other_weight=0.5)
    model = LinearTextClassifier(SPLIT_LABELS, cfg)
    cols = model.training_columns(np.asarray(labels), sources)
    weights = model._class_weight(cols)
    balanced = len(cols) / (5 * np.bincount(cols))
    assert weights[0] == pytest.approx(balanced[0])
    assert [weights[c] for c in (2, 3, 4)] == pytest.approx((balanced[2:] * 0.5).tolist())


def write_split_dataset(path) -> None:
    """An --other_label dataset of split_offers with its source_category column and build report."""
    feats = Features({"text": Value("string"), "label": ClassLabel(names=SPLIT_LABELS), "cluster": Value("int64"),
                      "source_category": Value("string")})

    def split(seed, n):
        texts, y, src = split_offers(n, seed)
        return Dataset.from_dict({"text": texts, "label": y, "cluster": [seed * 1000 + i for i in range(len(texts))],
                                  "source_category": src}, features=feats)

    DatasetDict({"train": split(0, 30), "validation": split(1, 10), "test": split(2, 8)}).save_to_disk(path)
    (path / "build_report.json").write_text(json.dumps({"other_label": "Other"}))


def test_train_script_splits_other_by_the_source_category_column(tmp_path):
    write_split_dataset(tmp_path / "d")
    out = tmp_path / "model"
    assert train_main(["--data", str(tmp_path / "d"), "--out", str(out), "--other_split", "source",
                       "--other_min_size", "10", "--refit"]) == 0
    info = json.loads((out / "category_model.json").read_text())
    assert info["labels"] == SPLIT_LABELS and info["other_subclasses"] == ["Furniture", "Phones"]
    block = json.loads((out / "metrics.json").read_text())["test"]["open_set"]
    assert block["accepted_precision"] > 0.9 and block["in_scope_recall"] > 0.9
    assert train_main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "one"), "--other_split", "none"]) == 0
    assert json.loads((tmp_path / "one" / "category_model.json").read_text())["other_subclasses"] == []


def test_train_script_chooses_the_other_offset_by_grouped_cv_and_refuses_bad_values(tmp_path, capsys):
    from category_classification.core.cli import run
    from category_classification.models.linear import OTHER_BIAS_GRID

    write_split_dataset(tmp_path / "d")
    out = tmp_path / "model"
    assert train_main(["--data", str(tmp_path / "d"), "--out", str(out), "--other_bias_folds", "3", "--refit"]) == 0
    found = json.loads((out / "metrics.json").read_text())["other_bias_cv"]
    info = json.loads((out / "category_model.json").read_text())
    assert found["folds"] == 3 and found["other_bias"] == info["other_bias"] and info["other_bias"] in OTHER_BIAS_GRID
    assert min(found["accepted_precision"], found["in_scope_recall"]) > 0.9
    assert "chosen by grouped 3-fold CV" in capsys.readouterr().out
    # auto and a number choose no CV; nonsense, too many folds and one fold are one-line user errors
    assert train_main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "a"), "--other_bias", "auto"]) == 0
    assert "other_bias_cv" not in json.loads((tmp_path / "a" / "metrics.json").read_text())
    for bad in (["--other_bias", "high"], ["--other_bias_folds", "100000"], ["--other_bias_folds", "1"]):
        assert run(train_main, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "bad"), *bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_hierarchy_model_decodes_only_training_paths(tmp_path):
    from category_classification.models.hierarchical import HierarchicalLinear, load_hierarchical
    from category_classification.models.registry import load_predictor

    texts, y = toy_offers(20)
    # lvl3 = the first word pair: Automotive offers split into two lvl3 classes under one lvl2
    lvl3_names = ["brakes", "other car", "books", "shoes", "unseen"]
    lvl3 = [0 if (lab == 0 and t.startswith(("brake", "oil", "spark"))) else (1 if lab == 0 else lab + 1)
            for t, lab in zip(texts, y)]
    names = {"lvl1": ["Car", "Books", "Shoes"], "lvl2": ["Car parts", "Books", "Shoes"], "lvl3": lvl3_names}
    model = HierarchicalLinear(names).fit(texts, {"lvl1": y, "lvl2": y, "lvl3": lvl3})
    assert {tuple(p) for p in model.paths.tolist()} == {(0, 0, 0), (0, 0, 1), (1, 1, 2), (2, 2, 3)}
    levels = model.predict_levels(texts)
    got = np.stack([levels[lv][0] for lv in ("lvl1", "lvl2", "lvl3")], axis=1)
    assert {tuple(p) for p in got.tolist()} <= {tuple(p) for p in model.paths.tolist()}
    assert (levels["lvl1"][0] == np.asarray(y)).mean() > 0.95
    model.save(tmp_path / "h")
    again = load_hierarchical(tmp_path / "h")
    assert np.array_equal(again.predict_levels(texts)["lvl3"][0], levels["lvl3"][0])
    r = load_predictor(tmp_path / "h").predict(["leather boots sneakers canvas"], top_k=2)[0]
    assert r["label"] == "Shoes" and r["levels"]["lvl3"]["label"] == "shoes"
    assert 0 < r["levels"]["lvl2"]["score"] <= 1


def test_train_script_hierarchy_on_a_built_all_levels_dataset(tmp_path):
    from category_classification import build_lspc_dataset
    from category_classification.models.registry import load_predictor
    from tests.test_mwpd_benchmark import write_mwpd

    write_mwpd(tmp_path / "train.json.gz", 30, 0)
    write_mwpd(tmp_path / "test.json.gz", 6, 1)
    data, out = tmp_path / "data", tmp_path / "model"
    assert build_lspc_dataset.main(["--mwpd", str(tmp_path / "train.json.gz"), "--mwpd_test",
                                    str(tmp_path / "test.json.gz"), "--label_level", "all", "--out", str(data),
                                    "--val_size", "0.2", "--quiet"]) == 0
    assert train_main(["--data", str(data), "--out", str(out), "--hierarchy", "--refit"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["gs1"]["avg_weighted_f1"] > 0.9
    r = load_predictor(out).predict(["jeans trousers item 5"])[0]
    assert r["levels"]["lvl3"]["label"].endswith("Lower Body Wear") and r["label"] == r["levels"]["lvl1"]["label"]


def test_train_script_hierarchy_needs_level_columns(tmp_path):
    from category_classification.core.cli import run

    assert run(train_main, ["--data", str(_toy_dataset(tmp_path)), "--out", str(tmp_path / "m"), "--hierarchy"]) == 2


def test_hostile_fine_categories_blank_none_shared_or_named_like_other_sources():
    """None and "" never become sub-classes; one fine name in two target classes (or equal to an Other source)
    gives each its own column of its own label; probabilities still sum to the three labels."""
    texts, labels, sources = split_offers(30)
    fine = []
    for i, y in enumerate(labels):
        fine.append([None, "", "Furniture", "shared"][i % 4] if y != 2 else "ignored")
    model = LinearTextClassifier(SPLIT_LABELS, LinearConfig(other_label="Other", other_min_size=5)).fit(
        texts, labels, sources, fine)
    assert all(name not in ("", "None") for _, name in model.class_subclasses)
    assert ["Automotive", "shared"] in model.class_subclasses and ["Books", "shared"] in model.class_subclasses
    assert ["Automotive", "Furniture"] in model.class_subclasses and "Furniture" in model.other_subclasses
    columns = model.column_labels.tolist()
    shared = [3 + len(model.other_subclasses) + k for k, p in enumerate(model.class_subclasses) if p[1] == "shared"]
    assert sorted(columns[c] for c in shared) == [0, 1]
    probs = model.predict_proba(texts[:10])
    assert probs.shape == (10, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
