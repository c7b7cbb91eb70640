"""Export of the encoder and merged LoRA models to ONNX (dynamic batch and sequence axes), int8 quantization,
and the parity check of an export against the torch model it came from.

The exported directory holds model.onnx (and model.int8.onnx), the tokenizer and category_model.json of
kind "onnx", so predict.py, evaluate.py and serve.py run it on onnxruntime without torch. A model whose
weights protobuf cannot hold (over 2 GiB: Qwen3-Embedding-0.6B in fp32) keeps them in one data file beside
each graph, model.onnx.data (and model.int8.onnx.data).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from category_classification.core.artifacts import MODEL_INFO, TEXT_SETTINGS, read_model_info, write_model_info
from category_classification.core.cli import UserError
from category_classification.inference.predictors import DATA_SUFFIX, OnnxPredictor, load_predictor, max_length_of
from category_classification.models.hf import check_vocab
from category_classification.models.registry import (check_folder, damaged_files_are_user_errors, exportable_kinds,
                                                      model_kind)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 17
PARITY_FILE = "parity.json"
# Protobuf refuses a file over 2 GiB; a graph whose weights take more than this (2 GiB less room for the graph
# itself) keeps them in its data file. torch's exporter already writes them out there, one file per tensor.
WEIGHTS_INLINE_MAX = 2**31 - 2**27
DATA_ALIGN = 4096  # each tensor starts on a page in the data file, so onnxruntime can map it instead of copying
# What an export writes beside category_model.json, so a re-export removes those of the earlier export it
# does not write again: its int8 file, data files, parity report and training figures, and the tokenizer files
# another tokenizer (or transformers 4, which wrote special_tokens_map.json) saved, which the loader would read
# with the new tokenizer.json (special_tokens_map.json and added_tokens.json change the ids it gives).
EXPORT_FILES = (FP32_FILE, FP32_FILE + DATA_SUFFIX, INT8_FILE, INT8_FILE + DATA_SUFFIX, PARITY_FILE, "metrics.json",
                "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                "sentencepiece.bpe.model", "spm.model")
# Agreement with torch's labels each file of an export must reach on --check_data (docs/serving.md)
AGREEMENT_TARGETS = {"fp32": 0.999, "int8": 0.99}


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
    rows, width = cls.model_sizes(parts.model)
    if width != len(info["labels"]):  # the export would name labels its graph does not score
        raise UserError(f"{d}: the model gives {width} scores per offer but {MODEL_INFO} names "
                        f"{len(info['labels'])} labels; retrain the model")
    check_vocab(parts.tokenizer, rows, d)
    info = dict(info, pad_token_id=int(parts.pad_id), vocab_size=int(rows))
    return _logits_module(parts.model, cls.forward_logits), parts.tokenizer, info, parts.source


def export_onnx(model_dir, out_dir, quantize: str | None = None, opset: int = OPSET, log=print,
                inline_max: int = WEIGHTS_INLINE_MAX) -> dict:
    """Write model.onnx (+ model.int8.onnx), the tokenizer and category_model.json into `out_dir`; weights over
    `inline_max` bytes go to one data file per graph (gather_weights)."""
    import gc

    import torch

    wrapped, tokenizer, info, src = load_torch_for_export(model_dir)
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve() or out.resolve() == src.resolve():
        raise UserError("--out must be a new directory, not the model directory")
    out.mkdir(parents=True, exist_ok=True)
    # Two examples of different lengths with padding, so no shape is specialised into the graph.
    enc = tokenizer(["an example offer title for tracing", "short"], truncation=True,
                    max_length=max_length_of(model_dir, info), padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
    t0 = time.perf_counter()
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "logits": {0: "batch"}}
    with torch.no_grad():
        # The TorchScript exporter: a second for these models, where the dynamo exporter takes ~15 s.
        torch.onnx.export(wrapped, (ids, mask), str(out / FP32_FILE), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes=dyn, opset_version=opset, dynamo=False)
    log(f"exported {out / FP32_FILE} in {time.perf_counter() - t0:.1f}s")
    del wrapped, enc, ids, mask
    gc.collect()  # the torch model is done with before the quantizer takes its memory (5x the fp32 weights)
    data = gather_weights(out / FP32_FILE, inline_max)
    if data:
        log(f"weights in {out / data}")
    files = {"fp32": FP32_FILE}
    if quantize == "int8":
        quantize_int8(out / FP32_FILE, out / INT8_FILE, external=bool(data))
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
    # what this export wrote, so a re-export removes only those of its files it does not write again
    written = sorted(p.name for p in out.iterdir() if p.is_file() and p.name in EXPORT_FILES)
    write_model_info(out, "onnx", info["labels"], source_kind=info["kind"], source_dir=str(model_dir),
                     files=files, default_precision="int8" if "int8" in files else "fp32",
                     pad_token_id=info["pad_token_id"], vocab_size=info["vocab_size"], opset=opset,
                     written=written, **keep)
    return read_model_info(out)


def export_staged(model_dir, out_dir, check=None, **kwargs) -> dict:
    """`export_onnx` into a stage inside `out_dir` (core/artifacts.staged_folder), then each file moved in
    by a rename: a run killed mid-export leaves the earlier export whole, never an fp32 file of one model
    beside an int8 file of another. `check(stage)` runs on the finished export before anything is moved in:
    when it raises, `out_dir` stays as it was. The files the earlier export wrote (earlier_files) that the
    new one lacks (its int8 file, parity report, training figures, tokenizer files) are removed, a user's own
    files kept."""
    from category_classification.core.artifacts import staged_folder

    out = Path(out_dir)
    created = not out.exists()
    earlier = earlier_files(out)
    try:
        with staged_folder(out) as stage:
            export_onnx(model_dir, stage, **kwargs)
            if check is not None:
                check(stage)
            stale = [f for f in earlier if not (stage / f).exists()]
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):  # a failed first export leaves no folder
            out.rmdir()
        raise
    for f in stale:  # after the new model info is in place: it no longer names them
        (out / f).unlink(missing_ok=True)
    return read_model_info(out)


def earlier_files(out: Path) -> list[str]:
    """The files the export already in `out` wrote: those of EXPORT_FILES its model info lists as `written`
    (and its parity report); for an export made before that list (and before gather_weights), every one of
    EXPORT_FILES and the weight files its graphs name (legacy_weight_files); none without an export there.
    Only names of EXPORT_FILES and files our graphs read: an edited list cannot name a user's file or a path
    elsewhere, and a graph of the user's saved over ours cannot name theirs once the list exists."""
    try:
        info = read_model_info(out) if (out / MODEL_INFO).is_file() else {}
    except (UserError, OSError, ValueError):
        info = {}
    if info.get("kind") != "onnx":
        return []
    listed = info.get("written")
    if isinstance(listed, list):
        return [f for f in EXPORT_FILES if f in listed or f == PARITY_FILE]
    return list(EXPORT_FILES) + [f for f in legacy_weight_files(out, info) if f not in EXPORT_FILES]


