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
# The builder's settings that shape a model's input text (build_report.json "config"): prediction paths that
# build text from title + description fields must use the trained values (description_chars below).
TEXT_SETTINGS = ("max_description_chars",)


def dataset_text_settings(data_dir) -> dict:
    """TEXT_SETTINGS as the dataset at `data_dir` was built with them ({} when it has no build report)."""
    from category_classification.data.dataset_dir import build_report

    config = build_report(data_dir).get("config")
    return {k: config[k] for k in TEXT_SETTINGS if isinstance(config, dict) and k in config}


def write_model_info(model_dir, kind: str, labels, data=None, **extra) -> Path:
    """Write `category_model.json`: kind, labels and whatever the loader of that kind needs. `data`, the
    training dataset's folder, is recorded with the text settings it was built with."""
    if not isinstance(kind, str) or not kind.isidentifier():  # the registry checks it is known, on load
        raise ValueError(f"a model kind is a name, not {kind!r}")
    path = Path(model_dir) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    from_data = {"data": str(data), **dataset_text_settings(data)} if data is not None else {}
    info = {"kind": kind, "labels": list(labels),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **from_data, **extra}
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


def description_chars(info_or_dir) -> int:
    """The description length (characters) a model's texts were built with: category_model.json
    "max_description_chars" (of a model folder, or of its info already read), else the builder's default
    (models trained before it was recorded; a folder that is not a model is reported by its loader)."""
    from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS

    info = info_or_dir
    if not isinstance(info, dict):
        try:
            info = read_model_info(info_or_dir)
        except UserError:
            info = {}
    value = info.get("max_description_chars")
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else DEFAULT_MAX_DESCRIPTION_CHARS
