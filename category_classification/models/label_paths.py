"""Hierarchy-consistent decoding shared by the GS1 level models (hierarchical_linear, fielded_linear).

A path is one (lvl1, lvl2, lvl3) index triple seen in training; its score is the sum of its nodes' log-probabilities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def path_posterior(level_log_probs: Sequence[np.ndarray], paths: np.ndarray) -> np.ndarray:
    """(n, num_paths) posterior over the paths: softmax of the summed log-probabilities of each path's nodes."""
    total = sum(logp[:, paths[:, k]] for k, logp in enumerate(level_log_probs))
    return np.exp(log_softmax(total))


def path_problem(paths, sizes: Sequence[int]) -> str | None:
    """Why a saved path table cannot be decoded with levels of `sizes` labels, or None. A table edited by
    hand or saved beside another training's levels indexes past a level's labels (an IndexError mid-run) or,
    with negative or fractional indices, names other classes without any error."""
    try:
        a = np.asarray(paths) if isinstance(paths, list) else None
    except ValueError:  # rows of different lengths
        a = None
    if a is None or a.ndim != 2 or a.shape[1] != len(sizes) or not len(a):
        return f"it needs a non-empty list of [{', '.join(f'level {k + 1}' for k in range(len(sizes)))}] index paths"
    if not np.issubdtype(a.dtype, np.integer):
        return "its paths hold values that are not whole numbers"
    for k, size in enumerate(sizes):
        bad = a[:, k][(a[:, k] < 0) | (a[:, k] >= size)]
        if len(bad):
            return f"a path names label {int(bad[0])} of level {k + 1}, which has {size} labels"
    return None


def level_marginals(post: np.ndarray, paths: np.ndarray, k: int, num_labels: int) -> np.ndarray:
    """(n, num_labels) probability of each label of level k: the posterior summed over the paths through it."""
    out = np.zeros((post.shape[0], num_labels))
    np.add.at(out.T, paths[:, k], post.T)
    return out
