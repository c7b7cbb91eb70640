"""Synthetic corpora in the exact lspcV2020.zip format, for tests and benchmarks (the real zip is 100+ GB).

Offers have the real fields (id, cluster_id, title, description, brand, url, ...) with realistic lengths;
`bad_lines=True` mixes in one line of every kind the builder must skip.
"""

from __future__ import annotations

import gzip
import json
import random
import zipfile
from pathlib import Path

CATEGORIES = ("Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes")
_WORDS = {
    "Automotive": "brake pad disc rotor spark plug oil filter wiper blade headlight bulb tyre alloy wheel clutch kit".split(),
    "Baby": "baby stroller pram nappies bottle teether bib crib cot romper pacifier infant carrier toddler".split(),
    "Books": "paperback hardcover novel edition author volume biography cookbook guide illustrated isbn poems".split(),
    "Clothing": "shirt t-shirt dress jeans jacket hoodie sweater trousers skirt coat cotton slim fit sleeve".split(),
    "Jewelry": "ring necklace bracelet earrings pendant gold silver sterling diamond carat watch charm".split(),
    "Shoes": "sneakers boots sandals loafers trainers heels running shoe leather sole lace-up slip-on".split(),
}
_COMMON = "new sale black white blue red size men women kids original premium classic set pack".split()
_FILLER = ("free shipping on orders over fifty high quality material imported satisfaction guaranteed "
           "please check the size chart before ordering colours may vary slightly").split()
BRANDS = ("Acme", "Nordwind", "Bellacasa", "Kumo", "Vertex", "Lumen", "Oakridge", "Sora", "Tanaka", "Rivoli")
LANG_TAGS = ("en", "de", "fr", "es", "it", "nl", "ja")


def _title(rng, category):
    words = rng.sample(_WORDS[category], 3) + rng.sample(_COMMON, rng.randint(1, 5))
    rng.shuffle(words)
    return f"{rng.choice(BRANDS)} " + " ".join(words) + f" {rng.randint(10, 9999)}"


def _description(rng, category):
    n = rng.choice((0, 0, 20, 60, 150, 400))  # many offers have none, some are long
    words = [rng.choice(_FILLER) if rng.random() < 0.7 else rng.choice(_WORDS[category]) for _ in range(n)]
    return " ".join(words)


# Some of Web Data Commons' other categories: what an Other class meets
OTHER_CATEGORIES = ("Office_Products", "Home_and_Garden", "Tools_and_Home_Improvement", "Other_Electronics",
                    "Sports_and_Outdoors", "Computers_and_Accessories", "Health_and_Beauty", "Toys_and_Games")
_OTHER_WORDS = ("desk lamp stapler drill saw router laptop cable charger tent ball racket shampoo puzzle "
                "doll chair sofa garden hose monitor keyboard mouse speaker").split()


def offer_pool(rng, category, size=64):
    """Pre-made (title, description) pairs per category: generating millions of offers stays fast."""
    if category not in _WORDS:
        _WORDS[category] = random.Random(category).sample(_OTHER_WORDS, 8)  # same words every run
    return [(_title(rng, category), _description(rng, category)) for _ in range(size)]


def bad_lines(mapped_cluster: int) -> list[bytes]:
    """One line of each kind the builder must skip, in order of SKIP_REASONS (except corrupt members)."""
    good = {"cluster_id": mapped_cluster, "title": "ok"}
    return [
        b"   ",  # empty_line
        json.dumps({**good, "title": "caf\u00e9"}, ensure_ascii=False).encode().replace("\u00e9".encode(), b"\xff\xfe"),  # invalid_utf8
        b'{"cluster_id": %d, "title": "unterminated' % mapped_cluster,  # malformed_json
        b"[1, 2, 3]",  # not_an_object
        json.dumps({"title": "no cluster"}).encode(),  # missing_cluster_id
        json.dumps({"cluster_id": "abc", "title": "bad id"}).encode(),  # bad_cluster_id
        json.dumps({"cluster_id": mapped_cluster, "title": None, "name": ""}).encode(),  # missing_title
    ]


