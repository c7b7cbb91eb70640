"""The dataset builder on small generated LSPC zips and on the bundled MWPD offers."""

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from category_classification import build_lspc_dataset, build_lspc_dataset_full
from category_classification.data.dataset_dir import level_names, load_hierarchy, other_label_of
from category_classification.data.language import detect_languages
from category_classification.data.lspc import SKIP_REASONS, load_category_map
from category_classification.data.splits import TEST, TRAIN, VALIDATION, assign_splits
from category_classification.data.synthetic_lspc import write_lspc_zip
from category_classification.data.text import group_id, normalize_title, offer_text

MWPD = Path(__file__).resolve().parents[1] / "data" / "mwpd"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lspc")
    zip_path, map_path, truth = write_lspc_zip(root, n_offers=3000, n_members=3, n_clusters=400,
                                               mapped_fraction=0.6, seed=3, with_bad_lines=True,
                                               corrupt_member=True)
    return root, zip_path, map_path, truth


def build(corpus, out, *extra):
    root, zip_path, map_path, _ = corpus
    code = build_lspc_dataset.main(["--zip", str(zip_path), "--map", str(map_path), "--out", str(root / out),
                                    "--read_workers", "2", "--quiet", *extra])
    assert code == 0
    return load_from_disk(str(root / out)), json.loads((root / out / "build_report.json").read_text())


@pytest.fixture(scope="module")
def built(corpus):
    return build(corpus, "ds", "--full", "--add_language")


def col(split, name):
    return split.data.column(name).to_pylist()


def clusters_of(split):
    return set(split.data.column("cluster").to_pylist())


def test_columns_and_label_names(built):
    dsd, _ = built
    assert set(dsd) == {"train", "validation", "test", "full"}
    assert dsd["train"].column_names == ["text", "text_title", "label", "cluster", "offer_id", "language"]
    assert dsd["train"].features["label"].names == sorted(dsd["train"].features["label"].names)
    assert dsd["train"].features["label"].names == ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
    assert all(isinstance(t, str) and t for t in col(dsd["test"], "text"))


def test_no_cluster_in_two_splits(built):
    dsd, _ = built
    train, val, test = (clusters_of(dsd[s]) for s in ("train", "validation", "test"))
    assert train and val and test
    assert not (train & val) and not (train & test) and not (val & test)


def test_full_split_holds_every_record(built):
    dsd, report = built
    n = sum(len(dsd[s]) for s in ("train", "validation", "test"))
    assert len(dsd["full"]) == n == report["records_kept"]
    parts = col(dsd["train"], "text") + col(dsd["validation"], "text") + col(dsd["test"], "text")
    assert sorted(col(dsd["full"], "text")) == sorted(parts)


def test_every_bad_input_kind_is_skipped_and_counted(built, corpus):
    _, report = built
    skipped = report["skipped_by_reason"]
    for reason in ("empty_line", "invalid_utf8", "malformed_json", "not_an_object", "missing_cluster_id",
                   "bad_cluster_id", "missing_title"):
        assert skipped.get(reason) == 1, reason
    assert set(skipped) <= set(SKIP_REASONS)
    assert skipped["corrupt_member"] == 1
    # the truncated member still gave the offers before the damage
    last = report["members"][-1]
    assert last["corrupt_member"] == 1 and last["records_kept"] > 0
    assert report["lines_read"] == report["records_kept"] + report["records_skipped"]


def test_stratified_by_label(built):
    dsd, _ = built
    full = np.bincount(col(dsd["full"], "label"), minlength=6) / len(dsd["full"])
    test = np.bincount(col(dsd["test"], "label"), minlength=6) / len(dsd["test"])
    assert np.abs(full - test).max() < 0.06
    assert 0.05 < len(dsd["test"]) / len(dsd["full"]) < 0.16


def test_deterministic_for_a_seed_and_different_for_another(corpus, built):
    dsd, _ = built
    again, _ = build(corpus, "again")
    other, _ = build(corpus, "other", "--seed", "7")
    assert col(again["test"], "text") == col(dsd["test"], "text")
    assert col(again["train"], "cluster") == col(dsd["train"], "cluster")
    assert clusters_of(other["test"]) != clusters_of(dsd["test"])


