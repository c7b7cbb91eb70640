"""Ensemble directories: the weighted probability average, build_ensemble.py's scores, and its errors."""

import json
import shutil

import numpy as np
import pytest

from category_classification import build_ensemble as build_script
from category_classification import evaluate as evaluate_script
from category_classification import predict as predict_script
from category_classification.core.cli import UserError, run
from category_classification.inference.ensemble import normalize_weights, write_ensemble
from category_classification.evaluation.metrics import compute_metrics
from category_classification.inference.predictors import load_predictor
from predict_fixtures import LABELS, make_dataset, make_hf, make_linear, toy_offers

TEXTS = ["gold ring pendant", "brake pad engine oil", "diaper crib", "", "novel hardcover author"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("ens")
    make_linear(r / "linear")
    make_hf(r / "hf")
    make_dataset(r / "data")
    return r


def test_probabilities_are_the_weighted_mean_of_the_members(root, tmp_path):
    write_ensemble(tmp_path / "ens", [root / "linear", root / "hf"], [3, 1])
    ens = load_predictor(tmp_path / "ens", batch_size=2)
    a = load_predictor(root / "linear").predict_proba(TEXTS)
    b = load_predictor(root / "hf").predict_proba(TEXTS)
    assert not np.allclose(a, b, atol=1e-3)  # two different models, or the check below proves nothing
    np.testing.assert_allclose(ens.predict_proba(TEXTS), 0.75 * a + 0.25 * b, atol=1e-6)
    assert ens.labels == LABELS and ens.weights == [0.75, 0.25] and ens.runtime == "numpy+torch"
    assert [m["kind"] for m in ens.describe()["members"]] == ["linear", "hf_sequence_classification"]


def test_normalize_weights_rejects_bad_input():
    assert normalize_weights(2, None) == [0.5, 0.5]
    for n, w in ((1, None), (2, [1.0]), (2, [1.0, -1.0]), (2, [0.0, 0.0]), (2, [float("nan"), 1.0])):
        with pytest.raises(UserError):
            normalize_weights(n, w)


def test_members_must_share_labels(root, tmp_path, capsys):
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    texts, labels = toy_offers(5)
    reordered = list(reversed(LABELS))
    LinearTextClassifier(reordered, LinearConfig(hash_bits=12, char_min_df=1)).fit(texts, labels).save(
        tmp_path / "other")
    code = run(build_script.main, ["--models", str(root / "linear"), str(tmp_path / "other"),
                                   "--out", str(tmp_path / "ens")])
    assert code == 2 and "same labels in the same order" in capsys.readouterr().err


def test_build_ensemble_scores_members_and_ensemble(root, tmp_path, capsys):
    out = tmp_path / "ens"
    assert run(build_script.main, ["--models", str(root / "linear"), str(root / "hf"), "--data", str(root / "data"),
                                   "--out", str(out), "--no_lang_metrics"]) == 0
    printed = capsys.readouterr().out
    assert "ensemble" in printed and "results written" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["members"]) == {str(root / "linear"), str(root / "hf")}

    from category_classification.data.dataset_dir import get_split, load_dataset_dir

    test = get_split(load_dataset_dir(root / "data"), "test")
    a = load_predictor(root / "linear").predict_proba(test["text"])
    b = load_predictor(root / "hf").predict_proba(test["text"])
    expected = compute_metrics(test["label"], (0.5 * a + 0.5 * b).argmax(axis=1).tolist(), LABELS)
    assert m["test"]["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert m["members"][str(root / "linear")]["test"]["macro_f1"] == pytest.approx(
        compute_metrics(test["label"], a.argmax(axis=1).tolist(), LABELS)["macro_f1"])
    assert (out / "results_category.txt").is_file() and (out / "confusion_matrix_test.png").is_file()

    # the other scripts take the ensemble directory as they take any model
    assert run(evaluate_script.main, ["--model", str(out), "--data", str(root / "data"), "--split", "test",
                                      "--no_lang_metrics"]) == 0
    assert f"macro_f1={expected['macro_f1']:.4f}" in capsys.readouterr().out
    assert run(predict_script.main, ["--model", str(out), "--text", "silver necklace"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[0])["label"] in LABELS


def test_members_are_found_relative_to_a_moved_ensemble(root, tmp_path):
    moved = tmp_path / "moved"
    for name in ("linear", "hf"):
        shutil.copytree(root / name, moved / name)
    write_ensemble(moved / "ens", [moved / "linear", moved / "hf"])
    relocated = tmp_path / "relocated"
    shutil.move(str(moved), str(relocated))
    probs = load_predictor(relocated / "ens").predict_proba(TEXTS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    shutil.rmtree(relocated / "hf")
    with pytest.raises(UserError, match="member model directory not found"):
        load_predictor(relocated / "ens")


def test_an_ensemble_is_not_a_member_and_has_no_onnx_export(root, tmp_path):
    write_ensemble(tmp_path / "ens", [root / "linear", root / "hf"])
    with pytest.raises(UserError, match="itself an ensemble"):
        write_ensemble(tmp_path / "ens2", [tmp_path / "ens", root / "linear"])
    from category_classification.inference.onnx_export import load_torch_for_export

    with pytest.raises(UserError, match="no ONNX export"):
        load_torch_for_export(tmp_path / "ens")


def test_serve_answers_with_the_ensemble(root, tmp_path):
    from fastapi.testclient import TestClient

    from category_classification.serve import create_app

    write_ensemble(tmp_path / "ens", [root / "linear", root / "hf"])
    ens = load_predictor(tmp_path / "ens")
    with TestClient(create_app(ens, max_batch=8, max_wait_ms=5)) as client:
        r = client.post("/predict", json={"titles": TEXTS[:3], "top_k": 2})
        assert r.status_code == 200
        assert [p["label"] for p in r.json()["predictions"]] == [p["label"] for p in ens.predict(TEXTS[:3])]
        m = client.get("/model").json()
        assert m["kind"] == "ensemble" and len(m["members"]) == 2
