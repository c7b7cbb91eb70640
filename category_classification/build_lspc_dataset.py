"""Build the train/validation/test DatasetDict from lspcV2020.zip (labels from a cluster->category map or the
offers' own `category` field) or from MWPD files.

  python category_classification/build_lspc_dataset.py --zip lspcV2020.zip --out data/lspc6
  python category_classification/build_lspc_dataset.py --zip lspcV2020.zip --map PDC2020_map.tsv --other_label Other --out data/lspc7
  python category_classification/build_lspc_dataset.py --mwpd data/mwpd/train.json.gz data/mwpd/validation.json.gz --out runs/mwpd6

Splits are grouped (an LSPC cluster, or an MWPD normalized title, lives in one split), stratified by
label and deterministic for --seed. Writes build_report.json next to the dataset.
"""

import argparse
import json
import os
import sys
import time

from category_classification.core.cli import UserError, require_file, run
from category_classification.data.build_dir import BuildDir, check_out
from category_classification.data.builder import (BuildConfig, merge_counts, print_summary, split_and_save,
                                                     write_report)
from category_classification.data.sources import SOURCES, parse_categories, pick_source, use_breadcrumb


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("source (one of)")
    for source in SOURCES.values():
        source.add_arguments(src)
    lab = p.add_argument_group("classes")
    lab.add_argument("--categories", help="target classes, comma-separated, or 'all' (LSPC default: "
                                          "Automotive,Baby,Books,Clothing,Jewelry,Shoes; MWPD: every class)")
    lab.add_argument("--other_label", metavar="NAME",
                     help="keep offers outside the target classes as one more class NAME (e.g. Other)")
    lab.add_argument("--max_other_fraction", type=float, metavar="F",
                     help="with --other_label: at most this share of the offers is NAME (whole clusters sampled)")
    lab.add_argument("--keep_unmapped", action="store_true",
                     help="with --other_label: offers whose cluster has no category (not in the map) become NAME")
    p.add_argument("--out", required=True, help="folder for the saved DatasetDict")
    p.add_argument("--val_size", type=float, default=0.05)
    p.add_argument("--test_size", type=float, default=0.10)
    p.add_argument("--allow_empty_splits", action="store_true",
                   help="build even when the validation or test split comes out empty (a warning instead)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--full", action="store_true", help="add a split holding every record")
    p.add_argument("--full_split_name", default="full")
    p.add_argument("--add_language", action="store_true", help="add a `language` column (fastText lid.176)")
    p.add_argument("--language_num_proc", type=int, default=1, help="processes for language ID")
    p.add_argument("--read_workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="zip members read in parallel")
    p.add_argument("--max_description_chars", type=int, default=300,
                   help="text = title + this many characters of description (0: all of it)")
    p.add_argument("--breadcrumb", choices=("auto", "on", "off"), default="auto",
                   help="end the text with ' | ' + the shop's breadcrumb (MWPD CategoryText, first 300 "
                        "characters); auto: on for --mwpd, off for --zip (LSPC offers have none)")
    p.add_argument("--limit_members", type=int, default=0, help="read only the first N members (quick trials)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def check_args(args) -> None:
    """Flag combinations that cannot work, refused before any reading."""
    if args.map and not args.zip:
        raise UserError("--map goes with --zip")
    if args.mwpd_test and not args.mwpd:
        raise UserError("--mwpd_test needs --mwpd files for train/validation")
    if args.label_level != "six" and not args.mwpd:
        raise UserError("--label_level is for --mwpd files (LSPC labels come from --map or the category field)")
    if args.other_label is not None and not args.other_label.strip():  # '' was taken as no --other_label
        raise UserError("--other_label needs a class name (e.g. Other), got a blank one")
    if args.zip and not args.map and args.other_label in (parse_categories(args.categories) or ()):
        # labels from the `category` field: the classes are known now, not only after the read pass
        raise UserError(f"--other_label {args.other_label} is also a target class; choose another name")
    if args.max_other_fraction is not None and not (args.other_label and 0 <= args.max_other_fraction < 1):
        raise UserError("--max_other_fraction needs --other_label and a value in [0, 1)")
    if args.keep_unmapped and not args.other_label:
        raise UserError("--keep_unmapped needs --other_label (unmapped offers have no class of their own)")
    if args.keep_unmapped and args.mwpd:
        raise UserError("--keep_unmapped is for --zip (every MWPD offer has a GS1 class)")
    import re

    from category_classification.data.build_dir import OWN_FILES

    name = args.full_split_name
    if name in ("train", "validation", "test") or name in OWN_FILES or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise UserError(f"--full_split_name must be a plain name (letters, digits, _ . -; not a path) other than "
                        f"train/validation/test, got {name!r}")
    if args.language_num_proc < 1:  # was a ValueError traceback after the whole read, on a split of 10,000+ offers
        raise UserError(f"--language_num_proc must be at least 1, got {args.language_num_proc}")
    if args.limit_members < 0 or args.max_description_chars < 0:
        raise UserError("--limit_members and --max_description_chars must be at least 0")
    if not (0 <= args.val_size < 1 and 0 <= args.test_size < 1 and args.val_size + args.test_size < 1):
        raise UserError("--val_size and --test_size must be in [0, 1) and sum below 1")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    source = pick_source(args)
    check_args(args)
    config = BuildConfig(out=args.out, val_size=args.val_size, test_size=args.test_size, seed=args.seed,
                         full=args.full, full_split_name=args.full_split_name, add_language=args.add_language,
                         language_num_proc=args.language_num_proc, read_workers=max(1, args.read_workers),
                         max_description_chars=args.max_description_chars,
                         breadcrumb=use_breadcrumb(args.breadcrumb, source),
                         max_other_fraction=args.max_other_fraction, allow_empty_splits=args.allow_empty_splits)
    inputs = [require_file(path, what) for path, what in source.inputs(args)]
    out = check_out(args.out, inputs)  # before any reading: a bad --out costs nothing
    start = time.perf_counter()
    with BuildDir(out) as build:
        result = source.read(args, config, build.tmp, progress=not args.quiet)
        counts = merge_counts(result.shards)
        dsd, summary, extra = split_and_save(result.shards, result.plan, config, build.tmp, build.dataset,
                                             counts, progress=not args.quiet)
        extra.update(result.extra, other_label=args.other_label, categories=result.plan.targets,
                     label_names=result.plan.names)
        if result.plan.parents:
            (build.dataset / "hierarchy.json").write_text(json.dumps(result.plan.parents, indent=1,
                                                                     ensure_ascii=False) + "\n")
        report = write_report(build.dataset, result.source, counts, summary, config, time.perf_counter() - start,
                              shards=result.shards if args.zip else None, extra=extra)
        build.commit()
    print_summary(report)
    print(f"saved {out} (build_report.json beside it)")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
