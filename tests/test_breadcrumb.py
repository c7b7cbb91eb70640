"""The shop's breadcrumb (MWPD `CategoryText`) in the model text: the builder's --breadcrumb, the one text rule
(text.offer_text), the setting recorded in the dataset and the model, and predict.py building the same text."""

import gzip
import json
import random

import pytest
from datasets import load_from_disk

from category_classification import build_lspc_dataset, predict, train_linear_baseline
from category_classification.core.artifacts import text_settings
from category_classification.core.cli import run
from category_classification.data.text import MAX_BREADCRUMB_CHARS, MAX_TEXT_CHARS, offer_text
from tests.test_mwpd_benchmark import PATHS



def write_offers(path, n_per_path, seed, crumbless_every=5):
    """MWPD-format offers; every `crumbless_every`-th has no CategoryText (or a blank one)."""
    rnd = random.Random(seed)
    rows = []
    for l1, l2, l3, words in PATHS:
        for i in range(n_per_path):
            row = {"ID": f"{seed}-{l3}-{i}", "Name": f"{rnd.choice(words)} {rnd.choice(words)} item {seed}{i}",
                   "Description": f"nice {words[1]}", "CategoryText": f"Home > {words[0].title()}s > Sale",
                   "lvl1": l1, "lvl2": l2, "lvl3": l3}
            if i % crumbless_every == 0:
                row.pop("CategoryText") if i % 2 else row.update(CategoryText="  \t ")
            rows.append(row)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def build_offer_datasets(root, n_train: int, n_test: int, builds: dict) -> tuple[list, list]:
    """MWPD-format train (seed 0) and test (seed 1) files in `root` (write_offers, n per GS1 path) and one
    dataset per `builds` entry (name -> extra builder flags) in root/name; (train rows, test rows)."""
    train, test = write_offers(root / "train.json.gz", n_train, 0), write_offers(root / "test.json.gz", n_test, 1)
    common = ["--mwpd", str(root / "train.json.gz"), "--mwpd_test", str(root / "test.json.gz"), "--val_size", "0.2",
              "--quiet"]
    for name, flags in builds.items():
        assert build_lspc_dataset.main(common + [*flags, "--out", str(root / name)]) == 0
    return train, test


def rows_of(preds):
    return [(r["text"], r["label"]) for r in map(json.loads, preds.read_text().splitlines())]


def dataset_texts(data):
    dsd = load_from_disk(str(data))
    return [t for s in ("train", "validation", "test") for t in dsd[s]["text"]]


@pytest.fixture(scope="module")
def mwpd(tmp_path_factory):
    """Tiny MWPD train/test files, datasets built with the breadcrumb on (the default) and off, and the fast
    default trained on the first."""
    root = tmp_path_factory.mktemp("crumb")
    rows, test_rows = build_offer_datasets(root, 20, 5, {"on": [], "off": ["--breadcrumb", "off"]})
    assert train_linear_baseline.main(["--data", str(root / "on"), "--out", str(root / "model")]) == 0
    return {"root": root, "rows": rows + test_rows}


def test_the_builder_puts_the_breadcrumb_into_the_text_by_default_for_mwpd(mwpd):
    rows = mwpd["rows"]  # every path of PATHS is one of the six classes
    want_on = sorted(f"{r['Name']} {r['Description']}" + (f" | {r['CategoryText']}" if r.get("CategoryText", "").strip()
                                                          else "") for r in rows)
    assert sorted(dataset_texts(mwpd["root"] / "on")) == want_on
    assert sorted(dataset_texts(mwpd["root"] / "off")) == sorted(f"{r['Name']} {r['Description']}" for r in rows)
    # an offer without a breadcrumb (missing or blank) gets plain title + description, no dangling separator
    assert not any(t.rstrip().endswith("|") for t in dataset_texts(mwpd["root"] / "on"))
    for name, value in (("on", True), ("off", False)):
        assert json.loads((mwpd["root"] / name / "build_report.json").read_text())["config"]["breadcrumb"] is value


def test_the_model_records_the_setting_and_predict_builds_the_training_text(mwpd, tmp_path):
    model = mwpd["root"] / "model"
    info = json.loads((model / "category_model.json").read_text())
    assert info["breadcrumb"] is True and info["max_description_chars"] == 300
    assert text_settings(model) == {"breadcrumb": True, "max_description_chars": 300, "fielded": False}
    built = set(dataset_texts(mwpd["root"] / "on"))
    mwpd_like = tmp_path / "mwpd.jsonl"  # the MWPD files' own lines, field names and all
    mwpd_like.write_text("".join(json.dumps(r) + "\n" for r in mwpd["rows"]))
    out = tmp_path / "mwpd_preds.jsonl"
    assert predict.main(["--model", str(model), "--input", str(mwpd_like), "--out", str(out), "--keep_text",
                         "--no_progress"]) == 0
    texts = {json.loads(x)["text"] for x in out.read_text().splitlines()}
    assert built == texts and len(built) == len(mwpd["rows"])  # every training text, byte for byte
    assert any(" | " not in t for t in built) and any(" | Home > " in t for t in built)
    # the other spelling (title / description / breadcrumb) and a CSV give the same texts
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"title": r["Name"], "description": r["Description"],
                                         "breadcrumb": r.get("CategoryText")}) + "\n" for r in mwpd["rows"]))
    csv = tmp_path / "offers.csv"
    csv.write_text("title,description,breadcrumb\n" + "".join(
        f"{r['Name']},{r['Description']},{r.get('CategoryText', '')}\n" for r in mwpd["rows"]))
    for src in (plain, csv):
        got = tmp_path / f"{src.stem}_preds.jsonl"
        assert predict.main(["--model", str(model), "--input", str(src), "--out", str(got), "--keep_text",
                             "--no_progress"]) == 0
        assert rows_of(got) == rows_of(out)


