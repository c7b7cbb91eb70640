"""The bench scripts: the cross-validation fold data (leak-free, covering every offer), resuming, open-set CV
sub-classes, and the WDC-category agreement count."""

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_fold_data_is_grouped_and_covers_every_offer(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.lora_cv import grouped_folds, write_fold_data
    from category_classification.data.dataset_dir import load_dataset_dir

    rng = np.random.default_rng(0)
    n = 600
    names = ["A", "B", "C"]
    y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    groups = rng.integers(0, 200, size=n) * 10 + y  # a group never spans two labels, as with title groups
    texts = [f"offer {i} group {g}" for i, g in enumerate(groups)]
    folds = grouped_folds(y, groups, 5)
    tested = np.zeros(n, dtype=int)
    for k, (train_idx, test_idx) in enumerate(folds):
        tested[test_idx] += 1
        write_fold_data(tmp_path / f"fold{k}", texts, names, y, groups, train_idx, test_idx, seed=k)
        dsd = load_dataset_dir(tmp_path / f"fold{k}")
        split_groups = {s: set(dsd[s]["cluster"]) for s in ("train", "validation", "test")}
        assert not split_groups["train"] & split_groups["validation"]
        assert not split_groups["train"] & split_groups["test"]
        assert not split_groups["validation"] & split_groups["test"]
        assert sorted(dsd["test"]["text"]) == sorted(texts[i] for i in test_idx)
        assert len(dsd["train"]) + len(dsd["validation"]) == len(train_idx)
        assert 0.05 * len(train_idx) < len(dsd["validation"]) < 0.2 * len(train_idx)
        assert set(dsd["validation"]["label"]) == {0, 1, 2}  # stratified: the rare class is there too
        assert dsd["train"].features["label"].names == names
    assert (tested == 1).all()  # every offer is tested exactly once over the folds


def test_a_finished_fold_is_reused_only_with_the_same_flags(tmp_path, monkeypatch):
    import json

    import pytest

    monkeypatch.syspath_prepend(str(REPO))
    from bench.lora_cv import finished_fold
    from category_classification.core.cli import UserError

    done = tmp_path / "fold.json"
    done.write_text(json.dumps({"lora_args": ["--epochs", "1"], "lora_train_seconds": 1.0}))
    assert finished_fold(done, ["--epochs", "1"])["lora_train_seconds"] == 1.0
    with pytest.raises(UserError, match="--epochs"):
        finished_fold(done, ["--epochs", "2"])
    # a fold made on breadcrumb texts is not reused for a run on bare texts, nor the other way round
    with pytest.raises(UserError, match="without --breadcrumb"):
        finished_fold(done, ["--epochs", "1"], breadcrumb=True)
    done.write_text(json.dumps({"lora_args": [], "breadcrumb": True, "lora_train_seconds": 2.0}))
    assert finished_fold(done, [], breadcrumb=True)["lora_train_seconds"] == 2.0
    with pytest.raises(UserError, match="with --breadcrumb"):
        finished_fold(done, [])


def test_an_interrupted_fold_resumes_only_on_data_of_the_same_text(tmp_path, monkeypatch):
    import pytest

    monkeypatch.syspath_prepend(str(REPO))
    from bench.lora_cv import check_fold_text
    from category_classification.core.cli import UserError

    fold = tmp_path / "fold0"
    check_fold_text(fold, breadcrumb=True)  # a new fold: records its text
    (fold / "data").mkdir()
    check_fold_text(fold, breadcrumb=True)  # resumed with the same text
    with pytest.raises(UserError, match="with --breadcrumb"):
        check_fold_text(fold, breadcrumb=False)
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)  # written before the marker existed: bare text
    with pytest.raises(UserError, match="without --breadcrumb"):
        check_fold_text(old, breadcrumb=True)
    check_fold_text(old, breadcrumb=False)
    with pytest.raises(UserError, match="without --breadcrumb"):  # now by its marker
        check_fold_text(old, breadcrumb=True)


