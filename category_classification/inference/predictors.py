"""The predictors of the linear, encoder, merged LoRA (Hugging Face) and ONNX kinds, and threshold choice.

`load_predictor(model_dir)` (models/registry.py, re-exported here) returns a `Predictor` whose `predict_proba`
gives class probabilities and `predict` gives label, score and top-k per text, with an optional
"none of these" threshold. The CLI (predict.py), evaluate.py, serve.py and the benchmarks all use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from category_classification.core.artifacts import MODEL_INFO
from category_classification.core.cli import UserError
from category_classification.inference.base import Predictor, softmax  # noqa: F401 (the API)
from category_classification.models.registry import load_predictor  # noqa: F401 (the API)


class LinearPredictor(Predictor):
    kind = "linear"
    runtime = "numpy"

    def __init__(self, model_dir, info, batch_size=64):
        super().__init__(model_dir, info, batch_size)
        from category_classification.models.linear import load_linear

        self.model = load_linear(model_dir)
        self.labels = list(self.model.labels)

    @classmethod
    def from_dir(cls, model_dir, info, *, batch_size=64, device="cpu", precision=None, threads=None):
        predictor = cls(model_dir, info, batch_size)
        if threads and predictor.model.embedder is not None:  # the encoder runs in torch; n-grams need none
            import torch

            torch.set_num_threads(int(threads))
        return predictor

    def predict_proba(self, texts):
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        # batch_size means what it means for the other kinds; moderate batches also keep the sparse
        # matrices in cache, so they are no slower than one big call
        for start in range(0, len(texts), self.batch_size):
            out[start:start + self.batch_size] = self.model.predict_proba(texts[start:start + self.batch_size])
        return out


def max_length_of(model_dir, info: dict) -> int:
    """category_model.json "max_length": the tokens a text is cut to (128 when absent or 0); any other value
    that is not a positive whole number is a damaged file, refused in one line."""
    value = info.get("max_length") or 128
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{model_dir}: {MODEL_INFO} is damaged (max_length {value!r} is no positive whole "
                        "number); retrain or re-export the model")
    return value


class _TokenizedPredictor(Predictor):
    """Shared by the torch and ONNX predictors: tokenize, sort by length, pad per batch, run, unsort."""

    def __init__(self, model_dir, info, batch_size=64):
        super().__init__(model_dir, info, batch_size)
        self.max_length = max_length_of(model_dir, info)
        self.pad_id = 0

    def check_fits(self, rows: int | None, width, model: str) -> None:
        """Refuse at load, in one line, a folder whose parts are another model's: a tokenizer with ids past the
        model's `rows` embedding rows (those texts fail inside the model, the others get wrong labels), or a
        model giving `width` scores per offer where category_model.json names another number of labels
        (every batch fails). `model` names the file in the message."""
        from category_classification.models.hf import check_vocab

        if isinstance(rows, int) and not isinstance(rows, bool):
            check_vocab(self.tokenizer, rows, self.model_dir)
        if isinstance(width, int) and width != len(self.labels):
            raise UserError(f"{self.model_dir}: {model} gives {width} scores per offer but {MODEL_INFO} names "
                            f"{len(self.labels)} labels; retrain or re-export the model")

    def _encode(self, texts):
        # An empty text still gets one position, so every row has something to pool.
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [s if len(s) else [self.pad_id] for s in ids]

    def _pad(self, seqs):
        longest = max(len(s) for s in seqs)
        ids = np.full((len(seqs), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), longest), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        return ids, mask

    def logits_for_batch(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logits(self, texts) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        seqs = self._encode(texts)
        # Longest first, so each batch pads to nearly its own length and the biggest allocation comes first.
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask = self._pad([seqs[i] for i in idx])
            out[idx] = self.logits_for_batch(ids, mask)
        return out

    def predict_proba(self, texts):
        return softmax(self.logits(texts))


class TorchPredictor(_TokenizedPredictor):
    """A torch model on `device`; subclasses say how to load their folder and call their model."""

    runtime = "torch"

    def __init__(self, model_dir, info, batch_size=64, device="cpu"):
        super().__init__(model_dir, info, batch_size)
        from category_classification.core.devices import pick_device

        self.device = pick_device(device)
        parts = self.load_parts(model_dir, info, self.device)
        self.model, self.tokenizer, self.pad_id, self.info = parts.model, parts.tokenizer, parts.pad_id, parts.info
        self.max_length = max_length_of(model_dir, self.info)
        self.check_fits(*self.model_sizes(self.model), "the model")

    @classmethod
    def from_dir(cls, model_dir, info, *, batch_size=64, device="cpu", precision=None, threads=None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        return cls(model_dir, info, batch_size, device=device)

    @classmethod
    def load_parts(cls, model_dir, info: dict, device, for_export: bool = False) -> "TorchParts":
        raise NotImplementedError

    @staticmethod
    def forward_logits(model, input_ids, attention_mask):
        raise NotImplementedError

    @staticmethod
    def model_sizes(model) -> tuple[int, int]:
        """(embedding rows, scores per offer) of a loaded model: what its tokenizer and labels must fit."""
        raise NotImplementedError

    def logits_for_batch(self, ids, mask):
        import torch

        with torch.inference_mode():
            logits = self.forward_logits(self.model, torch.from_numpy(ids).to(self.device),
                                         torch.from_numpy(mask).to(self.device))
        return logits.float().cpu().numpy()

    def describe(self):
        d = super().describe()
        d["device"] = str(self.device)
        return d


@dataclass
class TorchParts:
    """A loaded torch folder: the model in eval mode, its tokenizer, the pad id, the info the predictor keeps
    and the folder holding the weights (where an ONNX export must not be written)."""

    model: object
    tokenizer: object
    pad_id: int
    info: dict
    source: Path


class EncoderPredictor(TorchPredictor):
    """Our encoder (models/encoder.py), saved by models/encoder_io.py."""

    kind = "encoder"

    @classmethod
    def load_parts(cls, model_dir, info, device, for_export=False):
        from category_classification.models.encoder_io import load_encoder

        model, tokenizer, full = load_encoder(model_dir, device=device)
        pad = int(full.get("pad_token_id", model.config.pad_token_id) or 0)
        return TorchParts(model, tokenizer, pad, full, Path(model_dir))

    @staticmethod
    def forward_logits(model, input_ids, attention_mask):
        return model(input_ids, attention_mask)["logits"]

    @staticmethod
    def model_sizes(model):
        return model.embed.num_embeddings, model.config.num_labels


class HFPredictor(TorchPredictor):
    """A Hugging Face sequence classifier, such as the LoRA trainer's merged model (models/hf.py loads it)."""

    kind = "hf_sequence_classification"

    @classmethod
    def load_parts(cls, model_dir, info, device, for_export=False):
        from category_classification.models.hf import load_folder

        # eager attention for export: plain matmul/softmax ops trace to ONNX the same on every transformers version
        folder = load_folder(model_dir, device=device, **({"attn_implementation": "eager"} if for_export else {}))
        if for_export:
            folder.model.config.use_cache = False  # decoders (Qwen3): no key/value cache in a classification graph
        return TorchParts(folder.model, folder.tokenizer, folder.pad_id, info, folder.path)

    @staticmethod
    def forward_logits(model, input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    @staticmethod
    def model_sizes(model):
        return model.get_input_embeddings().num_embeddings, model.config.num_labels


FEEDS = ("input_ids", "attention_mask")  # what an export's graph takes (inference/onnx_export.py)
DATA_SUFFIX = ".data"  # a graph's weights when they are not inside it (over 2 GiB): model.onnx -> model.onnx.data


class OnnxPredictor(_TokenizedPredictor):
    """An export_onnx.py directory on onnxruntime: `precision` picks model.onnx (fp32) or model.int8.onnx."""

    kind = "onnx"
    runtime = "onnxruntime"

    def __init__(self, model_dir, info, batch_size=64, precision: str | None = None, threads: int | None = None):
        super().__init__(model_dir, info, batch_size)
        import onnxruntime as ort

        from category_classification.models.hf import load_tokenizer

        files = info.get("files", {})
        precision = precision or info.get("default_precision", "fp32")
        if precision not in files:
            raise UserError(f"{model_dir} has no {precision} model (has: {', '.join(files) or 'none'})")
        self.precision = precision
        self.runtime = f"onnxruntime-{precision}"
        data = f"{files[precision]}{DATA_SUFFIX}"
        written = info.get("written")
        if isinstance(written, list) and data in written and not (self.model_dir / data).is_file():
            # onnxruntime's own message is a long path cut short before the file's name
            raise UserError(f"{model_dir}: {data}, the weights of {files[precision]}, is missing; copy the whole "
                            "export folder or re-export the model")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        # Worker threads sleep between calls instead of spinning: on a small or shared CPU spinning threads
        # take the cores the other thread needs (2 threads: 11.5 -> 6.3 ms p50 at batch 1 under load).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.model_dir / files[precision]), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if not self.input_names <= set(FEEDS) or "input_ids" not in self.input_names or "logits" not in outputs:
            # another tool's graph (token_type_ids, an output named otherwise): every batch would fail
            raise UserError(f"{model_dir}: {files[precision]} takes {sorted(self.input_names)} and gives "
                            f"{sorted(outputs)}; an export of ours takes input_ids (and attention_mask) and gives "
                            "logits: re-export the model")
        self.tokenizer = load_tokenizer(self.model_dir)
        self.pad_id = int(info.get("pad_token_id", 0) or 0)
        width = (outputs["logits"] or [None])[-1]
        self.check_fits(info.get("vocab_size"), width, files[precision])

    @classmethod
    def from_dir(cls, model_dir, info, *, batch_size=64, device="cpu", precision=None, threads=None):
        return cls(model_dir, info, batch_size, precision=precision, threads=threads)

    def logits_for_batch(self, ids, mask):
        feed = dict(zip(FEEDS, (ids, mask)))
        return self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.input_names})[0]

    def describe(self):
        d = super().describe()
        d["precision"] = self.precision
        return d


