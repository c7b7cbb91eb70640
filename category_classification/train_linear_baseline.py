"""Train the fast default classifier (n-gram features + linear SVM) on a built dataset.

    python category_classification/train_linear_baseline.py --data runs/mwpd6 --out runs/linear [--refit]
Fits on `train`, calibrates probabilities on `validation`, evaluates both and `test`. With an Other class
the offset on its score is chosen by grouped cross-validation over train + validation (--other_bias cv, 5
more fits; auto: on validation alone). With --refit the temperature and the offset are kept and the model
is fitted again on train + validation, as challenge entrants did; validation figures then come from the
train-only fit.
With --hierarchy (a dataset built with --label_level all) it trains one model per GS1 level and decodes
the three levels together along the lvl1 > lvl2 > lvl3 paths seen in training (models/hierarchical.py).
On a breadcrumb dataset (its `text_bare` column) every fit also learns each training offer's text without its
breadcrumb, so offers that arrive without one score as well (--no_breadcrumb_copies: `text` alone); on a
dataset with a `text_title` column, each offer's title alone too (--no_title_copies: not).
"""

import argparse
import json
import math
import sys
import time
import dataclasses
from dataclasses import asdict
from pathlib import Path

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError, add_dataclass_args, add_eval_args, dataclass_from_args, run
from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir, sources_of
from category_classification.evaluation.metrics import (add_open_set, classes_without_training_examples,
                                                        eval_options, evaluate_split, format_metrics,
                                                        format_open_set, gs1_metrics, write_results)
from category_classification.models.linear import (COPY_KINDS, LinearConfig, LinearTextClassifier, copy_variants,
                                                   with_copies)

OUT_KINDS = ("linear", "hierarchical_linear")  # the model folders this trainer replaces (the demo checks them too)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="DatasetDict directory from build_lspc_dataset.py")
    p.add_argument("--out", required=True, help="model directory to write")
    add_dataclass_args(p.add_argument_group("model (LinearConfig)"), LinearConfig)
    p.add_argument("--refit", action="store_true",
                   help="after calibrating on validation, fit again on train + validation (final models)")
    p.add_argument("--other_bias", default="cv",
                   help="offset on the out-of-scope class's score: cv (default: chosen by grouped "
                        "cross-validation over train + validation, --other_bias_folds more fits), auto "
                        "(chosen on the validation split alone: faster, noisier) or a number")
    p.add_argument("--other_bias_objective", choices=["min", "sum"], default="min",
                   help="what --other_bias cv/auto maximises: min (default) or sum of accepted precision and "
                        "in-scope recall")
    p.add_argument("--other_bias_folds", type=int, default=5, help="folds of --other_bias cv (>= 2)")
    p.add_argument("--hierarchy", action="store_true",
                   help="GS1 levels: one model per lvl1/lvl2/lvl3 column, hierarchy-consistent decoding")
    add_eval_args(p)
    return p


def dataset_other_label(data_dir) -> str | None:
    """The out-of-scope class the builder recorded (build_report.json "other_label"), if any."""
    report = Path(data_dir) / "build_report.json"
    try:
        return json.loads(report.read_text(encoding="utf-8")).get("other_label") or None
    except (OSError, ValueError, AttributeError):
        return None


def config_from_args(args, labels) -> LinearConfig:
    cfg = dataclass_from_args(LinearConfig, args)
    if args.other_label and args.other_label not in labels:  # it was dropped silently: a closed model trained
        raise UserError(f"--other_label {args.other_label} is not a class of the dataset ({', '.join(labels)})")
    other = args.other_label or dataset_other_label(args.data)
    return dataclasses.replace(cfg, other_label=other if other in labels else None)


def source_categories(split, cfg: LinearConfig):
    """The split's source_category column when Other is split by it (None otherwise, or when missing)."""
    from category_classification.data.builder import SOURCE_COLUMN

    if split is None or not cfg.other_label or cfg.other_split != "source":
        return None
    if SOURCE_COLUMN not in split.column_names:
        print(f"note: the dataset has no {SOURCE_COLUMN} column (built before it existed): one {cfg.other_label} "
              "class; rebuild it to split Other by source category")
        return None
    return split[SOURCE_COLUMN]


def fine_categories(split, cfg: LinearConfig):
    """The split's fine_category column when the target classes are split by it (None otherwise, or when
    missing: datasets built before it existed, LSPC datasets)."""
    from category_classification.data.builder import FINE_COLUMN

    if split is None or cfg.class_split != "fine" or FINE_COLUMN not in split.column_names:
        return None
    return split[FINE_COLUMN]


