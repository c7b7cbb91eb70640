"""The fast default classifier: hashed n-gram features, training, save/load/predict, the script."""

import json

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


def test_missing_class_is_a_clear_error():
    from category_classification.core.cli import UserError

    texts, labels = toy_offers(5)
    keep = [i for i, y in enumerate(labels) if y != 1]
    with pytest.raises(UserError, match="Books"):
        LinearTextClassifier(LABELS, LinearConfig(hash_bits=12)).fit([texts[i] for i in keep],
                                                                     [labels[i] for i in keep])


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


def test_train_script_missing_data_exits_2(tmp_path, capsys):
    from category_classification.core.cli import run

    assert run(train_main, ["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "dataset directory not found" in capsys.readouterr().err
