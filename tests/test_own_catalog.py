"""A user's own labelled catalog, the route docs/data.md gives: a CSV converted to JSON lines by the docs'
one-liner, built with --mwpd --label_level lvl1 under the user's own class names, trained, and an unlabelled
CSV feed labelled by predict.py."""

import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path

from category_classification import build_lspc_dataset, predict, train_linear_baseline

REPO = Path(__file__).resolve().parents[1]
WORDS = {"Garden hose & tools": ["hose", "rake", "shovel", "planter", "sprinkler"],
         "Küche": ["pan", "knife", "kettle", "blender", "whisk"],
         "Toys": ["lego", "doll", "puzzle", "kite", "yoyo"]}


def docs_one_liner() -> str:
    """The CSV -> JSON lines command of docs/data.md, as a user would copy it."""
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    return re.search(r'`(python -c "import csv,json,sys;.*?)`', text).group(1)


def test_a_csv_catalog_with_its_own_class_names_builds_trains_and_labels_a_feed(tmp_path):
    rnd = random.Random(3)
    with open(tmp_path / "shop.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["title", "description", "category"])
        w.writeheader()
        for cat, words in WORDS.items():
            for i in range(30):
                w.writerow({"title": f"{rnd.choice(words)} {rnd.choice(words)}, \"model\" {i}",
                            "description": f"{rnd.choice(words)} for home", "category": cat})
    command = docs_one_liner().replace(" > catalog.jsonl", "")
    args = re.match(r'python -c "(.*)" shop.csv$', command).group(1)
    out = subprocess.run([sys.executable, "-c", args, str(tmp_path / "shop.csv")], capture_output=True, text=True,
                         check=True).stdout
    (tmp_path / "catalog.jsonl").write_text(out, encoding="utf-8")
    assert len(out.splitlines()) == 90

    data, model = tmp_path / "ds", tmp_path / "model"
    assert build_lspc_dataset.main(["--mwpd", str(tmp_path / "catalog.jsonl"), "--label_level", "lvl1",
                                    "--out", str(data), "--quiet"]) == 0
    report = json.loads((data / "build_report.json").read_text(encoding="utf-8"))
    assert sorted(report["label_names"]) == sorted(WORDS)
    assert train_linear_baseline.main(["--data", str(data), "--out", str(model)]) == 0
    metrics = json.loads((model / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test"]["macro_f1"] > 0.9

    with open(tmp_path / "feed.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["title", "description"])
        w.writerows([["kite lego", ""], ["whisk and kettle", "steel"], ["", ""], ["rake hose", "green"]])
    assert predict.main(["--model", str(model), "--input", str(tmp_path / "feed.csv"),
                         "--out", str(tmp_path / "pred.jsonl"), "--no_progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r.get("label") for r in rows] == ["Toys", "Küche", None, "Garden hose & tools"]
    assert "error" in rows[2]  # a blank offer: its own error line, its neighbours labelled