def split_rows(splits, cfg: LinearConfig, columns=("label",)) -> tuple[list, dict, dict]:
    """The texts and `columns` (plus "sources" for source_categories, "fine" for fine_categories) of
    `splits`, and the variant texts the config asks copies of: {"breadcrumb": bare texts} with
    cfg.breadcrumb_copies, {"title": title texts} with cfg.title_copies, where every split has the column."""
    from category_classification.data.builder import TEXT_BARE_COLUMN, TEXT_TITLE_COLUMN

    texts = [t for s in splits for t in s["text"]]
    cols = {c: [v for s in splits for v in s[c]] for c in columns}
    for key, column_of in (("sources", source_categories), ("fine", fine_categories)):
        found = [column_of(s, cfg) for s in splits]
        if all(v is not None for v in found):
            cols[key] = [v for part in found for v in part]
    available = {key: [t for s in splits for t in s[column]]
                 for key, column in (("breadcrumb", TEXT_BARE_COLUMN), ("title", TEXT_TITLE_COLUMN))
                 if all(column in s.column_names for s in splits)}
    return texts, cols, copy_variants(cfg, available)


def fit_rows(splits, cfg: LinearConfig, columns=("label",)) -> tuple[list, dict, dict]:
    """The training texts and columns of `splits` (train, or train + validation to refit; split_rows), and
    how many copies were added ({"breadcrumb": n, "title": n}): each offer whose text_bare (then
    text_title) differs from its text and its earlier copies is added once more with that text, its
    labels, source and fine category copied."""
    texts, cols, variants = split_rows(splits, cfg, columns)
    texts, cols, counts = with_copies(texts, list(variants.values()), cols)
    added = dict.fromkeys(COPY_KINDS, 0)
    added.update(zip(variants, counts))
    return texts, cols, added


def cv_other_bias(model: LinearTextClassifier, splits, objective: str, folds: int) -> tuple[float, dict]:
    """(offset, open-set metrics at it over the out-of-fold offers): grouped `folds`-fold CV over `splits`
    with the model's settings (training/open_set.py), title groups (the `cluster` column) kept whole."""
    import numpy as np

    from category_classification.models.linear import choose_bias
    from category_classification.training.open_set import grouped_folds, out_of_fold

    texts, cols, variants = split_rows(splits, model.config, ("label", "cluster"))
    y, groups = np.asarray(cols["label"]), np.asarray(cols["cluster"])
    check_cv_folds(groups, folds)
    parts = out_of_fold(texts, y, grouped_folds(y, groups, folds, model.config.seed), model.labels, model.config,
                        cols.get("sources"), cols.get("fine"), variants)
    return choose_bias(parts, y, model.labels, model.labels.index(model.config.other_label), objective)


def check_cv_folds(groups, folds: int) -> None:
    """--other_bias cv's folds against the title groups (`cluster` values) of train + validation: checked
    before the first fit too, so an impossible value does not fail after it."""
    import numpy as np

    n = len(np.unique(np.asarray(groups)))
    if folds < 2 or n < folds:
        raise UserError(f"--other_bias cv needs --other_bias_folds >= 2 and at least that many title groups "
                        f"(the data has {n}); use --other_bias auto or a number")


def calibrate(model: LinearTextClassifier, val, other_bias: str, objective: str = "min", train=None,
              folds: int = 5) -> dict | None:
    """Temperature from the validation split and, for an out-of-scope class, the offset on its score: by
    grouped CV over train + validation ("cv"; the out-of-fold figures are returned), on validation ("auto"),
    or given (the temperature first: with Other sub-classes, decisions depend on it; then again with the
    offset)."""
    if val is not None:
        model.calibrate(val["text"], val["label"])
    found = None
    if model.config.other_label:
        if other_bias == "cv":
            bias, m = cv_other_bias(model, [s for s in (train, val) if s is not None], objective, folds)
            model.other_bias = bias
            found = {"other_bias": bias, "folds": folds, "accepted_precision": m["accepted_precision"],
                     "in_scope_recall": m["in_scope_recall"], "target_macro_f1": m["target_macro_f1"]}
            print(f"{model.config.other_label} offset {bias:+.2f} chosen by grouped {folds}-fold CV: out-of-fold "
                  f"accepted precision {m['accepted_precision']:.4f}, in-scope recall {m['in_scope_recall']:.4f}")
        elif other_bias == "auto":
            if val is not None:
                model.choose_other_bias(val["text"], val["label"], objective)
        else:
            model.other_bias = float(other_bias)
    if val is not None:
        model.calibrate(val["text"], val["label"])
    return found


def split_metrics(model: LinearTextClassifier, split, labels, args) -> dict:
    probs = model.predict_proba(split["text"])
    pred = probs.argmax(axis=1)
    m = evaluate_split(split, pred, labels, **eval_options(args))
    return add_open_set(m, split["label"], pred, labels, model.config.other_label, probs, sources_of(split))


