"""predict.py against inputs an attacker (or an unlucky user) would send: special files as --out, labelled
data that looks like output, broken CSV quoting, zips with members Python cannot read, gzip bombs,
damaged model configs, foreign partial files, absurd --threads, non-finite ids, a closed pipe."""

import gzip
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from category_classification.core.cli import UserError
from category_classification.inference.batch import MAX_LINE_BYTES, partial_path
from predict_fixtures import make_linear
from test_faults_predict import _one_error_line, _predict, _rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    return make_linear(tmp_path_factory.mktemp("hostile") / "linear")


def _offer(title, **kw):
    return json.dumps({"title": title, "cluster_id": 1, **kw})


def test_out_that_is_a_pipe_is_refused_and_stays_a_pipe(linear, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("gold ring\n", encoding="utf-8")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _predict(linear, "--input", src, "--out", fifo) == 2
    _one_error_line(capsys.readouterr().err, "not a regular file")
    assert fifo.is_fifo()


@pytest.mark.parametrize("content", ['{"text": "nike air max", "label": "Shoes"}\n{"text": "ring", "label": "Jewelry"}\n',
                                     "\nIMPORTANT user data\n"])
def test_a_labelled_dataset_or_a_blank_first_line_is_not_taken_for_our_output(linear, tmp_path, capsys, content):
    src, out = tmp_path / "in.txt", tmp_path / "mine.jsonl"
    src.write_text("gold ring\n", encoding="utf-8")
    out.write_text(content, encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 2
    _one_error_line(capsys.readouterr().err, "not a predictions file")
    assert out.read_text(encoding="utf-8") == content


def test_a_foreign_or_folder_partial_file_is_refused_and_kept(linear, tmp_path, capsys):
    src, out = tmp_path / "in.txt", tmp_path / "o.jsonl"
    src.write_text("gold ring\n", encoding="utf-8")
    partial_path(out).write_text("my notes\n", encoding="utf-8")
    for extra in ([], ["--resume"]):
        assert _predict(linear, "--input", src, "--out", out, *extra) == 2
        _one_error_line(capsys.readouterr().err, "not an unfinished output")
    assert partial_path(out).read_text(encoding="utf-8") == "my notes\n" and not out.exists()
    out2 = tmp_path / "p.jsonl"
    partial_path(out2).mkdir()
    assert _predict(linear, "--input", src, "--out", out2) == 2
    _one_error_line(capsys.readouterr().err, "not a regular file")
    # a partial of ours with a damaged line (not JSON) in the middle: resume refuses in one line
    out3 = tmp_path / "q.jsonl"
    partial_path(out3).write_text('{"line": 1, "label": "Jewelry", "score": 0.9}\nnot json\n', encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out3, "--resume") == 2
    _one_error_line(capsys.readouterr().err, "cannot resume")


def test_a_refused_run_leaves_no_folders_and_no_partial(linear, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("gold ring\n", encoding="utf-8")
    assert _predict(tmp_path / "no_model", "--input", src, "--out", tmp_path / "a" / "b" / "o.jsonl") == 2
    assert not (tmp_path / "a").exists()
    capsys.readouterr()
    bad_csv, notzip = tmp_path / "x.csv", tmp_path / "x.zip"
    bad_csv.write_text("id,price\n1,3\n", encoding="utf-8")
    notzip.write_bytes(b"not a zip")
    for args, words in ((["--input", bad_csv], "no text / title"), (["--zip", notzip], "not a readable zip")):
        out = tmp_path / f"{args[1].stem}.jsonl"
        assert _predict(linear, *args, "--out", out) == 2
        _one_error_line(capsys.readouterr().err, words)
        assert not partial_path(out).exists() and not out.exists()


def test_csv_stray_quote_costs_one_record_and_never_invents_records(linear, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    src.write_text('id,title,description\n1,shoe boot,good\n2,"unterminated,x\n3,gold necklace,ok\n'
                   '4,"baby ""stroller""",ok\n5,"novel\nhardcover",ok\n', encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 0
    rows = _rows(out)
    assert [r.get("id") for r in rows] == ["1", None, "3", "4", "5"]
    assert rows[1]["line"] == 3 and rows[1]["error"].startswith("bad CSV")
    assert all("error" not in r for i, r in enumerate(rows) if i != 1)
    assert rows[4]["line"] == 6  # a quoted newline: the record is numbered by its first line


def test_csv_record_over_the_line_limit_costs_its_first_line_only(linear, tmp_path, monkeypatch):
    import category_classification.inference.batch as batch

    monkeypatch.setattr(batch, "MAX_RECORD_LINES", 50)
    src, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    # a quote opened and never closed, then hundreds of good rows: once the record passes the window it is
    # reported at its first line and reading starts again on the next one (a quoted field longer than the
    # window cannot be told from it: its other lines are read as records)
    rows = "".join(f"{i},gold ring {i}\n" for i in range(3, 200))
    src.write_text('id,title\n1,shoe boot\n2,"never closed\n' + rows, encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 0
    got = _rows(out)
    assert got[1]["line"] == 3 and "record too long" in got[1]["error"]
    assert [r.get("id") for r in got if "error" not in r] == ["1"] + [str(i) for i in range(3, 200)]


def test_csv_lines_that_each_open_a_quote_cost_linear_work(tmp_path, monkeypatch):
    import category_classification.inference.batch as batch

    monkeypatch.setattr(batch, "MAX_RECORD_LINES", 8)
    calls = 0
    real_next = batch._CsvLines.__next__

    def counted(self):
        nonlocal calls
        calls += 1
        return real_next(self)

    monkeypatch.setattr(batch._CsvLines, "__next__", counted)
    src = tmp_path / "q.csv"
    src.write_text("title\n" + 'x","y\n' * 2000, encoding="utf-8")  # every line leaves a quote open
    recs = list(batch.read_csv(src))
    lines = [r.ref["line"] for r in recs]
    assert lines == sorted(set(lines)) and len(recs) >= 1000  # each record once, in file order
    assert calls <= 2001 * 10  # each failure re-reads at most the window: linear, not quadratic


def test_csv_inch_marks_and_other_valid_files_read_as_the_csv_module_does(linear, tmp_path):
    import csv

    from category_classification.inference.batch import read_csv

    cases = {'id,title\n1,Samsung 55" QLED TV\n2,LG 27" monitor\n3,gold ring\n': None,
             "id,title\r1,a\r2,b\r": None,  # old Mac line endings
             "id,title\n1,a\n\n2,b\n\n": None,  # blank lines are not records
             "id,title\n1,a\n,\n2,b\n": None,  # a row of empty cells is (its title is blank)
             "id,title,title\n1,a,b\n": None,  # a repeated column name: the last, as DictReader
             'id,title\r\n1,"a\r\nb"\r\n2,c\r\n': None,
             '\ufeffid,title\n1,"x ""y"" z"\n': None}
    for text in cases:
        src = tmp_path / "v.csv"
        src.write_text(text, encoding="utf-8", newline="")
        with open(src, encoding="utf-8-sig", newline="") as fh:
            want = [(row["id"], row["title"]) for row in csv.DictReader(fh)]
        assert [(r.ref["id"], r.text) for r in read_csv(src)] == want, text


def test_csv_quote_open_at_the_end_of_the_file_costs_its_line_only(linear, tmp_path):
    src, out = tmp_path / "in.csv", tmp_path / "o.jsonl"
    src.write_text('id,title\n1,"gold ring\n2,baby stroller\n3,novel hardcover\n', encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 0
    rows = _rows(out)
    assert rows[0]["error"].startswith("bad CSV") and rows[0]["line"] == 2
    assert [r.get("id") for r in rows[1:]] == ["2", "3"] and all("error" not in r for r in rows[1:])


def test_tsv_is_read_as_tab_separated(linear, tmp_path):
    src, out = tmp_path / "in.tsv", tmp_path / "o.jsonl"
    src.write_text('id\ttitle\n1\tgold ring, 18k\n2\tSamsung 55" QLED TV\n3\t"gold\nring"\n', encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 0
    assert _rows(out)[0]["id"] == "1" and _rows(out)[0]["label"] == "Jewelry"
    assert _rows(out)[1]["id"] == "2" and "error" not in _rows(out)[1]
    assert _rows(out)[2]["id"] == "3" and _rows(out)[2]["label"] == "Jewelry"  # quoted as pandas writes it


def _zip_with(path, members: list[tuple[str, bytes]]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_zip_member_python_cannot_read_fails_only_itself(linear, tmp_path):
    good = gzip.compress((_offer("gold ring") + "\n").encode())
    z = _zip_with(tmp_path / "z.zip", [("a.json.gz", good), ("b.json.gz", good)])
    raw = bytearray(z.read_bytes())
    # member a's compression method in both headers -> 9 (Deflate64, which zipfile cannot inflate)
    local = raw.find(b"PK\x03\x04")
    raw[local + 8:local + 10] = (9).to_bytes(2, "little")
    central = raw.find(b"PK\x01\x02")
    raw[central + 10:central + 12] = (9).to_bytes(2, "little")
    z.write_bytes(bytes(raw))
    out = tmp_path / "o.jsonl"
    assert _predict(linear, "--zip", z, "--out", out) == 0
    rows = _rows(out)
    assert rows[0]["error"] == "corrupt_member" and rows[0]["member"] == "a.json.gz"
    assert rows[1]["member"] == "b.json.gz" and rows[1]["label"] == "Jewelry"


def test_zip_with_two_members_of_one_name_is_refused(linear, tmp_path, capsys):
    good = gzip.compress((_offer("gold ring") + "\n").encode())
    z = tmp_path / "dup.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.json.gz", good)
        with pytest.warns(UserWarning):
            zf.writestr("a.json.gz", good)
    assert _predict(linear, "--zip", z, "--out", tmp_path / "o.jsonl") == 2
    _one_error_line(capsys.readouterr().err, "more than one member named")


def test_gzip_bomb_line_is_skipped_without_being_held(tmp_path):
    from category_classification.data.lspc import iter_records

    payload = (_offer("gold ring") + "\n" + '{"title": "' + "a" * (8 * MAX_LINE_BYTES) + '"}\n'
               + _offer("silver ring") + "\n").encode()
    z = _zip_with(tmp_path / "bomb.zip", [("a.json.gz", gzip.compress(payload, 9))])
    del payload
    tracemalloc.start()
    recs = list(iter_records(z))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [r.reason for r in recs] == [None, "line_too_long", None]
    assert [r.ref["line"] for r in recs] == [1, 2, 3]
    assert peak < 4 * MAX_LINE_BYTES  # never the whole 32 MB line


def test_gunzip_lines_match_the_stream_at_every_chunk_boundary():
    from category_classification.data.lspc import _gunzip_lines

    lines = [b"x" * n for n in (0, 1, 4095, 4096, 4097, 70000, 3)]
    stream = b"\n".join(lines) + b"\n"
    blob = gzip.compress(stream[:50000]) + gzip.compress(stream[50000:])  # two gzip members
    for size in (1 << 10, 4096, 1 << 20):
        counts = Counter()
        assert list(_gunzip_lines(io.BytesIO(blob), counts, chunk_size=size)) == lines
        assert not counts["corrupt_member"]


@pytest.mark.parametrize("damage", [{"hash_bits": "x", "features": "hashed"}, {"hash_bits": 60, "features": "hashed"},
                                    {"word_ngrams": [5, 1]}, {"char_ngrams": [0, -1]}, {"C": "nan"}, []])
def test_a_damaged_linear_config_is_one_line(linear, tmp_path, capsys, damage):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(linear, model)
    cfg_file = model / "linear_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg_file.write_text(json.dumps({**cfg, **damage} if isinstance(damage, dict) else damage), encoding="utf-8")
    assert _predict(model, "--text", "gold ring") == 2
    _one_error_line(capsys.readouterr().err, "")


@pytest.mark.parametrize("temperature", [0, -1, "x", None])
def test_a_damaged_temperature_is_one_line_not_nan_scores(linear, tmp_path, capsys, temperature):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(linear, model)
    info_file = model / "category_model.json"
    info = json.loads(info_file.read_text(encoding="utf-8"))
    info_file.write_text(json.dumps({**info, "temperature": temperature}), encoding="utf-8")
    assert _predict(model, "--text", "gold ring") == 2
    _one_error_line(capsys.readouterr().err, "temperature")


@pytest.mark.parametrize("threads", ["0", "-3", "100000"])
def test_absurd_threads_are_one_line(linear, capsys, threads):
    assert _predict(linear, "--text", "gold ring", "--threads", threads) == 2
    _one_error_line(capsys.readouterr().err, "--threads")


def test_non_finite_ids_still_give_strict_json(linear, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    src.write_text('{"title": "gold ring", "id": 1e999}\n{"title": "gold ring", "id": [NaN, {"a": -Infinity}]}\n',
                   encoding="utf-8")
    assert _predict(linear, "--input", src, "--out", out) == 0

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    rows = [json.loads(x, parse_constant=refuse) for x in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["id"] == "inf" and rows[1]["id"] == ["nan", {"a": "-inf"}]
    assert all(r["label"] == "Jewelry" for r in rows)


def test_a_full_disk_is_one_line_and_the_partial_stays_for_resume(linear, tmp_path, capsys, monkeypatch):
    import errno

    import category_classification.inference.batch as batch

    src, out = tmp_path / "in.txt", tmp_path / "o.jsonl"
    src.write_text("gold ring\nbaby stroller\n", encoding="utf-8")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch.os, "fsync", full)
    assert _predict(linear, "--input", src, "--out", out) == 2
    _one_error_line(capsys.readouterr().err, "No space left on device")
    assert partial_path(out).is_file() and not out.exists()
    monkeypatch.undo()
    assert _predict(linear, "--input", src, "--out", out, "--resume") == 0
    assert [r["label"] for r in _rows(out)] == ["Jewelry", "Baby"]


def test_stdout_closed_by_the_reader_is_a_quiet_stop(linear):
    texts = [a for _ in range(3000) for a in ("--text", "gold ring with a long name to fill the pipe")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "category_classification.predict", "--model", str(linear), *texts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141


def test_a_shards_folder_holding_user_files_is_never_deleted(tmp_path):
    from category_classification.inference.sharding import remove_shard_dir, shard_dir

    out = tmp_path / "sh.jsonl"
    shard_dir(out).mkdir()
    (shard_dir(out) / "notes.txt").write_text("mine", encoding="utf-8")
    (shard_dir(out) / "manifest.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match="did not write"):
        remove_shard_dir(out)
    assert (shard_dir(out) / "notes.txt").read_text(encoding="utf-8") == "mine"
    (shard_dir(out) / "notes.txt").unlink()
    (shard_dir(out) / "part-00000-of-00002.jsonl").write_text("", encoding="utf-8")
    remove_shard_dir(out)
    assert not shard_dir(out).exists()