def test_an_ensemble_and_the_service_report_the_members_setting(mwpd, tmp_path):
    import shutil

    from category_classification.inference.ensemble import write_ensemble
    from category_classification.models.registry import load_predictor

    model = mwpd["root"] / "model"
    shutil.copytree(model, tmp_path / "twin")
    write_ensemble(tmp_path / "ens", [model, tmp_path / "twin"])
    assert text_settings(tmp_path / "ens") == {"breadcrumb": True, "max_description_chars": 300, "fielded": False}
    assert load_predictor(model).describe()["breadcrumb"] is True  # serve.py's GET /model shows it


def test_a_model_trained_without_the_breadcrumb_ignores_the_field(mwpd, tmp_path):
    model = tmp_path / "model_off"
    assert train_linear_baseline.main(["--data", str(mwpd["root"] / "off"), "--out", str(model)]) == 0
    assert json.loads((model / "category_model.json").read_text())["breadcrumb"] is False
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"Name": "brake pads", "Description": "front", "CategoryText": "Car > Brakes"}) + "\n")
    out = tmp_path / "one_preds.jsonl"
    assert predict.main(["--model", str(model), "--input", str(src), "--out", str(out), "--keep_text",
                         "--no_progress"]) == 0
    assert json.loads(out.read_text())["text"] == "brake pads front"
    # and a model folder from before the setting was recorded reads as "off"
    assert text_settings({"kind": "linear", "labels": ["a"]})["breadcrumb"] is False


def test_the_breadcrumb_follows_the_text_rule():
    assert offer_text("Red  Shoe", "soft", 300, "Home >\x00 Shoes\n") == "Red Shoe soft | Home > Shoes"
    assert offer_text("Red Shoe", "", 300, "Shoes") == "Red Shoe | Shoes"
    for empty in (None, "", "  \t", ["a list"], {"a": 1}):
        assert offer_text("Red Shoe", "soft", 300, empty) == "Red Shoe soft"
    long = offer_text("Red Shoe", "soft", 300, "x" * 10_000_000 + "\ud800")  # megabytes, a lone surrogate
    assert long == "Red Shoe soft | " + "x" * MAX_BREADCRUMB_CHARS
    # a text already at the cap gets no separator; the whole text never passes MAX_TEXT_CHARS
    assert offer_text("t" * 3000, "", 0, "Shoes") == "t" * MAX_TEXT_CHARS
    near = offer_text("t" * (MAX_TEXT_CHARS - 5), "", 0, "Shoes")
    assert len(near) == MAX_TEXT_CHARS and near.endswith(" | Sh")
    assert offer_text("t" * (MAX_TEXT_CHARS - 3), "", 0, "Shoes") == "t" * (MAX_TEXT_CHARS - 3)


def test_breadcrumb_on_for_lspc_is_a_one_line_error(tmp_path, capsys):
    from category_classification.data.synthetic_lspc import write_lspc_zip

    zip_path, map_path, _ = write_lspc_zip(tmp_path / "lspc", n_offers=200, n_members=1, n_clusters=40, seed=1)
    code = run(build_lspc_dataset.main, ["--zip", str(zip_path), "--map", str(map_path), "--breadcrumb", "on",
                                         "--out", str(tmp_path / "d"), "--quiet"])
    assert code == 2 and "LSPC offers carry no breadcrumb" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    # auto (the default) builds LSPC without the breadcrumb, so without the bare-text column
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--map", str(map_path), "--val_size", "0.2",
                                    "--test_size", "0.2", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert all("text_bare" not in s.column_names for s in load_from_disk(str(tmp_path / "d")).values())


def test_the_dataset_holds_each_text_without_its_breadcrumb(mwpd):
    from category_classification.data.builder import TEXT_BARE_COLUMN

    bare_of = {offer_text(r["Name"], r["Description"], 300, r.get("CategoryText")):
               offer_text(r["Name"], r["Description"]) for r in mwpd["rows"]}
    on, off = load_from_disk(str(mwpd["root"] / "on")), load_from_disk(str(mwpd["root"] / "off"))
    pairs = [(t, b) for s in on.values() for t, b in zip(s["text"], s[TEXT_BARE_COLUMN])]
    assert len(pairs) == len(mwpd["rows"]) and all(bare_of[t] == b for t, b in pairs)
    assert any(t == b for t, b in pairs) and any(t.startswith(b + " | ") for t, b in pairs)  # crumbless: equal
    assert all(TEXT_BARE_COLUMN not in s.column_names for s in off.values())  # no breadcrumb, no column


