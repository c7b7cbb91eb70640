"""The predictor over every model kind, the streaming predict CLI (formats, bad lines, resume) and evaluate.py."""

import gzip
import io
import json
import zipfile

import numpy as np
import pytest

from category_classification import evaluate as evaluate_script
from category_classification import predict as predict_script
from category_classification.inference.batch import completed_lines
from category_classification.core.cli import run
from category_classification.inference.predictors import choose_threshold, load_predictor, threshold_table
from predict_fixtures import LABELS, make_dataset, make_encoder, make_hf, make_linear, toy_offers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"linear": make_linear(root / "linear"), "encoder": make_encoder(root / "encoder"),
            "hf": make_hf(root / "lora")}


@pytest.mark.parametrize("kind", ["linear", "encoder", "hf"])
def test_predict_structure_for_every_kind(models, kind):
    p = load_predictor(models[kind], batch_size=4)
    texts = ["gold ring pendant", "", "brake pad engine oil " * 30, "diaper", "novel"]
    probs = p.predict_proba(texts)
    assert probs.shape == (5, len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    out = p.predict(texts, top_k=3)
    assert out[1] == {"error": "blank text", "label": None}  # the text rule of predict.py and serve.py
    for row, pr in [(r, x) for i, (r, x) in enumerate(zip(out, probs)) if i != 1]:
        assert row["label"] == LABELS[int(pr.argmax())]
        assert row["score"] == pytest.approx(float(pr.max()), abs=1e-6)
        assert [t["label"] for t in row["top_k"]][0] == row["label"]
        assert len(row["top_k"]) == 3 and row["top_k"][0]["prob"] >= row["top_k"][1]["prob"] >= row["top_k"][2]["prob"]
    # batching and length sorting do not change results
    np.testing.assert_allclose(load_predictor(models[kind], batch_size=1).predict_proba(texts), probs, atol=1e-5)
    assert p.predict([]) == []


def test_linear_predictions_are_right_and_threshold_nulls(models):
    p = load_predictor(models["linear"])
    texts, y = toy_offers(5, seed=7)
    out = p.predict(texts)
    assert np.mean([o["label"] == LABELS[t] for o, t in zip(out, y)]) > 0.9
    texts.append("blue xl 2024 set")  # no class words: a low top score
    t = min(o["score"] for o in p.predict(texts)) + 1e-4
    nulls = p.predict(texts, threshold=t)
    assert all((o["label"] is None) == (o["score"] < t) for o in nulls)
    assert any(o["label"] is None for o in nulls) and all(o["top_k"] for o in nulls)


def test_choose_threshold():
    # scores 0.9 .. 0.5; the two lowest-scored predictions are wrong
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.5, 0.5]])
    y = [0, 0, 0, 1, 1]
    pick = choose_threshold(probs, y, target_precision=1.0)
    assert pick == {"threshold": 0.7, "coverage": 0.6, "precision": 1.0}
    pick = choose_threshold(probs, y, target_coverage=0.8)
    assert pick["threshold"] == 0.6 and pick["coverage"] == 0.8 and pick["precision"] == 0.75
    table = threshold_table(probs, y, thresholds=(0.0, 0.75))
    assert table[0]["coverage"] == 1.0 and table[0]["precision"] == 0.6
    assert table[1] == {"threshold": 0.75, "coverage": 0.4, "precision": 1.0}
    with pytest.raises(ValueError):
        choose_threshold(probs, y)


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_cli_formats_and_malformed_lines(models, tmp_path, capsys):
    # every input record gets one output line, in input order; bad ones carry {"error", "label": null}
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"gold ring\n\ndiaper stroller\n\xff\xfe broken\nnovel hardcover\n")
    out = tmp_path / "txt.jsonl"
    assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(txt), "--out", str(out),
                                     "--top_k", "2", "--no_progress"]) == 0
    rows = _lines(out)
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["label"] for r in rows] == ["Jewelry", None, "Baby", None, "Books"] and len(rows[0]["top_k"]) == 2
    assert [r.get("error") for r in rows] == [None, "blank text", None, "invalid UTF-8", None]
    err = capsys.readouterr().err
    assert "skipped line 2: blank text" in err and "skipped line 4: invalid UTF-8" in err
    assert "skipped 2" in err and "labels: " in err

    jl = tmp_path / "in.jsonl"
    jl.write_text('{"id": 7, "title": "gold ring"}\n{not json\n[1, 2]\n{"title": 5}\n{"name": "boot sandal"}\n'
                  '{"other": "x"}\n', encoding="utf-8")
    out = tmp_path / "jl.jsonl"
    assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(jl), "--out", str(out),
                                     "--no_progress"]) == 0
    rows = _lines(out)
    assert [(r["line"], r["label"]) for r in rows] == [(1, "Jewelry"), (2, None), (3, None), (4, None),
                                                       (5, "Shoes"), (6, None)] and rows[0]["id"] == 7
    assert "skipped 4" in capsys.readouterr().err

    cs = tmp_path / "in.csv"
    cs.write_text('id,product_title\n1,gold ring\n2,\n3,"diaper, stroller"\n', encoding="utf-8")
    out = tmp_path / "cs.jsonl"
    assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(cs), "--text_field",
                                     "product_title", "--out", str(out), "--no_progress"]) == 0
    assert [(r["id"], r["label"]) for r in _lines(out)] == [("1", "Jewelry"), ("2", None), ("3", "Baby")]

    # MWPD files name it "ID": the output carries it as "id" too (it was dropped: rows joined back by line only)
    mw = tmp_path / "mwpd.jsonl"
    mw.write_text('{"ID": "a-1", "Name": "gold ring"}\n{"ID": 9, "Name": ""}\n', encoding="utf-8")
    cs.write_text('ID,title\nx7,gold ring\n', encoding="utf-8")
    for src in (mw, cs):
        out = tmp_path / f"{src.stem}_ids.jsonl"
        assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(src), "--out", str(out),
                                         "--no_progress"]) == 0
        assert [r["id"] for r in _lines(out)] == (["a-1", 9] if src == mw else ["x7"])
    # an id nested 900 deep failed the whole run (RecursionError); an empty id beside a filled ID gave the empty
    mw.write_text('{"ID": ' + "[" * 900 + "]" * 900 + ', "Name": "gold ring"}\n{"id": null, "ID": "b", "Name": "x"}\n',
                  encoding="utf-8")
    cs.write_text('id,ID,title\n,c,gold ring\n', encoding="utf-8")
    for src in (mw, cs):
        out = tmp_path / f"{src.stem}_ids2.jsonl"
        assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(src), "--out", str(out),
                                         "--no_progress"]) == 0
        rows = _lines(out)
        assert [r["id"] for r in rows][-1] == ("b" if src == mw else "c") and all(r["label"] for r in rows)
        assert src == cs or "nested too deep" in json.dumps(rows[0]["id"])


