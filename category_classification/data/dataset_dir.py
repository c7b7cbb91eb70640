"""Loading the DatasetDict that build_lspc_dataset.py writes, for every trainer and evaluator.

Columns: `text`, `label` (ClassLabel), [`lvl1`, `lvl2`, `lvl3` (ClassLabel)], `cluster`, [`language`].
"""

from __future__ import annotations

import json
from pathlib import Path

from category_classification.core.cli import UserError


def load_dataset_dir(path):
    """load_from_disk with a clear error when `path` is not a saved DatasetDict."""
    from datasets import DatasetDict, load_from_disk

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"dataset directory not found: {p} (build one with build_lspc_dataset.py)")
    try:
        ds = load_from_disk(str(p))
    except Exception as exc:  # datasets raises several types for a folder that is not a dataset
        raise UserError(f"not a saved dataset: {p} ({exc})") from None
    if not isinstance(ds, DatasetDict):
        raise UserError(f"expected a DatasetDict with train/validation/test splits in {p}")
    return ds


def label_names(dsd) -> list[str]:
    """ClassLabel names of the `label` column (the same in every split)."""
    split = next(iter(dsd.values()))
    feature = split.features["label"]
    names = getattr(feature, "names", None)
    if not names:
        raise UserError("the dataset's `label` column is not a ClassLabel")
    return list(names)


def get_split(dsd, name: str):
    if name not in dsd:
        raise UserError(f"split {name!r} not in dataset (has: {', '.join(dsd.keys())})")
    return dsd[name]


def languages_of(split):
    """The `language` column as a list, or None when the dataset was built without it."""
    return list(split["language"]) if "language" in split.column_names else None


def build_report(path) -> dict:
    """The folder's build_report.json ({} when the dataset was made another way or the file is damaged)."""
    try:
        report = json.loads((Path(path) / "build_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def other_label_of(path) -> str | None:
    """The class that holds out-of-scope offers (`--other_label`), or None."""
    value = build_report(path).get("other_label")
    return value if isinstance(value, str) and value else None


def level_names(dsd) -> dict:
    """{"lvl1": names, "lvl2": .., "lvl3": ..} for a dataset built with --label_level all, else {}."""
    split = next(iter(dsd.values()))
    return {lv: list(split.features[lv].names) for lv in ("lvl1", "lvl2", "lvl3") if lv in split.features}


def load_hierarchy(path) -> dict | None:
    """hierarchy.json ({"levels": [..], "parents": {"lvl3": {child: parent}, "lvl2": {..}}}), or None."""
    p = Path(path) / "hierarchy.json"
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"damaged hierarchy file {p}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("parents"), dict):
        raise UserError(f"damaged hierarchy file {p}: no `parents` mapping")
    return data
