"""Grouped k-fold cross-validation of the MiniLM LoRA fine-tune, beside the linear default, their ensemble
and the plain TF-IDF + LinearSVC reference, on all bundled six-class offers.

    .venv/bin/python bench/lora_cv.py --out runs/lora_cv [--folds 5] [--folds_to_run 0 1] [--breadcrumb] [bench/lora_minilm.py flags]

One validation split of ~700 offers holds 5 Baby offers, so one offer more or less moves macro-F1 by 0.02
to 0.05; the mean over folds that together cover all 7,185 offers is the steadier figure. The folds are
those of bench/linear_cv.py (title groups kept whole, labels stratified). In each fold the held-out fold is
the test split, and 10% of the rest (again whole title groups) is the validation split that picks the LoRA
checkpoint and calibrates the linear model. Each fold writes OUT/foldK/{data,linear,lora,lora_ensemble};
a fold whose LoRA run finished is reused, so an interrupted run resumes. The table goes to OUT/cv.json.
With --breadcrumb every text ends with the shop's breadcrumb (the builder's MWPD default, as in
bench/linear_cv.py --breadcrumb): same offers, same folds, both models fit and are scored on that text.
With --fine the fold data also holds each offer's GS1 level-3 class (fine_category, as the builder writes it for
MWPD 6-class datasets), so the linear model learns its level-3 sub-classes (LinearConfig.class_split); without
it the linear model has one column per class. With --embed_model (minilm: the packaged all-MiniLM-L6-v2) the
linear model also reads that encoder's frozen sentence embeddings (train_linear_baseline.py --embed_model).
Flags this script does not know go to bench/lora_minilm.py (e.g. --seed, --epochs, --cpu_threads).
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from bench.linear_cv import CONFIGS, REPO, bundled_offers, check_folds, grouped_folds
from category_classification.core.artifacts import write_text_atomic
from category_classification.core.cli import UserError

MODELS = ("reference", "linear", "lora", "ensemble")
VAL_FOLDS = 10  # the validation split inside each fold's training part: 1 of 10 grouped folds


def inner_split(y, groups, train_idx, seed: int):
    """A fold's training part split into (fit, validation) indexes: one grouped tenth validates."""
    fit, val = grouped_folds(y[train_idx], groups[train_idx], VAL_FOLDS, seed)[0]
    return train_idx[fit], train_idx[val]


def write_fold_data(out: Path, texts, names, y, groups, train_idx, test_idx, seed: int, fine=None) -> None:
    """A DatasetDict like build_lspc_dataset.py writes: test = the held-out fold, validation carved from the rest
    (with `fine`, each offer's fine category in the builder's fine_category column)."""
    from datasets import Dataset, DatasetDict

    from category_classification.data.builder import FINE_COLUMN, features_for

    inner_train, inner_val = inner_split(y, groups, train_idx, seed)
    parts = {"train": inner_train, "validation": inner_val, "test": test_idx}
    features = features_for(names, fine_category=fine is not None)

    def columns(idx):
        cols = {"text": [texts[i] for i in idx], "label": y[idx].tolist(), "cluster": groups[idx].tolist()}
        return cols if fine is None else {**cols, FINE_COLUMN: [fine[i] for i in idx]}

    DatasetDict({split: Dataset.from_dict(columns(idx), features=features)
                 for split, idx in parts.items()}).save_to_disk(str(out))


def reference_scores(data: Path) -> dict:
    """The plain TF-IDF + LinearSVC reference (bench/linear_cv.py), fit on train, scored on validation and test."""
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.evaluation.metrics import compute_metrics
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    dsd = load_dataset_dir(data)
    names = label_names(dsd)
    train = get_split(dsd, "train")
    model = LinearTextClassifier(names, LinearConfig(**CONFIGS["plain tfidf+LinearSVC C=1"]))
    model.fit(list(train["text"]), np.array(train["label"]))
    scores = {}
    for split in ("validation", "test"):
        part = get_split(dsd, split)
        m = compute_metrics(list(part["label"]), model.predict(list(part["text"])).tolist(), names)
        scores[split] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    return scores


