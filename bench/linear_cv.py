"""Grouped 5-fold cross-validation of linear configurations on the bundled MWPD offers.

  python bench/linear_cv.py [--label_level six|lvl1|lvl2|lvl3] [--folds 5] [--only NAME ...] [--breadcrumb]

One 700-offer test split gives a noisy macro-F1 (the Baby class has 6 offers there), so linear settings
are chosen on all bundled offers (train + validation files: 7,185 six-class, 13,012 GS1) with folds
grouped by normalized title, mean and standard deviation over the folds. "reference" is issue 13's plain
TF-IDF (word 1-2 + char_wb 2-5, sublinear tf) + LinearSVC(C=0.5, balanced), which the default now equals.
A class that only a test fold holds is scored as a miss (weighted F1 counts its support). --breadcrumb
builds the texts as the dataset builder does for MWPD by default (with the shop's breadcrumb).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "default = reference (tfidf C=0.5 bal.)": dict(),
    "plain tfidf+LinearSVC C=1": dict(features="tfidf", C=1.0, class_weight=None),
    "hashed (the old default)": dict(features="hashed", char_min_df=2),
    "tfidf C=1, balanced": dict(C=1.0),
    "tfidf C=0.3, balanced": dict(C=0.3),
}


def bundled_offers(label_level: str = "six", breadcrumb: bool = False):
    """All offers of data/mwpd (train and validation files): texts, label names, label ids, title groups."""
    from category_classification.data.mwpd import read_mwpd

    rows = []
    for f in ("train.json.gz", "validation.json.gz"):
        rows += list(read_mwpd(REPO / "data" / "mwpd" / f, label_level, breadcrumb=breadcrumb))
    texts = [t for t, _, _ in rows]
    names = sorted({l for _, l, _ in rows})
    y = np.array([names.index(l) for _, l, _ in rows])
    groups = np.array([g for _, _, g in rows])
    return texts, names, y, groups


def grouped_folds(y, groups, folds: int, seed: int = 0):
    """Label-stratified folds that keep each title group in one fold: (train_idx, test_idx) pairs."""
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups))


def main():
    from category_classification.evaluation.metrics import label_scores
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label_level", default="six")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only", nargs="*", help="run only configs whose name starts with one of these")
    p.add_argument("--breadcrumb", action="store_true", help="texts end with the shop's breadcrumb (CategoryText)")
    args = p.parse_args()

    texts, names, y, groups = bundled_offers(args.label_level, args.breadcrumb)
    print(f"{len(texts):,} offers, {len(names)} classes, {len(set(groups.tolist())):,} title groups, "
          f"{args.folds} grouped folds")
    folds = grouped_folds(y, groups, args.folds)
    print(f"{'configuration':<40}{'macro_f1':>16}{'weighted_f1':>16}{'accuracy':>10}{'fit s':>8}")
    for name, overrides in CONFIGS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        f1s, wf1s, accs, secs = [], [], [], []
        for train_idx, test_idx in folds:
            model = LinearTextClassifier(names, LinearConfig(**overrides))
            t = time.perf_counter()
            model.fit([texts[i] for i in train_idx], y[train_idx])
            secs.append(time.perf_counter() - t)
            pred = model.predict([texts[i] for i in test_idx])
            m = label_scores([names[i] for i in y[test_idx]], [names[i] for i in pred])
            f1s.append(m["macro_f1"])
            wf1s.append(m["weighted_f1"])
            accs.append(m["accuracy"])
        print(f"{name:<40}{np.mean(f1s):>9.4f} ±{np.std(f1s):.4f}{np.mean(wf1s):>9.4f} ±{np.std(wf1s):.4f}"
              f"{np.mean(accs):>10.4f}{np.mean(secs):>8.1f}", flush=True)


if __name__ == "__main__":
    main()