def test_full_entry_point_adds_the_full_split(corpus):
    root, zip_path, map_path, _ = corpus
    assert build_lspc_dataset_full.main(["--zip", str(zip_path), "--map", str(map_path),
                                         "--out", str(root / "viafull"), "--quiet", "--read_workers", "1"]) == 0
    assert "full" in load_from_disk(str(root / "viafull"))


def test_language_column_from_fasttext(built):
    dsd, _ = built
    langs = set(col(dsd["full"], "language"))
    assert "en" in langs and all(isinstance(x, str) and x for x in langs)
    assert detect_languages(["Chaussures de randonnée imperméables pour femme", "", "Herren Winterjacke mit Kapuze"]) \
        == ["fr", "unknown", "de"]


def test_bad_map_rows_are_counted(tmp_path, corpus):
    _, _, map_path, _ = corpus
    bad = tmp_path / "map.tsv"
    bad.write_text("cluster_id\tcategory\n" + Path(map_path).read_text() + "notanumber\tBooks\n12\t\n1\t2\t3\n")
    cmap = load_category_map(bad)
    assert cmap.report["bad_map_row"] == 3 and cmap.report["header_rows"] == 1
    assert cmap.lookup([10**15])[0] == -1


@pytest.mark.parametrize("flag", ["--zip", "--map"])
def test_missing_input_is_one_line_error_and_exit_2(corpus, tmp_path, flag, capsys):
    root, zip_path, map_path, _ = corpus
    args = {"--zip": str(zip_path), "--map": str(map_path)}
    args[flag] = str(tmp_path / "missing")
    code = build_lspc_dataset.run(build_lspc_dataset.main,
                                  ["--zip", args["--zip"], "--map", args["--map"], "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "missing" in err and "Traceback" not in err


def test_mwpd_missing_file_exit_2(tmp_path, capsys):
    code = build_lspc_dataset.run(build_lspc_dataset.main, ["--mwpd", str(tmp_path / "x.json"), "--out", str(tmp_path)])
    assert code == 2 and "MWPD file not found" in capsys.readouterr().err


def test_mwpd_with_official_test_file(tmp_path):
    """--mwpd_test: the file is the whole test split; its titles never reach train/validation."""
    out = tmp_path / "mwpd"
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "train.json.gz"), "--mwpd_test",
                                    str(MWPD / "validation.json.gz"), "--out", str(out), "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    report = json.loads((out / "build_report.json").read_text())
    assert len(dsd["test"]) == 1662  # every 6-class offer of validation.json.gz (data/mwpd/README.md)
    assert dsd["train"].features["label"].names == ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
    test_groups = clusters_of(dsd["test"])
    assert not (clusters_of(dsd["train"]) & test_groups) and not (clusters_of(dsd["validation"]) & test_groups)
    dropped = report["skipped_by_reason"].get("duplicate_of_test", 0)
    assert dropped > 0
    assert len(dsd["train"]) + len(dsd["validation"]) + dropped == 5523
    assert report["skipped_by_reason"]["outside_label_set"] == (10012 - 5523) + (3000 - 1662)


def test_mwpd_gs1_level1_and_bad_lines(tmp_path):
    lines = [json.dumps({"Name": f"Item {i} cotton shirt", "Description": "d" * 500,
                         "lvl1": ["67000000_Clothing", "77000000_Automotive", "10000000_Pet Care"][i % 3]})
             for i in range(60)]
    lines += ["{broken", json.dumps({"Name": "", "lvl1": "67000000_Clothing"}), "\xff"]
    src = tmp_path / "offers.json.gz"
    with gzip.open(src, "wb") as fh:
        fh.write("\n".join(lines).encode("utf-8", "surrogateescape"))
    out = tmp_path / "lvl1"
    assert build_lspc_dataset.main(["--mwpd", str(src), "--label_level", "lvl1", "--out", str(out), "--quiet",
                                    "--max_description_chars", "50"]) == 0
    dsd = load_from_disk(str(out))
    assert dsd["train"].features["label"].names == ["Automotive", "Clothing", "Pet Care"]
    assert max(len(t) for t in col(dsd["train"], "text")) <= len("Item 00 cotton shirt") + 1 + 50
    report = json.loads((out / "build_report.json").read_text())
    assert report["records_kept"] == 60
    assert report["skipped_by_reason"]["malformed_json"] == 2 and report["skipped_by_reason"]["missing_title"] == 1


def test_assign_splits_keeps_groups_together_and_honours_forced_test():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 500, size=5000)
    labels = groups % 4
    forced = groups < 20
    codes = assign_splits(groups, labels, 0.1, 0.0, seed=1, forced_test=forced)
    for g in np.unique(groups):
        assert len(set(codes[groups == g])) == 1
    assert (codes[forced] == TEST).all() and not (codes[~forced] == TEST).any()
    free = ~forced
    assert 0.05 < (codes[free] == VALIDATION).mean() < 0.15
    plain = assign_splits(groups, labels, 0.05, 0.1, seed=1)
    assert set(np.unique(plain)) == {TRAIN, VALIDATION, TEST}
    assert (plain == assign_splits(groups, labels, 0.05, 0.1, seed=1)).all()


