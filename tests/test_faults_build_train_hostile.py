"""Builders, trainers, the profiler and evaluate.py against hostile inputs and flags: nothing of the user's
is deleted or overwritten, a damaged file costs only what it damages, a bad line never votes, and every
impossible flag is one line with exit 2."""

import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from category_classification import build_lspc_dataset, evaluate, train_fielded_linear, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data.lspc import load_category_map
from test_fielded import offers, write

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(err: str, words: str = ""):
    lines = [x for x in err.strip().splitlines() if x and not x.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, lines in members:
            zf.writestr(name, gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def _offer(cid, title, category, **kw):
    return json.dumps({"cluster_id": cid, "title": title, "category": category, **kw})


def test_fielded_trainer_never_deletes_user_files_in_its_out(tmp_path):
    train = write(tmp_path / "train.json.gz", offers())
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "thesis.tex").write_text("precious", encoding="utf-8")
    assert run(train_fielded_linear.main, ["--data", str(train), "--out", str(out), "--label_level", "six"]) == 0
    assert (out / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert (out / "category_model.json").is_file()
    # retrained into the same folder: the model replaced, the user's file still there, no stage left
    assert run(train_fielded_linear.main, ["--data", str(train), "--out", str(out), "--label_level", "six"]) == 0
    assert (out / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_kill_while_the_linear_model_saves_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
    from predict_fixtures import LABELS, toy_offers

    texts, labels = toy_offers(10)
    out = tmp_path / "m"
    LinearTextClassifier(LABELS, LinearConfig(char_ngrams=(3, 4))).fit(texts, labels).save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    new = LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 1))).fit(texts, labels)

    class Killed(BaseException):
        pass

    def die(*_a, **_k):
        raise Killed()

    monkeypatch.setattr("numpy.savez_compressed", die)
    with pytest.raises(Killed):
        new.save(out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert load_linear(out).predict(["gold ring"]) is not None


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("kill_at", range(9))
def test_a_kill_between_the_renames_of_a_save_loses_no_model(tmp_path, monkeypatch, kill_at):
    """A save killed after its files are written, while it renames them in (each rename a kill point): the
    folder then loads as the previous model (put back by the loader) or the new one, never a mixture."""
    import os

    from category_classification.core import artifacts
    from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
    from predict_fixtures import LABELS, toy_offers

    texts, labels = toy_offers(10)
    out = tmp_path / "m"
    (tmp_path / "m").mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    LinearTextClassifier(LABELS, LinearConfig(char_ngrams=(3, 4))).fit(texts, labels).save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    new = LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 1))).fit(texts, labels)

    class Killed(BaseException):
        pass

    calls, real = [], os.replace

    def replace(a, b):
        calls.append(b)
        if len(calls) > kill_at:
            raise Killed()
        real(a, b)

    monkeypatch.setattr(artifacts.os, "replace", replace)
    try:
        new.save(out)
        finished = True
    except Killed:
        finished = False
    monkeypatch.undo()
    assert finished == (kill_at == 8), f"the save took {len(calls)} renames; the test kills at each of them"
    for p in list(out.iterdir()):  # the killed process is gone: its leftovers carry a dead pid
        if p.name.startswith(artifacts.PUBLISH_BACKUP):
            p.rename(out / (p.name.rstrip("0123456789") + str(_dead_pid())))
        elif p.name.startswith(".save-"):  # .save-<pid>-<hex>
            p.rename(out / re.sub(r"^\.save-\d+", f".save-{_dead_pid()}", p.name))
    model = load_linear(out)  # loads: the previous model put back byte for byte, or the new one whole
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    if finished:
        assert model.config.word_ngrams == (1, 1)
    else:
        assert after == before and model.config.word_ngrams == LinearConfig().word_ngrams
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    new.save(out)  # the next save clears every leftover
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert load_linear(out).config.word_ngrams == (1, 1)


def test_a_publish_backup_that_is_a_link_is_never_followed(tmp_path):
    from category_classification.core import artifacts

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "category_model.json").write_text("theirs", encoding="utf-8")
    out = tmp_path / "m"
    out.mkdir()
    (out / f"{artifacts.PUBLISH_BACKUP}{_dead_pid()}").symlink_to(elsewhere)
    assert artifacts.restore_interrupted_publish(out) == []
    assert (elsewhere / "category_model.json").read_text(encoding="utf-8") == "theirs"
    assert not (out / "category_model.json").exists()


