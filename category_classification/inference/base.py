"""What every predictor shares: the `Predictor` interface (probabilities, formatted predictions, a description)
and the softmax. Each model kind's predictor subclasses it; models/registry.py maps kinds to those classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class Predictor:
    """Base class: subclasses implement `predict_proba(texts) -> (n, num_labels)` probabilities, and
    `from_dir` when they take more than the batch size."""

    kind = "base"
    runtime = "python"

    def __init__(self, model_dir, info: dict, batch_size: int = 64):
        self.model_dir = Path(model_dir)
        self.info = info
        self.labels: list[str] = list(info["labels"])
        self.batch_size = batch_size

    @classmethod
    def from_dir(cls, model_dir, info: dict, *, batch_size: int = 64, device: str = "cpu",
                 precision: str | None = None, threads: int | None = None) -> "Predictor":
        """The predictor of a checked model folder; every kind takes every option and ignores those it has
        no use for (a linear model has no device), so an ensemble passes them on to any member."""
        return cls(model_dir, info, batch_size)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: Sequence[str], top_k: int = 1, threshold: float | None = None) -> list[dict]:
        """Per text: {"label", "score", "top_k": [{"label", "prob"}, ...]}; label None when score < threshold."""
        return self.format(self.predict_proba(list(texts)), top_k=top_k, threshold=threshold)

    def format(self, probs: np.ndarray, top_k: int = 1, threshold: float | None = None) -> list[dict]:
        k = max(1, min(int(top_k), len(self.labels)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        out = []
        for row, idx in zip(probs, order):
            best = float(row[idx[0]])
            label = self.labels[idx[0]] if threshold is None or best >= threshold else None
            out.append({"label": label, "score": best,
                        "top_k": [{"label": self.labels[j], "prob": float(row[j])} for j in idx]})
        return out

    def describe(self) -> dict:
        """What serve.py's GET /model and the benchmarks show about the model."""
        return {"kind": self.kind, "runtime": self.runtime, "labels": self.labels,
                "model_dir": str(self.model_dir), "max_length": self.info.get("max_length"),
                "source_kind": self.info.get("source_kind")}
