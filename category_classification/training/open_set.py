"""Choosing the linear model's Other offset by grouped cross-validation instead of on one validation split.

The offset trades accepted precision against in-scope recall in steps of a few offers; on the builder's
985-offer validation split of MWPD it chose -0.10 where grouped 5-fold CV over all 9,862 labelled offers
chose -0.05 (docs/benchmarks.md, open set). `train_linear_baseline.py --other_bias cv` and
`bench/open_set_cv.py` both use these functions; the offset itself is chosen by models/linear.choose_bias.
"""

from __future__ import annotations

import numpy as np

from category_classification.models.linear import LinearTextClassifier, with_bare_copies


def grouped_folds(y, groups, folds: int, seed: int = 0):
    """Label-stratified folds that keep each title group in one fold: (train_idx, test_idx) pairs."""
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups))


def out_of_fold(texts, y, folds, labels, cfg, sources=None, fine=None, bare=None) -> list:
    """Per fold: (held-out index, column scores, temperature, the model's column -> label map), the model fit
    on the other folds with `cfg` (with `bare`, the texts without their breadcrumb, also on those copies, as
    the trainer does) and its temperature fitted on the held-out fold. The offset is left at 0."""
    y = np.asarray(y)
    parts = []
    for train_idx, test_idx in folds:
        fit_texts = [texts[i] for i in train_idx]
        cols = {"y": y[train_idx].tolist()}
        for key, values in (("src", sources), ("fine", fine)):
            if values is not None:
                cols[key] = [values[i] for i in train_idx]
        if bare is not None and cfg.breadcrumb_copies:
            fit_texts, cols, _ = with_bare_copies(fit_texts, [bare[i] for i in train_idx], cols)
        model = LinearTextClassifier(labels, cfg).fit(fit_texts, np.asarray(cols["y"]), cols.get("src"),
                                                      cols.get("fine"))
        held = [texts[i] for i in test_idx]
        model.calibrate(held, y[test_idx])
        parts.append((test_idx, model.column_scores(held), model.temperature, model.column_labels))
    return parts