def test_text_rules():
    assert offer_text("  Red   Shoe ", "x" * 400, 300) == "Red Shoe " + "x" * 300
    assert offer_text("Red Shoe", None, 300) == "Red Shoe"
    assert offer_text("Red Shoe", "long " * 200, 0).count("long") == 200
    assert normalize_title("Nike AIR-Max, 90!") == normalize_title("nike air max 90")
    assert group_id("abc") == group_id("abc") != group_id("abd")


# -- labels from the offers' own category field, the Other class, the GS1 levels -----------------------
@pytest.fixture(scope="module")
def categorised(tmp_path_factory):
    from category_classification.data.synthetic_lspc import OTHER_CATEGORIES

    root = tmp_path_factory.mktemp("categorised")
    zip_path, map_path, truth = write_lspc_zip(root, n_offers=4000, n_members=2, n_clusters=500, mapped_fraction=0.4,
                                               seed=11, other_categories=OTHER_CATEGORIES, category_field=True,
                                               map_other=True)
    return root, zip_path, map_path, truth


def build_cat(categorised, out, *extra):
    root, zip_path, _, _ = categorised
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--out", str(root / out), "--quiet",
                                    "--read_workers", "2", *extra]) == 0
    return load_from_disk(str(root / out)), json.loads((root / out / "build_report.json").read_text())


def label_counts(dsd):
    names = dsd["train"].features["label"].names
    total = {}
    for s in ("train", "validation", "test"):
        for i in col(dsd[s], "label"):
            total[names[i]] = total.get(names[i], 0) + 1
    return total


def test_labels_from_the_category_field_without_a_map(categorised):
    root, _, map_path, truth = categorised
    dsd, report = build_cat(categorised, "field")
    assert dsd["train"].features["label"].names == ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
    by_cat = truth["offers_by_category"]
    assert label_counts(dsd) == {c: by_cat[c] for c in ("Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes")}
    derived = load_category_map(root / "field" / "PDC2020_map.tsv")
    given = load_category_map(map_path)
    assert derived.names == given.names  # every cluster an offer has, with the generator's category
    assert (given.lookup(derived.clusters) == derived.labels).all() and derived.clusters.size > 0.9 * given.clusters.size
    assert report["category_field"]["clusters_with_conflict"] == 0 and report["other_label"] is None


def test_majority_per_cluster_and_conflicts_counted(tmp_path):
    offers = ([{"cluster_id": 1, "title": f"ring {i}", "category": "Jewelry"} for i in range(3)]
              + [{"cluster_id": 1, "title": "odd one", "category": "Shoes"}]
              + [{"cluster_id": 2 + i, "title": f"boot {i}", "category": "Shoes"} for i in range(30)]
              + [{"cluster_id": 40 + i, "title": f"book {i}", "category": "Books"} for i in range(30)])
    zip_path = tmp_path / "c.zip"
    import zipfile

    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a.json.gz", gzip.compress("\n".join(json.dumps(o) for o in offers).encode()))
    out = tmp_path / "ds"
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--out", str(out), "--quiet", "--categories",
                                    "Jewelry,Shoes,Books"]) == 0
    dsd = load_from_disk(str(out))
    report = json.loads((out / "build_report.json").read_text())
    assert report["category_field"] == {"clusters": 61, "clusters_with_conflict": 1,
                                        "offers_outside_cluster_majority": 1}
    rows = {t: dsd[s].features["label"].names[l] for s in dsd for t, l in zip(col(dsd[s], "text"), col(dsd[s], "label"))}
    assert rows["odd one"] == "Jewelry"  # the cluster's majority, not the offer's own field


