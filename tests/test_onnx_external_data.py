"""ONNX exports whose weights do not fit in the graph file (over protobuf's 2 GiB: Qwen3-Embedding-0.6B in fp32):
one data file per graph, listed, moved in with the graph, removed by a re-export that no longer needs it. A tiny
model takes the same path with the size limit lowered (`inline_max`); torch's own layout over 2 GiB (one file per
tensor) is made with onnx's writer. bench/onnx_external_data.py runs the real 2 GB case."""

import json

import numpy as np
import onnx
import pytest

from category_classification.core.artifacts import read_model_info
from category_classification.inference.onnx_export import export_staged
from category_classification.inference.predictors import load_predictor
from predict_fixtures import make_hf, toy_offers

TEXTS = toy_offers(3, seed=5)[0] + ["gold ring", "x" * 500]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("ext") / "qwen", "qwen3")


def weight_files(folder, graph="model.onnx"):
    """The files the graph's tensors are read from."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(folder / graph), load_external_data=False)
    return {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}


def torch_layout(graph_path):
    """Rewrite an inline graph as torch's exporter writes one over 2 GiB: a file per tensor, named after it."""
    model = onnx.load(str(graph_path))
    onnx.save_model(model, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=1024)
    return weight_files(graph_path.parent, graph_path.name)


def test_weights_over_the_limit_go_to_one_data_file_each_and_serve(qwen, tmp_path):
    out = tmp_path / "onnx"
    info = export_staged(qwen, out, quantize="int8", inline_max=1 << 20)  # the tiny model's ~4 MB is "over"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx.data", "model.int8.onnx.data"} <= names and not any(n.startswith(".") for n in names)
    assert weight_files(out) == {"model.onnx.data"} and weight_files(out, "model.int8.onnx") == {"model.int8.onnx.data"}
    assert (out / "model.onnx").stat().st_size < 1 << 20
    assert {"model.onnx", "model.onnx.data", "model.int8.onnx", "model.int8.onnx.data"} <= set(info["written"])
    ref = load_predictor(qwen, batch_size=4).logits(TEXTS)
    fp32 = load_predictor(out, precision="fp32", batch_size=4).logits(TEXTS)
    int8 = load_predictor(out, precision="int8", batch_size=4).logits(TEXTS)
    assert np.abs(fp32 - ref).max() < 1e-4
    assert (int8.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_reexport_removes_the_data_files_it_no_longer_writes_and_keeps_a_users(qwen, tmp_path):
    out = tmp_path / "onnx"
    export_staged(qwen, out, quantize="int8", inline_max=1 << 20)
    (out / "notes.txt").write_text("mine")
    export_staged(qwen, out)  # inline this time, and no int8
    names = {p.name for p in out.iterdir()}
    assert names == {"model.onnx", "tokenizer.json", "tokenizer_config.json", "category_model.json", "notes.txt"}
    assert weight_files(out) == set()


def test_gather_weights_puts_torchs_file_per_tensor_into_one(qwen, tmp_path):
    from category_classification.inference.onnx_export import gather_weights

    out = tmp_path / "onnx"
    export_staged(qwen, out)
    ref = load_predictor(out, batch_size=4).logits(TEXTS)
    scattered = torch_layout(out / "model.onnx")
    assert len(scattered) > 3
    assert gather_weights(out / "model.onnx") == "model.onnx.data"
    assert weight_files(out) == {"model.onnx.data"} and not any((out / f).exists() for f in scattered)
    assert np.abs(load_predictor(out, batch_size=4).logits(TEXTS) - ref).max() < 1e-5


def test_reexport_over_an_export_with_a_file_per_tensor_removes_them(qwen, tmp_path):
    """An export over 2 GiB by the code before data files: torch's per-tensor files, listed nowhere in its
    category_model.json. The re-export removes them (its graph names them), a user's file stays."""
    out = tmp_path / "onnx"
    export_staged(qwen, out)
    scattered = torch_layout(out / "model.onnx")
    info = json.loads((out / "category_model.json").read_text())
    assert not set(info["written"]) & scattered
    del info["written"]  # as that code wrote it: before file lists (and gather_weights), nothing was listed
    (out / "category_model.json").write_text(json.dumps(info))
    (out / "notes.txt").write_text("mine")
    export_staged(qwen, out, quantize="int8")
    assert not any((out / f).exists() for f in scattered)
    assert (out / "notes.txt").read_text() == "mine"
    assert read_model_info(out)["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    load_predictor(out, precision="int8").predict(["gold ring"])


def test_an_export_missing_its_data_file_is_one_line(qwen, tmp_path, capsys):
    from category_classification import predict as predict_script
    from category_classification.core.cli import run

    out = tmp_path / "onnx"
    export_staged(qwen, out, inline_max=1 << 20)
    (out / "model.onnx.data").rename(tmp_path / "elsewhere")
    capsys.readouterr()
    assert run(predict_script.main, ["--model", str(out), "--text", "gold ring"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.onnx.data" in lines[0], lines