def test_profiler_out_never_overwrites_its_input_or_a_user_file(tmp_path, capsys):
    import webdata_discovery

    z = _zip(tmp_path / "c.zip", [("a.json.gz", [_offer(1, "gold ring", "Jewelry")])])
    before = z.read_bytes()
    assert run(webdata_discovery.main, ["--zip", str(z), "--workers", "1", "--out", str(z)]) == 2
    _one_error_line(capsys.readouterr().err, "is the input")
    assert z.read_bytes() == before
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}', encoding="utf-8")
    assert run(webdata_discovery.main, ["--zip", str(z), "--workers", "1", "--out", str(mine)]) == 2
    _one_error_line(capsys.readouterr().err, "not an earlier profile")
    assert run(webdata_discovery.main, ["--zip", str(z), "--workers", "1", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, "not a regular file")
    assert run(webdata_discovery.main, ["--zip", str(z), "--limit", "-5"]) == 2
    capsys.readouterr()
    prof = tmp_path / "p.json"
    for _ in range(2):  # its own earlier profile is replaced
        assert run(webdata_discovery.main, ["--zip", str(z), "--workers", "1", "--out", str(prof)]) == 0
    assert json.loads(prof.read_text(encoding="utf-8"))["counts"]


@pytest.mark.parametrize("name", ["../../userdata", "", "a/b", "dataset_dict.json", "..", "build_report.json"])
def test_full_split_name_must_be_a_plain_name(tmp_path, capsys, name):
    z = _zip(tmp_path / "c.zip", [("a.json.gz", [_offer(1, "gold ring", "Jewelry")])])
    assert run(build_lspc_dataset.main, ["--zip", str(z), "--out", str(tmp_path / "ds"), "--full",
                                         "--full_split_name", name]) == 2
    _one_error_line(capsys.readouterr().err, "--full_split_name")
    assert not (tmp_path / "ds").exists()


def test_a_build_with_an_empty_split_loads_back(tmp_path):
    from category_classification.data.dataset_dir import load_dataset_dir

    lines = [_offer(c, f"gold ring {c}", "Jewelry") for c in range(20)] + \
            [_offer(100 + c, f"leather boot {c}", "Shoes") for c in range(20)]
    z = _zip(tmp_path / "c.zip", [("a.json.gz", lines)])
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(z), "--out", str(out), "--categories", "Jewelry,Shoes",
                                         "--val_size", "0", "--quiet"]) == 0
    dsd = load_dataset_dir(out)
    assert dsd["validation"].num_rows == 0 and dsd["train"].num_rows > 0


def test_malformed_lines_never_vote_for_their_clusters_category(tmp_path):
    good = _offer(424242, "the hobbit paperback", "Books")
    cut = [_offer(424242, "x", "Shoes")[:-5] for _ in range(3)]  # three cut lines that claim Shoes
    z = _zip(tmp_path / "c.zip", [("a.json.gz", [good, *cut] + [_offer(c, f"boot {c}", "Shoes") for c in range(10)])])
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(z), "--out", str(out), "--categories", "Books,Shoes",
                                         "--val_size", "0", "--test_size", "0", "--quiet"]) == 0
    rows = dict(line.split("\t") for line in (out / "PDC2020_map.tsv").read_text(encoding="utf-8").splitlines()
                if "\t" in line and not line.startswith("#"))
    assert rows.get("424242", "").strip() == "Books"
    report = json.loads((out / "build_report.json").read_text(encoding="utf-8"))
    assert "malformed_json" in json.dumps(report)


