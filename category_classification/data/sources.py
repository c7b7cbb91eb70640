"""Data sources: each yields OfferRecords (text built by text.offer_text) and reads itself into shards.

The builder adds their flags and picks one from SOURCES; `predict.py --zip` reads the same records.
"""

from __future__ import annotations

from pathlib import Path


from category_classification.core.cli import UserError, require_file
from category_classification.data.records import (DEFAULT_CATEGORIES, OfferRecord, ReadResult,  # noqa: F401
                                                   parse_categories)
from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS

# A source: `flag` (the attribute of args that selects it), `add_arguments(group)` (its builder flags),
# `inputs(args)` ((path, what) pairs checked before any work), `records(path)` (OfferRecords) and
# `read(args, config, tmp)` (pass 1: shards and a builder.LabelPlan); `breadcrumb` says whether its offers
# carry the shop's breadcrumb (the builder's --breadcrumb auto turns it on then). docs/data.md: "Adding a source".
class LspcSource:
    """The LSPC zip: labels from --map, or else from the offers' own `category` field."""

    name, flag = "lspc", "zip"
    breadcrumb = False  # WDC offers have no breadcrumb field

    @staticmethod
    def add_arguments(group) -> None:
        group.add_argument("--zip", help="lspcV2020.zip: *.json.gz members, one JSON offer per line")
        group.add_argument("--map", help="cluster_id<TAB>category file (with --zip); without it the labels come "
                                         "from the offers' own `category` field and the derived map is saved "
                                         "as PDC2020_map.tsv beside the dataset")

    @staticmethod
    def inputs(args) -> list:
        """(path, what) of every input file, checked before any work."""
        return [(p, what) for p, what in ((args.zip, "corpus zip"), (args.map, "category map")) if p]

    @staticmethod
    def records(path, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, members=None):
        """OfferRecords of every member, or of `members` only (in that order; an empty list reads none)."""
        from category_classification.data.lspc import iter_records

        if members is not None and not members:
            return iter(())
        return iter_records(path, max_description_chars, members=members)

    @staticmethod
    def read(args, config, tmp: Path, progress: bool = True) -> ReadResult:
        from category_classification.data.builder import LabelPlan, lspc_shards
        from category_classification.data.lspc import ReadPlan, list_members, load_category_map

        require_file(args.zip, "corpus zip")
        cmap = load_category_map(args.map) if args.map else None
        members = list_members(args.zip)[: args.limit_members or None]
        targets = parse_categories(args.categories)
        if cmap is not None and targets is not None:
            missing = [c for c in targets if c not in cmap.names]
            if len(missing) == len(targets):
                raise UserError(f"none of --categories {','.join(targets)} is in the map (it has "
                                f"{', '.join(cmap.names[:30])}); pass --categories")
            if missing:
                print(f"WARNING: not in the map, so not classes: {', '.join(missing)}", flush=True)
            targets = [c for c in targets if c in cmap.names]
        elif cmap is not None:
            targets = list(cmap.names)
        keep = None if args.other_label else frozenset(targets or ())
        plan = ReadPlan(cmap, keep if targets is not None else None, args.keep_unmapped,
                        config.max_description_chars)
        labels_from = f"map {args.map}" if cmap is not None else "the offers' own `category` field"
        print(f"{len(members)} members; labels from {labels_from}; classes: "
              f"{', '.join(targets) if targets else 'every category'}"
              + (f" + {args.other_label}" if args.other_label else ""), flush=True)
        shards = lspc_shards(args.zip, plan, members, tmp, config, progress=progress)
        label_plan = LabelPlan(targets, args.other_label, args.keep_unmapped, by_cluster=cmap is None)
        source = {"zip": str(args.zip), "map": str(args.map) if args.map else None, "members": len(members)}
        extra = {"map_report": dict(cmap.report)} if cmap is not None else {}
        return ReadResult(shards, label_plan, source, extra)


class MwpdSource:
    """MWPD JSON-lines files with GS1 labels; --mwpd_test makes one file the whole test split."""

    name, flag = "mwpd", "mwpd"
    breadcrumb = True  # CategoryText

    @staticmethod
    def add_arguments(group) -> None:
        group.add_argument("--mwpd", nargs="+", metavar="FILE", help="MWPD JSON-lines files (plain or .gz)")
        group.add_argument("--mwpd_test", metavar="FILE", help="an MWPD file that becomes the whole test split; "
                                                               "--mwpd files give train/validation")
        group.add_argument("--label_level", default="six", choices=["six", "lvl1", "lvl2", "lvl3", "all"],
                           help="MWPD labels: the 6 classes (default), a GS1 level, or all three levels "
                                "(label = lvl1, plus lvl1/lvl2/lvl3 columns and hierarchy.json)")

    @staticmethod
    def inputs(args) -> list:
        return [(p, "MWPD file") for p in list(args.mwpd or []) + ([args.mwpd_test] if args.mwpd_test else [])]

    @staticmethod
    def records(path, max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, breadcrumb: bool = True):
        from category_classification.data.mwpd import iter_records

        return iter_records(path, max_description_chars=max_description_chars, breadcrumb=breadcrumb)

    @staticmethod
    def read(args, config, tmp: Path, progress: bool = True) -> ReadResult:
        from category_classification.data.mwpd import read_mwpd_files

        return read_mwpd_files(args, config, tmp)


# name -> source; the builder uses the one whose flag was given
SOURCES = {"lspc": LspcSource, "mwpd": MwpdSource}


def use_breadcrumb(setting: str, source) -> bool:
    """--breadcrumb auto/on/off for `source`: auto is on where its offers carry a breadcrumb (MWPD)."""
    if setting == "on" and not source.breadcrumb:
        raise UserError(f"--breadcrumb on: {source.name.upper()} offers carry no breadcrumb (use auto or off)")
    return source.breadcrumb if setting == "auto" else setting == "on"


def pick_source(args):
    """The one source whose flag (--zip, --mwpd, ...) was given."""
    given = [s for s in SOURCES.values() if getattr(args, s.flag, None)]
    if len(given) != 1:
        flags = " or ".join(f"--{s.flag}" for s in SOURCES.values())
        raise UserError(f"give exactly one source: {flags}")
    return given[0]
