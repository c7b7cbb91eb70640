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
    if p.exists() and not p.is_dir():  # an offers file: "not found" sends the user looking for a path that is there
        raise UserError(f"{p} is a file, not a dataset directory: build one from it with build_lspc_dataset.py "
                        "(--mwpd for MWPD offers files)")
    if not p.is_dir():
        raise UserError(f"dataset directory not found: {p} (build one with build_lspc_dataset.py)")
    try:
        ds = load_from_disk(str(p))
    except Exception as exc:  # datasets raises several types for a folder that is not a dataset
        raise UserError(f"not a saved dataset: {p} ({exc})") from None
    if not isinstance(ds, DatasetDict):
        raise UserError(f"expected a DatasetDict with train/validation/test splits in {p}")
    check_columns(ds, p)
    return ds


def check_columns(dsd, path) -> None:
    """Refuse, in one line, a hand-made dataset whose columns no reader can use: every split needs a string
    `text` and a ClassLabel `label`, and a ClassLabel column must name the same classes in every split (ids
    are read by the first split's names: another order would score, or train, every offer as another class)."""
    from datasets import ClassLabel, Value

    if not dsd:
        raise UserError(f"{path} holds no splits")
    first, first_features = next(iter(dsd.items()))[0], next(iter(dsd.values())).features
    for name, split in dsd.items():
        features = split.features
        text = features.get("text")
        if text is None:
            raise UserError(f"split {name!r} of {path} has no `text` column (has: {', '.join(features)}); name the "
                            "offer text column `text` (Dataset.rename_column)")
        if not (isinstance(text, Value) and text.dtype in ("string", "large_string")):
            raise UserError(f"the `text` column of split {name!r} in {path} holds {text}, not strings")
        if not isinstance(features.get("label"), ClassLabel):
            raise UserError(f"the `label` column of split {name!r} in {path} is not a ClassLabel (it is "
                            f"{features.get('label')}): make it one with Dataset.class_encode_column('label') or "
                            "cast_column('label', ClassLabel(names=[...]))")
        for column, feature in features.items():
            if not isinstance(feature, ClassLabel):
                continue
            if any(not n.strip() for n in feature.names):  # a class that predictions and metrics cannot name
                raise UserError(f"the `{column}` column of {path} has a blank class name: {feature.names}")
            other = first_features.get(column)
            if isinstance(other, ClassLabel) and other.names != feature.names:
                raise UserError(f"the `{column}` column names its classes differently in split {name!r} "
                                f"({feature.names}) and split {first!r} ({other.names}): its ids would be read as "
                                "other classes; cast every split to one ClassLabel (align_labels_with_mapping)")
    if "validation" not in dsd and set(dsd) - {"train", "test"}:
        print(f"note: {path} has no `validation` split (has: {', '.join(dsd)}); trainers and tools read train, "
              "validation and test by name: rename yours to validation if it is one")


def label_names(dsd) -> list[str]:
    """ClassLabel names of the `label` column (the same in every split)."""
    split = next(iter(dsd.values()))
    feature = split.features["label"]
    names = getattr(feature, "names", None)
    if not names:
        raise UserError("the dataset's `label` column is not a ClassLabel")
    return list(names)


def get_split(dsd, name: str, train: bool = False):
    """Split `name` without the offers no model can use (usable_split)."""
    return usable_split(dsd, name, train)[0]


def usable_split(dsd, name: str, train: bool = False):
    """(split `name` without the offers no model can use, the row numbers it keeps), the skips counted in a
    note: a missing text (in a split to score, also a blank one: predict.py gives such an offer no label), or
    a missing label (-1 is datasets' "no label", or an id past the class names, in `label` or a GS1 level
    column). A training split with unlabelled offers is refused instead (its labels are in doubt), as is one
    left empty. evaluate.py names its per-offer lines by the kept rows."""
    import numpy as np

    if name not in dsd:
        raise UserError(f"split {name!r} not in dataset (has: {', '.join(dsd.keys())})")
    split = dsd[name]
    no_text, no_label = _unusable(split, blank=not train)
    n_labels = split.features["label"].num_classes
    if train and no_label.any():
        raise UserError(f"{int(no_label.sum())} {name} offers have a label outside the {n_labels} classes "
                        f"(e.g. row {int(np.flatnonzero(no_label)[0])}); label or drop them")
    bad = no_text | no_label
    kept = np.flatnonzero(~bad)
    if bad.any():
        rows = np.flatnonzero(bad)
        print(f"note: skipped {int(no_text.sum())} {name} offers without a text and {int(no_label.sum())} without "
              f"a label (-1 or past the {n_labels} classes): rows {', '.join(map(str, rows[:5]))}"
              + (" ..." if len(rows) > 5 else ""))
        split = split.select(kept, keep_in_memory=True)  # nothing written into the dataset folder
    if train and not len(split):
        raise UserError(f"the {name} split holds no offers to train on")
    return split, kept


def _unusable(split, blank: bool = False):
    """(no text, no label) masks of a split: a null text, with `blank` also one no model is given (blank or
    invisible: `text.text_problem`, the rule of predict.py and serve.py); a label id of -1 (datasets' "no
    label") or past the names, in `label` or any other ClassLabel column (the GS1 levels)."""
    import numpy as np
    import pyarrow.compute as pc
    from datasets import ClassLabel

    table = split.with_format("arrow")
    no_text = table["text"].is_null().to_numpy(zero_copy_only=False)
    if blank:
        from category_classification.data.text import text_problem

        no_text |= np.array([t is not None and text_problem(t) is not None for t in table["text"].to_pylist()],
                            dtype=bool)
    no_label = np.zeros(len(split), dtype=bool)
    for column, feature in split.features.items():
        if isinstance(feature, ClassLabel):
            ids = pc.fill_null(table[column], -1).to_numpy()
            no_label |= (ids < 0) | (ids >= feature.num_classes)
    return no_text, no_label


def sources_of(split):
    """The `source_category` column as a list (each offer's category before labelling: the kinds of product
    an Other class holds), or None when the dataset has none."""
    from category_classification.data.builder import SOURCE_COLUMN

    return list(split[SOURCE_COLUMN]) if SOURCE_COLUMN in split.column_names else None


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
