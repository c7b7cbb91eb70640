"""The main job on the bundled real data (`make demo`): build, train, evaluate, compare, classify.

Builds the 6-class dataset from data/mwpd, trains the fast linear default and the small
from-scratch encoder, prints their test figures side by side and classifies a few example titles.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from category_classification.core.cli import run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [
    "Michelin Pilot Sport 4 225/45 R17 94Y summer tyre",
    "Pampers Baby-Dry nappies size 4, 9-14 kg, 174 pack",
    "The Hobbit by J.R.R. Tolkien, paperback, 320 pages",
    "Levi's 501 Original Fit men's jeans, stonewash blue",
    "14k white gold diamond stud earrings 0.50 ct",
    "Nike Air Zoom Pegasus 39 men's road running shoes",
    "Chaussures de randonnée femme imperméables, cuir marron",
    "Samsung Galaxy S21 5G smartphone 128GB",  # none of the 6 classes: see the threshold column
]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder for the dataset and the models")
    p.add_argument("--mwpd_dir", default=str(REPO / "data" / "mwpd"))
    p.add_argument("--skip_encoder", action="store_true", help="only the linear default")
    p.add_argument("--threshold", type=float, default=0.5, help="below this probability: no label")
    return p


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def main(argv=None) -> int:
    from category_classification import build_lspc_dataset, train_linear_baseline

    args = build_parser().parse_args(argv)
    runs = Path(args.runs)
    data = runs / "mwpd6"
    mwpd = Path(args.mwpd_dir)
    timings = {}

    t = _step("build the 6-class dataset from the bundled MWPD offers")
    code = build_lspc_dataset.main(["--mwpd", str(mwpd / "train.json.gz"), str(mwpd / "validation.json.gz"),
                                    "--out", str(data), "--add_language",
                                    # a larger validation/test share than the LSPC default: 7k offers only
                                    "--val_size", "0.10", "--test_size", "0.15"])
    if code:
        return code
    timings["build"] = time.perf_counter() - t

    models = {}
    t = _step("train the fast linear default (hashed n-grams + LinearSVC)")
    code = train_linear_baseline.main(["--data", str(data), "--out", str(runs / "linear")])
    if code:
        return code
    models["linear"] = runs / "linear"
    timings["linear"] = time.perf_counter() - t

    if not args.skip_encoder:
        from category_classification import train_embedding_classifier

        t = _step("train the small from-scratch encoder (--preset small)")
        code = train_embedding_classifier.main(["--data", str(data), "--out", str(runs / "encoder_small"),
                                                "--preset", "small"])
        if code:
            return code
        models["encoder small"] = runs / "encoder_small"
        timings["encoder small"] = time.perf_counter() - t

    _step("test-split figures (macro-F1 is the headline: the classes are very unbalanced)")
    print(f"{'model':<16} {'macro_f1':>9} {'accuracy':>9} {'val macro_f1':>13} {'step time':>10}")
    for name, d in models.items():
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        val = m.get("validation", {}).get("macro_f1", float("nan"))
        print(f"{name:<16} {m['test']['macro_f1']:>9.4f} {m['test']['accuracy']:>9.4f} {val:>13.4f} "
              f"{timings[name]:>9.1f}s")
    for name, d in models.items():
        print(f"{name}: {d / 'results_category.txt'} and {d / 'confusion_matrix.png'}")

    _step(f"classify example titles (label '-' when the top probability is under {args.threshold}: "
          "none of the trained classes, or unsure)")
    from category_classification.inference.predictors import load_predictor

    for name, d in models.items():
        predictor = load_predictor(d)
        print(f"[{name}]")
        for title, r in zip(EXAMPLES, predictor.predict(EXAMPLES, top_k=2, threshold=args.threshold)):
            second = r["top_k"][1] if len(r["top_k"]) > 1 else None
            alt = f"  (then {second['label']} {second['prob']:.2f})" if second else ""
            shown = r["label"] or f"-({r['top_k'][0]['label']})"  # below the threshold: top guess in brackets
            print(f"  {shown:<13} {r['score']:.2f}  {title}{alt}")
    print(f"\ndone in {sum(timings.values()):.0f}s; outputs under {runs}/")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