def _train(data, out, *flags):
    assert train_linear_baseline.main(["--data", str(data), "--out", str(out), *flags]) == 0
    info = json.loads((out / "category_model.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["breadcrumb_copies"] == info["breadcrumb_copies"]
    import numpy as np

    with np.load(out / "linear_weights.npz") as w:
        return info["breadcrumb_copies"], w["weights"].copy()


def test_the_linear_model_also_fits_the_bare_copies_and_a_dataset_without_them_trains_as_before(mwpd, tmp_path):
    import numpy as np

    train = load_from_disk(str(mwpd["root"] / "on"))["train"]
    differ = sum(t != b for t, b in zip(train["text"], train["text_bare"]))
    assert 0 < differ < len(train)
    info = json.loads((mwpd["root"] / "model" / "category_model.json").read_text())
    assert info["breadcrumb_copies"] == differ  # the default: train + one bare copy per offer with a breadcrumb
    # one column per class: the copies also lift more level-3 kinds over the sub-class minimum, which would
    # change the shape, not only the weights
    # (the title copies are held apart: tests/test_title_copies.py)
    one = ("--class_split", "none", "--no_title_copies")
    copies, without = _train(mwpd["root"] / "on", tmp_path / "no_copies", "--no_breadcrumb_copies", *one)
    assert copies == 0
    _, with_copies = _train(mwpd["root"] / "on", tmp_path / "copies", *one)
    assert with_copies.shape == without.shape and not np.allclose(with_copies, without)
    # a dataset without the column (built before it existed) trains exactly as with --no_breadcrumb_copies
    old = tmp_path / "old_data"
    load_from_disk(str(mwpd["root"] / "on")).remove_columns(["text_bare", "text_title"]).save_to_disk(str(old))
    (old / "build_report.json").write_text((mwpd["root"] / "on" / "build_report.json").read_text())
    copies, old_weights = _train(old, tmp_path / "old_model", *one)
    assert copies == 0 and np.array_equal(old_weights, without)


def test_fit_rows_copies_labels_sources_and_levels_of_every_split():
    from datasets import Dataset

    from category_classification.models.linear import LinearConfig
    from category_classification.train_linear_baseline import fit_rows

    a = Dataset.from_dict({"text": ["red tee | Tops", "blue jeans"], "text_bare": ["red tee", "blue jeans"],
                           "label": [0, 1], "lvl3": [5, 6], "source_category": ["Clothing", "Food"]})
    b = Dataset.from_dict({"text": ["boots | Shoes"], "text_bare": ["boots"], "label": [2], "lvl3": [7],
                           "source_category": ["Footwear"]})
    cfg = LinearConfig(other_label="Other")  # Other split by source: the source column is copied too
    texts, cols, copies = fit_rows([a, b], cfg, ("label", "lvl3"))
    assert copies == {"breadcrumb": 2, "title": 0} and texts == ["red tee | Tops", "blue jeans", "boots | Shoes",
                                                                   "red tee", "boots"]
    assert cols == {"label": [0, 1, 2, 0, 2], "lvl3": [5, 6, 7, 5, 7],
                    "sources": ["Clothing", "Food", "Footwear", "Clothing", "Footwear"]}
    off = LinearConfig(breadcrumb_copies=False)
    assert fit_rows([a, b], off) == (["red tee | Tops", "blue jeans", "boots | Shoes"], {"label": [0, 1, 2]},
                                     {"breadcrumb": 0, "title": 0})


def test_the_hierarchy_and_the_refit_fit_the_copies_too(mwpd, tmp_path):
    root = mwpd["root"]
    data = tmp_path / "gs1"
    assert build_lspc_dataset.main(["--mwpd", str(root / "train.json.gz"), "--mwpd_test", str(root / "test.json.gz"),
                                    "--label_level", "all", "--val_size", "0.2", "--quiet", "--out", str(data)]) == 0
    dsd = load_from_disk(str(data))
    differ = {s: sum(t != b for t, b in zip(dsd[s]["text"], dsd[s]["text_bare"])) for s in ("train", "validation")}
    for flags, want in (([], differ["train"]), (["--refit"], differ["train"] + differ["validation"])):
        out = tmp_path / f"hier{len(flags)}"
        assert train_linear_baseline.main(["--data", str(data), "--out", str(out), "--hierarchy", *flags]) == 0
        assert json.loads((out / "category_model.json").read_text())["breadcrumb_copies"] == want > 0
        assert json.loads((out / "metrics.json").read_text())["breadcrumb_copies"] == want
    out = tmp_path / "flat_refit"
    assert train_linear_baseline.main(["--data", str(root / "on"), "--out", str(out), "--refit"]) == 0
    on = load_from_disk(str(root / "on"))
    want = sum(t != b for s in ("train", "validation") for t, b in zip(on[s]["text"], on[s]["text_bare"]))
    assert json.loads((out / "category_model.json").read_text())["breadcrumb_copies"] == want
