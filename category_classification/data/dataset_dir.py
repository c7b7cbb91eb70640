"""Loading the DatasetDict that build_lspc_dataset.py writes, for every trainer and evaluator.

Columns: `text` (str), `label` (ClassLabel), `cluster` (int), optional `language` (str).
"""

from __future__ import annotations

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