def test_open_set_cv_trains_fine_sub_classes_and_decides_by_summed_labels(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.open_set_cv import CONFIGS
    from category_classification.models.linear import OTHER_BIAS_GRID, LinearConfig, choose_bias, decide
    from category_classification.training.open_set import grouped_folds, out_of_fold
    from tests.test_linear_model import SPLIT_LABELS, split_offers

    texts, labels, sources = split_offers(30)
    fine = [t.split()[0] if y == 0 else "books" for t, y in zip(texts, labels)]
    y = np.asarray(labels)
    folds = grouped_folds(y, np.arange(len(y)), 3)
    default = CONFIGS["split by source, classes by fine category, title copies (the default)"]
    cfg = LinearConfig(other_label="Other", other_min_size=5, **default)
    parts = out_of_fold(texts, y, folds, SPLIT_LABELS, cfg, sources, fine)
    for _, scores, _, columns in parts:
        assert scores.shape[1] == len(columns) > 5 and (columns == 0).sum() >= 2  # Automotive split by kind
    pred = decide(parts, len(y), len(SPLIT_LABELS), 2, 0.0)
    assert set(pred.tolist()) <= {0, 1, 2} and (pred == y).mean() > 0.9
    bias, m = choose_bias(parts, y, SPLIT_LABELS, 2)
    assert bias in OTHER_BIAS_GRID and min(m["accepted_precision"], m["in_scope_recall"]) > 0.9
    # an easy toy: many offsets tie at the best value, and the tie goes to the one nearest 0
    assert abs(bias) <= 0.05
    plain_cfg = LinearConfig(other_label="Other", **{**CONFIGS["split by source, min 20"], "other_min_size": 5})
    plain = out_of_fold(texts, y, folds, SPLIT_LABELS, plain_cfg, sources, fine)
    assert all((columns == 0).sum() == 1 for _, _, _, columns in plain)  # class_split none: one column


def test_out_of_fold_views_score_other_texts_with_the_same_models_and_fit_the_copies_asked_for():
    from category_classification.models.linear import LinearConfig
    from category_classification.training.open_set import grouped_folds, out_of_fold, out_of_fold_views
    from tests.test_linear_model import SPLIT_LABELS, split_offers

    texts, labels, sources = split_offers(30)
    titles = [" ".join(t.split()[:2]) for t in texts]
    y = np.asarray(labels)
    folds = grouped_folds(y, np.arange(len(y)), 3)
    cfg = LinearConfig(other_label="Other", other_min_size=5)
    got = out_of_fold_views(texts, y, folds, SPLIT_LABELS, cfg, sources, views={"same": texts, "titles": titles})
    for (i, a, ta, _), (j, b, tb, _) in zip(got["text"], got["same"]):
        assert (i == j).all() and np.array_equal(a, b) and ta == tb  # one model per fold, both views
    assert any(not np.allclose(a[1], b[1]) for a, b in zip(got["text"], got["titles"]))
    # the title copies are fitted only where the config asks for them
    plain = out_of_fold(texts, y, folds, SPLIT_LABELS, LinearConfig(other_label="Other", other_min_size=5,
                                                                    title_copies=False), sources,
                        variants={"title": titles})
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, got["text"]))
    copied = out_of_fold(texts, y, folds, SPLIT_LABELS, cfg, sources, variants={"title": titles})
    assert any(not np.allclose(a[1], b[1]) for a, b in zip(copied, got["text"]))


