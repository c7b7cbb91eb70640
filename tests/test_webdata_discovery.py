"""The corpus profiler on a small generated zip."""

import json

import webdata_discovery
from category_classification.data.synthetic_lspc import BRANDS, write_lspc_zip


def test_profile_counts_languages_brands_categories(tmp_path, capsys):
    zip_path, map_path, truth = write_lspc_zip(tmp_path, n_offers=600, n_members=2, mapped_fraction=0.5,
                                               seed=5, with_bad_lines=True)
    out = tmp_path / "profile.json"
    assert webdata_discovery.main(["--zip", str(zip_path), "--map", str(map_path), "--workers", "2",
                                   "--keep", "3", "--out", str(out)]) == 0
    profile = json.loads(out.read_text())
    langs = profile["languages"]
    good_lines = 600 + 2  # every generated offer, plus the two bad lines that are still JSON objects with a title
    assert sum(p["offers"] for p in langs.values()) == good_lines
    assert abs(sum(p["share"] for p in langs.values()) - 1) < 0.01
    en = langs["en"]
    assert len(en["top_brands"]) == 3 and all(b in BRANDS for b, _ in en["top_brands"])
    categories = set().union(*(p["categories"] for p in langs.values()))
    assert {"Books", "Shoes", "(not in map)"} <= categories
    mapped = sum(n for p in langs.values() for c, n in p["categories"].items() if c != "(not in map)")
    assert mapped == truth["mapped_offers"]
    assert profile["counts"]["malformed_json"] == 1 and profile["counts"]["invalid_utf8"] == 1
    assert "offers profiled" in capsys.readouterr().out


def test_limit_caps_offers(tmp_path):
    zip_path, map_path, _ = write_lspc_zip(tmp_path, n_offers=400, n_members=4, seed=6)
    out = tmp_path / "p.json"
    assert webdata_discovery.main(["--zip", str(zip_path), "--limit", "100", "--workers", "1", "--out", str(out)]) == 0
    assert sum(p["offers"] for p in json.loads(out.read_text())["languages"].values()) == 100


def test_missing_zip_exit_2(tmp_path, capsys):
    assert webdata_discovery.run(webdata_discovery.main, ["--zip", str(tmp_path / "no.zip")]) == 2
    assert "corpus zip not found" in capsys.readouterr().err
