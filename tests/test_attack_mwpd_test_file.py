"""bench/mwpd_benchmark.py --test FILE on test files that differ from the bundled ones in realistic ways: a JSON
array, labels spelled otherwise (GS1 codes alone, other case or spacing, JSON numbers), offers missing a level
or with a numeric Name (fielded_linear read them by another rule and its predictions no longer lined up),
no offer of the 6 classes, skipped offers reported."""

import gzip
import json
import random

from bench import mwpd_benchmark
from category_classification.core.cli import run

PATHS = [  # (lvl1, lvl2, lvl3, words)
    ("67000000_Clothing", "67010000_Clothing", "67010800_Upper Body Wear/Tops", ["shirt", "blouse", "tee"]),
    ("63000000_Footwear", "63010000_Footwear", "63010100_Footwear", ["sneakers", "boots", "sandals"]),
    ("77000000_Automotive", "77010000_Parts", "77010100_Brakes", ["brake", "pads", "rotor"]),
    ("10000000_Pet Care/Food", "10100000_Pet Care", "10101500_Pet Food", ["kibble", "catfood", "treats"]),
]


def offers(n_per_path, seed, paths=PATHS):
    rnd = random.Random(seed)
    return [{"ID": str(i), "Name": f"{rnd.choice(w)} {rnd.choice(w)} item {rnd.randint(1, 999)}", "Description": "nice",
             "CategoryText": w[0], "URL": f"http://shop.example/{w[0]}/{i}", "lvl1": a, "lvl2": b, "lvl3": c}
            for a, b, c, w in paths for i in range(n_per_path)]


def write_lines(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(o) + "\n" for o in rows)
    return path


def bench(tmp_path, test_rows, name, models="reference", raw=None):
    d = tmp_path / "mwpd"
    if not d.exists():
        d.mkdir()
        write_lines(d / "train.json.gz", offers(12, 0))
        write_lines(d / "validation.json.gz", offers(4, 1))
    test = tmp_path / name
    if raw is not None:
        test.write_text(raw, encoding="utf-8")
    else:
        write_lines(test, test_rows)
    out = tmp_path / f"out-{name}"
    rc = run(mwpd_benchmark.main, ["--out", str(out), "--mwpd_dir", str(d), "--models", models, "--test", str(test)])
    return rc, (json.loads((out / "benchmark.json").read_text()) if rc == 0 else None)


def figures(result, model="reference"):
    r = result["models"][model]
    return [r["gs1"][lv]["weighted_f1"] for lv in ("lvl1", "lvl2", "lvl3")] + [r["six_class"]["macro_f1"]]


def test_a_json_array_test_file_is_scored_as_its_json_lines_are(tmp_path):
    """Was: "holds no MWPD offer" (the benchmark read line by line, while the builder reads arrays)."""
    rows = offers(4, 2)
    rc, lines = bench(tmp_path, rows, "test.jsonl")
    assert rc == 0
    for name, raw in (("one_line.json", json.dumps(rows)), ("pretty.json", json.dumps(rows, indent=2)),
                      ("bom_crlf.json", "\ufeff" + "\r\n\r\n".join(json.dumps(o) for o in rows) + "\r\n")):
        rc, result = bench(tmp_path, None, name, raw=raw)
        assert rc == 0, name
        assert figures(result) == figures(lines) and result["scored_file"]["offers"] == len(rows), name


def test_labels_spelled_otherwise_are_the_training_files_classes(tmp_path):
    """Was: every offer a miss (avg weighted F1 0.0, exit 0) for a file writing "67000000" or "67000000_clothing"
    for the training files' "67000000_Clothing"."""
    rows = offers(4, 2)
    rc, plain = bench(tmp_path, rows, "test.jsonl")
    assert rc == 0 and plain["models"]["reference"]["gs1"]["avg_weighted_f1"] > 0.9
    spellings = {"codes": lambda v: v.split("_")[0], "numbers": lambda v: int(v.split("_")[0]),
                 "lower": str.lower, "spaces": lambda v: " " + v.replace("_", " _  ").upper() + " ",
                 "names": lambda v: v.split("_", 1)[1].lower()}
    for name, spell in spellings.items():
        rc, result = bench(tmp_path, [o | {lv: spell(o[lv]) for lv in ("lvl1", "lvl2", "lvl3")} for o in rows],
                           f"{name}.jsonl")
        assert rc == 0 and figures(result) == figures(plain), name


