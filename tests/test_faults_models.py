"""Broken model folders: each file of a real tiny model truncated, overwritten or deleted makes predict.py,
evaluate.py and serve.py print one `error:` line naming the folder and the file, and exit 2."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from category_classification import evaluate as evaluate_script
from category_classification import predict as predict_script
from category_classification import serve as serve_script
from category_classification.core.cli import run
from category_classification.inference.ensemble import write_ensemble
from category_classification.inference.onnx_export import export_onnx
from predict_fixtures import make_dataset, make_encoder, make_hf, make_linear

ROOT = Path(__file__).resolve().parent.parent

# (model, file inside its folder) for every file a loader reads
FILES = [("linear", "category_model.json"), ("linear", "linear_config.json"), ("linear", "linear_weights.npz"),
         ("encoder", "category_model.json"), ("encoder", "encoder_config.json"), ("encoder", "model.safetensors"),
         ("encoder", "tokenizer.json"), ("encoder", "tokenizer_config.json"),
         ("hf", "category_model.json"), ("hf", "merged/config.json"), ("hf", "merged/model.safetensors"),
         ("hf", "merged/tokenizer.json"), ("hf", "merged/tokenizer_config.json"),
         ("onnx", "category_model.json"), ("onnx", "model.onnx"), ("onnx", "model.int8.onnx"),
         ("onnx", "tokenizer.json"), ("onnx", "tokenizer_config.json")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults_models")
    out = {"linear": make_linear(root / "linear"), "encoder": make_encoder(root / "encoder"),
           "hf": make_hf(root / "hf"), "data": make_dataset(root / "data")}
    export_onnx(out["encoder"], root / "onnx", quantize="int8", log=lambda *_: None)
    out["onnx"] = root / "onnx"
    return out


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot a model file\x89PNG" * 4)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()


def broken_copy(models, tmp_path, name, rel, how) -> Path:
    d = tmp_path / f"broken_{name}"
    shutil.copytree(models[name], d)
    damage(d / rel, how)
    return d


def assert_one_error_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "missing"])
@pytest.mark.parametrize("name,rel", FILES)
def test_predict_names_the_damaged_file(models, tmp_path, capsys, name, rel, how):
    d = broken_copy(models, tmp_path, name, rel, how)
    capsys.readouterr()
    # the fp32 file is read only when asked for (the export's default is int8)
    precision = ["--precision", "fp32"] if rel == "model.onnx" else []
    assert run(predict_script.main, ["--model", str(d), "--text", "gold ring", *precision]) == 2
    err = capsys.readouterr().err
    # a missing category_model.json: the folder is not a model folder, which the message says
    assert_one_error_line(err, str(d), Path(rel).name)


@pytest.mark.parametrize("name,rel", [("linear", "linear_weights.npz"), ("encoder", "model.safetensors"),
                                      ("onnx", "model.int8.onnx")])
def test_evaluate_and_serve_give_the_same_line(models, tmp_path, capsys, name, rel):
    d = broken_copy(models, tmp_path, name, rel, "truncated")
    capsys.readouterr()
    assert run(evaluate_script.main, ["--model", str(d), "--data", str(models["data"])]) == 2
    assert_one_error_line(capsys.readouterr().err, str(d), rel, "damaged")
    assert run(serve_script.main, ["--model", str(d), "--port", "0"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(d), rel, "damaged")


@pytest.mark.parametrize("info,words", [
    ({"kind": "linear"}, ["category_model.json", "damaged"]),  # no labels
    ({"labels": ["a", "b"]}, ["category_model.json", "damaged"]),  # no kind
    ([1, 2, 3], ["category_model.json", "damaged"]),
    ({"kind": "quantum", "labels": ["a", "b"]}, ["unknown model kind 'quantum'"]),
])
def test_model_info_without_kind_or_labels(models, tmp_path, capsys, info, words):
    d = tmp_path / "m"
    shutil.copytree(models["linear"], d)
    (d / "category_model.json").write_text(json.dumps(info))
    assert run(predict_script.main, ["--model", str(d), "--text", "gold ring"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(d), *words)


def test_ensemble_member_missing_or_damaged(models, tmp_path, capsys):
    shutil.copytree(models["linear"], tmp_path / "linear")
    shutil.copytree(models["hf"], tmp_path / "hf")
    write_ensemble(tmp_path / "ens", [tmp_path / "linear", tmp_path / "hf"])
    damage(tmp_path / "hf" / "merged" / "model.safetensors", "truncated")
    assert run(predict_script.main, ["--model", str(tmp_path / "ens"), "--text", "gold ring"]) == 2
    # the member's folder as the ensemble stores it (relative to the ensemble: ens/../hf)
    assert_one_error_line(capsys.readouterr().err, "hf: merged/model.safetensors", "damaged")
    shutil.rmtree(tmp_path / "hf")
    assert run(predict_script.main, ["--model", str(tmp_path / "ens"), "--text", "gold ring"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(tmp_path / "ens"), "member model directory not found")


def test_export_of_a_damaged_folder_is_one_line(models, tmp_path, capsys):
    from category_classification import export_onnx as export_script

    d = broken_copy(models, tmp_path, "hf", "merged/config.json", "truncated")
    assert run(export_script.main, ["--model", str(d), "--out", str(tmp_path / "out")]) == 2
    assert_one_error_line(capsys.readouterr().err, str(d), "merged/config.json", "damaged")


def test_damaged_metrics_do_not_stop_the_service(models, tmp_path):
    from category_classification.inference.predictors import training_figures

    d = tmp_path / "m"
    shutil.copytree(models["linear"], d)
    (d / "metrics.json").write_bytes(b"{\"test\": {\"macro_f1\"")
    assert training_figures(d) == {}


def test_no_traceback_from_the_real_process(models, tmp_path):
    """The installed-script path: a separate process prints one line on stderr and exits 2."""
    d = broken_copy(models, tmp_path, "linear", "linear_weights.npz", "garbage")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, str(ROOT / "category_classification" / "predict.py"), "--model", str(d),
                        "--text", "gold ring"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert_one_error_line(r.stderr, str(d), "linear_weights.npz", "damaged")