def test_other_label_from_the_field_caps_and_counts_by_source_category(categorised):
    _, _, _, truth = categorised
    dsd, report = build_cat(categorised, "other", "--other_label", "Other", "--max_other_fraction", "0.4")
    names = dsd["train"].features["label"].names
    assert names[-1] == "Other" and names[:-1] == sorted(names[:-1])
    counts = label_counts(dsd)
    share = counts["Other"] / sum(counts.values())
    assert 0.3 < share <= 0.4
    assert report["skipped_by_reason"]["other_over_cap"] > 0
    assert sum(report["other_by_source_category"].values()) == counts["Other"]
    assert set(report["other_by_source_category"]) <= set(truth["offers_by_category"]) - set(names)
    # source_category: the offer's WDC category, for the trainer to split Other by
    other = names.index("Other")
    by_source = Counter(c for s in ("train", "validation", "test")
                        for c, y in zip(col(dsd[s], "source_category"), col(dsd[s], "label")) if y == other)
    assert dict(by_source) == report["other_by_source_category"]
    assert all(c == names[y] for s in dsd for c, y in zip(col(dsd[s], "source_category"), col(dsd[s], "label"))
               if y != other)
    # whole clusters: an Other cluster is either fully in or fully out; splits stay grouped and stratified
    split_clusters = [clusters_of(dsd[s]) for s in ("train", "validation", "test")]
    assert not (split_clusters[0] & split_clusters[1]) and not (split_clusters[0] & split_clusters[2])
    test = np.bincount(col(dsd["test"], "label"), minlength=len(names)) / len(dsd["test"])
    train = np.bincount(col(dsd["train"], "label"), minlength=len(names)) / len(dsd["train"])
    assert np.abs(test - train).max() < 0.08


def test_other_label_from_a_map_and_unmapped_only_on_request(categorised, tmp_path):
    root, zip_path, map_path, truth = categorised
    partial = tmp_path / "partial.tsv"
    rows = Path(map_path).read_text().splitlines()
    partial.write_text("\n".join(rows[: len(rows) // 2]) + "\n")  # half the clusters unmapped
    dsd, report = build_cat(categorised, "mapother", "--map", str(partial), "--other_label", "Other")
    assert "(not in map)" not in report["other_by_source_category"]
    assert report["skipped_by_reason"]["not_in_map"] > 0
    names = dsd["train"].features["label"].names
    assert {c for s in dsd for c, y in zip(col(dsd[s], "source_category"), col(dsd[s], "label"))
            if names[y] == "Other"} == set(report["other_by_source_category"])
    dsd2, report2 = build_cat(categorised, "mapunmapped", "--map", str(partial), "--other_label", "Other",
                              "--keep_unmapped")
    assert report2["other_by_source_category"]["(not in map)"] == report["skipped_by_reason"]["not_in_map"]
    assert report2["records_kept"] == truth["offers"]


def test_categories_pick_the_target_classes(categorised):
    dsd, report = build_cat(categorised, "two", "--categories", "Shoes,Books")
    assert dsd["train"].features["label"].names == ["Books", "Shoes"]
    assert report["categories"] == ["Books", "Shoes"]
    dsd, _ = build_cat(categorised, "all", "--categories", "all")
    assert "Office_Products" in dsd["train"].features["label"].names


def test_mwpd_other_label_keeps_offers_outside_the_six(tmp_path):
    out = tmp_path / "mwpd7"
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "validation.json.gz"), "--other_label", "Other",
                                    "--out", str(out), "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    report = json.loads((out / "build_report.json").read_text())
    assert dsd["train"].features["label"].names[-1] == "Other" == other_label_of(out) and not level_names(dsd)
    assert report["records_kept"] == 3000 and "outside_label_set" not in report["skipped_by_reason"]
    assert label_counts(dsd)["Other"] == 3000 - 1662 == sum(report["other_by_source_category"].values())
    assert "Food/Beverage/Tobacco" in report["other_by_source_category"]
    assert dsd["train"].column_names == ["text", "text_bare", "text_title", "label", "cluster", "source_category",
                                         "fine_category", "offer_id"]
    sources = Counter(c for s in dsd for c, y in zip(col(dsd[s], "source_category"), col(dsd[s], "label")) if y == 6)
    assert dict(sources) == report["other_by_source_category"]  # the GS1 level-1 class
    # fine_category: each offer's GS1 level-3 class, read back against the file itself
    raw = [json.loads(line) for line in gzip.decompress((MWPD / "validation.json.gz").read_bytes()).splitlines()]
    lvl3_of = {}
    for offer in raw:
        lvl3_of.setdefault(offer["Name"].strip(), set()).add(offer["lvl3"].partition("_")[2])
    fine = Counter(f for s in dsd for f in col(dsd[s], "fine_category"))
    assert fine["Jewellery"] > 0 and fine["Books"] > 0 and len(fine) > 100 and "" not in fine
    names = dsd["train"].features["label"].names
    jewelry = [f for s in dsd for f, y in zip(col(dsd[s], "fine_category"), col(dsd[s], "label")) if names[y] == "Jewelry"]
    assert set(jewelry) == {"Jewellery", "Watches"}


def test_mwpd_six_classes_carry_level_3_but_gs1_levels_do_not(tmp_path):
    """A 6-class MWPD dataset without Other also gets fine_category (the trainer's level-3 sub-classes);
    a GS1-level dataset does not (its classes are the levels themselves)."""
    six, lvl1 = tmp_path / "six", tmp_path / "lvl1"
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "validation.json.gz"), "--out", str(six), "--quiet"]) == 0
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "validation.json.gz"), "--label_level", "lvl1",
                                    "--out", str(lvl1), "--quiet"]) == 0
    dsd = load_from_disk(str(six))
    assert dsd["train"].column_names == ["text", "text_bare", "text_title", "label", "cluster", "fine_category",
                                         "offer_id"]
    names = dsd["train"].features["label"].names
    pairs = {(names[y], f) for s in dsd for f, y in zip(col(dsd[s], "fine_category"), col(dsd[s], "label"))}
    assert {f for n, f in pairs if n == "Jewelry"} == {"Jewellery", "Watches"}
    assert {f for n, f in pairs if n == "Books"} == {"Books"} and "" not in {f for _, f in pairs}
    assert "fine_category" not in load_from_disk(str(lvl1))["train"].column_names


