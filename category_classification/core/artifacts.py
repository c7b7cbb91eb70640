"""The file that makes a trained model directory self-describing: `category_model.json`.

Every trainer writes it; models/registry.py reads it to pick the right loader (the kinds are listed there),
so any output directory can be used for prediction, evaluation and serving without flags saying what it holds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from category_classification.core.cli import UserError

MODEL_INFO = "category_model.json"


def write_model_info(model_dir, kind: str, labels, **extra) -> Path:
    """Write `category_model.json`: kind, labels and whatever the loader of that kind needs."""
    if not isinstance(kind, str) or not kind.isidentifier():  # the registry checks it is known, on load
        raise ValueError(f"a model kind is a name, not {kind!r}")
    path = Path(model_dir) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"kind": kind, "labels": list(labels),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_model_info(model_dir) -> dict:
    """category_model.json of `model_dir`; missing, damaged or without kind and labels: a UserError."""
    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():
        raise UserError(f"{model_dir} is not a trained model directory (no {MODEL_INFO})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{model_dir}: {MODEL_INFO} is damaged (not JSON: {exc}); retrain or re-export "
                        "the model") from None
    labels = info.get("labels") if isinstance(info, dict) else None
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
            and isinstance(info.get("kind"), str)):
        raise UserError(f"{model_dir}: {MODEL_INFO} is damaged (it needs a kind and a list of labels)")
    return info
