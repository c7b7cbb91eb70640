"""Hand-made DatasetDicts, as users save their own catalogs (datasets + save_to_disk) instead of running the
builder, given to the trainers and tools: each test holds the exact input that broke them."""

import json
import random

import pytest

from category_classification import build_ensemble, evaluate, train_linear_baseline
from category_classification.core.cli import run

LABELS = ["Books", "Clothing", "Shoes"]
WORDS = {0: ["novel", "paperback", "author", "edition"], 1: ["shirt", "cotton", "dress", "jacket"],
         2: ["sneaker", "boot", "sandal", "heel"], 3: ["stroller", "diaper", "bib", "pacifier"]}
FAST = ["--other_bias", "auto", "--no_lang_metrics"]


def offers(n, offset, classes=(0, 1, 2), seed=0):
    rng = random.Random(seed + offset)
    return [{"text": " ".join(rng.sample(WORDS[classes[i % len(classes)]], 2)) + f" {rng.randint(1, 99)}",
             "label": classes[i % len(classes)], "cluster": offset + i} for i in range(n)]


def save(path, splits: dict, features=None, names=LABELS, extra=None):
    """`splits`: name -> rows; `features`: one Features for all splits, or name -> Features."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    default = Features({"text": Value("string"), "label": ClassLabel(names=names), "cluster": Value("int64"),
                        **(extra or {})})
    per_split = isinstance(features, dict) and not isinstance(features, Features)
    pick = features if per_split else {k: features or default for k in splits}
    DatasetDict({k: Dataset.from_list(v, features=pick.get(k, default)) for k, v in splits.items()}).save_to_disk(
        str(path))
    return path


def three(classes=(0, 1, 2)):
    return {"train": offers(60, 0, classes), "validation": offers(21, 1000, classes), "test": offers(21, 2000, classes)}


def _one_error_line(err: str, words: str = ""):
    lines = [x for x in err.strip().splitlines() if x and not x.startswith(("WARNING", "Saving the dataset"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


def _linear(data, out, *extra):
    return run(train_linear_baseline.main, ["--data", str(data), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_datasets")
    data = save(root / "clean", three())
    assert _linear(data, root / "linear") == 0
    assert _linear(data, root / "linear2", "--C", "1") == 0  # a second ensemble member
    return root / "linear"


def test_unlabelled_evaluation_offers_are_skipped_not_scored_as_the_last_class(tmp_path, capsys):
    """Before: a label of -1 (datasets' "no label") in validation/test was scored as Shoes (numpy's index -1):
    n=21 and Shoes support 8, with exit 0."""
    splits = three()
    splits["validation"][0]["label"] = -1
    splits["test"][1]["label"] = -1
    data = save(tmp_path / "d", splits)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert _linear(data, tmp_path / "m") == 0
    printed = capsys.readouterr().out
    assert "skipped 0 validation offers without a text and 1 without a label" in printed
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    for split in ("validation", "test"):
        m = metrics["splits"][split] if "splits" in metrics else metrics[split]
        assert m["n"] == 20
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # no cache file left in the dataset


def test_unlabelled_training_offers_are_refused_in_one_line(tmp_path, capsys):
    """Before: the linear trainer fitted a class "-1" whose weights went into the last label's column (exit 0)."""
    splits = three()
    splits["train"][0]["label"] = -1
    data = save(tmp_path / "d", splits)
    assert _linear(data, tmp_path / "m") == 2
    _one_error_line(capsys.readouterr().err, "label outside the 3 classes")
    assert not (tmp_path / "m").exists()


def test_offers_without_a_text_are_skipped_and_reported(tmp_path, capsys):
    """Before: an AttributeError traceback from scikit-learn ('NoneType' object has no attribute 'lower')."""
    splits = three()
    for name in ("train", "validation", "test"):
        splits[name][0]["text"] = None
    splits["train"][1]["text"] = ""
    data = save(tmp_path / "d", splits)
    assert _linear(data, tmp_path / "m", "--refit") == 0
    printed = capsys.readouterr().out
    assert "skipped 1 train offers without a text" in printed and "skipped 1 test offers without a text" in printed
    assert (tmp_path / "m" / "category_model.json").is_file()