def test_a_nested_cluster_id_never_moves_an_offer_to_another_cluster(tmp_path):
    from category_classification.data.dataset_dir import load_dataset_dir

    lines = [json.dumps({"extra": {"cluster_id": 555000 + i}, "cluster_id": 777, "title": f"gold ring {i}",
                         "category": "Jewelry"}) for i in range(20)]
    lines += [_offer(c, f"leather boot {c}", "Shoes") for c in range(40)]
    z = _zip(tmp_path / "c.zip", [("a.json.gz", lines)])
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(z), "--out", str(out), "--categories", "Jewelry,Shoes",
                                         "--quiet", "--allow_empty_splits"]) == 0
    dsd = load_dataset_dir(out)
    rings = {s: {r["cluster"] for r in dsd[s] if r["text"].startswith("gold ring")} for s in dsd}
    assert set().union(*rings.values()) == {777}
    assert sum(1 for s in rings.values() if s) == 1  # one cluster, one split


def test_reserved_category_names_in_a_map_are_bad_rows(tmp_path):
    path = tmp_path / "map.tsv"
    path.write_text("1\tBooks\n2\t(not in map)\n3\t(no category)\n4\tnot found\n5\tShoes\n", encoding="utf-8")
    cmap = load_category_map(path)
    assert cmap.names == ["Books", "Shoes"] and cmap.report["bad_map_row"] == 3


def test_damaged_or_deeply_nested_mwpd_files_keep_what_they_can(tmp_path, capsys):
    from category_classification.data.mwpd import file_lines

    import random
    from collections import Counter

    rng = random.Random(0)  # fixed bytes: where the damage lands, and what it inflates to, is the same every run
    rows = offers(300)  # 900 offers, made incompressible so the damage lies megabytes into the stream
    for o in rows:
        o["Description"] = rng.randbytes(1500).hex()
    blob = bytearray(gzip.compress("".join(json.dumps(o) + "\n" for o in rows).encode()))
    blob[len(blob) * 3 // 4] ^= 0xFF  # flipped bits late in the deflate stream
    damaged = tmp_path / "damaged.json.gz"
    damaged.write_bytes(bytes(blob))
    counts = Counter()
    lines = file_lines(damaged, counts)
    # inflating past the damage can give garbage lines before zlib notices: count the offers that survive whole
    whole = [x for x in lines if x.startswith(b'{"ID"') and x.endswith(b'}')]
    assert counts["corrupt_file"] == 1 and 100 < len(whole) < len(rows)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 200_000)
    assert file_lines(deep) == [b"[" * 200_000]  # not an array after all: its one line, counted by the caller
    out = tmp_path / "m"
    assert run(train_fielded_linear.main, ["--data", str(damaged), "--out", str(out), "--label_level", "six"]) == 0


@pytest.mark.parametrize("flags", [["--C", "nan"], ["--C", "-1"], ["--max_iter", "-5"], ["--word_ngrams", "2", "1"],
                                   ["--char_min_df", "0"], ["--features", "hashed", "--hash_bits", "64"],
                                   ["--seed", "-1"], ["--other_bias", "nan"], ["--other_bias", "inf"]])
def test_impossible_linear_flags_are_one_line(tmp_path, capsys, flags):
    from test_faults_train import make_data

    data = make_data(tmp_path / "data")
    capsys.readouterr()  # the dataset's own save messages (progress bars, when a test run shows them)
    assert run(train_linear_baseline.main, ["--data", str(data), "--out", str(tmp_path / "m"), *flags]) == 2
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flags", [["--C", "nan"], ["--C", "-1"], ["--category_weight", "nan"], ["--seed", "-1"]])
def test_impossible_fielded_flags_and_one_class_are_one_line(tmp_path, capsys, flags):
    train = write(tmp_path / "train.json.gz", offers())
    assert run(train_fielded_linear.main, ["--data", str(train), "--out", str(tmp_path / "m"), *flags]) == 2
    _one_error_line(capsys.readouterr().err)
    one = write(tmp_path / "one.json.gz", [o for o in offers() if o["lvl1"].startswith("67")])
    assert run(train_fielded_linear.main, ["--data", str(one), "--out", str(tmp_path / "m"), "--label_level", "lvl1"]) == 2
    _one_error_line(capsys.readouterr().err, "at least two")