def test_cli_resume_continues_after_the_last_complete_line(models, tmp_path):
    texts, _ = toy_offers(10, seed=3)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    args = ["--model", str(models["encoder"]), "--input", str(src), "--batch_size", "8", "--no_progress"]
    assert run(predict_script.main, args + ["--out", str(full)]) == 0
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == len(texts)
    # a run killed in the middle of writing line 24 leaves part.jsonl.partial
    partial = tmp_path / "part.jsonl.partial"
    partial.write_text("".join(lines[:23]) + lines[23][:10], encoding="utf-8")
    assert completed_lines(partial) == 23 and partial.read_text(encoding="utf-8") == "".join(lines[:23])
    partial.write_text("".join(lines[:23]) + lines[23][:10], encoding="utf-8")
    assert run(predict_script.main, args + ["--out", str(part), "--resume"]) == 0
    assert not partial.exists()
    assert [json.loads(x)["line"] for x in part.read_text().splitlines()] == list(range(1, len(texts) + 1))
    a, b = _lines(full), _lines(part)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)


def test_cli_zip_input(models, tmp_path, capsys):
    zpath = tmp_path / "lspc.zip"
    offers = [{"cluster_id": 1, "title": "gold ring", "description": "silver pendant"},
              {"cluster_id": 2, "name": "diaper stroller"}, {"cluster_id": 3, "title": None}]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        gz.write(("\n".join(json.dumps(o) for o in offers) + "\n{broken\n").encode())
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("offers_en/part_0.json.gz", buf.getvalue())
        zf.writestr("offers_en/part_1.json.gz", b"not gzip at all")
    out = tmp_path / "z.jsonl"
    assert run(predict_script.main, ["--model", str(models["linear"]), "--zip", str(zpath), "--out", str(out),
                                     "--no_progress"]) == 0
    rows = _lines(out)
    assert [r["label"] for r in rows if "error" not in r] == ["Jewelry", "Baby"]
    assert [r["label"] for r in rows if "error" in r] == [None, None, None]  # reported, in input order
    assert "labels: Jewelry 1, Baby 1" in capsys.readouterr().err  # the run ends with the label distribution
    assert rows[0]["member"] == "offers_en/part_0.json.gz" and rows[0]["cluster_id"] == 1


