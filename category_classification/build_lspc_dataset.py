"""Build the train/validation/test DatasetDict from lspcV2020.zip and a cluster->category map, or from MWPD files.

  python category_classification/build_lspc_dataset.py --zip lspcV2020.zip --map PDC2020_map.tsv --out data/lspc6
  python category_classification/build_lspc_dataset.py --mwpd data/mwpd/train.json.gz data/mwpd/validation.json.gz --out runs/mwpd6

Splits are grouped (an LSPC cluster, or an MWPD normalized title, lives in one split), stratified by
label and deterministic for --seed. Writes build_report.json next to the dataset.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from category_classification.core.cli import UserError, require_file, run
from category_classification.data.builder import (BuildConfig, Shard, ShardWriter, lspc_shards, merge_counts,
                                                     print_summary, split_and_save, write_report)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("source (one of)")
    src.add_argument("--zip", help="lspcV2020.zip: *.json.gz members, one JSON offer per line")
    src.add_argument("--map", help="cluster_id<TAB>category file (with --zip)")
    src.add_argument("--mwpd", nargs="+", metavar="FILE", help="MWPD JSON-lines files (plain or .gz)")
    src.add_argument("--mwpd_test", metavar="FILE",
                     help="an MWPD file that becomes the whole test split; --mwpd files give train/validation")
    src.add_argument("--label_level", default="six", choices=["six", "lvl1", "lvl2", "lvl3"],
                     help="MWPD labels: the 6 classes (default) or a GS1 level")
    p.add_argument("--out", required=True, help="folder for the saved DatasetDict")
    p.add_argument("--val_size", type=float, default=0.05)
    p.add_argument("--test_size", type=float, default=0.10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--full", action="store_true", help="add a split holding every record")
    p.add_argument("--full_split_name", default="full")
    p.add_argument("--add_language", action="store_true", help="add a `language` column (fastText lid.176)")
    p.add_argument("--language_num_proc", type=int, default=1, help="processes for language ID")
    p.add_argument("--read_workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="zip members read in parallel")
    p.add_argument("--max_description_chars", type=int, default=300,
                   help="text = title + this many characters of description (0: all of it)")
    p.add_argument("--limit_members", type=int, default=0, help="read only the first N members (quick trials)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _mwpd_shards(args, label_names_out: list, tmp: Path):
    """Read the MWPD files into shards (test file first, so its titles can be kept out of train/val)."""
    import numpy as np

    from category_classification.data.mwpd import read_mwpd

    files = [(f, False) for f in args.mwpd]
    if args.mwpd_test:
        files.insert(0, (args.mwpd_test, True))
    for f, _ in files:
        require_file(f, "MWPD file")
    rows = []  # MWPD is small (thousands of offers): read first to learn the label names
    counts_per_file = []
    test_groups: set = set()
    for path, is_test in files:
        counts: Counter = Counter()
        kept = []
        for text, label, group in read_mwpd(path, args.label_level, counts, args.max_description_chars):
            if not is_test and group in test_groups:
                counts["duplicate_of_test"] += 1
                continue
            kept.append((text, label, group))
            if is_test:
                test_groups.add(group)
        counts["records_kept"] += len(kept)
        rows.append((path, is_test, kept))
        counts_per_file.append(counts)
    names = sorted({label for _, _, kept in rows for _, label, _ in kept})
    if not names:
        raise UserError("no offer of the MWPD files belongs to the chosen label set")
    label_names_out.extend(names)
    index = {n: i for i, n in enumerate(names)}
    shards = []
    for i, ((path, is_test, kept), counts) in enumerate(zip(rows, counts_per_file)):
        writer = ShardWriter(tmp / f"mwpd-{i}.arrow", names)
        writer.add([t for t, _, _ in kept], np.array([index[l] for _, l, _ in kept], dtype=np.int64),
                   np.array([g for _, _, g in kept], dtype=np.int64))
        shards.append(Shard(writer.path, writer.close(), forced_test=is_test, source=str(path), counts=dict(counts)))
    return shards


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.zip) == bool(args.mwpd):
        raise UserError("give either --zip and --map (LSPC) or --mwpd FILE ... (MWPD)")
    if args.zip and not args.map:
        raise UserError("--zip needs --map cluster_id<TAB>category")
    if args.mwpd_test and not args.mwpd:
        raise UserError("--mwpd_test needs --mwpd files for train/validation")
    config = BuildConfig(out=args.out, val_size=args.val_size, test_size=args.test_size, seed=args.seed,
                         full=args.full, full_split_name=args.full_split_name, add_language=args.add_language,
                         language_num_proc=args.language_num_proc, read_workers=max(1, args.read_workers),
                         max_description_chars=args.max_description_chars)
    if config.full_split_name in ("train", "validation", "test"):
        raise UserError("--full_split_name must differ from train/validation/test")
    start = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        extra = {}
        if args.zip:
            from category_classification.data.lspc import list_members, load_category_map

            require_file(args.zip, "corpus zip")
            cmap = load_category_map(args.map)
            members = list_members(args.zip)
            if args.limit_members:
                members = members[: args.limit_members]
            print(f"{len(members)} members, map: {cmap.report['clusters']:,} clusters in {len(cmap.names)} "
                  f"categories ({', '.join(cmap.names)})", flush=True)
            shards = lspc_shards(args.zip, cmap, members, tmp, config, progress=not args.quiet)
            names = cmap.names
            source = {"zip": str(args.zip), "map": str(args.map), "members": len(members)}
            extra["map_report"] = dict(cmap.report)
        else:
            names: list = []
            shards = _mwpd_shards(args, names, tmp)
            source = {"mwpd": [str(f) for f in args.mwpd], "mwpd_test": args.mwpd_test,
                      "label_level": args.label_level}
            extra["files"] = [{"file": s.source, "test": s.forced_test, **s.counts} for s in shards]
        counts = merge_counts(shards)
        dsd, summary = split_and_save(shards, names, config, tmp, progress=not args.quiet)
        report = write_report(out, source, counts, summary, config, time.perf_counter() - start,
                              shards=shards if args.zip else None, extra=extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(report)
    print(f"saved {out} (build_report.json beside it)")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