def legacy_weight_files(out: Path, info: dict) -> list[str]:
    """The weight files beside model.onnx / model.int8.onnx in `out` that those graphs read and no file list
    names: an export over 2 GiB made before gather_weights left torch's one file per tensor. A graph over
    64 MiB holds its weights itself and is not read (reading it would cost its size in memory)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    files = info.get("files")
    names = set()
    for graph in [g for g in (FP32_FILE, INT8_FILE) if isinstance(files, dict) and g in files.values()]:
        path = out / graph
        try:
            if not path.is_file() or path.stat().st_size > 64 << 20:
                continue
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # a damaged graph names nothing we could trust
            continue
        names |= {ExternalDataInfo(t).location for t in _graph_tensors(model.graph) if uses_external_data(t)}
    return sorted(n for n in names if Path(n).name == n and n != MODEL_INFO and not n.startswith(".")
                  and (out / n).is_file() and not (out / n).is_symlink())


def quantize_int8(fp32_path, int8_path, external: bool = False) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized per batch at run time); `external`: its
    weights go to one data file beside it (int8_path + DATA_SUFFIX), as those of an fp32 graph over 2 GiB do."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    data = Path(str(int8_path) + DATA_SUFFIX)
    if external and os.path.lexists(data):  # onnx appends tensors to an existing data file
        raise FileExistsError(f"{data} exists; quantize into a new folder")
    # Per-channel weight scales keep the argmax of small classifiers close to fp32 (parity >= 99%).
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                     use_external_data_format=external)
    if data.is_file():  # onnx creates it readable by its owner only; it is served like the graph beside it
        os.chmod(data, Path(int8_path).stat().st_mode & 0o777)
    return Path(int8_path)


def gather_weights(graph_path, inline_max: int = WEIGHTS_INLINE_MAX) -> str | None:
    """Move the weights of the ONNX graph at `graph_path` into one data file beside it (its name + DATA_SUFFIX)
    when torch's exporter wrote them to files of their own (it does over 2 GiB: one per tensor, named after
    it, which no file list could name in advance) or the graph file is over `inline_max` bytes. Those
    per-tensor files are removed. Returns the data file's name, or None when the weights stay in the graph."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(graph_path)
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(_graph_tensors(model.graph))
    scattered = sorted({ExternalDataInfo(t).location for t in tensors if uses_external_data(t)})
    if not scattered and path.stat().st_size <= inline_max:
        return None
    name = path.name + DATA_SUFFIX
    if any(Path(loc).name != loc or loc in (name, path.name) for loc in scattered):
        raise ValueError(f"{path} names weight files outside its folder or under our names: {scattered}")
    with open(path.parent / name, "xb") as data:
        for t in tensors:
            if uses_external_data(t):
                ext = ExternalDataInfo(t)
                src = path.parent / ext.location
                start = ext.offset or 0
                length = ext.length if ext.length is not None else src.stat().st_size - start
            elif t.HasField("raw_data") and len(t.raw_data) >= 1024:  # small tensors stay in the graph
                src, start, length = None, 0, len(t.raw_data)
            else:
                continue
            data.write(b"\0" * (-data.tell() % DATA_ALIGN))
            offset = data.tell()
            if src is None:
                data.write(t.raw_data)
                t.ClearField("raw_data")
            else:
                _copy_range(src, start, length, data)
            del t.external_data[:]
            for key, value in (("location", name), ("offset", offset), ("length", length)):
                entry = t.external_data.add()
                entry.key, entry.value = key, str(value)
            t.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(path))
    for loc in scattered:  # written by torch's exporter beside the graph, now held by the data file
        (path.parent / loc).unlink()
    return name


