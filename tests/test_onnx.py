"""ONNX export of tiny encoder and merged-LoRA models: dynamic axes, parity with torch, int8, served as-is."""

import json

import numpy as np
import pytest

from category_classification import export_onnx as export_script
from category_classification.core.artifacts import read_model_info
from category_classification.core.cli import run
from category_classification.inference.onnx_export import export_onnx, parity
from category_classification.inference.predictors import load_predictor
from predict_fixtures import LABELS, make_dataset, make_encoder, make_hf, toy_offers

TEXTS = ["gold ring", "", "brake pad engine oil tyre car wiper spark plug " * 10, "diaper"] + toy_offers(6, 4)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, make in (("encoder", make_encoder), ("bert", make_hf), ("qwen3", lambda p: make_hf(p, "qwen3"))):
        src = make(root / name)
        export_onnx(src, root / f"{name}_onnx", quantize="int8", log=lambda *_: None)
        out[name] = (src, root / f"{name}_onnx")
    return out


@pytest.mark.parametrize("name", ["encoder", "bert", "qwen3"])
def test_fp32_export_matches_torch_with_dynamic_axes(exported, name):
    import onnx

    src, dst = exported[name]
    info = read_model_info(dst)
    assert info["kind"] == "onnx" and info["labels"] == LABELS
    assert info["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"} and info["max_length"] == 32
    graph = onnx.load(str(dst / "model.onnx")).graph
    for inp in graph.input:  # batch and sequence are symbolic, not the tracing example's shape
        assert all(d.dim_param for d in inp.type.tensor_type.shape.dim)
    torch_pred = load_predictor(src, batch_size=3)
    fp32 = load_predictor(dst, precision="fp32", batch_size=5)  # other batch size: other shapes than torch
    np.testing.assert_allclose(fp32.logits(TEXTS), torch_pred.logits(TEXTS), atol=1e-4)
    report = parity(torch_pred, {"fp32": fp32, "int8": load_predictor(dst, precision="int8")}, TEXTS)
    assert report["fp32"]["agreement"] == 1.0
    assert report["int8"]["max_abs_logit_diff"] < 1.0


def test_int8_is_smaller_and_agrees(exported):
    src, dst = exported["encoder"]
    assert (dst / "model.int8.onnx").stat().st_size < 0.5 * (dst / "model.onnx").stat().st_size
    texts, y = toy_offers(20, seed=11)
    report = parity(load_predictor(src), {"int8": load_predictor(dst, precision="int8")}, texts, y)
    assert report["int8"]["agreement"] >= 0.95
    assert abs(report["int8"]["macro_f1_delta"]) <= 0.05


def test_onnx_directory_works_in_predict_and_serve(exported, tmp_path):
    from fastapi.testclient import TestClient

    from category_classification import predict as predict_script
    from category_classification.serve import create_app

    src, dst = exported["bert"]
    out = tmp_path / "p.jsonl"
    assert run(predict_script.main, ["--model", str(dst), "--text", "gold ring", "--text", "diaper",
                                     "--out", str(out), "--precision", "fp32", "--no_progress"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    expected = load_predictor(src).predict(["gold ring", "diaper"])
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    with TestClient(create_app(load_predictor(dst))) as c:
        assert c.get("/model").json()["kind"] == "onnx"
        r = c.post("/predict", json={"titles": ["gold ring"], "top_k": 2})
        assert r.status_code == 200 and len(r.json()["predictions"][0]["top_k"]) == 2


def test_export_script_with_parity_check(tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    src = make_encoder(tmp_path / "enc", seed=1)
    (src / "metrics.json").write_text(json.dumps({"model": "enc", "train_seconds": 3.0}))
    dst = tmp_path / "enc_onnx"
    assert run(export_script.main, ["--model", str(src), "--out", str(dst), "--quantize", "int8",
                                    "--check_data", str(data), "--check_split", "test"]) == 0
    report = json.loads((dst / "parity.json").read_text())
    assert report["n"] == 48 and report["fp32"]["agreement"] == 1.0
    assert json.loads((dst / "metrics.json").read_text())["train_seconds"] == 3.0  # figures travel along
    assert "agreement" in capsys.readouterr().out
    linear_like = tmp_path / "lin"
    linear_like.mkdir()
    (linear_like / "category_model.json").write_text(json.dumps({"kind": "linear", "labels": LABELS}))
    assert run(export_script.main, ["--model", str(linear_like), "--out", str(tmp_path / "x")]) == 2


def test_export_never_replaces_another_model_and_leaves_no_stale_files(tmp_path, capsys):
    from predict_fixtures import make_linear

    enc, bert = make_encoder(tmp_path / "enc", seed=2), make_hf(tmp_path / "bert")
    victim = make_linear(tmp_path / "victim_linear")
    before = (victim / "category_model.json").read_bytes()
    assert run(export_script.main, ["--model", str(enc), "--out", str(victim)]) == 2
    assert "holds a linear model" in capsys.readouterr().err
    assert (victim / "category_model.json").read_bytes() == before and not (victim / "model.onnx").exists()
    # an earlier export of another model, with int8 and a parity report: re-exported without int8, nothing
    # of the old export stays behind to describe a model that is no longer there; a user's file stays
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "y"
    assert run(export_script.main, ["--model", str(enc), "--out", str(out), "--quantize", "int8",
                                    "--check_data", str(data)]) == 0
    (out / "notes.md").write_text("mine", encoding="utf-8")
    assert run(export_script.main, ["--model", str(bert), "--out", str(out)]) == 0
    assert not (out / "model.int8.onnx").exists() and not (out / "parity.json").exists()
    assert read_model_info(out)["source_dir"] == str(bert) and (out / "notes.md").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".save-" in p.name]


def test_export_killed_midway_leaves_the_earlier_export_whole(tmp_path, monkeypatch):
    import category_classification.inference.onnx_export as onnx_export

    enc, bert = make_encoder(tmp_path / "enc", seed=3), make_hf(tmp_path / "bert")
    out = tmp_path / "y"
    assert run(export_script.main, ["--model", str(bert), "--out", str(out), "--quantize", "int8"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    class Killed(BaseException):
        pass

    def die(*_a, **_k):
        raise Killed()

    monkeypatch.setattr(onnx_export, "quantize_int8", die)
    with pytest.raises(Killed):
        export_script.main(["--model", str(enc), "--out", str(out), "--quantize", "int8"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("flags,words", [(["--opset", "5"], "--opset"), (["--opset", "99"], "--opset"),
                                         (["--batch_size", "0"], "--batch_size"), (["--check_limit", "-1"], "--check_limit"),
                                         (["--check_data", "/nonexistent"], "nonexistent")])
def test_export_flag_errors_come_before_any_work(tmp_path, capsys, flags, words):
    enc = make_encoder(tmp_path / "enc", seed=4)
    out = tmp_path / "o"
    assert run(export_script.main, ["--model", str(enc), "--out", str(out), *flags]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x]
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()
