"""Metrics against values computed by hand, and the results files every trainer writes."""

import json

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
