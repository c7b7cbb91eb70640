"""Average the probabilities of trained models into one ensemble model directory, and score it.

    python category_classification/build_ensemble.py --models runs/lora_minilm runs/linear --data runs/mwpd6 \
        --out runs/ensemble

The members keep their own folders (the ensemble stores where they are); predict.py, evaluate.py and
serve.py load the ensemble like any model. With --data it scores every member and the ensemble on the
validation and test splits and writes metrics.json, results_category.txt and the confusion matrices.
Weights are equal unless --weights is given: pick them on validation, never on test.
"""

import argparse
import sys
import time

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError, add_eval_args, run
from category_classification.core.env import stay_offline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="two or more trained model directories")
    p.add_argument("--weights", nargs="+", type=float, default=None,
                   help="one weight per model (normalised to sum 1); default equal")
    p.add_argument("--out", required=True, help="ensemble directory to write")
    p.add_argument("--data", default=None, help="dataset directory: score the members and the ensemble")
    p.add_argument("--splits", nargs="+", default=["validation", "test"])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (torch members)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch / onnxruntime members")
    add_eval_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    stay_offline()  # models come from their folders, never the hub
    check_model_out(args.out, [*args.models, args.data], kinds=("ensemble",))
    from category_classification.core.artifacts import read_model_info
    from category_classification.inference.ensemble import write_ensemble
    from category_classification.inference.predictors import load_predictor

    # the dataset and its splits are checked before the ensemble is written: a run that ends in a user error
    # leaves no new ensemble behind (nor one replaced by it)
    splits = dataset_splits(args, read_model_info(args.models[0])["labels"]) if args.data else None
    write_ensemble(args.out, args.models, args.weights, source_models=[str(m) for m in args.models])
    ens = load_predictor(args.out, device=args.device, batch_size=args.batch_size, threads=args.threads)
    print(f"{args.out}: ensemble of " + ", ".join(f"{m} (weight {w:.3f})" for m, w in zip(args.models, ens.weights)))
    if splits:
        score(ens, args, splits)
    return 0


def dataset_splits(args, model_labels) -> dict:
    """The --splits of --data, refused unless the dataset has them and the models' labels."""
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir

    dsd = load_dataset_dir(args.data)
    labels = label_names(dsd)
    if list(model_labels) != labels:
        raise UserError(f"the models' labels {list(model_labels)} differ from the dataset's {labels}")
    return {name: get_split(dsd, name) for name in args.splits}


def score(ens, args, splits: dict) -> None:
    from category_classification.data.dataset_dir import other_label_of, sources_of
    from category_classification.evaluate import predicted_labels
    from category_classification.evaluation import metrics as evaluation

    labels = ens.labels
    names = [str(m) for m in args.models]
    ens_metrics, members, seconds = {}, {n: {} for n in names}, 0.0
    for split_name, split in splits.items():
        t0 = time.perf_counter()
        scores = ens.member_scores(split["text"])  # each member runs once; the ensemble reuses them
        probas = [getattr(s, "probs", s) for s in scores]
        seconds += time.perf_counter() - t0
        for n, s in zip(names, scores):  # each member's own label (a level kind's is its path's, as evaluate.py)
            m = evaluation.compute_metrics(split["label"], predicted_labels(s, labels, labels)[1], labels)
            members[n][split_name] = {k: m[k] for k in ("macro_f1", "accuracy", "n")}
        probs = ens.combine(probas)
        pred = probs.argmax(axis=1).tolist()
        ens_metrics[split_name] = evaluation.add_open_set(  # the open-set figures, as evaluate.py gives them
            evaluation.evaluate_split(split, pred, labels, **evaluation.eval_options(args)), split["label"], pred,
            labels, other_label_of(args.data), probs, sources_of(split))
    width = max(len("ensemble"), *map(len, names))
    print(f"{'model':<{width}}  " + "  ".join(f"{s + ' macro-F1 / acc':>28}" for s in args.splits))
    rows = [(n, members[n]) for n in names] + [("ensemble", ens_metrics)]
    for n, figs in rows:
        print(f"{n:<{width}}  " + "  ".join(f"{figs[s]['macro_f1']:>19.4f} / {figs[s]['accuracy']:.4f}"
                                             for s in args.splits))
    for split_name, m in ens_metrics.items():
        if m.get("open_set"):
            print(f"ensemble [{split_name}] " + evaluation.format_open_set(m["open_set"]))
    config = {"models": names, "weights": ens.weights, "data": str(args.data)}
    evaluation.write_results(args.out, "ensemble", config, ens_metrics, labels,
                             extra={"members": members, "predict_seconds": round(seconds, 2)})
    print(f"results written to {args.out}")


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
