"""Train the fast default classifier (n-gram features + linear SVM) on a built dataset.

    python category_classification/train_linear_baseline.py --data runs/mwpd6 --out runs/linear
Fits on `train`, calibrates probabilities on `validation`, evaluates both and `test`.
"""

import argparse
import sys
import time
from dataclasses import asdict

from category_classification.core.cli import add_eval_args, run
from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
from category_classification.evaluation.metrics import evaluate_split, eval_options, format_metrics, write_results
from category_classification.models.linear import LinearConfig, LinearTextClassifier


def build_parser() -> argparse.ArgumentParser:
    d = LinearConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="DatasetDict directory from build_lspc_dataset.py")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--features", choices=["hashed", "tfidf"], default=d.features,
                   help="hashed: numpy n-gram hashing (fast, default); tfidf: scikit-learn vectorizers")
    p.add_argument("--hash_bits", type=int, default=d.hash_bits, help="2**bits columns per block (hashed)")
    p.add_argument("--word_ngrams", type=int, nargs=2, default=list(d.word_ngrams), metavar=("MIN", "MAX"))
    p.add_argument("--char_ngrams", type=int, nargs=2, default=list(d.char_ngrams), metavar=("MIN", "MAX"))
    p.add_argument("--char_min_df", type=int, default=d.char_min_df)
    p.add_argument("--C", type=float, default=d.C, help="inverse regularisation strength of the SVM")
    p.add_argument("--class_weight", choices=["balanced", "none"], default=d.class_weight or "none")
    p.add_argument("--seed", type=int, default=d.seed)
    add_eval_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    dsd = load_dataset_dir(args.data)
    labels = label_names(dsd)
    train = get_split(dsd, "train")
    cfg = LinearConfig(features=args.features, word_ngrams=tuple(args.word_ngrams),
                       char_ngrams=tuple(args.char_ngrams), char_min_df=args.char_min_df,
                       hash_bits=args.hash_bits, C=args.C,
                       class_weight=None if args.class_weight == "none" else args.class_weight,
                       seed=args.seed)
    print(f"training linear model on {len(train)} offers, {len(labels)} classes")
    t0 = time.perf_counter()
    model = LinearTextClassifier(labels, cfg).fit(train["text"], train["label"])
    train_seconds = time.perf_counter() - t0
    print(f"trained in {train_seconds:.1f}s")

    metrics = {}
    if "validation" in dsd and len(dsd["validation"]):
        val = dsd["validation"]
        model.calibrate(val["text"], val["label"])
        metrics["validation"] = evaluate_split(val, model.predict(val["text"]), labels, **eval_options(args))
    if "test" in dsd and len(dsd["test"]):
        test = dsd["test"]
        metrics["test"] = evaluate_split(test, model.predict(test["text"]), labels, **eval_options(args))

    model.save(args.out, train_seconds=round(train_seconds, 2), data=str(args.data),
               figures={s: {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]} for s, m in metrics.items()})
    write_results(args.out, f"linear ({cfg.features} n-grams + LinearSVC)", asdict(cfg), metrics, labels,
                  extra={"train_seconds": round(train_seconds, 2), "train_size": len(train),
                         "temperature": model.temperature})
    for split, m in metrics.items():
        print(format_metrics(m, labels, title=f"[{split}]"))
    print(f"model, metrics.json and results_category.txt written to {args.out}")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