def training_figures(model_dir) -> dict:
    """Headline figures from the trainer's metrics.json (validation/test macro-F1, accuracy, training time)."""
    path = Path(model_dir) / "metrics.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: the figures are for show, the model still serves
        return {}
    if not isinstance(m, dict):
        return {}
    out = {k: m[k] for k in ("model", "date") if k in m}
    for split in ("validation", "test"):
        if isinstance(m.get(split), dict):
            out[split] = {k: m[split][k] for k in ("macro_f1", "accuracy", "n") if k in m[split]}
    for key in ("train_seconds", "training_seconds", "train_time_s"):
        if key in m:
            out["train_seconds"] = m[key]
            break
    return _json_safe(out)


def _json_safe(obj):
    """Figures as strict JSON holds them: a NaN or infinite value (a damaged or hand-edited metrics.json)
    becomes null, a value that is not a plain number or string is dropped."""
    import math

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if isinstance(v, (dict, str, int, float, type(None)))}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def model_size_bytes(paths) -> int:
    """Bytes on disk of the given files and folders (recursively)."""
    total = 0
    for p in map(Path, paths):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            for root, _, files in os.walk(p):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _kept_scores(probs, y_true, chosen) -> tuple[np.ndarray, np.ndarray]:
    """(score, correct) per offer: the top probability and whether its label is right, or for `chosen`
    (predicted index, its probability per offer: a level kind's label is its path's, not always the argmax)
    those."""
    probs, y = np.asarray(probs), np.asarray(y_true)
    pred, score = (probs.argmax(axis=1), probs.max(axis=1)) if chosen is None else map(np.asarray, chosen)
    return score, pred == y


