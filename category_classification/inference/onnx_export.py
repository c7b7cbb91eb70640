"""Export of the encoder and merged LoRA models to ONNX (dynamic batch and sequence axes), int8 quantization,
and the parity check of an export against the torch model it came from.

The exported directory holds model.onnx (and model.int8.onnx), the tokenizer and category_model.json of
kind "onnx", so predict.py, evaluate.py and serve.py run it on onnxruntime without torch.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from category_classification.core.artifacts import TEXT_SETTINGS, read_model_info, write_model_info
from category_classification.core.cli import UserError
from category_classification.models.registry import (check_folder, damaged_files_are_user_errors, exportable_kinds,
                                                      model_kind)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17


def _logits_module(model, forward_logits):
    """A module with the (input_ids, attention_mask) -> logits signature that the ONNX graph gets;
    `forward_logits` is the predictor class's own way of calling its model."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return forward_logits(self.inner, input_ids, attention_mask)

    return LogitsOnly(model).eval()


def load_torch_for_export(model_dir):
    """(logits module, tokenizer, info with pad_token_id, source dir) for a model folder whose kind the
    registry marks exportable."""
    d = Path(model_dir)
    info = read_model_info(d)
    if not model_kind(info["kind"], d).onnx_export:
        raise UserError(f"{d}: a {info['kind']!r} model has no ONNX export "
                        f"({' and '.join(exportable_kinds())} do)")
    kind, info = check_folder(d)
    cls = kind.predictor_class()
    with damaged_files_are_user_errors(d, kind, info):
        parts = cls.load_parts(d, info, "cpu", for_export=True)
    info = dict(info, pad_token_id=int(parts.pad_id))
    return _logits_module(parts.model, cls.forward_logits), parts.tokenizer, info, parts.source


def export_onnx(model_dir, out_dir, quantize: str | None = None, opset: int = OPSET, log=print) -> dict:
    """Write model.onnx (+ model.int8.onnx), the tokenizer and category_model.json into `out_dir`."""
    import torch

    wrapped, tokenizer, info, src = load_torch_for_export(model_dir)
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve() or out.resolve() == src.resolve():
        raise UserError("--out must be a new directory, not the model directory")
    out.mkdir(parents=True, exist_ok=True)
    # Two examples of different lengths with padding, so no shape is specialised into the graph.
    enc = tokenizer(["an example offer title for tracing", "short"], truncation=True,
                    max_length=int(info.get("max_length") or 128), padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    t0 = time.perf_counter()
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "logits": {0: "batch"}}
    with torch.no_grad():
        # The TorchScript exporter: a second for these models, where the dynamo exporter takes ~15 s.
        torch.onnx.export(wrapped, (ids, mask), str(out / FP32_FILE), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes=dyn, opset_version=opset, dynamo=False)
    log(f"exported {out / FP32_FILE} in {time.perf_counter() - t0:.1f}s")
    files = {"fp32": FP32_FILE}
    if quantize == "int8":
        quantize_int8(out / FP32_FILE, out / INT8_FILE)
        files["int8"] = INT8_FILE
        log(f"quantized {out / INT8_FILE}")
    elif quantize:
        raise UserError(f"unknown --quantize {quantize!r} (int8)")
    tokenizer.save_pretrained(str(out))
    if (Path(model_dir) / "metrics.json").is_file():  # the training figures travel with the export
        shutil.copyfile(Path(model_dir) / "metrics.json", out / "metrics.json")
    elif (src / "metrics.json").is_file():
        shutil.copyfile(src / "metrics.json", out / "metrics.json")
    keep = {k: info[k] for k in ("max_length", "base_model", "num_parameters", *TEXT_SETTINGS) if k in info}
    write_model_info(out, "onnx", info["labels"], source_kind=info["kind"], source_dir=str(model_dir),
                     files=files, default_precision="int8" if "int8" in files else "fp32",
                     pad_token_id=info["pad_token_id"], opset=opset, **keep)
    return read_model_info(out)


def export_staged(model_dir, out_dir, **kwargs) -> dict:
    """`export_onnx` into a stage inside `out_dir` (core/artifacts.staged_folder), then each file moved in
    by a rename: a run killed mid-export leaves the earlier export whole, never an fp32 file of one model
    beside an int8 file of another; the files of an earlier export the new one lacks (its int8 file, its
    parity report) are removed, a user's own files kept."""
    from category_classification.core.artifacts import staged_folder

    out = Path(out_dir)
    created = not out.exists()
    try:
        with staged_folder(out) as stage:
            export_onnx(model_dir, stage, **kwargs)
            stale = [f for f in (INT8_FILE, "parity.json") if not (stage / f).exists()]
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # a failed first export leaves no folder
            out.rmdir()
        raise
    for f in stale:  # after the new model info is in place: it no longer names them
        (out / f).unlink(missing_ok=True)
    return read_model_info(out)


def quantize_int8(fp32_path, int8_path) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized per batch at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weight scales keep the argmax of small classifiers close to fp32 (parity >= 99%).
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    return Path(int8_path)


def agreement(a, b) -> float:
    """Share of positions where two prediction lists agree."""
    a, b = np.asarray(a), np.asarray(b)
    return float((a == b).mean()) if len(a) else 1.0


def parity(torch_predictor, onnx_predictors: dict, texts, y_true=None) -> dict:
    """Agreement of each ONNX predictor's argmax with torch's, max |logit difference|, and macro-F1 each."""
    from category_classification.evaluation.metrics import compute_metrics

    labels = torch_predictor.labels
    ref_logits = torch_predictor.logits(texts)
    ref = ref_logits.argmax(axis=1)
    report = {"n": len(ref)}
    if y_true is not None:
        report["torch"] = {"macro_f1": compute_metrics(y_true, ref, labels)["macro_f1"]}
    for name, pred in onnx_predictors.items():
        logits = pred.logits(texts)
        row = {"agreement": agreement(ref, logits.argmax(axis=1)),
               "max_abs_logit_diff": float(np.abs(logits - ref_logits).max()) if len(ref) else 0.0}
        if y_true is not None:
            row["macro_f1"] = compute_metrics(y_true, logits.argmax(axis=1), labels)["macro_f1"]
            row["macro_f1_delta"] = row["macro_f1"] - report["torch"]["macro_f1"]
        report[name] = row
    return report


def write_parity(out_dir, report: dict) -> Path:
    path = Path(out_dir) / "parity.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
