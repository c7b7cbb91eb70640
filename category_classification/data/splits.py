"""Leak-free train/validation/test splits: whole groups (LSPC clusters, MWPD titles) go to one split.

Stratified by each group's majority label, deterministic for a seed, vectorized so ten million offers
split in seconds: within a label, groups are ordered by a seeded hash and cut at the target fractions.
"""

from __future__ import annotations

import numpy as np

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "validation", "test")


def _mix(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of int64 group ids and the seed: an order that looks random and never changes."""
    z = values.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def assign_splits(groups, labels, val_size: float = 0.05, test_size: float = 0.10, seed: int = 42,
                  forced_test=None) -> np.ndarray:
    """Split code (TRAIN/VALIDATION/TEST) per row; rows of one group always share a code.

    groups, labels: one int per row. forced_test: optional bool per row; a group with any such row goes
    wholly to test, and the remaining groups are split by `val_size` and `test_size` as usual (pass
    test_size=0 to keep test for the forced rows only).
    """
    groups = np.asarray(groups, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if groups.shape != labels.shape:
        raise ValueError("groups and labels must have one entry per row")
    if not (0 <= val_size < 1 and 0 <= test_size < 1 and val_size + test_size < 1):
        raise ValueError(f"val_size + test_size must be in [0, 1): got {val_size} + {test_size}")
    if groups.size == 0:
        return np.zeros(0, dtype=np.int8)

    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    n_groups, n_labels = len(uniq), int(labels.max()) + 1
    size = np.bincount(inv, minlength=n_groups)
    per_label = np.bincount(inv * n_labels + labels, minlength=n_groups * n_labels).reshape(n_groups, n_labels)
    majority = per_label.argmax(axis=1)

    group_split = np.full(n_groups, TRAIN, dtype=np.int8)
    free = np.ones(n_groups, dtype=bool)
    if forced_test is not None:
        forced_rows = np.asarray(forced_test, dtype=bool)
        forced = np.zeros(n_groups, dtype=bool)
        forced[inv[forced_rows]] = True
        group_split[forced] = TEST
        free &= ~forced

    key = _mix(uniq, seed)
    for label in range(n_labels):
        idx = np.flatnonzero(free & (majority == label))
        if idx.size == 0:
            continue
        idx = idx[np.argsort(key[idx], kind="stable")]
        cum = np.cumsum(size[idx])
        # a group's position is the middle of its span, so a big cluster lands where most of it belongs
        position = (cum - size[idx] / 2.0) / cum[-1]
        split = np.full(idx.size, TRAIN, dtype=np.int8)
        split[position < test_size + val_size] = VALIDATION
        split[position < test_size] = TEST
        group_split[idx] = split
    return group_split[inv]


def cap_group_share(groups, selected, fraction: float, seed: int = 42) -> np.ndarray:
    """Keep mask that drops whole groups of the `selected` rows (in seeded hash order) until they are at
    most `fraction` of the rows kept; unselected rows are always kept. Used to cap the Other class."""
    groups = np.asarray(groups, dtype=np.int64)
    selected = np.asarray(selected, dtype=bool)
    keep = np.ones(groups.size, dtype=bool)
    n_sel = int(selected.sum())
    if not 0 <= fraction < 1 or n_sel == 0:
        return keep
    allowed = int(fraction / (1 - fraction) * (groups.size - n_sel))
    if n_sel <= allowed:
        return keep
    uniq, inv = np.unique(groups[selected], return_inverse=True)
    size = np.bincount(inv.reshape(-1), minlength=uniq.size)
    order = np.argsort(_mix(uniq, seed + 1), kind="stable")
    taken = np.zeros(uniq.size, dtype=bool)
    taken[order[np.cumsum(size[order]) <= allowed]] = True
    keep[np.flatnonzero(selected)[~taken[inv.reshape(-1)]]] = False
    return keep