def fit_linear(labels, cfg: LinearConfig, splits) -> tuple[LinearTextClassifier, dict]:
    """A linear model fitted on `splits` (with the bare and title copies, fit_rows), and the copies added."""
    texts, cols, copies = fit_rows(splits, cfg)
    return LinearTextClassifier(labels, cfg).fit(texts, cols["label"], cols.get("sources"), cols.get("fine")), copies


def refit(model: LinearTextClassifier, train, val) -> tuple[LinearTextClassifier, dict]:
    """Fit the same settings on train + validation, keeping the calibration chosen on validation."""
    fresh, copies = fit_linear(model.labels, model.config, (train, val))
    fresh.temperature, fresh.other_bias = model.temperature, model.other_bias
    return fresh, copies


def level_labels(dsd) -> dict:
    from category_classification.models.hierarchical import LEVELS

    split = next(iter(dsd.values()))
    missing = [lv for lv in LEVELS if lv not in split.column_names]
    if missing:
        raise UserError(f"--hierarchy needs a dataset built with --label_level all (no {', '.join(missing)} column)")
    if not all(hasattr(split.features[lv], "names") for lv in LEVELS):
        raise UserError(f"--hierarchy needs {', '.join(LEVELS)} columns of ClassLabel type")
    return {lv: list(split.features[lv].names) for lv in LEVELS}


def gs1_split_metrics(model, split, labels, args) -> dict:
    """The lvl1 metrics of the shared evaluation plus the MWPD official block (`gs1`) of all three levels."""
    from category_classification.models.hierarchical import LEVELS

    levels = model.predict_levels(split["text"])
    m = evaluate_split(split, levels["lvl1"][0], labels, **eval_options(args))
    names = model.level_labels
    truth = {lv: [names[lv][i] for i in split[lv]] for lv in LEVELS}
    pred = {lv: [names[lv][i] for i in levels[lv][0]] for lv in LEVELS}
    m["gs1"] = gs1_metrics(truth, pred)
    train_names = {lv: {names[lv][i] for i in model.paths[:, k]} for k, lv in enumerate(LEVELS)}
    m["classes_without_training_examples"] = {lv: classes_without_training_examples(train_names[lv], truth[lv])
                                              for lv in LEVELS}
    return m