def test_wdc_agreement_counts_against_the_category_field_and_survives_bad_lines(tmp_path, monkeypatch, capsys):
    import gzip
    import json
    import zipfile

    monkeypatch.syspath_prepend(str(REPO))
    from bench.wdc_agreement import main

    offers = [{"title": "boots", "category": "Shoes"}, {"title": "tyre", "category": "Automotive"},
              {"title": "phone", "category": "Cell_Phones_and_Accessories"}, {"title": "sofa", "category": "Home"},
              {"title": "mystery"}]
    member = gzip.compress(b"\n".join(json.dumps(o).encode() for o in offers) + b"\nnot json\n")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.writestr("offers_1.json.gz", member)
    preds = [("offers_1.json.gz", 1, "Shoes"), ("offers_1.json.gz", 2, "Other"), ("offers_1.json.gz", 3, "Books"),
             ("offers_1.json.gz", 4, "Other"), ("offers_1.json.gz", 5, "Shoes"), ("elsewhere.json.gz", 1, "Shoes"),
             ("offers_1.json.gz", 6, None)]
    lines = [json.dumps({"member": m, "line": n, "label": lab}) for m, n, lab in preds] + ["{broken", '{"line": 1}']
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["--zip", str(tmp_path / "c.zip"), "--predictions", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out
    # 4 offers with a category: boots right, tyre missed, phone wrongly accepted, sofa rightly Other
    assert "accepted precision 0.5000 (1/2)" in out and "in-scope recall 0.5000 (1/2)" in out
    assert "outside offers given a target label 1/2" in out and "'bad_prediction_lines': 2" in out
    assert "Automotive -> Other: 1" in out and "'skipped_records': 1" in out
    (tmp_path / "none.jsonl").write_text("{broken\n")
    from category_classification.core.cli import UserError
    with pytest.raises(UserError):
        main(["--zip", str(tmp_path / "c.zip"), "--predictions", str(tmp_path / "none.jsonl")])


def test_linear_cv_fine_reads_level_3_and_calibrates_on_a_held_out_part(monkeypatch):
    """--fine: the bundled six-class offers come with their GS1 level-3 class (same order as the labels), and
    each fold fits sub-classes on 90% of its training part, calibrates on the rest and scores the test fold."""
    monkeypatch.syspath_prepend(str(REPO))
    from bench.linear_cv import bundled_offers, cv_config, grouped_folds
    from category_classification.models import linear

    texts, names, y, groups, fine = bundled_offers("six", breadcrumb=False)
    assert len(texts) == len(fine) == 7185 and names[2] == "Books"
    assert {f for f, label in zip(fine, y) if names[label] == "Books"} == {"Books"}
    assert len({f for f, label in zip(fine, y) if names[label] == "Clothing"}) >= 9
    pick = np.flatnonzero(np.isin(y, [0, 2]))[:400]  # Automotive and Books: a small, quick subset
    sub = ([texts[i] for i in pick], y[pick], groups[pick], [fine[i] for i in pick])
    calibrated, fitted = [], []
    monkeypatch.setattr(linear.LinearTextClassifier, "calibrate",
                        lambda self, t, yy: calibrated.append(len(t)) or setattr(self, "temperature", 0.2))
    real_fit = linear.LinearTextClassifier.fit
    monkeypatch.setattr(linear.LinearTextClassifier, "fit",
                        lambda self, t, yy, sources=None, fine=None: fitted.append(fine is not None)
                        or real_fit(self, t, yy, sources, fine))
    folds = grouped_folds(sub[1], sub[2], 3)
    r = cv_config({"other_min_size": 5}, sub[0], None, names, sub[1], folds, fine=sub[3], groups=sub[2])
    assert len(r["macro_f1"]) == 3 and min(r["accuracy"]) > 0.8
    assert fitted == [True] * 3 and len(calibrated) == 3
    assert all(0.05 * (len(tr)) < c < 0.2 * len(tr) for c, (tr, _) in zip(calibrated, folds))
    # without --fine: the whole training part is fitted, no calibration
    calibrated.clear()
    cv_config({}, sub[0], None, names, sub[1], folds)
    assert calibrated == []


def test_linear_cv_url_words_end_each_text_with_its_own_offers_url(monkeypatch):
    """--url_words: every text is the same offer's text + " | " + its URL's words (the offers kept in order)."""
    import gzip
    import json

    monkeypatch.syspath_prepend(str(REPO))
    from bench.linear_cv import bundled_offers
    from category_classification.models.fielded import url_words

    plain, names, y, groups, _ = bundled_offers("six", breadcrumb=True)
    texts, names2, y2, groups2, _ = bundled_offers("six", breadcrumb=True, url_words=True)
    assert names2 == names and (y2 == y).all() and (groups2 == groups).all() and len(texts) == 7185
    urls = {}
    for f in ("train.json.gz", "validation.json.gz"):
        for line in gzip.open(REPO / "data" / "mwpd" / f, "rt", encoding="utf-8"):
            o = json.loads(line)
            urls.setdefault(o["Name"][:40], set()).add(url_words(o.get("URL")))
    for i in (0, 1, 5000, 7184):  # from both files
        assert texts[i].startswith(plain[i] + " | ")
        assert texts[i][len(plain[i]) + 3:] in set().union(*(v for k, v in urls.items() if plain[i].startswith(k)))


def test_lora_cv_fine_fold_data_and_flags_are_not_mixed(tmp_path, monkeypatch):
    """--fine writes each offer's level-3 class into the fold data (the linear model then splits its classes);
    a fold or fold data made with the other setting is refused, not silently reused."""
    import json

    import pytest

    monkeypatch.syspath_prepend(str(REPO))
    from bench.lora_cv import check_fold_text, finished_fold, grouped_folds, write_fold_data
    from category_classification.core.cli import UserError
    from category_classification.data.dataset_dir import load_dataset_dir

    rng = np.random.default_rng(1)
    n = 300
    y = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    groups = rng.integers(0, 120, size=n) * 10 + y
    texts = [f"offer {i}" for i in range(n)]
    fine = [f"kind{y[i]}-{i % 2}" for i in range(n)]
    train_idx, test_idx = grouped_folds(y, groups, 5)[0]
    write_fold_data(tmp_path / "d", texts, ["A", "B", "C"], y, groups, train_idx, test_idx, seed=0, fine=fine)
    dsd = load_dataset_dir(tmp_path / "d")
    for split in ("train", "validation", "test"):
        part = dsd[split]
        assert [fine[int(t.split()[1])] for t in part["text"]] == part["fine_category"]
    write_fold_data(tmp_path / "plain", texts, ["A", "B", "C"], y, groups, train_idx, test_idx, seed=0)
    assert "fine_category" not in load_dataset_dir(tmp_path / "plain")["train"].column_names

    done = tmp_path / "fold.json"
    done.write_text(json.dumps({"lora_args": [], "lora_train_seconds": 1.0}))  # made before --fine existed
    assert finished_fold(done, [])["lora_train_seconds"] == 1.0
    with pytest.raises(UserError, match="without --fine"):
        finished_fold(done, [], fine=True)
    fold = tmp_path / "fold0"
    check_fold_text(fold, breadcrumb=False, fine=True)
    (fold / "data").mkdir()
    check_fold_text(fold, breadcrumb=False, fine=True)
    with pytest.raises(UserError, match="with --fine"):
        check_fold_text(fold, breadcrumb=False, fine=False)