def write_lspc_zip(out_dir, n_offers=1000, n_members=3, n_clusters=None, mapped_fraction=0.5, seed=0,
                   categories=CATEGORIES, with_bad_lines=False, corrupt_member=False, description_chance=1.0,
                   other_categories=(), category_field=False, map_other=False):
    """Write `lspcV2020.zip` and `PDC2020_map.tsv` into out_dir; returns (zip_path, map_path, truth).

    truth: {"mapped_offers": n, "bad_lines": n, "offers_by_category": {..}} to check a build against.
    Clusters of `mapped_fraction` are in the map with a category; offers of one cluster share it. With
    `other_categories` the other clusters get those (in the map only with `map_other`); `category_field`
    writes each offer's category as WDC's `category` field (None, as JSON null, for clusters without one).
    """
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_clusters = n_clusters or max(10, n_offers // 4)
    cluster_ids = rng.sample(range(1, 50 * n_clusters + 10), n_clusters)
    n_mapped = int(round(mapped_fraction * n_clusters))
    cluster_cat = {c: categories[i % len(categories)] for i, c in enumerate(cluster_ids)}
    if other_categories:
        cluster_cat.update({c: other_categories[i % len(other_categories)]
                            for i, c in enumerate(cluster_ids[n_mapped:])})
    mapped = set(cluster_ids[:n_mapped])
    pools = {c: offer_pool(rng, c) for c in sorted(set(cluster_cat.values()))}  # sorted: same data under any PYTHONHASHSEED

    map_path = out_dir / "PDC2020_map.tsv"
    with open(map_path, "w", encoding="utf-8") as fh:
        for c in sorted(mapped | (set(cluster_ids) if map_other and other_categories else set())):
            fh.write(f"{c}\t{cluster_cat[c]}\n")

    zip_path = out_dir / "lspcV2020.zip"
    truth = {"mapped_offers": 0, "bad_lines": 0, "offers": n_offers, "offers_by_category": {}}
    per_member = [n_offers // n_members + (1 if i < n_offers % n_members else 0) for i in range(n_members)]
    first_mapped = cluster_ids[0] if n_mapped else 0
    next_id = 0
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for m, count in enumerate(per_member):
            lines = []
            for _ in range(count):
                cid = rng.choice(cluster_ids)
                cat = cluster_cat[cid]
                title, description = rng.choice(pools[cat])
                offer = {"id": next_id, "url": f"https://shop{rng.randint(1, 500)}.example/p/{rng.randint(1, 10**7)}",
                         "nodeID": f"_:n{rng.randint(1, 10**9)}", "cluster_id": cid, "title": title,
                         "brand": rng.choice(BRANDS), "price": f"{rng.randint(1, 500)}.99",
                         "priceCurrency": "EUR", "lang": rng.choice(LANG_TAGS)}
                if description and rng.random() < description_chance:
                    offer["description"] = description
                if category_field:
                    offer["category"] = cat if (cid in mapped or other_categories) else None
                    by_cat = truth["offers_by_category"]
                    by_cat[offer["category"]] = by_cat.get(offer["category"], 0) + 1
                lines.append(json.dumps(offer, ensure_ascii=False).encode("utf-8"))
                next_id += 1  # the corpus's offer ids: one per offer, counted through the zip
                truth["mapped_offers"] += cid in mapped
            if with_bad_lines and m == 0:
                bad = bad_lines(first_mapped)
                lines[1:1] = bad
                truth["bad_lines"] += len(bad)
            data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=3)
            if corrupt_member and m == n_members - 1:
                data = data[: len(data) // 2]  # truncated: the first half's offers are still read
            zf.writestr(f"offers/part-{m:04d}.json.gz", data)
    return zip_path, map_path, truth