def run_fold(fold_dir: Path, lora_argv: list[str], breadcrumb: bool = False, fine: bool = False,
             embed_model: str | None = None) -> dict:
    from bench import lora_minilm
    from category_classification import train_linear_baseline

    data, linear, lora = fold_dir / "data", fold_dir / "linear", fold_dir / "lora"
    t0 = time.perf_counter()
    embed = ["--embed_model", embed_model] if embed_model else []
    if train_linear_baseline.main(["--data", str(data), "--out", str(linear), *embed]):
        raise RuntimeError(f"linear training failed in {fold_dir}")
    linear_seconds = time.perf_counter() - t0
    if lora_minilm.main(["--data", str(data), "--out", str(lora), "--ensemble_with", str(linear), *lora_argv]):
        raise RuntimeError(f"the merged LoRA model in {lora} does not score as the trainer did")
    row = {"linear_seconds": round(linear_seconds, 1), "reference": reference_scores(data)}
    lin = json.loads((linear / "metrics.json").read_text(encoding="utf-8"))
    row["linear"] = {s: {k: lin[s][k] for k in ("macro_f1", "accuracy")} for s in ("validation", "test")}
    bench = json.loads((lora / "bench_lora_minilm.json").read_text(encoding="utf-8"))
    row["lora"] = {s: {k: bench[f"{s}_{k}"] for k in ("macro_f1", "accuracy")} for s in ("validation", "test")}
    row["ensemble"] = {s: {k: bench[f"ensemble_{s}_{k}"] for k in ("macro_f1", "accuracy")}
                       for s in ("validation", "test")}
    row["lora_train_seconds"] = bench["train_seconds"]
    row["lora_threads"] = bench["threads"]
    row["lora_args"] = list(lora_argv)
    row["breadcrumb"] = breadcrumb
    row["fine"] = fine
    row["embed_model"] = embed_model
    write_text_atomic(fold_dir / "fold.json", json.dumps(row, indent=2) + "\n")  # a killed run leaves none or all
    return row


def finished_fold(done: Path, lora_argv: list[str], breadcrumb: bool = False, fine: bool = False,
                  embed_model: str | None = None) -> dict:
    """A finished fold's figures, refused when they were made with other bench/lora_minilm.py flags or text."""
    from category_classification.core.cli import UserError

    try:
        row = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        row = None
    if not isinstance(row, dict) or not isinstance(row.get("lora_args"), list):
        raise UserError(f"{done} is not a finished fold of bench/lora_cv.py (damaged or someone else's): "
                        "use another --out or remove that fold")
    if row.get("lora_args") != list(lora_argv):
        raise UserError(f"{done} was run with the flags {row.get('lora_args')}, not {list(lora_argv)}: "
                        f"use another --out or remove that fold")
    if row.get("breadcrumb", False) != breadcrumb:
        raise UserError(f"{done} was run {'with' if row.get('breadcrumb') else 'without'} --breadcrumb: "
                        f"use another --out or remove that fold")
    if row.get("fine", False) != fine:
        raise UserError(f"{done} was run {'with' if row.get('fine') else 'without'} --fine: "
                        f"use another --out or remove that fold")
    if row.get("embed_model") != embed_model:
        raise UserError(f"{done} was run with --embed_model {row.get('embed_model')}, not {embed_model}: "
                        f"use another --out or remove that fold")
    return row


# what a fold folder holds: its dataset, the two models (their trainers refuse to replace other folders),
# the text marker and the finished fold's figures (and their write-beside files, a killed run's)
FOLD_ENTRIES = {"data", "linear", "lora", "text.json", "fold.json"}


def check_fold_text(fold_dir: Path, breadcrumb: bool, fine: bool = False) -> None:
    """An interrupted fold resumes on its data only when that data has the text (and the fine categories)
    this run asks for."""
    from category_classification.core.cli import UserError

    marker = fold_dir / "text.json"
    foreign = sorted(e.name for e in fold_dir.iterdir() if e.name not in FOLD_ENTRIES
                     and not re.fullmatch(r"\.(text|fold)\.tmp\d+\.json", e.name)) if fold_dir.is_dir() else []
    if fold_dir.exists() and not fold_dir.is_dir() or foreign:
        raise UserError(f"{fold_dir} is not a fold folder of bench/lora_cv.py"
                        + (f" (it holds {', '.join(foreign[:3])})" if foreign else "") + ": use another --out or remove it")
    if (fold_dir / "data").exists() and not (fold_dir / "data" / "dataset_dict.json").is_file() \
            and any((fold_dir / "data").iterdir()):
        raise UserError(f"{fold_dir / 'data'} holds files that are not a fold's dataset: use another --out or remove it")
    if (fold_dir / "data").exists() and not marker.is_file() and (breadcrumb or fine):
        raise UserError(f"{fold_dir} holds data written without --breadcrumb or --fine: use another --out or "
                        "remove it")
    if marker.is_file():
        try:
            seen = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            seen = None
        if not isinstance(seen, dict) or not isinstance(seen.get("breadcrumb"), bool):
            raise UserError(f"{marker} is not a fold marker of bench/lora_cv.py: use another --out or remove it")
        if seen["breadcrumb"] != breadcrumb:
            raise UserError(f"{fold_dir} holds data written {'without' if breadcrumb else 'with'} --breadcrumb: "
                            f"use another --out or remove it")
        if seen.get("fine", False) != fine:
            raise UserError(f"{fold_dir} holds data written {'without' if fine else 'with'} --fine: "
                            f"use another --out or remove it")
    fold_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(marker, json.dumps({"breadcrumb": breadcrumb, "fine": fine}) + "\n")


