"""The file that makes a trained model directory self-describing: `category_model.json`.

Every trainer writes it; predict.py reads it to pick the right loader, so any output directory
can be used for prediction, evaluation and serving without flags saying what it holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

MODEL_INFO = "category_model.json"
KINDS = ("linear", "encoder", "hf_sequence_classification", "onnx", "ensemble")


def write_model_info(model_dir, kind: str, labels, **extra) -> Path:
    """Write `category_model.json`: kind, labels and whatever the loader of that kind needs."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    path = Path(model_dir) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"kind": kind, "labels": list(labels),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_model_info(model_dir) -> dict:
    from category_classification.core.cli import UserError

    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():
        raise UserError(f"{model_dir} is not a trained model directory (no {MODEL_INFO})")
    return json.loads(path.read_text(encoding="utf-8"))
