"""What every predictor shares: the `Predictor` interface (scores, formatted predictions, a description), the
scores of kinds that predict several label levels, and the softmax. models/registry.py maps kinds to subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from category_classification.core.artifacts import text_settings
from category_classification.data.text import model_text, text_problem


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _prob(x) -> float:
    """A reported probability: summed sub-class or path probabilities can round to 1 + 1e-9; shown in [0, 1]
    (a NaN stays NaN: clipping must not make a broken score look like a real one)."""
    x = float(x)
    return 1.0 if x > 1.0 else 0.0 if x < 0.0 else x


@dataclass
class LevelScores:
    """The scores of a kind that predicts several label levels (GS1 lvl1 > lvl2 > lvl3): the first level's
    probabilities (for `label`, `score` and top-k) and, per level, the chosen label and its probability.
    Rows slice like an array, so serve.py's micro-batcher can hand each request its share of one batch."""

    probs: np.ndarray  # (n, num labels of the first level)
    levels: dict  # level -> (chosen label name per row (list of n), its probability (n,))

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, rows: slice) -> "LevelScores":
        return LevelScores(self.probs[rows], {lv: (names[rows], p[rows]) for lv, (names, p) in self.levels.items()})


class Predictor:
    """Base class: subclasses implement `predict_proba(texts) -> (n, num_labels)` probabilities, `scores` when
    they predict label levels, and `from_dir` when they take more than the batch size."""

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

    def scores(self, texts: Sequence[str]) -> np.ndarray | LevelScores:
        """What `format` turns into predictions: the probabilities, or `LevelScores` for level kinds. The one
        model call behind predict, predict.py, evaluate.py and serve.py (which slices it per request)."""
        return self.predict_proba(texts)

    def predict(self, texts: Sequence[str], top_k: int = 1, threshold: float | None = None) -> list[dict]:
        """Per text: {"label", "score", "top_k": [{"label", "prob"}, ...], ["levels"]}; label None when
        score < threshold. The text rule of predict.py and serve.py applies here too: a text that is not a
        string or is blank gets {"error": reason, "label": None} in its place, the others are cleaned
        (data/text.model_text), so one bad text never fails the call."""
        texts = list(texts)
        problems = [text_problem(t) for t in texts]
        good = [model_text(t) for t, bad in zip(texts, problems) if not bad]
        rows = iter(self.format(self.scores(good), top_k=top_k, threshold=threshold) if good else [])
        return [{"error": bad, "label": None} if bad else next(rows) for bad in problems]

    def format(self, scores: np.ndarray | LevelScores, top_k: int = 1, threshold: float | None = None) -> list[dict]:
        levels = scores.levels if isinstance(scores, LevelScores) else None
        probs = scores.probs if levels is not None else scores
        k = max(1, min(int(top_k), len(self.labels)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        out = []
        for i, (row, idx) in enumerate(zip(probs, order)):
            best, score = self.labels[idx[0]], _prob(row[idx[0]])
            if levels is not None:  # the first level's chosen label, so label and levels always agree; path
                # decoding may choose another than its most probable label, so the score (and the threshold)
                # is the chosen label's own probability, never that of the top-k's first
                names, p = next(iter(levels.values()))
                best, score = names[i], _prob(p[i])
            r = {"label": best if threshold is None or score >= threshold else None, "score": score,
                 "top_k": [{"label": self.labels[j], "prob": _prob(row[j])} for j in idx]}
            if levels is not None:
                r["levels"] = {lv: {"label": names[i], "score": _prob(p[i])} for lv, (names, p) in levels.items()}
            out.append(r)
        return out

    def describe(self) -> dict:
        """What serve.py's GET /model and the benchmarks show about the model."""
        return {"kind": self.kind, "runtime": self.runtime, "labels": self.labels,
                "model_dir": str(self.model_dir), "max_length": self.info.get("max_length"),
                "source_kind": self.info.get("source_kind"),
                # a level model answers every level: its clients need every level's labels, not level 1's alone
                **({"level_labels": self.info["level_labels"]} if isinstance(self.info.get("level_labels"), dict) else {}),
                **text_settings(self.info)}
