"""The registry of model kinds, the Hugging Face folder loader, the offline environment, and the rule that
no two library modules import each other."""

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from category_classification.core.artifacts import write_model_info
from category_classification.core.cli import UserError
from category_classification.core.env import offline_env, stay_offline
from category_classification.inference.base import Predictor
from category_classification.models import registry
from category_classification.models.registry import KINDS, ModelKind, declared_files, load_predictor
from predict_fixtures import LABELS, make_hf

PACKAGE = Path(__file__).resolve().parent.parent / "category_classification"


def test_every_kind_loads_a_predictor_of_that_kind():
    for name, kind in KINDS.items():
        cls = kind.predictor_class()
        assert issubclass(cls, Predictor) and cls.kind == name
        if kind.onnx_export:  # what export_onnx.py calls
            assert callable(cls.load_parts) and callable(cls.forward_logits)


def test_declared_files_fill_keys_defaults_lists_and_alternatives():
    kind = ModelKind("x:Y", ("a.json", "{weights}", "{path=.}/config.json", "{files}", "{path=.}/w.bin|{path=.}/w.st",
                             "{absent}/gone.txt"))
    info = {"weights": "w.npz", "files": {"fp32": "m.onnx", "int8": "m.int8.onnx"}}
    assert declared_files(kind, info) == [["a.json"], ["w.npz"], ["config.json"], ["m.onnx"], ["m.int8.onnx"],
                                          ["w.bin", "w.st"]]
    assert declared_files(kind, dict(info, path="merged"))[2] == [os.path.join("merged", "config.json")]


class ToyPredictor(Predictor):
    """A model kind added the documented way: this class plus one registry line."""

    kind = "toy"
    runtime = "numpy"

    def predict_proba(self, texts):
        return np.full((len(texts), len(self.labels)), 1.0 / len(self.labels), dtype=np.float32)


def test_a_new_kind_is_its_module_plus_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "toy", ModelKind("test_registry:ToyPredictor", ("toy.txt",)))
    d = tmp_path / "toy"
    write_model_info(d, "toy", LABELS)
    with pytest.raises(UserError, match="toy.txt is missing"):
        load_predictor(d)
    (d / "toy.txt").write_text("weights")
    p = load_predictor(d, device="cpu", precision="int8", threads=1)  # options it has no use for are ignored
    assert isinstance(p, ToyPredictor) and p.predict(["x"])[0]["score"] == pytest.approx(1 / len(LABELS))
    from category_classification.inference.onnx_export import load_torch_for_export

    with pytest.raises(UserError, match="'toy' model has no ONNX export"):
        load_torch_for_export(d)


def test_unknown_kind_and_missing_folder_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_predictor(tmp_path / "nope")
    write_model_info(tmp_path / "m", "fromthefuture", LABELS)
    with pytest.raises(UserError, match="unknown model kind 'fromthefuture'"):
        load_predictor(tmp_path / "m")


def test_an_error_of_our_own_code_still_raises(tmp_path, monkeypatch):
    class Buggy(ToyPredictor):
        def __init__(self, *a, **k):
            raise TypeError("a bug, not a damaged file")

    monkeypatch.setattr(registry.ModelKind, "predictor_class", lambda self: Buggy)
    write_model_info(tmp_path / "m", "linear", LABELS, weights="w.npz")
    for f in ("linear_config.json", "w.npz"):
        (tmp_path / "m" / f).write_bytes(b"")
    with pytest.raises(UserError, match="linear_config.json is damaged"):  # a damaged file is named first
        load_predictor(tmp_path / "m")
    (tmp_path / "m" / "linear_config.json").write_text("{}")
    np.savez(tmp_path / "m" / "w.npz", a=np.zeros(2))
    with pytest.raises(TypeError):
        load_predictor(tmp_path / "m")


def test_hf_folder_loader(tmp_path):
    import torch

    from category_classification.models.hf import inference_dtype, load_folder, model_folder

    src = make_hf(tmp_path / "hf")
    assert model_folder(src)[0] == src / "merged"  # the trainer's folder points at merged/
    assert model_folder(src / "merged")[0] == src / "merged"
    (src / "merged" / "category_model.json").unlink()
    assert model_folder(src / "merged") == (src / "merged", {})  # any checkpoint folder
    with pytest.raises(UserError, match="no Hugging Face model"):
        model_folder(tmp_path)
    assert inference_dtype(torch.device("cpu")) == torch.float32
    folder = load_folder(src)
    assert folder.model.dtype == torch.float32 and not folder.model.training
    assert folder.pad_id == folder.tokenizer.pad_token_id == folder.model.config.pad_token_id
    weights = src / "merged" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the latency script loads here, outside the registry
    with pytest.raises(UserError, match="cannot load model .*merged"):
        load_folder(src)


def test_the_model_config_learns_the_pad_id(tmp_path):
    from category_classification.models.hf import set_pad_id

    class Config:
        pad_token_id = None

    class Model:
        config = Config()

    class Tok:
        pad_token_id = 7

    assert set_pad_id(Model(), Tok()) == 7 and Model.config.pad_token_id == 7


def test_offline_environment_keeps_explicit_values(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    stay_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    env = offline_env({"PATH": "/bin"}, OMP_NUM_THREADS=1)
    assert env["TRANSFORMERS_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"


def imports_of(path: Path, modules: set) -> set:
    """Project modules `path` imports, at the top or inside functions."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
    return deps & modules


def test_no_two_library_modules_import_each_other():
    files = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph = {m: imports_of(p, set(files)) - {m, "category_classification"} for m, p in files.items()}
    assert graph["category_classification.inference.ensemble"]  # the scan sees imports

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                path = cycle_from(start, nxt, seen)
                if path:
                    return [node] + path
        return None

    cycles = [c for c in (cycle_from(m, m, set()) for m in graph) if c]
    assert not cycles, cycles
