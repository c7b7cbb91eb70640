"""How far `predict.py --zip` labels agree with the offers' own Web Data Commons `category` field.

    python category_classification/predict.py --model runs/linear_other --zip SAMPLE.zip --out runs/preds.jsonl
    python bench/wdc_agreement.py --zip SAMPLE.zip --predictions runs/preds.jsonl [--categories A,B,..]

WDC's `category` comes from WDC's own categoriser, not from people, and its classes are not MWPD's GS1
ones (data/mwpd/README.md maps GS1 codes to the six), so this is agreement between two labellings, not
accuracy. It prints the open-set figures with WDC's category as the reference (a category outside
--categories counts as out of scope) and the most frequent disagreements. Offers without a category, and
predictions of skipped records (label null), are left out and counted.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import sys
from collections import Counter

from category_classification.core.cli import UserError, require_file, run
from category_classification.data.lspc import category_of, iter_member_lines, list_members, parse_json_object
from category_classification.data.records import parse_categories

OUT = "Other"


def reference_labels(zip_path, targets) -> tuple[dict, Counter]:
    """(member, line) -> WDC category mapped to a target or OUT, for every offer that has a category."""
    counts, ref = Counter(), {}
    for member in list_members(zip_path):
        for n, raw in enumerate(iter_member_lines(zip_path, member, counts), 1):
            obj = parse_json_object(raw, counts) if raw.strip() else None
            category = category_of(obj) if obj is not None else None
            if category is None:
                counts["offers_without_category"] += obj is not None
                continue
            ref[(member, n)] = category if category in targets else OUT
    return ref, counts


def agreement(ref: dict, predictions_path, targets, counts: Counter) -> Counter:
    """(reference, predicted) -> offers; predicted Other and any label outside the targets both mean OUT."""
    pairs = Counter()
    with open(require_file(predictions_path, "predictions file"), "rb") as fh:
        for raw in fh:
            try:
                p = json.loads(raw)
                key, label = (p["member"], int(p["line"])), p["label"]
            except (ValueError, KeyError, TypeError):
                counts["bad_prediction_lines"] += 1
                continue
            if label is None:
                counts["skipped_records"] += 1
            elif key not in ref:
                counts["predictions_without_reference"] += 1
            else:
                pairs[(ref[key], label if label in targets else OUT)] += 1
    if not pairs:
        raise UserError(f"no prediction of {predictions_path} matches an offer with a category ({dict(counts)})")
    return pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", required=True, help="the LSPC-layout zip the predictions were made on")
    p.add_argument("--predictions", required=True, help="predict.py --zip output (JSON lines)")
    p.add_argument("--categories", default=None, help="the target classes (default: the seed's six)")
    args = p.parse_args(argv)
    targets = set(parse_categories(args.categories))
    ref, counts = reference_labels(args.zip, targets)
    pairs = agreement(ref, args.predictions, targets, counts)
    accepted = sum(v for (_, q), v in pairs.items() if q != OUT)
    in_scope = sum(v for (g, _), v in pairs.items() if g != OUT)
    out_scope = sum(v for (g, _), v in pairs.items() if g == OUT)
    right = sum(v for (g, q), v in pairs.items() if g == q != OUT)
    out_accepted = sum(v for (g, q), v in pairs.items() if g == OUT and q != OUT)
    lines = counts.pop("lines_read", 0)
    print(f"{sum(pairs.values())} offers of {lines} lines ({in_scope} in the targets by WDC's category, "
          f"{out_scope} outside)" + (f"; left out: {dict(counts)}" if counts else ""))
    print(f"accepted precision {right / max(accepted, 1):.4f} ({right}/{accepted})  "
          f"in-scope recall {right / max(in_scope, 1):.4f} ({right}/{in_scope})  "
          f"outside offers given a target label {out_accepted}/{out_scope}")
    print("disagreements (WDC category -> predicted):",
          ", ".join(f"{g} -> {q}: {v}" for (g, q), v in pairs.most_common() if g != q))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