def _graph_tensors(graph):
    """Every tensor of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_tensors(sub)


def _copy_range(src: Path, start: int, length: int, dst, chunk: int = 64 << 20) -> None:
    """Copy `length` bytes of `src` from `start` to the open file `dst`, 64 MiB at a time."""
    with open(src, "rb") as fh:
        fh.seek(start)
        while length > 0:
            block = fh.read(min(chunk, length))
            if not block:
                raise ValueError(f"{src} ends before the {length} more bytes its graph gives it")
            dst.write(block)
            length -= len(block)


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


def check_export(model_dir, export_dir, texts, y_true, batch_size: int = 64, **extra) -> dict:
    """Parity of each file of the export in `export_dir` with the torch model of `model_dir` on `texts`
    (y_true: label indices in the model's order), written with `extra` to parity.json there."""
    info = read_model_info(export_dir)
    # the class itself, not load_predictor: a stage is locked by its save, and a reader would wait for it
    onnx_preds = {p: OnnxPredictor.from_dir(Path(export_dir), info, batch_size=batch_size, precision=p)
                  for p in info["files"]}
    report = {**parity(load_predictor(model_dir, batch_size=batch_size), onnx_preds, texts, y_true), **extra}
    write_parity(export_dir, report)
    return report


def missed_targets(report: dict) -> list[str]:
    """The files of a parity report below their agreement target, as sentences."""
    return [f"{p} agrees with torch on only {report[p]['agreement']:.4%} (< {target:.1%})"
            for p, target in AGREEMENT_TARGETS.items() if p in report and report[p]["agreement"] < target]


def write_parity(out_dir, report: dict) -> Path:
    path = Path(out_dir) / PARITY_FILE
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
