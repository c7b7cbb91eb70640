"""Metrics against values computed by hand, and the results files every trainer writes."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from category_classification.evaluation.metrics import compute_metrics, format_metrics, write_results

LABELS = ["A", "B", "C"]
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_metrics_match_hand_computed_values():
    m = compute_metrics(Y_TRUE, Y_PRED, LABELS)
    # confusion rows (true): A -> [1, 1, 0], B -> [0, 2, 0], C -> [1, 0, 1]
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["A"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["B"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_class"]["C"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["weighted_f1"] == pytest.approx(m["macro_f1"])  # equal supports
    assert m["n"] == 6
    assert m["macro_f1"] == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))


def test_class_absent_from_truth_and_predictions_does_not_count_in_macro():
    m4 = compute_metrics(Y_TRUE, Y_PRED, LABELS + ["D"])
    assert m4["macro_f1"] == pytest.approx(compute_metrics(Y_TRUE, Y_PRED, LABELS)["macro_f1"])
    assert m4["per_class"]["D"]["support"] == 0


def test_per_language_metrics_respect_min_samples_and_top_k():
    langs = ["en", "en", "en", "de", "de", "de"]
    m = compute_metrics(Y_TRUE, Y_PRED, LABELS, languages=langs, lang_min_samples=3, lang_top_k=5)
    en, de = m["per_language"]["en"], m["per_language"]["de"]
    assert en["n"] == 3 and en["accuracy"] == pytest.approx(2 / 3) and en["macro_f1"] == pytest.approx(2 / 3)
    # de: A is predicted once but never true, so it counts with F1 0: (0 + 1 + 2/3) / 3
    assert de["macro_f1"] == pytest.approx((0 + 1 + 2 / 3) / 3)
    assert compute_metrics(Y_TRUE, Y_PRED, LABELS, languages=langs, lang_min_samples=4)["per_language"] == {}
    assert list(compute_metrics(Y_TRUE, Y_PRED, LABELS, languages=langs, lang_min_samples=1,
                                lang_top_k=1)["per_language"]) == ["en"]


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0], LABELS)


def test_write_results_files(tmp_path):
    m = compute_metrics(Y_TRUE, Y_PRED, LABELS)
    write_results(tmp_path, "toy", {"lr": 0.1}, {"validation": m, "test": m}, LABELS, extra={"train_seconds": 1.5})
    payload = json.loads((tmp_path / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("macro_f1", "micro_f1", "accuracy", "per_class", "confusion_matrix"):
            assert key in payload[split]
    assert payload["config"] == {"lr": 0.1} and payload["train_seconds"] == 1.5
    for png in ("confusion_matrix.png", "confusion_matrix_test.png", "confusion_matrix_validation.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_results(tmp_path, "toy2", {}, {"test": m}, LABELS)
    text = (tmp_path / "results_category.txt").read_text()
    assert text.count("=== toy") == 2 and "macro_f1=0.6556" in text  # appended, not overwritten
    assert "confusion matrix" in format_metrics(m, LABELS)


def test_label_scores_match_sklearn_and_count_unseen_classes_as_misses():
    from category_classification.evaluation.metrics import classes_without_training_examples, label_scores

    truth = ["a", "a", "b", "b", "c", "z"]  # "z": no training offer, so never predicted
    pred = ["a", "b", "b", "b", "c", None]  # None: abstained
    s = label_scores(truth, pred)
    fill = [p if p is not None else "<none>" for p in pred]
    labels = ["a", "b", "c", "z"]
    assert s["weighted_f1"] == pytest.approx(f1_score(truth, fill, labels=labels, average="weighted"))
    assert s["macro_f1"] == pytest.approx(f1_score(truth, fill, labels=labels, average="macro"))
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert classes_without_training_examples(["a", "b", "c"], truth) == ["z"]


def test_gs1_metrics_average_the_weighted_f1_of_the_levels():
    from category_classification.evaluation.metrics import gs1_metrics

    truth = {"lvl1": ["x", "x", "y"], "lvl2": ["x1", "x2", "y1"], "lvl3": ["a", "b", "c"]}
    pred = {"lvl1": ["x", "x", "y"], "lvl2": ["x1", "x1", "y1"], "lvl3": ["a", "a", "a"]}
    m = gs1_metrics(truth, pred)
    assert m["lvl1"]["weighted_f1"] == pytest.approx(1.0)
    assert m["lvl2"]["weighted_f1"] == pytest.approx(f1_score(truth["lvl2"], pred["lvl2"], average="weighted"))
    assert m["avg_weighted_f1"] == pytest.approx(np.mean([m[lv]["weighted_f1"] for lv in ("lvl1", "lvl2", "lvl3")]))


def test_open_set_figures_by_hand():
    from category_classification.evaluation.metrics import open_set_metrics

    names = ["A", "B", "Other"]
    y_true = [0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 2, 1, 0, 2, 2, 0, 2]
    m = open_set_metrics(y_true, y_pred, names, "Other")
    # target labels given: offers 0, 2, 3, 6 -> right: 0, 2
    assert m["accepted_precision"] == pytest.approx(2 / 4)
    assert m["in_scope_recall"] == pytest.approx(2 / 4)
    assert m["out_of_scope_accept_rate"] == pytest.approx(1 / 4)
    # in-scope offers only: A: tp1 fp1 fn1 -> 0.5; B: tp1 fp0 fn1 -> 2/3
    assert m["target_macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    strict = open_set_metrics(y_true, y_pred, names, "Other", accepted=[True, True, True, False] + [True] * 4)
    assert strict["accepted_precision"] == pytest.approx(2 / 3)


def test_write_results_draws_the_open_set_curve(tmp_path):
    from category_classification.evaluation.metrics import add_open_set

    names = ["A", "B", "Other"]
    y_true = [0, 1, 2, 2]
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    m = add_open_set(compute_metrics(y_true, probs.argmax(1), names), y_true, probs.argmax(1), names,
                     "Other", probs)
    curve = m["open_set"]["curve"]
    assert curve[0]["out_of_scope_accept_rate"] == pytest.approx(0.5)
    high = next(c for c in curve if c["threshold"] >= 0.8)  # only offer 0 (0.9) still accepted
    assert high["accepted_precision"] == 1.0 and high["out_of_scope_accept_rate"] == 0.0
    payload = write_results(tmp_path, "m", {}, {"validation": m}, names)
    assert (tmp_path / "open_set_validation.png").stat().st_size > 0
    assert payload["validation"]["open_set"]["in_scope_recall"] == pytest.approx(1.0)
    assert add_open_set({}, y_true, probs.argmax(1), ["A", "B", "C"], "Other") == {}


def test_confusion_matrix_of_many_classes_stays_small(tmp_path):
    """GS1 level 3 has ~280 classes: the figure is capped (it once drew a 20,000-pixel square for minutes)."""
    from PIL import Image

    from category_classification.evaluation.metrics import MAX_FIGURE_INCHES, plot_confusion_matrix

    k = 280
    cm = np.random.default_rng(0).integers(0, 5, (k, k))
    path = plot_confusion_matrix(cm, [f"{i:08d}_GS1 class" for i in range(k)], tmp_path / "cm.png")
    width, height = Image.open(path).size
    assert max(width, height) <= (MAX_FIGURE_INCHES + 1) * 130  # inches x dpi (120), a little slack
    assert min(width, height) > 1000  # still a readable heat map


def test_evaluate_says_when_the_model_was_refit_on_the_scored_validation_split(tmp_path, capsys):
    """The docs' threshold recipe scored the demo's refit model on validation: precision 0.998 at t = 0, a
    threshold chosen on offers the model was trained on. Now evaluate.py says so (and still scores)."""
    from predict_fixtures import make_dataset

    from category_classification import evaluate, train_linear_baseline

    data = make_dataset(tmp_path / "d")
    for flags, name in (([], "plain"), (["--refit"], "refit")):
        assert train_linear_baseline.main(["--data", str(data), "--out", str(tmp_path / name), "--features",
                                           "hashed", "--hash_bits", "14", "--no_lang_metrics", *flags]) == 0
    capsys.readouterr()
    from category_classification import build_ensemble

    assert build_ensemble.main(["--models", str(tmp_path / "plain"), str(tmp_path / "refit"), "--out",
                                str(tmp_path / "ens")]) == 0
    other = make_dataset(tmp_path / "other")  # another dataset's validation split: not what it was refit on
    capsys.readouterr()
    for name, split, noted, d in (("refit", "validation", True, data), ("refit", "test", False, data),
                                  ("plain", "validation", False, data), ("ens", "validation", True, data),
                                  ("refit", "validation", False, other)):
        assert evaluate.main(["--model", str(tmp_path / name), "--data", str(d), "--split", split]) == 0
        err = capsys.readouterr().err
        assert ("was refit on train + validation" in err) == noted, (name, split, err)


def test_open_set_counts_the_leaked_out_of_scope_offers_by_source_category():
    from category_classification.evaluation.metrics import add_open_set, format_open_set

    names = ["Books", "Shoes", "Other"]
    y_true = [0, 1, 2, 2, 2, 2, 2]
    y_pred = [0, 2, 0, 1, 0, 2, 2]  # three Other offers given a label: two Toys, one Music
    sources = ["Books", "Shoes", "Toys", "Music", "Toys", "Toys", "Music"]
    m = add_open_set({}, y_true, y_pred, names, "Other", sources=sources)["open_set"]
    assert m["accepted_by_source"] == {"Toys": 2, "Music": 1}
    assert list(m["accepted_by_source"]) == ["Toys", "Music"]  # most first
    assert "by source category: Toys 2, Music 1" in format_open_set(m)
    assert "accepted_by_source" not in add_open_set({}, y_true, y_pred, names, "Other")["open_set"]
