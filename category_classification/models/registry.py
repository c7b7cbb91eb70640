"""The one table of model kinds: the predictor class that loads each kind, whether it exports to ONNX and the
files its folder holds; `load_predictor` opens any model folder through it. A new kind: its module + one line.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from category_classification.core.artifacts import MODEL_INFO, read_model_info, reading_model
from category_classification.core.cli import UserError


@dataclass(frozen=True)
class ModelKind:
    """What the loaders need to know about one kind of model folder.

    `predictor` is "module:Class", imported only when a folder of this kind is opened; the class subclasses
    inference.base.Predictor. `files` are what the folder holds beside category_model.json: "{key}" takes
    the value of `key` in category_model.json ("{key=default}" when it may be absent; a dict or list value
    names several files), "a|b" accepts either. `onnx_export`: export_onnx.py can export it, through the
    class's `load_parts(model_dir, info, device, for_export=True)`, `forward_logits(model, ids, mask)` and
    `model_sizes(model)` (embedding rows and scores per offer, which the tokenizer and labels must fit).
    """

    predictor: str
    files: tuple[str, ...] = ()
    onnx_export: bool = False

    def predictor_class(self) -> type:
        module, _, name = self.predictor.partition(":")
        return getattr(importlib.import_module(module), name)


_PREDICTORS = "category_classification.inference.predictors"
_HF_WEIGHTS = "{path=.}/model.safetensors|{path=.}/model.safetensors.index.json|{path=.}/pytorch_model.bin"

KINDS: dict[str, ModelKind] = {
    "linear": ModelKind(f"{_PREDICTORS}:LinearPredictor", ("linear_config.json", "{weights}", "{vocabulary}",
                                                            "{embedder}/config.json")),
    "encoder": ModelKind(f"{_PREDICTORS}:EncoderPredictor",
                         ("{config=encoder_config.json}", "{weights=model.safetensors}",
                          "{tokenizer=.}/tokenizer.json", "{tokenizer=.}/tokenizer_config.json"), onnx_export=True),
    "hf_sequence_classification": ModelKind(f"{_PREDICTORS}:HFPredictor",
                                            ("{path=.}/config.json", _HF_WEIGHTS, "{path=.}/tokenizer.json",
                                             "{path=.}/tokenizer_config.json"), onnx_export=True),
    "onnx": ModelKind(f"{_PREDICTORS}:OnnxPredictor", ("{files}", "tokenizer.json", "tokenizer_config.json")),
    "fielded_linear": ModelKind("category_classification.models.fielded:FieldedPredictor",
                                ("{weights=fielded_model.joblib}", "{vocabulary}")),
    "hierarchical_linear": ModelKind("category_classification.models.hierarchical:HierarchicalPredictor",
                                     ("hierarchy_paths.json", "lvl1/linear_config.json", "lvl2/linear_config.json",
                                      "lvl3/linear_config.json", "{level_files}")),
    "ensemble": ModelKind("category_classification.inference.ensemble:EnsemblePredictor"),
}

_FIELD = re.compile(r"\{(\w+)(?:=([^}]*))?\}")


def model_kind(name, model_dir=None) -> ModelKind:
    """The registry entry of `name`; an unknown kind is a user error (a folder from a newer version?)."""
    if name not in KINDS:
        where = f"{model_dir}: " if model_dir is not None else ""
        raise UserError(f"{where}unknown model kind {name!r} (known: {', '.join(KINDS)})")
    return KINDS[name]


def exportable_kinds() -> list[str]:
    return [name for name, k in KINDS.items() if k.onnx_export]


def _expand(template: str, info: dict) -> list[str]:
    """The file names one `files` template gives for this category_model.json ([] if a key it needs is absent)."""
    m = _FIELD.search(template)
    if m is None:
        return [template]
    value = info.get(m.group(1), m.group(2))
    if value is None:
        return []
    values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    out = []
    for v in values:
        out += _expand(template[:m.start()] + str(v) + template[m.end():], info)
    return out


def declared_files(kind: ModelKind, info: dict) -> list[list[str]]:
    """Per `files` entry, the relative paths that satisfy it (alternatives of "a|b" in one list); a dict or
    list value gives one entry per file."""
    out = []
    for entry in kind.files:
        options = [_expand(t, info) for t in entry.split("|")]
        if len(options) == 1:
            out += [[f] for f in options[0]]
        elif any(options):
            out.append([f for group in options for f in group])
    return [[str(Path(f)) for f in group] for group in out]


def check_folder(model_dir) -> tuple[ModelKind, dict]:
    """(registry entry, category_model.json) of a model folder whose declared files are all there."""
    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"model directory not found: {d}")
    info = read_model_info(d)
    kind = model_kind(info.get("kind"), d)
    groups = declared_files(kind, info)
    for group in groups:
        if not any((d / f).is_file() for f in group):
            holds = ", ".join([MODEL_INFO] + [" or ".join(g) for g in groups])
            raise UserError(f"{d}: {' or '.join(group)} is missing (a model folder of kind {info['kind']} "
                            f"holds {holds}); retrain or re-export the model")
    return kind, info


def load_predictor(model_dir, device: str = "cpu", batch_size: int = 64, precision: str | None = None,
                   threads: int | None = None):
    """The predictor for what `model_dir/category_model.json` declares.

    A LoRA trainer's output directory (kind hf_sequence_classification, "path": "merged") loads its merged
    model; an ensemble directory loads each member; `precision` ("fp32"/"int8") applies to ONNX models only.
    A missing or damaged file is a one-line UserError naming the folder and the file.
    """
    from category_classification.core.cli import check_threads

    check_threads(threads)
    with reading_model(model_dir):  # a save into the folder waits until every file is read
        kind, info = check_folder(model_dir)
        with damaged_files_are_user_errors(model_dir, kind, info):
            return kind.predictor_class().from_dir(Path(model_dir), info, batch_size=batch_size, device=device,
                                                   precision=precision, threads=threads)


# Damaged folders: what a truncated or overwritten file raises inside the libraries that read it.
_FILE_ERRORS = (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, pickle.UnpicklingError)
_FILE_ERROR_MODULES = ("safetensors", "onnxruntime", "google.protobuf", "onnx")


@contextmanager
def damaged_files_are_user_errors(model_dir, kind: ModelKind, info: dict):
    """Turn an error raised while reading a model folder into one line naming the damaged file.

    Errors of our own code (TypeError, AttributeError, ...) still raise when no declared file is damaged.
    """
    try:
        yield
    except Exception as exc:
        bad = damaged_file(model_dir, kind, info)
        if bad is not None:
            raise UserError(f"{model_dir}: {bad[0]} is damaged ({bad[1]}); retrain or re-export the model") from None
        if isinstance(exc, UserError):
            raise
        if isinstance(exc, _FILE_ERRORS) or type(exc).__module__.split(".")[0] in _FILE_ERROR_MODULES:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UserError(f"{model_dir}: cannot load the {info.get('kind')} model: {first}") from None
        raise


def damaged_file(model_dir, kind: ModelKind, info: dict) -> tuple[str, str] | None:
    """(file, reason) of the first declared file that cannot be read whole, or None."""
    d = Path(model_dir)
    for group in declared_files(kind, info):
        for f in group:
            if (d / f).is_file():
                reason = file_problem(d / f)
                if reason:
                    return f, reason
    return None


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read whole (checked by its extension: JSON, JSON.gz, npz, safetensors, ONNX), or None."""
    try:
        if path.suffix == ".json":
            import json

            json.loads(path.read_text(encoding="utf-8"))
        elif path.name.endswith(".json.gz"):
            import gzip
            import json

            json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        elif path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as z:
                for name in z.files:
                    z[name]
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                list(f.keys())
        elif path.suffix == ".onnx":
            import onnx

            if not onnx.load(str(path), load_external_data=False).graph.node:  # an empty file parses as no graph
                return "no graph in the file"
    except ImportError:
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:120]}".rstrip(": ")
    return None
