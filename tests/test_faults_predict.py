"""predict.py under hostile input: outputs never destroy inputs, a killed run loses nothing, one bad record
is reported in its own output line and never fails its neighbours, and every path builds the training text."""

import json
import os
import tracemalloc

import numpy as np
import pytest

from category_classification import predict as predict_script
from category_classification.core.cli import run
from category_classification.data.text import MAX_TEXT_CHARS, model_text, offer_text
from category_classification.inference.batch import (BELOW_THRESHOLD, MAX_LINE_BYTES, Record, partial_path,
                                                     predict_stream, read_jsonl)
from category_classification.inference.predictors import Predictor, load_predictor
from predict_fixtures import LABELS, make_linear, toy_offers


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    return make_linear(tmp_path_factory.mktemp("faults") / "linear")


def _predict(model, *args):
    return run(predict_script.main, ["--model", str(model), "--no_progress", *map(str, args)])


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _one_error_line(err: str, words: str):
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


# --- outputs never destroy inputs ---------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "hardlink"])
def test_out_equal_to_input_is_refused_before_any_work(tmp_path, capsys, monkeypatch, spelling):
    src = tmp_path / "offers.jsonl"
    src.write_text('{"title": "gold ring"}\n' * 3, encoding="utf-8")
    before = src.read_bytes()
    out = {"same": src, "relative": "sub/../offers.jsonl", "symlink": tmp_path / "link.jsonl",
           "hardlink": tmp_path / "hard.jsonl"}[spelling]
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    if spelling == "symlink":
        out.symlink_to(src)
    if spelling == "hardlink":
        os.link(src, out)
    # a model that does not exist: the refusal must come first, before the model is even looked at
    assert _predict(tmp_path / "no_model", "--input", src, "--out", out) == 2
    _one_error_line(capsys.readouterr().err, "is the input")
    assert src.read_bytes() == before


def test_out_that_is_a_folder_or_unwritable_is_one_line(linear, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("gold ring\n", encoding="utf-8")
    (tmp_path / "a_file").write_text("x")
    for out, words in ((tmp_path, "is a directory"), (tmp_path / "a_file" / "o.jsonl", "cannot write"),
                       ("/proc/nope/o.jsonl", "cannot write")):
        assert _predict(linear, "--input", src, "--out", out) == 2
        _one_error_line(capsys.readouterr().err, words)


def test_an_existing_file_that_is_not_our_output_is_kept_unless_overwrite(linear, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("gold ring\n", encoding="utf-8")
    notes = tmp_path / "notes.csv"
    notes.write_text("id,comment\n1,keep me\n", encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", notes) == 2
    _one_error_line(capsys.readouterr().err, "--overwrite")
    assert notes.read_text(encoding="utf-8") == "id,comment\n1,keep me\n"
    out = tmp_path / "preds.jsonl"  # an earlier run's output is ours to replace
    assert _predict(linear, "--input", src, "--out", out) == 0
    assert _predict(linear, "--input", src, "--out", out) == 0
    assert _predict(linear, "--input", src, "--out", notes, "--overwrite") == 0
    assert _rows(notes)[0]["label"]


class Killed(Exception):
    pass


def _killed_after(records, n):
    for i, rec in enumerate(records):
        if i == n:
            raise Killed  # as if SIGKILL arrived here: nothing after this point runs
        yield rec


def test_a_killed_run_keeps_the_old_output_and_resume_is_byte_identical(linear, tmp_path):
    from category_classification.inference.batch import open_records

    texts, _ = toy_offers(30, seed=4)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "title": t}) + "\n" for i, t in enumerate(texts)) +
                   '{"title": "\\ud800"}\n{bad\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("an earlier run's output\n")
    predictor = load_predictor(linear)
    with pytest.raises(Killed):
        predict_stream(predictor, _killed_after(open_records(src), 100), out, batch_size=4, chunk_batches=2,
                       progress=False)
    assert out.read_text() == "an earlier run's output\n"  # untouched until the new one is complete
    partial = partial_path(out)
    assert 0 < len(partial.read_text().splitlines()) <= 100
    with open(partial, "a") as fh:
        fh.write('{"line": 97, "la')  # the kill cut a line short
    summary = predict_stream(predictor, open_records(src), out, batch_size=4, resume=True, progress=False)
    reference = tmp_path / "reference.jsonl"
    full = predict_stream(predictor, open_records(src), reference, batch_size=4, progress=False)
    assert out.read_bytes() == reference.read_bytes() and not partial.exists()
    assert summary.as_dict()["labels"] == full.as_dict()["labels"] and summary.read == full.read == len(texts) + 2


