"""The main job on the bundled real data (`make demo`): build, train, evaluate, compare, classify.

Builds two datasets from data/mwpd (train file -> train/validation, the official 3,000-offer validation
file -> test): the 6 classes alone, and the 6 classes plus every other offer as `Other`. Trains the fast
linear default on both (refit on train + validation), optionally the small encoder, prints the closed
6-class figures beside the open-set ones and classifies example titles, some from other categories.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from category_classification.core.cli import run

REPO = Path(__file__).resolve().parents[1]
# Written before any model was trained and never changed to suit one: plainly classifiable titles of the
# six classes, and products of other categories that a crawl is full of.
EXAMPLES = [
    "Michelin Pilot Sport 4 225/45 R17 94Y summer tyre",
    "Pampers Baby-Dry nappies size 4, 9-14 kg, 174 pack",
    "The Hobbit by J.R.R. Tolkien, paperback, 320 pages",
    "Levi's 501 Original Fit men's jeans, stonewash blue",
    "14k white gold diamond stud earrings 0.50 ct",
    "Nike Air Zoom Pegasus 39 men's road running shoes",
    "Chaussures de randonnée femme imperméables, cuir marron",
    "Samsung Galaxy S21 5G smartphone 128GB",  # other categories from here on
    "KIVIK 3-seat sofa, Hillared dark blue fabric",
    "Bosch PSB 500 RE hammer drill 500 W",
]
OTHER = "Other"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder for the datasets and the models")
    p.add_argument("--mwpd_dir", default=str(REPO / "data" / "mwpd"))
    p.add_argument("--skip_encoder", action="store_true", help="only the linear default")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="closed 6-class model: below this probability, no label")
    return p


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def build(mwpd: Path, out: Path, other: bool) -> int:
    from category_classification import build_lspc_dataset

    argv = ["--mwpd", str(mwpd / "train.json.gz"), "--mwpd_test", str(mwpd / "validation.json.gz"),
            "--out", str(out), "--val_size", "0.10", "--quiet"]
    return build_lspc_dataset.main(argv + (["--other_label", OTHER] if other else []))


def train(runs: Path, timings: dict, skip_encoder: bool) -> dict:
    """Train the linear default on both datasets (and the encoder on the 6 classes); name -> model folder."""
    from category_classification import train_linear_baseline

    models = {}
    for name, data in (("linear (6 classes)", "mwpd6"), ("linear + Other", "mwpd6_other")):
        t = _step(f"train the fast linear default on {data}, refit on train + validation")
        out = runs / data.replace("mwpd6", "linear")
        if train_linear_baseline.main(["--data", str(runs / data), "--out", str(out), "--refit",
                                       "--no_lang_metrics"]):
            raise SystemExit(1)
        models[name] = out
        timings[name] = time.perf_counter() - t
    if not skip_encoder:
        from category_classification import train_embedding_classifier

        t = _step("train the small from-scratch encoder on the 6 classes (--preset small)")
        out = runs / "encoder_small"
        if train_embedding_classifier.main(["--data", str(runs / "mwpd6"), "--out", str(out), "--preset", "small",
                                            "--no_lang_metrics"]):
            raise SystemExit(1)
        models["encoder small"] = out
        timings["encoder small"] = time.perf_counter() - t
    return models


def show_figures(models: dict, timings: dict) -> None:
    _step("figures on the MWPD validation file, never trained or tuned on (macro-F1 is the headline)")
    print(f"{'model':<20} {'6-class macro_f1':>16} {'accepted_prec':>13} {'in_scope_rec':>12} "
          f"{'other_accepted':>14} {'step time':>10}")
    for name, d in models.items():
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))["test"]
        o = m.get("open_set")
        if o:  # 6-class macro-F1 on the in-scope offers, an Other answer counted wrong
            row = f"{o['target_macro_f1']:>16.4f} {o['accepted_precision']:>13.4f} {o['in_scope_recall']:>12.4f} " \
                  f"{o['out_of_scope_accept_rate']:>14.4f}"
        else:
            row = f"{m['macro_f1']:>16.4f} {'-':>13} {m['accuracy']:>12.4f} {'(all)':>14}"
        print(f"{name:<20} {row} {timings[name]:>9.1f}s")
    print("closed models: in_scope_rec is accuracy on in-scope offers; they label every out-of-scope offer "
          "(other_accepted = all of them). Open set: accepted_prec = share of given labels that are right.")
    for name, d in models.items():
        print(f"{name}: {d / 'results_category.txt'}, {d / 'confusion_matrix.png'}")


def show_examples(models: dict, threshold: float) -> None:
    from category_classification.models.registry import load_predictor

    _step(f"classify example titles (closed models: '-' when the top probability is under {threshold}; "
          f"the open model answers {OTHER} itself)")
    for name, d in models.items():
        predictor = load_predictor(d)
        open_set = OTHER in predictor.labels
        print(f"[{name}]")
        for title, r in zip(EXAMPLES, predictor.predict(EXAMPLES, top_k=2, threshold=None if open_set else threshold)):
            second = r["top_k"][1] if len(r["top_k"]) > 1 else None
            alt = f"  (then {second['label']} {second['prob']:.2f})" if second else ""
            shown = r["label"] or f"-({r['top_k'][0]['label']})"  # below the threshold: top guess in brackets
            print(f"  {shown:<13} {r['score']:.2f}  {title}{alt}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    runs, mwpd = Path(args.runs), Path(args.mwpd_dir)
    timings = {}
    t = _step("build the datasets from the bundled MWPD offers (6 classes; 6 classes + Other)")
    for name, other in (("mwpd6", False), ("mwpd6_other", True)):
        if build(mwpd, runs / name, other):
            return 1
    timings["build"] = time.perf_counter() - t
    models = train(runs, timings, args.skip_encoder)
    show_figures(models, timings)
    show_examples(models, args.threshold)
    print(f"\ndone in {sum(timings.values()):.0f}s; outputs under {runs}/")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