def summarize(rows: dict[int, dict]) -> dict:
    out = {}
    for model in MODELS:
        for split in ("validation", "test"):
            for key in ("macro_f1", "accuracy"):
                vals = [r[model][split][key] for r in rows.values()]
                out[f"{model}_{split}_{key}"] = {"mean": round(float(np.mean(vals)), 4),
                                                 "std": round(float(np.std(vals)), 4),
                                                 "min": round(min(vals), 4), "max": round(max(vals), 4)}
    out["lora_train_seconds_mean"] = round(float(np.mean([r["lora_train_seconds"] for r in rows.values()])), 1)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/lora_cv")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--folds_to_run", type=int, nargs="*", default=None,
                   help="run only these fold numbers (0-based); the summary covers every finished fold")
    p.add_argument("--breadcrumb", action="store_true",
                   help="texts end with the shop's breadcrumb (the builder's MWPD default)")
    p.add_argument("--fine", action="store_true",
                   help="the fold data holds each offer's GS1 level-3 class, so the linear model learns level-3 "
                        "sub-classes (its default on builder-made MWPD 6-class datasets)")
    from bench.lora_minilm import add_embed_model_arg

    add_embed_model_arg(p, "the linear model also reads this encoder's sentence embeddings")
    args, lora_argv = p.parse_known_args(argv)
    from category_classification.core.artifacts import check_results_folder

    out = Path(args.out)
    check_results_folder(out, "cv.json", ("per_fold", "summary"), "bench/lora_cv.py", folders=[REPO / "data"])
    check_folds(args.folds)
    wrong = [k for k in args.folds_to_run or () if not 0 <= k < args.folds]
    if wrong:
        raise UserError(f"--folds_to_run {' '.join(map(str, wrong))}: the folds are numbered 0 to {args.folds - 1}")
    texts, names, y, groups, fine = bundled_offers("six", breadcrumb=args.breadcrumb)
    fine = fine if args.fine else None
    folds = grouped_folds(y, groups, args.folds)
    print(f"{len(texts):,} offers, {len(names)} classes, {args.folds} grouped folds -> {out}", flush=True)
    rows = {}
    for k, (train_idx, test_idx) in enumerate(folds):
        fold_dir = out / f"fold{k}"
        done = fold_dir / "fold.json"
        if done.is_file():
            rows[k] = finished_fold(done, lora_argv, args.breadcrumb, args.fine, args.embed_model)
            print(f"fold {k}: reused {done}", flush=True)
            continue
        if args.folds_to_run is not None and k not in args.folds_to_run:
            continue
        check_fold_text(fold_dir, args.breadcrumb, args.fine)
        if not (fold_dir / "data" / "dataset_dict.json").is_file():
            write_fold_data(fold_dir / "data", texts, names, y, groups, train_idx, test_idx, seed=k, fine=fine)
        print(f"fold {k}: {len(train_idx):,} train+validation / {len(test_idx):,} test offers", flush=True)
        rows[k] = run_fold(fold_dir, lora_argv, args.breadcrumb, args.fine, args.embed_model)
    if not rows:
        print("no finished fold yet")
        return 1
    summary = {"folds": args.folds, "finished_folds": sorted(rows), "lora_args": lora_argv,
               "breadcrumb": args.breadcrumb, "fine": args.fine, "embed_model": args.embed_model, "per_fold": rows, "summary": summarize(rows)}
    write_text_atomic(out / "cv.json", json.dumps(summary, indent=2) + "\n")
    print(f"\n{'model':<12}" + "".join(f"{'fold ' + str(k):>9}" for k in sorted(rows))
          + f"{'mean':>9}{'std':>8}   (test macro-F1; validation mean)")
    for model in MODELS:
        s = summary["summary"]
        print(f"{model:<12}" + "".join(f"{rows[k][model]['test']['macro_f1']:>9.4f}" for k in sorted(rows))
              + f"{s[f'{model}_test_macro_f1']['mean']:>9.4f}{s[f'{model}_test_macro_f1']['std']:>8.4f}"
              + f"   val {s[f'{model}_validation_macro_f1']['mean']:.4f}")
    print(f"LoRA training: {summary['summary']['lora_train_seconds_mean']:.0f} s per fold on average")
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
