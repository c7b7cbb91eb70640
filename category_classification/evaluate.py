"""The shared metrics for any trained model directory on any split of a built dataset.

    python category_classification/evaluate.py --model runs/linear --data runs/mwpd6 --split test
    python category_classification/evaluate.py --model runs/encoder --data runs/mwpd6 --split validation --target_precision 0.98

With --target_precision or --target_coverage it also picks the "none of these" threshold on that split
(use validation, never test) and prints coverage and precision at a few thresholds. On a dataset built with
--label_level all, a model that predicts the GS1 levels also gets the MWPD official figures (`gs1`).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from category_classification.core.cli import UserError, add_eval_args, run
from category_classification.core.env import stay_offline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained model directory (holds category_model.json)")
    p.add_argument("--data", required=True, help="dataset directory written by build_lspc_dataset.py")
    p.add_argument("--split", default="test")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (torch models)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None, help="ONNX directories only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None,
                   help="write metrics.json, results_category.txt and the confusion matrix here")
    p.add_argument("--save_preds", default=None, help="write per-offer predictions (JSONL) here")
    p.add_argument("--titles_only", action="store_true",
                   help="score each offer as its title alone (the dataset's text_title column): how the model does "
                        "on offers that arrive as a name only (predict.py --text, a feed of product names)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target_precision", type=float, default=None,
                   help="pick the lowest threshold whose kept predictions reach this precision")
    t.add_argument("--target_coverage", type=float, default=None,
                   help="pick the threshold that keeps this share of offers")
    add_eval_args(p)
    return p


def dataset_columns(model_labels, data_labels) -> list[int]:
    """The dataset's label index of each model label: a model may know fewer classes than the dataset (one
    trained on files without the test-only classes), never others."""
    unknown = [x for x in model_labels if x not in data_labels]
    if unknown:
        raise UserError(f"the model's labels {list(model_labels)} differ from the dataset's {data_labels} "
                        f"(not in the dataset: {', '.join(unknown[:10])})")
    return [data_labels.index(x) for x in model_labels]


def predicted_labels(scores, model_labels, data_labels) -> tuple:
    """(probabilities over the dataset's labels, predicted label index per offer, its probability, GS1 level
    predictions by name or None). A level kind's label is its first level's choice and its probability that
    label's, as in predictor.predict (path decoding need not choose the first level's most probable label)."""
    import numpy as np

    levels = getattr(scores, "levels", None)
    probs = scores.probs if levels is not None else scores
    columns = dataset_columns(model_labels, data_labels)
    wide = np.zeros((len(probs), len(data_labels)), dtype=np.float32)
    wide[:, columns] = probs
    if levels is None:
        return wide, wide.argmax(axis=1).tolist(), wide.max(axis=1), None
    first_names, first_p = next(iter(levels.values()))
    return (wide, [data_labels.index(x) for x in first_names], np.asarray(first_p, dtype=np.float64),
            {lv: names for lv, (names, _) in levels.items()})


def model_texts(split, settings: dict) -> list:
    """The split's texts as the model's predict.py builds them from the offers' fields (core/artifacts
    .text_settings): a model trained without the breadcrumb reads a breadcrumb dataset's `text_bare`, a
    fielded model gets the breadcrumb behind its marker (the text is `text_bare` + " | " + breadcrumb); else
    the texts as they are."""
    texts = split["text"]
    if "text_bare" not in split.column_names or not (settings.get("fielded") or not settings.get("breadcrumb")):
        return texts
    from category_classification.data.text import BREADCRUMB_SEPARATOR, text_problem
    from category_classification.models.fielded import add_fields

    out = []
    for text, bare in zip(texts, split["text_bare"]):
        if (not isinstance(bare, str) or not isinstance(text, str) or not text.startswith(bare)
                or text_problem(bare)):
            out.append(text)  # a hand-made column (a bare text missing, or blank as missing): the text as it is
        elif not settings.get("fielded"):
            out.append(bare)
        else:
            crumb = text[len(bare) + len(BREADCRUMB_SEPARATOR):] if text.startswith(bare + BREADCRUMB_SEPARATOR) else ""
            out.append(add_fields(bare, crumb))
    return out


def title_texts(split, data, rows=None) -> tuple:
    """(the split's titles alone (its text_title column), for --titles_only; the split and its dataset rows
    without the offers whose title no model can be given). A missing, non-text or blank title (a hand-made
    column: docs/data.md) is skipped and counted in a note, as predict.py skips a blank text: one such offer
    once refused the whole run, and a blank one was scored as if a model had been asked."""
    import numpy as np

    from category_classification.data.builder import TEXT_TITLE_COLUMN
    from category_classification.data.text import text_problem

    if TEXT_TITLE_COLUMN not in split.column_names:
        raise UserError(f"--titles_only needs a dataset with a {TEXT_TITLE_COLUMN} column; {data} was built before it "
                        "existed (or by hand): rebuild it with build_lspc_dataset.py")
    rows = np.arange(len(split)) if rows is None else np.asarray(rows)
    texts = split[TEXT_TITLE_COLUMN]
    bad = [i for i, t in enumerate(texts) if text_problem(t) is not None]
    if not bad:
        return texts, split, rows
    print(f"note: skipped {len(bad)} offers without a usable {TEXT_TITLE_COLUMN} (missing, not a text or blank): "
          f"rows {', '.join(str(int(rows[i])) for i in bad[:5])}" + (" ..." if len(bad) > 5 else ""))
    kept = np.setdiff1d(np.arange(len(texts)), bad)
    if not kept.size:
        raise UserError(f"no offer of {data} has a usable {TEXT_TITLE_COLUMN}: nothing to score with --titles_only")
    return [texts[i] for i in kept], split.select(kept, keep_in_memory=True), rows[kept]


def gs1_block(split, level_preds, evaluation) -> dict | None:
    """The MWPD official figures (weighted and macro F1 per GS1 level, their averages) when the split has
    the level columns and the model predicted every one of them."""
    levels = ("lvl1", "lvl2", "lvl3")
    if not level_preds or not all(lv in split.column_names and lv in level_preds for lv in levels):
        return None
    truth = {lv: [split.features[lv].names[i] for i in split[lv]] for lv in levels}
    return evaluation.gs1_metrics(truth, {lv: level_preds[lv] for lv in levels})


def refit_on(model_dir, split: str, data) -> str | None:
    """Which model (the model or a member of an ensemble) was refit on train + validation of which dataset, when `split` is
    the validation split of that dataset (or of one whose path cannot be compared: a relative path written
    elsewhere); else None."""
    from category_classification.core.artifacts import read_model_info
    from category_classification.inference.ensemble import KIND, member_dirs

    if split != "validation":
        return None
    try:
        info = read_model_info(model_dir)
        models = [(model_dir, info)] if info.get("kind") != KIND else \
            [(d, read_model_info(d)) for d in member_dirs(model_dir, info)]
    except (UserError, OSError):
        return None
    for folder, i in models:
        trained = str(i.get("data") or "")
        same = not trained or not Path(trained).exists() or Path(trained).resolve() == Path(data).resolve()
        if i.get("refit") is True and same:
            return f"{folder} was refit on train + validation of {trained or 'its dataset'}"
    return None


def main(argv=None):
    args = build_parser().parse_args(argv)
    stay_offline()  # models come from their folders, never the hub
    from category_classification.core.artifacts import text_settings
    from category_classification.evaluation import metrics as evaluation
    from category_classification.data.dataset_dir import (build_report, label_names, load_dataset_dir, other_label_of,
                                                           sources_of, usable_split)
    from category_classification.inference.predictors import choose_threshold, load_predictor, threshold_table

    for name in ("target_precision", "target_coverage"):
        v = getattr(args, name)
        if v is not None and not 0.0 < v <= 1.0:
            raise UserError(f"--{name} is a share between 0 and 1")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    check_outputs(args)  # before the model loads: a bad --out or --save_preds costs nothing
    dsd = load_dataset_dir(args.data)
    split, rows = usable_split(dsd, args.split)
    data_labels = label_names(dsd)
    predictor = load_predictor(args.model, device=args.device, batch_size=args.batch_size,
                               precision=args.precision, threads=args.threads)
    dataset_columns(predictor.labels, data_labels)  # before the work
    trained_on_it = refit_on(args.model, args.split, args.data)
    if trained_on_it:
        print(f"note: {trained_on_it} (--refit): the {args.split} figures (and a threshold chosen on them) "
              "describe offers it was trained on; use models trained without --refit for that", file=sys.stderr)
    settings = text_settings(args.model)
    built = build_report(args.data).get("config", {}).get("max_description_chars")
    if isinstance(built, int) and built != settings["max_description_chars"] and not args.titles_only:
        print(f"note: {args.data} cut descriptions to {built} characters (0: whole), the model's texts to "
              f"{settings['max_description_chars']}: it is scored on texts predict.py would not build for it; build "
              f"the dataset with --max_description_chars {settings['max_description_chars']} for its figures",
              file=sys.stderr)
    if settings["fielded"]:
        print("note: a dataset holds no URLs: the fielded model is scored on title, description and breadcrumb; "
              "its figures with URL words come from its trainer (MWPD files)", file=sys.stderr)
    if args.titles_only:
        texts, split, rows = title_texts(split, args.data, rows)
    else:
        texts = model_texts(split, settings)
    t0 = time.perf_counter()
    scores = predictor.scores(texts)
    seconds = time.perf_counter() - t0
    probs, preds, chosen, level_preds = predicted_labels(scores, predictor.labels, data_labels)
    m = evaluation.evaluate_split(split, preds, data_labels, **evaluation.eval_options(args))
    # a dataset with an out-of-scope class gets the open-set figures the trainers report (README's yardstick)
    evaluation.add_open_set(m, split["label"], preds, data_labels, other_label_of(args.data), probs, sources_of(split))
    gs1 = gs1_block(split, level_preds, evaluation)
    if gs1:
        m["gs1"] = gs1
    desc = predictor.describe()
    name = f"{desc['kind']}:{desc['runtime']}"
    shown = f"{args.split}, titles alone" if args.titles_only else args.split
    print(evaluation.format_metrics(m, data_labels, title=f"{name} on {shown} ({args.model})"))
    if m.get("open_set"):
        print(evaluation.format_open_set(m["open_set"]))
    if gs1:
        print(f"MWPD avg weighted F1 {gs1['avg_weighted_f1']:.4f} ("
              + ", ".join(f"{lv} {gs1[lv]['weighted_f1']:.4f}" for lv in ("lvl1", "lvl2", "lvl3")) + ")")
    print(f"{len(preds)} offers in {seconds:.2f}s ({len(preds) / max(seconds, 1e-9):.0f} titles/s)")
    extra = {"eval_seconds": round(seconds, 3), "model_dir": str(args.model)}
    if args.target_precision is not None or args.target_coverage is not None:
        pick = choose_threshold(probs, split["label"], target_precision=args.target_precision,
                                target_coverage=args.target_coverage, chosen=(preds, chosen))
        print("threshold  coverage  precision")
        for row in threshold_table(probs, split["label"], chosen=(preds, chosen)):
            print(f"{row['threshold']:>9.2f}  {row['coverage']:>8.4f}  {row['precision']:>9.4f}")
        print(f"chosen threshold {pick['threshold']:.4f}: keeps {pick['coverage']:.2%} of {args.split} offers, "
              f"{pick['precision']:.4f} of them correct (pass --threshold {pick['threshold']:.4f})")
        extra["threshold"] = pick
    if args.out:
        evaluation.write_results(args.out, name, {"model": str(args.model), "split": args.split,
                                                  "titles_only": bool(args.titles_only)},
                                 {args.split: m}, data_labels, extra=extra)
        print(f"results written to {args.out}")
    if args.save_preds:
        from category_classification.core.artifacts import write_text_atomic
        from category_classification.data.records import OFFER_ID_COLUMN
        from category_classification.data.text import id_text

        lines = []
        # offer_id: the offer's own id (datasets built since it existed), which joins the line back to its offer;
        # as text, as the builder writes it (a hand-made column of bytes or dates was a TypeError after the scoring)
        ids = [id_text(v) for v in split[OFFER_ID_COLUMN]] if OFFER_ID_COLUMN in split.column_names else None
        for i, (y, p, score) in enumerate(zip(split["label"], preds, chosen)):
            # `row`: the offer's row in the split, which skipped offers (no text or label) would otherwise shift
            rec = {"row": int(rows[i]), **({"offer_id": ids[i]} if ids is not None else {}), "label": int(y),
                   "pred": int(p), "label_name": data_labels[int(y)], "pred_name": data_labels[int(p)],
                   "score": float(score)}
            if level_preds:
                rec["levels"] = {lv: names[i] for lv, names in level_preds.items()}
            lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
        write_text_atomic(args.save_preds, "".join(lines))
    return 0


EVAL_FILES = ("metrics.json", "results_category.txt")  # with confusion_matrix*.png and open_set_*.png


def _our_eval_file(name: str) -> bool:
    return name in EVAL_FILES or (name.endswith(".png") and name.startswith(("confusion_matrix", "open_set_")))


def check_outputs(args) -> None:
    """--out (a folder of evaluation results) and --save_preds (a JSONL file) may not be, or lie inside,
    the model or the dataset (a trainer's metrics.json is the model's record), nor hold a user's files."""
    from pathlib import Path

    from category_classification.core.artifacts import check_file_out, jsonl_first_line_has, refuse_inside

    for flag, path in (("--out", args.out), ("--save_preds", args.save_preds)):
        if path:
            refuse_inside(flag, path, (args.model, args.data))
    if args.save_preds:
        check_file_out(args.save_preds, [args.model, args.data], lambda p: jsonl_first_line_has(p, ("label", "pred", "score")),
                       "predictions file of evaluate.py")
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; results go into a folder: name a new one")
        if out.is_dir() and any(not _our_eval_file(e.name) for e in out.iterdir()):
            raise UserError(f"--out {out} holds files evaluate.py did not write; name a new or empty folder")


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
