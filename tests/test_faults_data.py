"""Hostile inputs to the dataset builder, each with the exact bad input: the output folder is never lost,
every user error is one line and exit 2, one bad record is skipped (or repaired) and counted."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from datasets import load_from_disk

from category_classification import build_lspc_dataset
from category_classification.core.cli import run
from category_classification.data.build_dir import MARKER, PREVIOUS, clean_stale
from category_classification.data.lspc import load_category_map, parse_cluster_id
from category_classification.data.synthetic_lspc import write_lspc_zip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    zip_path, map_path, _ = write_lspc_zip(root, n_offers=600, n_members=2, n_clusters=120, mapped_fraction=0.8, seed=4)
    return zip_path, map_path


def build(corpus, out, *extra):
    zip_path, map_path = corpus
    return run(build_lspc_dataset.main, ["--zip", str(zip_path), "--map", str(map_path), "--out", str(out),
                                         "--quiet", "--read_workers", "1", *extra])


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("foreign", ["notes.txt", "model/category_model.json", "lspcV2020.zip"])
def test_out_holding_foreign_files_is_refused_before_any_work(corpus, tmp_path, capsys, foreign):
    out = tmp_path / "ds"
    assert build(corpus, out) == 0
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert build(corpus, out) == 2
    one_line_error(capsys, "did not write", Path(foreign).parts[0])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and (out / foreign).read_text() == "mine"
    assert not list(tmp_path.glob(".build-*"))  # refused before a temp folder was made


def test_out_holding_the_input_map_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "ds"
    assert build(corpus, out) == 0
    inner_map = out / "PDC2020_map.tsv"  # a name the builder itself writes, so only the input check catches it
    inner_map.write_bytes(Path(corpus[1]).read_bytes())
    code = run(build_lspc_dataset.main, ["--zip", str(corpus[0]), "--map", str(inner_map), "--out", str(out)])
    assert code == 2 and inner_map.is_file()
    one_line_error(capsys, "holds the input")


def test_out_naming_a_file_or_below_a_file_is_one_line(corpus, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    assert build(corpus, target) == 2
    one_line_error(capsys, "is a file")
    assert build(corpus, target / "ds") == 2
    one_line_error(capsys, "cannot create")
    assert target.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder_is_one_line(corpus, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert build(corpus, locked / "ds") == 2
        one_line_error(capsys, "not writable")
    finally:
        locked.chmod(0o700)


def test_rebuild_replaces_the_old_dataset_and_a_failed_build_keeps_it(corpus, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    assert build(corpus, out) == 0
    old = load_from_disk(str(out))["test"]["text"]
    assert build(corpus, out, "--seed", "9") == 0
    assert load_from_disk(str(out))["test"]["text"] != old  # replaced in place

    from category_classification.data import builder

    def boom(*a, **k):
        raise RuntimeError("killed in pass 2")

    monkeypatch.setattr(builder, "_write_splits", boom)
    before = load_from_disk(str(out))["test"]["text"]
    with pytest.raises(RuntimeError):
        build(corpus, out)
    assert load_from_disk(str(out))["test"]["text"] == before and not list(tmp_path.glob(".build-*"))


def test_sigkill_at_any_point_leaves_the_previous_dataset_and_the_next_run_cleans_up(tmp_path):
    zip_path, map_path, _ = write_lspc_zip(tmp_path, n_offers=20000, n_members=4, mapped_fraction=0.5, seed=8)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "category_classification.build_lspc_dataset", "--zip", str(zip_path), "--map",
           str(map_path), "--out", str(out), "--quiet", "--read_workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd + ["--seed", "5", "--out", str(tmp_path / "new")], check=True, env=env, capture_output=True)
    new = load_from_disk(str(tmp_path / "new"))["train"]["text"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    old = load_from_disk(str(out))["train"]["text"]
    assert old != new
    for delay in (0.5, 1.5, 3.0, 5.0):
        proc = subprocess.Popen(cmd + ["--seed", "5"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not out.exists():  # killed between the two renames of the swap: the next run restores it
            clean_stale(out)
        assert load_from_disk(str(out))["train"]["text"] in (old, new)  # the old dataset or the finished new one
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    assert not list(tmp_path.glob(".build-*"))


def test_stale_temp_folders_only_ours_are_removed(tmp_path):
    out = tmp_path / "ds"
    ours = tmp_path / ".build-ds-abc123"
    (ours / PREVIOUS).mkdir(parents=True)
    (ours / PREVIOUS / "dataset_dict.json").write_text('{"splits": []}')
    (ours / MARKER).write_text(json.dumps({"pid": dead_pid(), "out": str(out)}))
    # a killed build into ds-v2 (its name starts like ds's temp folders): its old dataset is not ours to move
    sibling = tmp_path / ".build-ds-v2-abc"
    (sibling / PREVIOUS).mkdir(parents=True)
    (sibling / MARKER).write_text(json.dumps({"pid": dead_pid(), "out": str(tmp_path / "ds-v2")}))
    running = tmp_path / ".build-ds-live"
    running.mkdir()
    (running / MARKER).write_text(json.dumps({"pid": 1, "out": str(out)}))  # a live process: a build running now
    foreign = tmp_path / ".build-ds-user"
    foreign.mkdir()  # no marker: not recognisably ours
    other = tmp_path / ".build-other-x"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"pid": dead_pid()}))
    assert clean_stale(out) == [ours.name]
    assert (out / "dataset_dict.json").is_file()  # the old dataset, moved aside mid-swap, is back
    assert running.is_dir() and foreign.is_dir() and other.is_dir() and (sibling / PREVIOUS).is_dir()


def test_map_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    path = tmp_path / "map.tsv"
    path.write_bytes("\ufeff17\tBooks\n18\tShoes\n".encode("utf-8"))
    cmap = load_category_map(path)
    assert cmap.report["clusters"] == 2 and cmap.lookup([17])[0] == cmap.names.index("Books")
    assert not cmap.report.get("header_rows")


def test_digits_int_refuses_are_skipped_and_counted(tmp_path, capsys):
    assert parse_cluster_id("²") is None and parse_cluster_id("١٢٣") is None and parse_cluster_id(" 42 ") == 42
    path = tmp_path / "map.tsv"
    path.write_text("5\tBooks\n²\tBooks\n١٢٣\tShoes\n", encoding="utf-8")
    assert load_category_map(path).report["bad_map_row"] == 2
    lines = [{"cluster_id": "²", "title": "a book"}, {"cluster_id": "١٢٣", "title": "a shoe"},
             {"cluster_id": "\u0665", "title": "x"}] + [{"cluster_id": 5, "title": f"novel {i}"} for i in range(40)]
    zip_path = tmp_path / "c.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("p.json.gz", gzip.compress("\n".join(json.dumps(o, ensure_ascii=False) for o in lines).encode()))
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(zip_path), "--map", str(path), "--out", str(out), "--quiet",
                                         "--allow_empty_splits"]) == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped_by_reason"]["bad_cluster_id"] == 3 and report["records_kept"] == 40
    assert "Traceback" not in capsys.readouterr().err


def test_empty_validation_or_test_is_refused_unless_allowed(tmp_path, capsys):
    src = tmp_path / "tiny.jsonl"
    src.write_text("\n".join(json.dumps({"Name": f"shirt {i}", "lvl1": "67000000_Clothing"}) for i in range(3)))
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--mwpd", str(src), "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, "split came out empty", "--allow_empty_splits")
    assert not out.exists()
    assert run(build_lspc_dataset.main, ["--mwpd", str(src), "--out", str(out), "--quiet", "--allow_empty_splits"]) == 0
    assert "WARNING" in capsys.readouterr().err and out.is_dir()


def test_one_bad_record_is_skipped_or_repaired_and_counted(tmp_path):
    good = [json.dumps({"cluster_id": 100 + i, "title": f"ring {i}", "category": "Jewelry"}).encode()
            for i in range(60)]
    bad = [b'{"cluster_id": 7, "category": "Jewelry", "title": "broken',
           b'{"cluster_id": 7, "category": "Jewelry", "title": "caf\xff"}',
           b'{"cluster_id": 8, "title": "lone \\ud800 surrogate", "category": "Jewelry"}',
           b'\xef\xbb\xbf{"cluster_id": 9, "title": "after a bom", "category": "Jewelry"}']
    zip_path = tmp_path / "c.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("p.json.gz", gzip.compress(b"\n".join(bad + good)))
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--zip", str(zip_path), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "build_report.json").read_text())
    skipped = report["skipped_by_reason"]
    assert skipped["malformed_json"] == 1 and skipped["invalid_utf8"] == 1 and report["records_kept"] == 62
    dsd = load_from_disk(str(out))
    texts = [t for s in dsd.values() for t in s["text"]]
    assert "lone \ufffd surrogate" in texts and "after a bom" in texts


def test_mwpd_file_with_a_bom_keeps_its_first_record(tmp_path):
    from category_classification.data.mwpd import read_mwpd

    src = tmp_path / "m.json"
    rows = [json.dumps({"Name": f"shirt {i}", "lvl1": "67000000_Clothing"}) for i in range(3)]
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    assert [t for t, _, _ in read_mwpd(src)] == ["shirt 0", "shirt 1", "shirt 2"]


@pytest.mark.parametrize("argv, words", [
    (["--mwpd", "a", "--zip", "b"], ["exactly one source"]),
    (["--mwpd", "{mwpd}", "--max_other_fraction", "0.3"], ["--other_label"]),
    (["--mwpd", "{mwpd}", "--keep_unmapped", "--other_label", "O"], ["--zip"]),
    (["--zip", "{zip}", "--label_level", "all"], ["--mwpd"]),
    (["--zip", "{zip}", "--categories", "Nope,Nada", "--map", "{map}"], ["none of --categories"]),
])
def test_flag_mistakes_are_one_line(corpus, tmp_path, capsys, argv, words):
    mwpd = REPO / "data" / "mwpd" / "validation.json.gz"
    argv = [a.format(mwpd=mwpd, zip=corpus[0], map=corpus[1]) for a in argv]
    assert run(build_lspc_dataset.main, argv + ["--out", str(tmp_path / "o"), "--quiet"]) == 2
    one_line_error(capsys, *words)


def test_other_label_naming_a_target_class_is_one_line(tmp_path, capsys):
    mwpd = REPO / "data" / "mwpd" / "validation.json.gz"
    assert run(build_lspc_dataset.main, ["--mwpd", str(mwpd), "--other_label", "Books", "--out",
                                         str(tmp_path / "o"), "--quiet"]) == 2
    one_line_error(capsys, "--other_label Books is also a")


def test_a_zip_without_categories_says_why_nothing_was_kept(tmp_path, capsys):
    zip_path = tmp_path / "c.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("p.json.gz", gzip.compress(b"\n".join(json.dumps({"cluster_id": i, "title": "x"}).encode()
                                                           for i in range(20))))
    assert run(build_lspc_dataset.main, ["--zip", str(zip_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    one_line_error(capsys, "no offer was kept of 20 lines read", "no_category 20")


def test_out_as_the_current_folder_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", ".."):
        assert build(corpus, out) == 2
        one_line_error(capsys, "current folder")
    assert build(corpus, "ds") == 0 and (here / "ds" / "dataset_dict.json").is_file()