# --- one bad record never fails its neighbours --------------------------------------------------------

def test_lone_surrogate_at_line_2049_of_5000(linear, tmp_path):
    texts, _ = toy_offers(900, seed=5)
    lines = [json.dumps({"id": i, "title": texts[i % len(texts)]}) for i in range(5000)]
    lines[2048] = '{"id": "\\udc80", "title": "gold ring \\ud800 pendant"}'  # the JSON escape crawled data holds
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _predict(linear, "--input", src, "--out", out) == 0
    rows = _rows(out)
    assert len(rows) == 5000 and not any("error" in r for r in rows)
    assert rows[2048]["label"] == "Jewelry" and rows[2048]["id"] == "\ufffd"
    # a run killed just before that line resumes through it
    partial = partial_path(out)
    partial.write_text("".join(x + "\n" for x in out.read_text(encoding="utf-8").splitlines()[:2048]),
                       encoding="utf-8")
    reference = out.read_bytes()
    out.unlink()
    assert _predict(linear, "--input", src, "--out", out, "--resume") == 0
    assert out.read_bytes() == reference


def test_every_kind_of_bad_jsonl_line_gets_its_own_error_line(linear, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    bad = [b'{"title": "gold ring"}', b'{not json', b'[1, 2]', b'"just a string"', b'{"title": "   \\t "}',
           b'{"title": ""}', b'{"title": 5}', b'{"title": "\xff\xfe ring"}', b'{"title": "x' + b"y" * (10 << 20) + b'"}',
           b'{"title": "' + b"ring " * (1 << 18) + b'"}', b'', b'{"title": "diaper stroller"}']
    src.write_bytes(b"\xef\xbb\xbf" + b"\n".join(bad) + b"\n")  # a byte-order mark on the first record
    out = tmp_path / "out.jsonl"
    assert _predict(linear, "--input", src, "--out", out, "--keep_text") == 0
    rows = _rows(out)
    assert [r["line"] for r in rows] == list(range(1, 13))
    assert [r.get("error") for r in rows] == [
        None, "not valid JSON", "not a JSON object", "not a JSON object", "blank text", "blank text",
        "field 'title' is not a string", "invalid UTF-8", f"line longer than {MAX_LINE_BYTES >> 20} MB",
        None, "empty line", None]
    assert rows[0]["label"] == "Jewelry" and rows[11]["label"] == "Baby"
    assert all(r["label"] is None for r in rows if "error" in r)
    assert len(rows[9]["text"]) <= MAX_TEXT_CHARS  # the 1 MB title is cut by the text rule, then predicted
    err = capsys.readouterr().err
    assert "read 12, predicted 3, skipped 9" in err


def test_a_10mb_line_is_skipped_without_being_held(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"title": "' + b"a" * (10 << 20) + b'"}\n{"title": "gold ring"}\n')
    tracemalloc.start()
    recs = list(read_jsonl(src))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.reason for r in recs] == [f"line longer than {MAX_LINE_BYTES >> 20} MB", None]
    assert peak < 4 * MAX_LINE_BYTES  # never the whole line (bytes + str: over 20 MB), let alone 1.6 GB


def test_csv_and_txt_bad_records_and_bom(linear, tmp_path):
    cs = tmp_path / "in.csv"
    cs.write_bytes(b"\xef\xbb\xbfid,title\n1,gold ring\n2\n3,\xff\xfe\n4,  \n5,diaper stroller\n")
    out = tmp_path / "cs.jsonl"
    assert _predict(linear, "--input", cs, "--out", out) == 0
    assert [(r["id"], r["label"], r.get("error")) for r in _rows(out)] == [
        ("1", "Jewelry", None), ("2", None, "too few columns"), ("3", None, "invalid UTF-8"),
        ("4", None, "blank text"), ("5", "Baby", None)]
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"\xef\xbb\xbfgold ring\n\x00\x01\n")
    out = tmp_path / "txt.jsonl"
    assert _predict(linear, "--input", txt, "--out", out) == 0
    assert [(r["label"], r.get("error")) for r in _rows(out)] == [("Jewelry", None), (None, "blank text")]


def test_text_flag_bad_values(linear, capsys):
    assert _predict(linear, "--text", "gold \ud800 ring", "--text", "  ") == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[0]["label"] == "Jewelry" and rows[0]["text"] == "gold \ufffd ring"
    assert rows[1] == {"line": 2, "text": "", "error": "blank text", "label": None}


