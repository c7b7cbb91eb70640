"""A review of the offer_id column, the demo's resume record and the ONNX export's file bookkeeping: an
offer_id column of bytes, dates or NaN in a hand-made dataset, a hand-edited demo_steps.json, a user's own graph
saved over an export, MWPD files of one name in two folders. Each test holds the input that broke the code
before its fix."""

import json
import math
from datetime import datetime

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk

from category_classification import build_lspc_dataset, demo, evaluate, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data.records import OFFER_ID_COLUMN
from predict_fixtures import LABELS, make_hf, toy_offers
from tests.test_attack_heldout_file import offers, write


def _strict(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_save_preds_writes_a_hand_made_offer_id_column_of_any_type_as_text(tmp_path):
    """Before: a dataset made by hand whose offer_id column held bytes or dates scored every offer and then
    died in a TypeError traceback writing --save_preds (nothing written); a float column wrote `NaN`, which is
    not JSON. Now every offer_id is text, as the builder writes it."""
    texts, labels = toy_offers(6)
    n = len(texts)

    def dataset(path, ids, typ):
        feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64"),
                          OFFER_ID_COLUMN: typ})
        d = Dataset.from_dict({"text": texts, "label": labels, "cluster": list(range(n)), OFFER_ID_COLUMN: ids},
                              features=feats)
        DatasetDict(train=d, validation=d, test=d).save_to_disk(str(path))
        return path

    model = tmp_path / "model"
    base = dataset(tmp_path / "base", [f"o-{i}" for i in range(n)], Value("string"))
    assert run(train_linear_baseline.main, ["--data", str(base), "--out", str(model), "--no_lang_metrics"]) == 0
    cases = {"bytes": ([b"sku-\xff"] * n, Value("binary"), "sku-\ufffd"),
             "date": ([datetime(2020, 1, 2)] * n, Value("timestamp[s]"), "2020-01-02 00:00:00"),
             "nan": ([math.nan] * n, Value("float64"), "NaN"),
             "int": (list(range(n)), Value("int64"), "0"),
             "null": ([None] * n, Value("string"), "")}
    for name, (ids, typ, first) in cases.items():
        preds = tmp_path / f"{name}.jsonl"
        assert run(evaluate.main, ["--model", str(model), "--data", str(dataset(tmp_path / name, ids, typ)),
                                   "--split", "test", "--save_preds", str(preds)]) == 0, name
        lines = [_strict(x) for x in preds.read_text(encoding="utf-8").split("\n") if x]
        assert len(lines) == n and all(isinstance(x["offer_id"], str) for x in lines), name
        assert lines[0]["offer_id"] == first, (name, lines[0])


def test_a_hand_edited_seconds_in_demo_steps_runs_the_step_again(tmp_path, monkeypatch):
    """Before: demo_steps.json with a step's "seconds" edited to "x" (or a list) was a ValueError / TypeError
    traceback on the next `make demo`. Now such a record is not the demo's: the step runs again."""
    monkeypatch.setattr(demo, "_code_version", lambda: "test-code")
    runs, out = tmp_path / "runs", tmp_path / "runs" / "mwpd6"
    out.mkdir(parents=True)
    (out / "build_report.json").write_text("{}")
    steps = demo.Steps(runs, redo=False)
    key = steps.key(["--out", "RUNS/mwpd6"], [])
    steps.record("mwpd6", key, out, 2.5)
    assert demo.Steps(runs, redo=False).done("mwpd6", key, out) == 2.5
    record = json.loads((runs / demo.STEPS_FILE).read_text())
    for bad in ("x", [1], True, None):
        record["steps"]["mwpd6"]["seconds"] = bad
        (runs / demo.STEPS_FILE).write_text(json.dumps(record))
        got = demo.Steps(runs, redo=False).done("mwpd6", key, out)
        assert got == (0.0 if bad is None else None), bad


def test_a_reexport_keeps_the_weights_file_of_a_users_graph_saved_over_the_export(tmp_path):
    """Before: a user who saved their own graph over model.onnx, its weights in my_weights.bin, lost
    my_weights.bin to the next export, though the export there (which lists what it wrote) never wrote it."""
    import onnx

    from category_classification.inference.onnx_export import export_staged

    qwen = make_hf(tmp_path / "qwen", "qwen3")
    out = tmp_path / "onnx"
    export_staged(qwen, out)
    graph = onnx.load(str(out / "model.onnx"))
    onnx.save_model(graph, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="my_weights.bin", size_threshold=1024)
    mine = (out / "my_weights.bin").read_bytes()
    export_staged(qwen, out)
    assert (out / "my_weights.bin").read_bytes() == mine


def test_mwpd_files_of_one_name_in_two_folders_give_offers_different_ids(tmp_path):
    """Before: offers without an ID were named FILE:LINE by the file's name alone, so shop_a/offers.jsonl and
    shop_b/offers.jsonl gave their offers the same ids, and --save_preds lines could not be joined back."""
    paths = []
    for seed, shop in enumerate(("shop_a", "shop_b")):
        rows = offers(10, seed)
        for row in rows:
            del row["ID"]
        (tmp_path / shop).mkdir()
        paths.append(str(write(tmp_path / shop / "offers.jsonl", rows)))
    out = tmp_path / "data"
    assert run(build_lspc_dataset.main, ["--mwpd", *paths, "--val_size", "0.2", "--label_level", "lvl1",
                                         "--quiet", "--out", str(out)]) == 0
    dsd = load_from_disk(str(out))
    ids = [i for name in dsd for i in dsd[name][OFFER_ID_COLUMN]]
    assert len(ids) == 2 * len(offers(10, 0)) and len(set(ids)) == len(ids), sorted(ids)[:6]


def test_a_deeply_nested_demo_steps_is_one_line(tmp_path, capsys):
    """Before: a demo_steps.json of 200,000 `[` (hand-made, or another tool's) was a RecursionError traceback
    from json; now it is the one line of any record the demo did not write, before any work."""
    from tests.test_attack_demo_entry import write_mwpd_dir

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / demo.STEPS_FILE).write_text("[" * 200_000)
    mwpd = write_mwpd_dir(tmp_path / "mwpd", n_train=4)
    capsys.readouterr()
    assert run(demo.main, ["--runs", str(runs), "--mwpd_dir", str(mwpd), "--skip_encoder"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "was not written by the demo" in err[0], err
    assert sorted(p.name for p in runs.iterdir()) == [demo.STEPS_FILE]