def test_fielded_linear_scores_the_offers_every_kind_scores(tmp_path, capsys):
    """Was: `ValueError: 8 labels but 12 predictions` (exit 1): fielded_linear read the test file itself and kept
    six-class offers without a level-3 label, and dropped offers whose Name is a number, which the benchmark
    scored; now every kind reads the one file of the offers scored, and the skipped ones are reported."""
    rows = offers(4, 2)
    for o in rows[::4]:
        o.pop("lvl3")
    rows[1]["Name"] = 12345
    rows[2]["Name"] = None
    rc, result = bench(tmp_path, rows, "test.jsonl", models="reference,fielded_linear")
    assert rc == 0
    assert result["scored_file"] == {"offers": 11, "not_scored": {"skipped_no_title_or_label": 5}}
    assert "5 entries" in capsys.readouterr().err
    assert result["models"]["fielded_linear"]["gs1"]["avg_weighted_f1"] > 0.8


def test_a_test_file_without_offers_of_the_six_classes(tmp_path):
    """Was: a scikit-learn traceback (an empty 6-class input), exit 1; fielded_linear refused the file."""
    rows = offers(6, 2, [PATHS[3]])
    rc, result = bench(tmp_path, rows, "test.jsonl", models="reference,linear,hier_linear,fielded_linear")
    assert rc == 0
    for r in result["models"].values():
        assert r["six_class"] == {"macro_f1": None, "accuracy": None}
        assert r["gs1"]["avg_weighted_f1"] > 0.9


def test_six_classes_read_off_codes_with_spaces_or_numbers():
    """The builder's 6-class labels (data/mwpd.gs1_label) lost offers whose codes had spaces or were numbers."""
    from category_classification.data.mwpd import gs1_label

    assert gs1_label({"lvl1": " 67000000_Clothing "}, "six") == "Clothing"
    assert gs1_label({"lvl1": 67000000}, "six") == "Clothing"
    assert gs1_label({"lvl1": "10000000", "lvl3": " 60010200 "}, "six") == "Books"
    assert gs1_label({"lvl1": True}, "six") is None and gs1_label({"lvl1": "670000001"}, "six") is None


def test_scores_match_scikit_learn_and_a_cut_gzip_is_an_error(tmp_path):
    from sklearn.metrics import f1_score

    from category_classification.core.cli import UserError

    test = [{"lvl1": a, "lvl2": b, "lvl3": c, "six": s} for a, b, c, s in
            [("A", "B", "C", "Clothing"), ("A", "B", "D", None), ("E", "F", "G", "Shoes"), ("E", "F", "H", "Shoes")]]
    pred = {"lvl1": ["A", "E", "E", "E"], "lvl2": ["B", "B", "F", "X"], "lvl3": ["C", "D", "G", "G"],
            "six": ["Clothing", "Clothing", "Shoes"]}
    got = mwpd_benchmark.score(pred, test)
    for lv in ("lvl1", "lvl2", "lvl3"):
        gold = [o[lv] for o in test]
        assert abs(got["gs1"][lv]["weighted_f1"] - f1_score(gold, pred[lv], average="weighted", zero_division=0)) < 1e-12
        assert abs(got["gs1"][lv]["macro_f1"] - f1_score(gold, pred[lv], average="macro", zero_division=0)) < 1e-12
    assert abs(got["six_class"]["macro_f1"] - f1_score(["Clothing", "Shoes", "Shoes"], pred["six"], average="macro")) < 1e-12

    data = gzip.compress("".join(json.dumps(o) + "\n" for o in offers(40, 3)).encode())
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    try:
        mwpd_benchmark.read_offers(cut)
        raise AssertionError("a cut file was read")
    except UserError as exc:
        assert str(cut) in str(exc)
