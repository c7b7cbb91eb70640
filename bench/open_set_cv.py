"""Grouped cross-validation of the linear model's Other handling on an `--other_label` dataset.

  python bench/open_set_cv.py --data runs/mwpd6_other [--folds 5] [--only NAME ...] [--embed_model minilm|PATH]

Choices (one Other class or sub-classes per source category, the target classes as sub-classes per fine
category (GS1 level 3 on MWPD) or not, their minimum size, C, Other's weight, the offset objective) are
made here on the train and validation splits (the MWPD train file), never on the scored file. Per fold: fit on the other folds, temperature fitted on the held-out fold; the Other
offset is then chosen over all out-of-fold offers, which are scored at it (optimistic by the one
chosen number, equally for every configuration).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the rows before class_split existed keep one column per target class (class_split="none"); the rows before
# the title copies existed (a dataset's text_title column) fit without them
CONFIGS = {
    "one Other": dict(other_split="none", class_split="none", title_copies=False),
    "split by source, min 20": dict(other_split="source", other_min_size=20, class_split="none", title_copies=False),
    "split by source, min 50": dict(other_split="source", other_min_size=50, class_split="none", title_copies=False),
    "split by source, min 5": dict(other_split="source", other_min_size=5, class_split="none", title_copies=False),
    "split by source, C=1": dict(other_split="source", C=1.0, class_split="none", title_copies=False),
    "split by source, Other weight 0.5": dict(other_split="source", other_weight=0.5, class_split="none",
                                              title_copies=False),
    "split by source, Other weight 2": dict(other_split="source", other_weight=2.0, class_split="none",
                                            title_copies=False),
    "split by source, classes by fine category": dict(other_split="source", class_split="fine", title_copies=False),
    "one Other, classes by fine category": dict(other_split="none", class_split="fine", title_copies=False),
    "split by source, classes by fine category, title copies (the default)": dict(other_split="source",
                                                                                  class_split="fine"),
}


def main(argv=None):
    from bench.linear_cv import check_folds
    from category_classification.core.cli import UserError, check_names
    from category_classification.data.builder import FINE_COLUMN, SOURCE_COLUMN
    from category_classification.data.dataset_dir import label_names, load_dataset_dir
    from category_classification.evaluation.metrics import open_set_metrics
    from category_classification.models.linear import LinearConfig, choose_bias, decide
    from category_classification.training.open_set import grouped_folds, out_of_fold_views

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a dataset built with --other_label (train + validation used)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only", nargs="*", help="configuration names to run")
    from bench.lora_minilm import add_embed_model_arg

    add_embed_model_arg(p, "append this encoder's sentence embeddings to every configuration's features")
    args = p.parse_args(argv)
    check_folds(args.folds)
    if args.only:
        check_names("--only", args.only, CONFIGS, "configuration")
    dsd = load_dataset_dir(args.data)
    labels = label_names(dsd)
    splits = [s for s in ("train", "validation") if s in dsd]
    if not splits or SOURCE_COLUMN not in dsd[splits[0]].column_names:
        raise UserError(f"{args.data} has no train split with a {SOURCE_COLUMN} column: build it with "
                        "build_lspc_dataset.py --other_label Other")
    other = labels.index("Other") if "Other" in labels else len(labels) - 1
    rows = [dsd[s] for s in ("train", "validation") if s in dsd]
    texts = [t for d in rows for t in d["text"]]
    variants = {key: [t for d in rows for t in d[column]] for key, column in (("breadcrumb", "text_bare"),
                ("title", "text_title")) if column in rows[0].column_names}
    y = np.array([v for d in rows for v in d["label"]])
    sources = [v for d in rows for v in d[SOURCE_COLUMN]]
    fine = [v for d in rows for v in d[FINE_COLUMN]] if FINE_COLUMN in rows[0].column_names else None
    groups = np.array([v for d in rows for v in d["cluster"]])
    folds = grouped_folds(y, groups, args.folds)
    print(f"{len(texts)} offers ({int((y == other).sum())} {labels[other]}), {args.folds} grouped folds"
          + "".join(f", fits with the {k} copies where a configuration asks" for k in variants)
          + ("; the `titles` rows score the held-out offers' titles alone at the same offset" if "title" in variants
             else ""))
    print("| configuration | offset (min / sum) | accepted precision | in-scope recall | target macro-F1 | fit s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, overrides in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        extra = {"embed_model": args.embed_model} if args.embed_model else {}
        cfg = LinearConfig(other_label=labels[other], **overrides, **extra)
        views = {"titles": variants["title"]} if "title" in variants else None
        parts = out_of_fold_views(texts, y, folds, labels, cfg, sources, fine, variants, views)
        fit_s = (time.perf_counter() - t0) / args.folds
        for objective in ("min", "sum"):
            bias, m = choose_bias(parts["text"], y, labels, other, objective)
            print(f"| {name} | {bias:+.2f} ({objective}) | {m['accepted_precision']:.4f} | "
                  f"{m['in_scope_recall']:.4f} | {m['target_macro_f1']:.4f} | {fit_s:.0f} |", flush=True)
            if views and objective == "min":
                t = open_set_metrics(y, decide(parts["titles"], len(y), len(labels), other, bias), labels,
                                     labels[other])
                print(f"| {name}, titles | {bias:+.2f} ({objective}) | {t['accepted_precision']:.4f} | "
                      f"{t['in_scope_recall']:.4f} | {t['target_macro_f1']:.4f} | |", flush=True)


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