def test_evaluate_and_ensemble_skip_offers_without_a_text_or_a_label(model, tmp_path, capsys):
    """Before: evaluate.py scored the -1 offer as Shoes and stopped on the None text with a traceback."""
    splits = three()
    splits["test"][0]["label"] = -1
    splits["test"][1]["text"] = None
    data = save(tmp_path / "d", splits)
    preds = tmp_path / "p.jsonl"
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--split", "test",
                               "--save_preds", str(preds), "--no_lang_metrics"]) == 0
    assert "rows 0, 1" in capsys.readouterr().out
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 19 and [r["row"] for r in lines] == list(range(2, 21))  # each names its dataset row
    assert all(r["label"] == splits["test"][r["row"]]["label"] for r in lines)
    assert run(build_ensemble.main, ["--models", str(model), str(model.parent / "linear2"), "--data", str(data),
                                     "--out", str(tmp_path / "ens"), "--no_lang_metrics"]) == 0
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    m = metrics["splits"]["test"] if "splits" in metrics else metrics["test"]
    assert m["n"] == 19


def test_splits_naming_their_classes_in_another_order_are_refused(model, tmp_path, capsys):
    """Before: validation's ids were read by train's names: macro-F1 0 on a perfect model, exit 0 (and --refit
    trained on the mixed ids)."""
    from datasets import ClassLabel, Features, Value

    order = ["Shoes", "Books", "Clothing"]
    splits = three()
    for name in ("validation", "test"):
        for r in splits[name]:
            r["label"] = order.index(LABELS[r["label"]])
    other = Features({"text": Value("string"), "label": ClassLabel(names=order), "cluster": Value("int64")})
    data = save(tmp_path / "d", splits, features={"validation": other, "test": other})
    assert _linear(data, tmp_path / "m", "--refit") == 2
    _one_error_line(capsys.readouterr().err, "names its classes differently")
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--split", "test"]) == 2
    _one_error_line(capsys.readouterr().err, "names its classes differently")


def test_a_text_column_under_another_name_or_a_label_without_class_names_is_one_line(tmp_path, capsys):
    """Before: `title` instead of `text` stopped the trainer with a ValueError traceback."""
    from datasets import ClassLabel, Features, Value

    splits = three()
    titled = {k: [{"title" if c == "text" else c: v for c, v in r.items()} for r in rows]
              for k, rows in splits.items()}
    data = save(tmp_path / "title", titled, Features({"title": Value("string"), "label": ClassLabel(names=LABELS),
                                                      "cluster": Value("int64")}))
    assert _linear(data, tmp_path / "m1") == 2
    _one_error_line(capsys.readouterr().err, "no `text` column")
    data = save(tmp_path / "ints", splits, Features({"text": Value("string"), "label": Value("int64"),
                                                     "cluster": Value("int64")}))
    assert _linear(data, tmp_path / "m2") == 2
    _one_error_line(capsys.readouterr().err, "not a ClassLabel")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_a_blank_class_name_is_refused(tmp_path, capsys):
    """Before: a class named "" was trained and predicted (exit 0): predictions labelled with an empty name."""
    data = save(tmp_path / "d", three(), names=["Books", "", "Shoes"])
    assert _linear(data, tmp_path / "m") == 2
    _one_error_line(capsys.readouterr().err, "blank class name")


def test_junk_text_bare_and_source_category_columns(tmp_path, capsys):
    """Before: a None text_bare was added as a bare copy (an AttributeError traceback), and a None
    source_category became an Other sub-class named "None"."""
    from datasets import Value

    names = LABELS + ["Other"]
    splits = {k: offers(n, off, (0, 1, 2, 3)) for k, n, off in (("train", 80, 0), ("validation", 21, 1000),
                                                                 ("test", 21, 2000))}
    for rows in splits.values():
        for i, r in enumerate(rows):
            r["text_bare"] = None if i % 2 else r["text"].split()[0]
            r["source_category"] = None
            r["fine_category"] = None if i % 2 else "f"
    data = save(tmp_path / "d", splits, names=names,
                extra={"text_bare": Value("string"), "source_category": Value("string"),
                       "fine_category": Value("string")})
    (data / "build_report.json").write_text(json.dumps({"other_label": "Other"}))
    assert _linear(data, tmp_path / "m", "--other_min_size", "2", "--refit") == 0
    info = json.loads((tmp_path / "m" / "category_model.json").read_text())
    assert info["other_subclasses"] == [] and info["breadcrumb_copies"] > 0


def test_a_validation_split_under_another_name_gets_a_note(tmp_path, capsys):
    """Before: a split named `valid` was ignored without a word (no calibration, no validation figures)."""
    splits = three()
    splits["valid"] = splits.pop("validation")
    data = save(tmp_path / "d", splits)
    assert _linear(data, tmp_path / "m") == 0
    assert "has no `validation` split (has: train, test, valid)" in capsys.readouterr().out