def train_hierarchy(args) -> int:
    """--hierarchy: per-level linear models decoded along the GS1 paths seen in training."""
    from category_classification.models.hierarchical import LEVELS, HierarchicalLinear

    dsd = load_dataset_dir(args.data)
    names, labels = level_labels(dsd), label_names(dsd)
    if labels != names["lvl1"]:  # --categories/--other_label: `label` is not level 1, whose ids it is scored by
        raise UserError(f"--hierarchy needs a dataset whose label column is GS1 level 1 ({len(labels)} labels here "
                        f"against {len(names['lvl1'])} lvl1 classes): build it with --label_level all and "
                        "without --categories or --other_label")
    train = get_split(dsd, "train", train=True)
    val = get_split(dsd, "validation") if "validation" in dsd else None
    val = val if val is not None and len(val) else None
    cfg = config_from_args(args, labels)
    print(f"training one linear model per GS1 level on {len(train)} offers: "
          + ", ".join(f"{lv} {len(names[lv])} classes" for lv in LEVELS))
    t0 = time.perf_counter()
    texts, cols, copies = fit_rows([train], cfg, LEVELS)
    model = HierarchicalLinear(names, cfg).fit(texts, cols)
    metrics, fitted = {}, len(train)
    if val is not None:
        model.calibrate(val["text"], {lv: val[lv] for lv in LEVELS})
        metrics["validation"] = gs1_split_metrics(model, val, labels, args)
        if args.refit:
            temps = {lv: model.models[lv].temperature for lv in LEVELS}
            texts, cols, copies = fit_rows([train, val], cfg, LEVELS)
            model = HierarchicalLinear(names, cfg).fit(texts, cols)
            fitted = len(train) + len(val)
            for lv in LEVELS:
                model.models[lv].temperature = temps[lv]
    train_seconds = time.perf_counter() - t0
    test = get_split(dsd, "test") if "test" in dsd else None
    if test is not None and len(test):
        metrics["test"] = gs1_split_metrics(model, test, labels, args)
    model.save(args.out, train_seconds=round(train_seconds, 2), data=str(args.data), refit=bool(args.refit),
               train_size=fitted, breadcrumb_copies=copies["breadcrumb"], title_copies=copies["title"],
               results=lambda stage: write_results(
                   stage, "hierarchical linear (per-level TF-IDF + LinearSVC, path decoding)", asdict(cfg),
                   metrics, labels, extra={"train_seconds": round(train_seconds, 2), "train_size": fitted,
                                           "refit": bool(args.refit),
                                           "breadcrumb_copies": copies["breadcrumb"],
                                           "title_copies": copies["title"]}, history_from=args.out))
    for split, m in metrics.items():
        g = m["gs1"]
        print(f"[{split}] MWPD avg weighted F1 {g['avg_weighted_f1']:.4f} ("
              + ", ".join(f"{lv} {g[lv]['weighted_f1']:.4f}" for lv in LEVELS) + ")")
        for lv, missing in m["classes_without_training_examples"].items():
            if missing:
                print(f"  {lv} classes without training examples (scored as misses): {', '.join(missing)}")
    print(f"trained in {train_seconds:.1f}s; model and metrics.json written to {args.out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_model_out(args.out, [args.data], kinds=OUT_KINDS,
                    sources={"--embed_model": args.embed_model})
    if args.other_bias not in ("cv", "auto"):
        try:
            finite = math.isfinite(float(args.other_bias))
        except ValueError:
            finite = False
        if not finite:
            raise UserError(f"--other_bias must be cv, auto or a finite number, got {args.other_bias!r}")
    if args.embed_model:  # loaded now, once (the fit reuses it): a bad encoder fails before minutes of fitting
        from category_classification.models.sentence_embedding import check_embed_model

        check_embed_model(args.embed_model, args.embed_seq_len)
    if args.hierarchy:
        return train_hierarchy(args)
    dsd = load_dataset_dir(args.data)
    labels = label_names(dsd)
    train = get_split(dsd, "train", train=True)
    val, test = (get_split(dsd, name) if name in dsd else None for name in ("validation", "test"))
    val, test = (s if s is not None and len(s) else None for s in (val, test))
    cfg = config_from_args(args, labels)
    if cfg.other_label and args.other_bias == "cv" and "cluster" in train.column_names:
        check_cv_folds([g for s in (train, val) if s is not None for g in s["cluster"]], args.other_bias_folds)
    print(f"training linear model on {len(train)} offers, {len(labels)} classes"
          + (f" (out of scope: {cfg.other_label})" if cfg.other_label else ""))
    t0 = time.perf_counter()
    model, copies = fit_linear(labels, cfg, [train])
    if copies["breadcrumb"]:
        print(f"also trained on {copies['breadcrumb']} texts without their breadcrumb (--no_breadcrumb_copies: not)")
    if copies["title"]:
        print(f"also trained on {copies['title']} titles alone (--no_title_copies: not)")
    if model.other_subclasses:
        print(f"{cfg.other_label} trained as {len(model.other_subclasses)} source-category sub-classes "
              f"(>= {cfg.other_min_size} training rows each) + the rest pooled")
    if model.class_subclasses:
        print(f"the target classes trained as {len(model.class_subclasses)} fine-category sub-classes "
              f"(>= {cfg.other_min_size} training rows each) + their own columns (--class_split none: not)")
    bias_cv = calibrate(model, val, args.other_bias, args.other_bias_objective, train, args.other_bias_folds)
    metrics = {"validation": split_metrics(model, val, labels, args)} if val is not None else {}
    fitted = len(train)  # the offers the saved model is fitted on (train + validation with --refit)
    if args.refit and val is not None:
        fitted = len(train) + len(val)
        print(f"refitting on train + validation ({fitted} offers)")
        model, copies = refit(model, train, val)
    train_seconds = time.perf_counter() - t0
    print(f"trained in {train_seconds:.1f}s")
    if model.classes_without_training_examples:
        print("classes without training examples (never predicted, scored as misses): "
              + ", ".join(model.classes_without_training_examples))
    if test is not None:
        metrics["test"] = split_metrics(model, test, labels, args)

    extra = {"train_seconds": round(train_seconds, 2), "train_size": fitted, "refit": bool(args.refit),
             "breadcrumb_copies": copies["breadcrumb"], "title_copies": copies["title"],
             "temperature": model.temperature, "other_bias": model.other_bias,
             **({"other_bias_cv": bias_cv} if bias_cv else {}),
             "classes_without_training_examples": model.classes_without_training_examples}
    model.save(args.out, train_seconds=round(train_seconds, 2), data=str(args.data), refit=bool(args.refit),
               train_size=fitted, breadcrumb_copies=copies["breadcrumb"], title_copies=copies["title"],
               figures={s: {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]} for s, m in metrics.items()},
               results=lambda stage: write_results(stage, f"linear ({cfg.features} n-grams + LinearSVC)", asdict(cfg),
                                                   metrics, labels, extra=extra, history_from=args.out))
    for split, m in metrics.items():
        print(format_metrics(m, labels, title=f"[{split}]"))
        if m.get("open_set"):
            print(format_open_set(m["open_set"]))
    print(f"model, metrics.json and results_category.txt written to {args.out}")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