def choose_threshold(probs: np.ndarray, y_true: Sequence[int], target_precision: float | None = None,
                     target_coverage: float | None = None, chosen=None) -> dict:
    """Pick a "none of these" threshold on held-out data (use the validation split).

    With `target_precision`: the lowest threshold whose kept predictions (score >= threshold) are correct
    at least that often, which keeps the most offers. With `target_coverage`: the threshold that keeps that
    share of offers. Returns {"threshold", "coverage", "precision"}; precision = accuracy of the kept ones.
    `chosen`: (predicted index, its probability) per offer when the label is not the argmax of `probs`.
    """
    if (target_precision is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_precision or target_coverage")
    score, correct = _kept_scores(probs, y_true, chosen)
    order = np.argsort(-score, kind="stable")
    s, c = score[order], correct[order]
    kept = np.arange(1, len(s) + 1)
    precision = np.cumsum(c) / kept
    if target_coverage is not None:
        n_keep = max(1, int(round(target_coverage * len(s))))
        i = n_keep - 1
    else:
        ok = np.flatnonzero(precision >= target_precision)
        if not len(ok):
            return {"threshold": 1.0, "coverage": 0.0, "precision": float("nan")}
        i = int(ok[-1])
    # Ties: a threshold equal to s[i] keeps every offer scoring s[i], so report what it really keeps.
    t = float(s[i])
    keep = score >= t
    return {"threshold": t, "coverage": float(keep.mean()), "precision": float(correct[keep].mean())}


def threshold_table(probs: np.ndarray, y_true: Sequence[int],
                    thresholds=(0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99), chosen=None) -> list[dict]:
    """Coverage and precision of the kept predictions at a few thresholds, for the docs and evaluate.py."""
    score, correct = _kept_scores(probs, y_true, chosen)
    rows = []
    for t in thresholds:
        keep = score >= t
        rows.append({"threshold": float(t), "coverage": float(keep.mean()),
                     "precision": float(correct[keep].mean()) if keep.any() else float("nan")})
    return rows