class Picky(Predictor):
    """Fails on any batch holding 'boom' (a text the model cannot take); 'Other' is one of its classes."""

    def __init__(self):
        super().__init__(".", {"labels": LABELS + ["Other"]})

    def predict_proba(self, texts):
        if any("boom" in t for t in texts):
            raise ValueError("cannot encode")
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 6 if "sofa" in t else 0] = 1.0
        return out


def test_a_text_the_model_fails_on_fails_only_itself_and_other_is_a_label(tmp_path):
    recs = [Record({"line": i + 1}, t) for i, t in enumerate(["brake pad", "boom", "leather sofa", "wiper"])]
    out = tmp_path / "o.jsonl"
    summary = predict_stream(Picky(), recs, out, batch_size=64, progress=False, threshold=0.5)
    rows = _rows(out)
    assert [r["label"] for r in rows] == ["Automotive", None, "Other", "Automotive"]
    assert rows[1]["error"] == "model failed on this text (ValueError)" and "error" not in rows[2]
    assert summary.as_dict()["labels"] == {"Automotive": 2, "Other": 1}
    assert summary.as_dict()["skipped_by_reason"] == {"model failed on this text (ValueError)": 1}
    assert "labels: Automotive 2, Other 1" in summary.line() and BELOW_THRESHOLD not in summary.line()
    with pytest.raises(ValueError):  # every text failing alone is a broken model, not a bad record
        predict_stream(Picky(), [Record({}, "boom"), Record({}, "boom 2")], tmp_path / "p.jsonl", progress=False)


# --- training text = prediction text ------------------------------------------------------------------

def test_every_input_kind_builds_the_training_text(linear, tmp_path, capsys):
    title, desc = "Gold  ring\twith\x00pendant", "Sterling silver " * 40
    want = offer_text(title, desc)
    expected = load_predictor(linear).predict([want], top_k=3)[0]
    jl = tmp_path / "in.jsonl"
    jl.write_text(json.dumps({"title": title, "description": desc}) + "\n" +
                  json.dumps({"Name": title, "Description": desc}) + "\n", encoding="utf-8")
    cs = tmp_path / "in.csv"
    cs.write_text("title,description\n" + f'"{title}","{desc}"\n', encoding="utf-8")
    got = []
    for src in (jl, cs):
        out = tmp_path / (src.name + ".out.jsonl")
        assert _predict(linear, "--input", src, "--out", out, "--keep_text", "--top_k", "3") == 0
        got += _rows(out)
    assert [r["text"] for r in got] == [want] * 3
    assert all(r["top_k"] == expected["top_k"] for r in got)
    # ready-made texts (.txt lines, --text) go through the same rule
    txt = tmp_path / "in.txt"
    txt.write_text(title + "\n", encoding="utf-8")
    out = tmp_path / "txt.out.jsonl"
    assert _predict(linear, "--input", txt, "--out", out, "--keep_text") == 0
    assert _rows(out)[0]["text"] == model_text(title) == "Gold ring with pendant"
    assert _predict(linear, "--text", title) == 0
    assert json.loads(capsys.readouterr().out)["text"] == model_text(title)


def test_resume_redoes_a_chunk_the_kill_cut_so_torch_batches_match(tmp_path):
    from predict_fixtures import make_encoder

    predictor = load_predictor(make_encoder(tmp_path / "encoder"), batch_size=4)
    texts, _ = toy_offers(7, seed=6)  # 42 records, chunks of 8
    recs = lambda: [Record({"line": i + 1}, t) for i, t in enumerate(texts)]  # noqa: E731
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    predict_stream(predictor, recs(), ref, batch_size=4, chunk_batches=2, progress=False)
    lines = ref.read_text(encoding="utf-8").splitlines(keepends=True)
    partial_path(out).write_text("".join(lines[:13]) + lines[13][:5], encoding="utf-8")  # cut inside chunk 2
    summary = predict_stream(predictor, recs(), out, batch_size=4, chunk_batches=2, resume=True, progress=False)
    assert summary.resumed_after == 8 and summary.read == len(texts)
    assert out.read_bytes() == ref.read_bytes()


def test_resume_never_adopts_an_output_it_did_not_leave_as_partial(linear, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("gold ring\ndiaper stroller\nnovel hardcover\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text('{"line": 1, "label": "from another run", "score": 0.9}\n', encoding="utf-8")  # an older output
    assert _predict(linear, "--input", src, "--out", out, "--resume") == 0
    assert [r["label"] for r in _rows(out)] == ["Jewelry", "Baby", "Books"]
    assert "nothing to resume" in capsys.readouterr().err