def test_mwpd_all_levels_layout_and_hierarchy(tmp_path):
    out = tmp_path / "gs1"
    test_file = tmp_path / "test.json"  # validation plus an lvl3 class no training offer has
    unseen = {"Name": "brand new gadget", "lvl1": "77000000_Automotive", "lvl2": "77010000_Automotive",
              "lvl3": "77019999_Unseen class"}
    test_file.write_bytes(gzip.decompress((MWPD / "validation.json.gz").read_bytes()).rstrip(b"\n") + b"\n"
                          + json.dumps(unseen).encode() + b"\n")
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "train.json.gz"), "--mwpd_test",
                                    str(test_file), "--label_level", "all",
                                    "--out", str(out), "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    train = dsd["train"]
    assert train.column_names == ["text", "text_bare", "text_title", "label", "lvl1", "lvl2", "lvl3", "cluster",
                                  "offer_id"]
    assert train.features["label"].names == train.features["lvl1"].names
    assert col(train, "label") == col(train, "lvl1")
    hierarchy = load_hierarchy(out)
    assert hierarchy["levels"] == ["lvl1", "lvl2", "lvl3"] and level_names(dsd)["lvl3"] == train.features["lvl3"].names
    assert other_label_of(out) is None and load_hierarchy(tmp_path) is None
    l2, l3 = train.features["lvl2"].names, train.features["lvl3"].names
    assert set(hierarchy["parents"]["lvl3"]) == set(l3) and set(hierarchy["parents"]["lvl2"]) == set(l2)
    row = train[0]
    assert hierarchy["parents"]["lvl3"][l3[row["lvl3"]]] == l2[row["lvl2"]]
    assert hierarchy["parents"]["lvl2"][l2[row["lvl2"]]] == train.features["lvl1"].names[row["lvl1"]]
    # classes that occur only in the official test file are kept as classes, not an error
    in_train = set(col(train, "lvl3")) | set(col(dsd["validation"], "lvl3"))
    assert {l3[i] for i in set(col(dsd["test"], "lvl3")) - in_train} == {"Unseen class"}
    assert len(dsd["test"]) == 3001
