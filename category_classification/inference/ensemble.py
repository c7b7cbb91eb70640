"""A weighted average of the class probabilities of several trained model directories.

A fine-tuned transformer and the character n-gram linear model make different mistakes (on the bundled
data MiniLM calls a French watch title Automotive, the linear model calls a "Scuff Slipper" Clothing), so
averaging their probabilities beats both. An ensemble directory holds only `category_model.json` (kind
"ensemble") naming its members and their weights; `load_predictor` opens it like any other model, so
predict.py, evaluate.py and serve.py take it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from category_classification.core.artifacts import read_model_info, text_settings, write_model_info
from category_classification.core.cli import UserError
from category_classification.inference.base import Predictor
from category_classification.models.registry import load_predictor

KIND = "ensemble"


def normalize_weights(n_models: int, weights: Sequence[float] | None) -> list[float]:
    """Equal weights by default; given weights must be one per model, non-negative, not all zero."""
    if n_models < 2:
        raise UserError("an ensemble needs at least two model directories")
    if weights is None:
        return [1.0 / n_models] * n_models
    if len(weights) != n_models:
        raise UserError(f"{len(weights)} weights for {n_models} models: give one weight per model")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"weights must be non-negative numbers, not all zero: {list(weights)}")
    return (w / w.sum()).tolist()


def check_labels(members: Sequence[tuple[str, list[str]]]) -> list[str]:
    """Every member must predict the same labels in the same order (their probability columns are added)."""
    (first_dir, labels), *rest = members
    for d, other in rest:
        if other != labels:
            raise UserError(f"{d} predicts {other}, {first_dir} predicts {labels}: an ensemble needs the same "
                            "labels in the same order")
    return labels


def write_ensemble(out_dir, model_dirs: Sequence, weights: Sequence[float] | None = None, **extra) -> Path:
    """Write an ensemble directory over `model_dirs`; member paths are stored relative to it when possible,
    so the ensemble and its members can move together."""
    out = Path(out_dir)
    resolved = [Path(d).resolve() for d in model_dirs]
    twice = next((str(d) for d, r in zip(model_dirs, resolved) if resolved.count(r) > 1), None)
    if twice:  # the same model twice is a weight, not a second opinion: say so instead of averaging it
        raise UserError(f"{twice} is listed twice; give each member once (--weights sets how much each counts)")
    out.mkdir(parents=True, exist_ok=True)
    w = normalize_weights(len(model_dirs), weights)
    members, found, settings = [], [], set()
    for d, wi in zip(model_dirs, w):
        d = Path(d)
        info = read_model_info(d)  # a clear error for a folder that is not a trained model
        if info.get("kind") == KIND:
            raise UserError(f"{d} is itself an ensemble: list its members instead")
        found.append((str(d), list(info["labels"])))
        settings.add(tuple(sorted(text_settings(info).items())))
        try:
            rel = os.path.relpath(d.resolve(), out.resolve())
        except ValueError:  # another drive on Windows
            rel = str(d.resolve())
        members.append({"path": rel, "weight": wi, "kind": info.get("kind")})
    labels = check_labels(found)
    if len(settings) == 1:  # members trained on texts built alike: predict.py builds its texts the same way
        extra = {**dict(settings.pop()), **extra}
    return write_model_info(out, KIND, labels, members=members, **extra)


def member_dirs(model_dir, info: dict) -> list[Path]:
    """The members' directories; relative paths are relative to the ensemble directory."""
    paths = (Path(m["path"]) for m in info.get("members") or [])
    return [p if p.is_absolute() else Path(model_dir) / p for p in paths]


class EnsemblePredictor(Predictor):
    kind = KIND

    def __init__(self, model_dir, info, batch_size=64, device="cpu", precision=None, threads=None):
        super().__init__(model_dir, info, batch_size)
        self.members: list[Predictor] = []
        entries = info.get("members") or []
        self.weights = normalize_weights(len(entries), [m["weight"] for m in entries])
        for path in member_dirs(model_dir, info):
            if not path.is_dir():
                raise UserError(f"{model_dir}: member model directory not found: {path}")
            # precision applies to ONNX members only; load_predictor ignores it for the other kinds
            self.members.append(load_predictor(path, device=device, batch_size=batch_size, precision=precision,
                                               threads=threads))
        self.runtime = "+".join(p.runtime for p in self.members)  # e.g. onnxruntime-int8+numpy
        check_labels([(str(p.model_dir), p.labels) for p in self.members])
        if self.members[0].labels != self.labels:
            raise UserError(f"{model_dir}: its labels {self.labels} differ from its members' "
                            f"{self.members[0].labels}")

    @classmethod
    def from_dir(cls, model_dir, info, *, batch_size=64, device="cpu", precision=None, threads=None):
        return cls(model_dir, info, batch_size, device=device, precision=precision, threads=threads)

    def member_probas(self, texts) -> list[np.ndarray]:
        texts = list(texts)
        return [p.predict_proba(texts) for p in self.members]

    def member_scores(self, texts) -> list:
        """Each member's `scores` (for a level kind LevelScores: its label is its path's first level, not always
        its most probable one), for figures of the members as they predict alone; `.probs` is what combines."""
        texts = list(texts)
        return [p.scores(texts) for p in self.members]

    def combine(self, probas: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros_like(np.asarray(probas[0], dtype=np.float64))
        for w, p in zip(self.weights, probas):
            out += w * np.asarray(p, dtype=np.float64)
        return out.astype(np.float32)

    def predict_proba(self, texts):
        return self.combine(self.member_probas(texts))

    def describe(self):
        d = super().describe()
        d["members"] = [{"weight": w, **p.describe()} for w, p in zip(self.weights, self.members)]
        return d
