"""Train the MWPD best model (models/fielded.py: per-field TF-IDF, one linear SVM per GS1 level, path decoding)
on MWPD-format offer files (JSON lines with Name, Description, CategoryText, URL, lvl1, lvl2, lvl3).

    python category_classification/train_fielded_linear.py --data data/mwpd/train.json.gz \
        --validation data/mwpd/validation.json.gz --out runs/fielded --refit
Fits on --data, calibrates each level's probabilities on --validation and scores it there (weighted and macro
F1 per level), then with --refit fits again on both files with those temperatures. --label_level six trains
the toolkit's 6 classes instead (offers of other classes are left out).
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError, add_dataclass_args, dataclass_from_args, run
from category_classification.data.lspc import parse_json_object
from category_classification.data.mwpd import gs1_label
from category_classification.data.text import TITLE_FIELDS, clean, offer_field
from category_classification.models.fielded import (FieldedConfig, FieldedLinear, mwpd_fielded_text, mwpd_title_text,
                                                     split_fields)

LEVEL_SETS = {"all": ("lvl1", "lvl2", "lvl3"), "six": ("six",), "lvl1": ("lvl1",), "lvl2": ("lvl2",),
              "lvl3": ("lvl3",)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="MWPD-format training offers (JSON lines, plain or .gz)")
    p.add_argument("--validation", default=None, help="MWPD-format offers for calibration and scoring")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--label_level", choices=list(LEVEL_SETS), default="all",
                   help="all: GS1 lvl1 > lvl2 > lvl3 (label = lvl1); six: the toolkit's 6 classes")
    p.add_argument("--refit", action="store_true", help="after calibration, fit again on --data + --validation")
    add_dataclass_args(p.add_argument_group("model (FieldedConfig)"), FieldedConfig)
    return p


def read_offers(path, levels, counts: Counter, codes: bool = False,
                allow_none: bool = False) -> list[tuple[str, dict, str]]:
    """(model text, {level: label name}, the title alone as a model text) per usable offer; bad lines, blank texts and unlabelled offers are
    counted in `counts` and skipped. `codes`: GS1 level labels as written in the file ("67000000_Clothing").
    `allow_none`: a file with no usable offer gives [] instead of a user error."""
    from category_classification.data.mwpd import file_lines

    out = []
    for raw in file_lines(path, counts):
        offer = parse_json_object(raw, counts) if raw.strip() else None
        if offer is None:
            continue
        text, title = mwpd_fielded_text(offer), offer_field(offer, TITLE_FIELDS)
        labels = {lv: clean(offer.get(lv)) if codes and lv != "six" else gs1_label(offer, lv) for lv in levels}
        if not title:  # no title with text, by the rule predict.py reads offers by
            counts["no_title"] += 1
        elif not all(labels.values()):
            counts["outside_label_set"] += 1
        else:
            out.append((text, labels, mwpd_title_text(offer)))
    if not out and not allow_none:
        raise UserError(f"{path}: no usable offers ({dict(counts)})")
    return out


def check_offers_file(flag: str, path) -> None:
    """One line, before any work, for a --data/--validation that is not one MWPD-format offers file (a folder:
    a built dataset, which train_linear_baseline.py trains on)."""
    if path is None:
        return
    what = "one MWPD-format offers file (JSON lines, plain or .gz, e.g. data/mwpd/train.json.gz)"
    if Path(path).is_dir():
        raise UserError(f"{flag} {path} is a folder; {flag} takes {what}, not a built dataset folder "
                        "(train_linear_baseline.py trains on those)")
    if not Path(path).is_file():
        raise UserError(f"{flag} {path}: no such file; {flag} takes {what}")


def level_indices(offers, level_labels) -> dict:
    """level -> label index per offer (-1 for a label the model does not know)."""
    index = {lv: {name: i for i, name in enumerate(names)} for lv, names in level_labels.items()}
    return {lv: [index[lv].get(o[1][lv], -1) for o in offers] for lv in level_labels}


def score(model: FieldedLinear, offers) -> dict:
    """Weighted and macro F1 per level on labelled offers; labels unknown to the model count as misses."""
    from sklearn.metrics import f1_score

    probs = model.predict_levels([o[0] for o in offers])
    out = {}
    for lv, p in probs.items():
        gold = [o[1][lv] for o in offers]
        pred = [model.level_labels[lv][i] for i in p.argmax(axis=1)]
        out[lv] = {"weighted_f1": round(f1_score(gold, pred, average="weighted", zero_division=0), 4),
                   "macro_f1": round(f1_score(gold, pred, average="macro", zero_division=0), 4),
                   "accuracy": round(float(np.mean([g == q for g, q in zip(gold, pred)])), 4),
                   "unseen_labels": sorted(set(gold) - set(model.level_labels[lv]))}
    if len(out) > 1:
        out["avg_weighted_f1"] = round(float(np.mean([out[lv]["weighted_f1"] for lv in probs])), 4)
    return out


def fit(offers, levels, cfg: FieldedConfig) -> FieldedLinear:
    level_labels = {lv: sorted({o[1][lv] for o in offers}) for lv in levels}
    return FieldedLinear(level_labels, cfg).fit([o[0] for o in offers], level_indices(offers, level_labels),
                                                titles=[o[2] for o in offers])


def save_atomically(model: FieldedLinear, out, metrics: dict, **info) -> None:
    """Write the model into a folder inside `out`, then move each file into place by a rename
    (core/artifacts.staged_folder): a crash never leaves half a model, and files of `out` that are not the
    model's (a user's notes) are never touched."""
    from category_classification.core.artifacts import staged_folder

    with staged_folder(out) as stage:
        model.save(stage, **info)
        (stage / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def fit_calibrate_refit(train, calib, levels, cfg: FieldedConfig) -> tuple[FieldedLinear, dict]:
    """Fit on `train`, calibrate the temperatures and score on `calib`, refit on both with those temperatures."""
    model = fit(train, levels, cfg)
    model.calibrate([o[0] for o in calib], level_indices(calib, model.level_labels))
    metrics = score(model, calib)
    temperatures = model.temperatures
    model = fit(train + calib, levels, cfg)
    model.temperatures = temperatures
    return model, metrics


def benchmark_predictions(train_path, test_path, validation_path=None) -> dict:
    """For bench/mwpd_benchmark.py: {"lvl1"|"lvl2"|"lvl3": label per test offer, "six": label per six-class test
    offer}; GS1 labels as written in the files ("67000000_Clothing"). With a validation file: calibrated on it, refit on train + validation; without: calibrated
    on a grouped tenth of train (one title text never on both sides), refit on all of train. A test file
    without offers of the six classes gets no six-class model (and no "six" predictions)."""
    from category_classification.data.text import group_id, normalize_title

    out, counts = {}, Counter()
    for name in ("all", "six"):
        levels = LEVEL_SETS[name]
        test = read_offers(test_path, levels, counts, codes=True, allow_none=name == "six")
        if not test:
            out.update({lv: [] for lv in levels})
            continue
        train = read_offers(train_path, levels, counts, codes=True)
        if validation_path:
            calib = read_offers(validation_path, levels, counts, codes=True)
        else:
            held = [group_id(normalize_title(split_fields(o[0])[0])) % 10 == 0 for o in train]
            train, calib = [o for o, h in zip(train, held) if not h], [o for o, h in zip(train, held) if h]
        model, _ = fit_calibrate_refit(train, calib, levels, FieldedConfig())
        probs = model.predict_levels([o[0] for o in test])
        out.update({lv: [model.level_labels[lv][i] for i in p.argmax(axis=1)] for lv, p in probs.items()})
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for flag, path in (("--data", args.data), ("--validation", args.validation)):
        check_offers_file(flag, path)
    check_model_out(args.out, [args.data, args.validation], kinds=("fielded_linear",))
    levels = LEVEL_SETS[args.label_level]
    cfg = dataclass_from_args(FieldedConfig, args)
    if args.refit and not args.validation:
        raise UserError("--refit needs --validation (the offers to add after calibration)")
    counts = Counter()
    train = read_offers(args.data, levels, counts)
    val = read_offers(args.validation, levels, counts) if args.validation else []
    print(f"training {'/'.join(levels)} on {len(train)} offers" + (f", validation {len(val)}" if val else "")
          + (f"; skipped {dict(counts)}" if counts else ""))
    t0 = time.perf_counter()
    metrics = {}
    if args.refit:
        model, metrics["validation"] = fit_calibrate_refit(train, val, levels, cfg)
    else:
        model = fit(train, levels, cfg)
        if val:
            model.calibrate([o[0] for o in val], level_indices(val, model.level_labels))
            metrics["validation"] = score(model, val)
    if val:
        print("validation (before any refit):", json.dumps(metrics["validation"]))
    seconds = time.perf_counter() - t0
    print(f"trained in {seconds:.1f}s" + (" (including the refit on train + validation)" if args.refit else "")
          + (f"; fitted {model.title_copy_rows} title copies" if cfg.title_copies else ""))
    save_atomically(model, args.out, metrics, train_seconds=round(seconds, 1), refit=args.refit,
                    train_size=len(train) + (len(val) if args.refit else 0), skipped=dict(counts),
                    title_copies=model.title_copy_rows)
    print(f"model and metrics.json written to {args.out}")
    return 0


def cli() -> int:
    """Console-script entry point."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
