"""Each built offer keeps its own id (`offer_id`), so evaluate.py --save_preds lines join back to the offers of
the scored file: MWPD ids as the file writes them (any spelling, a number, none: FILE:LINE), LSPC ids from the
offer's `id`, and hostile ids (a JSON object, lone surrogates, a null beside a filled spelling)."""

import gzip
import json
import zipfile

from datasets import load_from_disk

from category_classification import build_lspc_dataset, evaluate, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data.records import OFFER_ID_COLUMN
from category_classification.data.text import offer_id
from tests.test_attack_heldout_file import PATHS, files, offers, write  # noqa: F401 (files is a fixture)


def test_offer_id_reads_every_spelling_as_text():
    assert offer_id({"ID": "811"}) == "811"
    assert offer_id({"id": 17}) == "17"
    assert offer_id({"ID": None, "id": "x-1"}) == "x-1"  # the first spelling with a value
    assert offer_id({"Id": ""}) == ""
    assert offer_id({"Name": "no id"}) == ""
    assert offer_id({"id": True}) == "true"
    assert offer_id({"id": 1.5}) == "1.5"
    assert offer_id({"id": {"shop": "a", "sku": 3}}) == '{"shop": "a", "sku": 3}'
    assert offer_id({"id": "bad \ud800 id"}) == "bad \ufffd id"  # would not write to Arrow otherwise


def test_mwpd_ids_reach_the_dataset_and_the_saved_predictions(files, tmp_path):  # noqa: F811
    """Before: `--save_preds` lines named the offer by its dataset row alone, and the dataset kept no id: a user
    scoring a held-out file could not tell which of its offers a line was about."""
    test = offers(4, 7)
    test[0]["ID"] = 9001  # a number
    del test[1]["ID"]  # none: named by its line
    test[2]["ID"], test[2]["id"] = None, "shop-42"  # a null beside a filled spelling
    test[3]["ID"] = {"sku": "A\ud800"}  # an object holding a lone surrogate
    held_out = write(tmp_path / "heldout.jsonl", test)
    out = tmp_path / "data"
    assert run(build_lspc_dataset.main, ["--mwpd", str(files / "train.json.gz"), str(files / "validation.json.gz"),
                                         "--mwpd_test", str(held_out), "--val_size", "0.1", "--label_level", "lvl1",
                                         "--quiet", "--out", str(out)]) == 0
    dsd = load_from_disk(str(out))
    ids = list(dsd["test"][OFFER_ID_COLUMN])
    assert ids[:4] == ["9001", "heldout.jsonl:2", "shop-42", '{"sku": "A\ufffd"}']
    assert ids[4:] == [o["ID"] for o in test[4:]]
    train_ids = list(dsd["train"][OFFER_ID_COLUMN]) + list(dsd["validation"][OFFER_ID_COLUMN])
    assert train_ids and all(i.startswith(("0-", "1-")) for i in train_ids)  # the training files' own ids

    model, preds = tmp_path / "model", tmp_path / "preds.jsonl"
    assert run(train_linear_baseline.main, ["--data", str(out), "--out", str(model)]) == 0
    assert run(evaluate.main, ["--model", str(model), "--data", str(out), "--split", "test",
                               "--save_preds", str(preds)]) == 0
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    names = dsd["test"].features["label"].names
    by_id = dict(zip(ids, list(dsd["test"]["label"])))
    assert [x["offer_id"] for x in lines] == ids
    for x in lines:  # each line joins back to its offer: the id's true label, names matching the ids
        assert names[by_id[x["offer_id"]]] == x["label_name"] == names[x["label"]]
        assert x["pred_name"] == names[x["pred"]]


def test_lspc_ids_come_from_the_offers_id(tmp_path):
    rows = [{"id": 100 + i, "cluster_id": 1000 + i // 2, "category": ("Shoes", "Books")[i % 2],
             "title": f"{('running shoe', 'paperback novel')[i % 2]} {i}"} for i in range(40)]
    rows[3]["id"] = None  # an offer without an id keeps "" (the corpus gives every offer one)
    member = tmp_path / "offers.json.gz"
    with gzip.open(member, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    zip_path = tmp_path / "lspc.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(member, "offers/offers.json.gz")
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(zip_path), "--out", str(out), "--categories", "Books,Shoes",
                                         "--read_workers", "2", "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    title_of = {r["title"]: ("" if r["id"] is None else str(r["id"])) for r in rows}
    got = [(t, i) for split in dsd.values() for t, i in zip(split["text"], split[OFFER_ID_COLUMN])]
    assert len(got) == 40 and all(title_of[t] == i for t, i in got)
