"""Choosing the linear model's Other offset by grouped cross-validation instead of on one validation split.

The offset trades accepted precision against in-scope recall in steps of a few offers; on the builder's
985-offer validation split of MWPD it chose -0.10 where grouped 5-fold CV over all 9,862 labelled offers
chose -0.05 (docs/benchmarks.md, open set). `train_linear_baseline.py --other_bias cv` and
`bench/open_set_cv.py` both use these functions; the offset itself is chosen by models/linear.choose_bias.
"""

from __future__ import annotations

import numpy as np

from category_classification.models.linear import LinearTextClassifier, copy_variants, with_copies


def grouped_folds(y, groups, folds: int, seed: int = 0):
    """Label-stratified folds that keep each title group in one fold: (train_idx, test_idx) pairs."""
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups))


def out_of_fold(texts, y, folds, labels, cfg, sources=None, fine=None, variants=None) -> list:
    """Per fold: (held-out index, column scores, temperature, the model's column -> label map), the model fit
    on the other folds with `cfg` (with `variants`, {"breadcrumb": the texts without their breadcrumb,
    "title": the titles alone}, also on the copies cfg asks for, as the trainer does) and its temperature
    fitted on the held-out fold. The offset is left at 0."""
    return out_of_fold_views(texts, y, folds, labels, cfg, sources, fine, variants)["text"]


def out_of_fold_views(texts, y, folds, labels, cfg, sources=None, fine=None, variants=None, views=None) -> dict:
    """out_of_fold's parts under "text", and for each of `views` (name -> another text of every offer: its
    title alone, ...) the same models' parts on the held-out offers' view (the same temperature)."""
    y = np.asarray(y)
    copies = list(copy_variants(cfg, variants or {}).values())
    out = {"text": [], **{name: [] for name in views or {}}}
    for train_idx, test_idx in folds:
        fit_texts = [texts[i] for i in train_idx]
        cols = {"y": y[train_idx].tolist()}
        for key, values in (("src", sources), ("fine", fine)):
            if values is not None:
                cols[key] = [values[i] for i in train_idx]
        if copies:
            fit_texts, cols, _ = with_copies(fit_texts, [[v[i] for i in train_idx] for v in copies], cols)
        model = LinearTextClassifier(labels, cfg).fit(fit_texts, np.asarray(cols["y"]), cols.get("src"),
                                                      cols.get("fine"))
        held = [texts[i] for i in test_idx]
        model.calibrate(held, y[test_idx])
        out["text"].append((test_idx, model.column_scores(held), model.temperature, model.column_labels))
        for name, view in (views or {}).items():
            out[name].append((test_idx, model.column_scores([view[i] for i in test_idx]), model.temperature,
                              model.column_labels))
    return out