def test_evaluate_never_writes_into_the_model_or_over_user_files(tmp_path, capsys):
    from predict_fixtures import make_linear
    from test_faults_train import make_data

    model, data = make_linear(tmp_path / "linear"), make_data(tmp_path / "data", train_classes=(0, 1, 2, 3))
    # the fixture model's labels are LABELS of predict_fixtures; any mismatch is refused later, so check paths
    info_before = (model / "category_model.json").read_bytes()
    for extra, words in ((["--save_preds", str(model / "category_model.json")], "inside the model"),
                         (["--out", str(model)], "inside the model"),
                         (["--batch_size", "0"], "--batch_size"), (["--batch_size", "-1"], "--batch_size")):
        assert run(evaluate.main, ["--model", str(model), "--data", str(data), *extra]) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert (model / "category_model.json").read_bytes() == info_before
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"text": "x", "label": "Shoes"}\n', encoding="utf-8")
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--save_preds", str(mine)]) == 2
    _one_error_line(capsys.readouterr().err, "not an earlier predictions file")
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "notes.md").write_text("mine", encoding="utf-8")
    assert run(evaluate.main, ["--model", str(model), "--data", str(data), "--out", str(folder)]) == 2
    _one_error_line(capsys.readouterr().err, "did not write")


def test_a_gzipped_json_array_on_one_long_line_and_zero_padding_are_read(tmp_path):
    from collections import Counter

    from category_classification.data.lspc import MAX_LINE_BYTES
    from category_classification.data.mwpd import file_lines

    rows = offers(4)
    filler = "x" * 400
    big = [dict(rows[i % len(rows)], Description=filler) for i in range(MAX_LINE_BYTES // 400 + 100)]
    arr = tmp_path / "array.json.gz"
    arr.write_bytes(gzip.compress(json.dumps(big).encode()))  # one line of over 4 MB
    counts = Counter()
    assert len(file_lines(arr, counts)) == len(big) and not counts
    padded = tmp_path / "padded.json.gz"
    padded.write_bytes(gzip.compress("".join(json.dumps(o) + "\n" for o in rows).encode()) + b"\0" * 4096)
    counts = Counter()
    assert len(file_lines(padded, counts)) == len(rows) and not counts


def test_the_text_rule_keeps_word_breaks_and_joiners_and_drops_invisible_marks():
    from category_classification.data.text import clean, text_problem

    assert clean("کتاب\u200cها") == "کتاب ها"  # ZWNJ separates Persian words: a space, not glued
    assert clean("gold\u200bring") == "gold ring"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert clean(family) == family  # the zero-width joiner of an emoji sequence stays
    assert clean("gold\u00adring\u200f") == "goldring"  # soft hyphen, direction mark: dropped
    assert text_problem("\ufeff") == text_problem("\u200d\u200d") == "blank text"
    assert text_problem("कि\u200dसान") is None


def test_invisible_titles_are_blank_everywhere_and_padding_between_members_is_read(tmp_path):
    from collections import Counter

    from category_classification.data.lspc import _gunzip_lines, offer_model_texts
    from category_classification.data.mwpd import iter_records
    from category_classification.data.text import text_problem

    for title in ("\u200d \u200d", "\u061c \u061c", " " * 300 + "\u200d"):
        assert text_problem(title) == "blank text"
        assert offer_model_texts({"title": title, "description": "gold ring"})[0] == ""
    assert text_problem(" " * 300 + "gold ring") is None  # leading blanks never hide a title
    rows = offers(2)
    rows[0]["Name"] = "\u200d \u200d"
    path = write(tmp_path / "t.json.gz", rows)
    counts = Counter()
    assert len(list(iter_records(path, counts))) == len(rows) - 1 and counts["missing_title"] == 1
    blob = gzip.compress(b"a\nb\n") + b"\0" * 8 + gzip.compress(b"c\n")
    for size in (4, 1024, 1 << 20):
        counts = Counter()
        assert list(_gunzip_lines(io.BytesIO(blob), counts, chunk_size=size)) == [b"a", b"b", b"c"]
        assert not counts["corrupt_member"]


def test_a_json_array_bomb_is_refused_not_inflated(tmp_path, capsys, monkeypatch):
    import category_classification.data.mwpd as mwpd

    monkeypatch.setattr(mwpd, "MAX_ARRAY_BYTES", 1 << 16)
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b"[" + b"{}," * 100_000 + b"{}]"))
    assert run(train_fielded_linear.main, ["--data", str(bomb), "--out", str(tmp_path / "m")]) == 2
    _one_error_line(capsys.readouterr().err, "JSON lines")