def test_cli_user_errors_exit_2(models, tmp_path, capsys):
    assert run(predict_script.main, ["--model", str(tmp_path / "nope"), "--text", "x"]) == 2
    assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(tmp_path / "no.txt"),
                                     "--out", str(tmp_path / "o.jsonl")]) == 2
    (tmp_path / "in.xml").write_text("<x/>")
    assert run(predict_script.main, ["--model", str(models["linear"]), "--input", str(tmp_path / "in.xml"),
                                     "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "model directory not found" in err and "input file not found" in err and "unsupported" in err


def test_text_flag_prints_predictions(models, capsys):
    assert run(predict_script.main, ["--model", str(models["linear"]), "--text", "gold ring", "--text",
                                     "boot sandal", "--top_k", "2"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == [("gold ring", "Jewelry"), ("boot sandal", "Shoes")]


def test_evaluate_script(models, tmp_path, capsys):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "eval"
    assert run(evaluate_script.main, ["--model", str(models["linear"]), "--data", str(data), "--split",
                                      "validation", "--out", str(out), "--target_precision", "0.99"]) == 0
    text = capsys.readouterr().out
    assert "macro_f1=" in text and "chosen threshold" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["validation"]["n"] == 48 and m["validation"]["macro_f1"] > 0.9
    assert 0.0 <= m["threshold"]["threshold"] <= 1.0
    assert (out / "results_category.txt").is_file() and (out / "confusion_matrix.png").is_file()
    # any kind on any split
    assert run(evaluate_script.main, ["--model", str(models["hf"]), "--data", str(data), "--split", "test"]) == 0
    assert run(evaluate_script.main, ["--model", str(models["linear"]), "--data", str(data),
                                      "--split", "nope"]) == 2


def test_a_model_whose_scores_are_nan_gives_error_lines_not_labels(tmp_path):
    """A temperature of 1e-300 passes the loader's check and makes every softmax inf - inf = NaN. Clipping
    the reported probabilities into [0, 1] turned those NaNs into 0.0 and the first label; they must stay
    each record's error line."""
    from predict_fixtures import make_linear

    model = make_linear(tmp_path / "m")
    info = json.loads((model / "category_model.json").read_text(encoding="utf-8"))
    info["temperature"] = 1e-300
    (model / "category_model.json").write_text(json.dumps(info), encoding="utf-8")
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("gold ring\nred shoe\n", encoding="utf-8")
    assert run(predict_script.main, ["--model", str(model), "--input", str(src), "--out", str(out),
                                     "--no_progress"]) == 0
    rows = _lines(out)
    assert [r["label"] for r in rows] == [None, None] and all("not a number" in r["error"] for r in rows)
