"""The bench/ scripts against a hostile but realistic user: outputs that would replace a user's file, the repo's
data or an input; impossible flag values; damaged inputs; a measuring process that dies. Each refusal is one
line on stderr and exit 2, before any work; what the scripts write appears whole (docs/reliability.md section 6)."""

import json
import os
from pathlib import Path

import pytest

from category_classification.core.cli import run
from test_faults_predict import _one_error_line

REPO = Path(__file__).resolve().parents[1]


# --- bench/mwpd_benchmark.py ------------------------------------------------------------------------------

@pytest.fixture
def mwpd_dir(tmp_path):
    from test_mwpd_benchmark import write_mwpd

    d = tmp_path / "mwpd"
    d.mkdir()
    write_mwpd(d / "train.json.gz", 6, 0)
    write_mwpd(d / "validation.json.gz", 3, 1)
    return d


def _bench(*argv):
    from bench import mwpd_benchmark

    return run(mwpd_benchmark.main, [str(a) for a in argv])


def test_mwpd_benchmark_out_that_is_a_file_a_users_json_or_the_data_is_refused(mwpd_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "benchmark.json").write_text('{"mine": 1}\n', encoding="utf-8")
    data = REPO / "data"
    before = sorted(p.name for p in data.rglob("*"))
    for out, words in ((notes, "is a file"), (data / "mwpd", "lies inside"), (data / "x", "lies inside"),
                       (mine, "not an earlier benchmark.json"), (mwpd_dir / "train.json.gz", "is a file")):
        assert _bench("--out", out, "--mwpd_dir", mwpd_dir, "--models", "reference") == 2
        _one_error_line(capsys.readouterr().err, words)
    assert notes.read_text(encoding="utf-8") == "mine\n"
    assert (mine / "benchmark.json").read_text(encoding="utf-8") == '{"mine": 1}\n'
    assert sorted(p.name for p in data.rglob("*")) == before


@pytest.mark.parametrize("flags, words", [(["--max_offers", "-5"], "--max_offers"),
                                          (["--device", "nonsense"], "--device"),
                                          (["--models", ","], "unknown model kind")])
def test_mwpd_benchmark_impossible_flags_are_one_line(mwpd_dir, tmp_path, capsys, flags, words):
    assert _bench("--out", tmp_path / "o", "--mwpd_dir", mwpd_dir, *flags) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", [b"not gzip at all", b'{"Name": "gold ring"}\n'])
def test_mwpd_benchmark_damaged_or_unlabelled_test_file_is_one_line_not_a_hang(mwpd_dir, tmp_path, capsys, content):
    bad = tmp_path / ("bad.json.gz" if content.startswith(b"not") else "bad.json")
    bad.write_bytes(content)
    assert _bench("--out", tmp_path / "o", "--mwpd_dir", mwpd_dir, "--models", "reference", "--test", bad) == 2
    _one_error_line(capsys.readouterr().err, str(bad))
    assert not (tmp_path / "o").exists()


def test_mwpd_benchmark_a_failing_kind_process_ends_the_wait():
    """A kind whose process raises (here: no files at all) is reported, never waited on forever."""
    from bench.mwpd_benchmark import KindFailed, run_isolated

    with pytest.raises(KindFailed):
        run_isolated("reference", {})


# --- bench/compare.py -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from predict_fixtures import make_dataset, make_linear

    d = tmp_path_factory.mktemp("compare") / "runs"
    make_dataset(d / "mwpd6")
    make_linear(d / "linear")
    return d


def _compare(runs, out, *argv):
    from bench import compare

    files = ["--md", out / "b.md", "--json", out / "c.json", "--plot", out / "c.png"]
    return run(compare.main, [str(a) for a in ["--runs", runs, "--seconds", "0.02", "--no_export", *files, *argv]])


def test_compare_never_replaces_a_users_notes_json_or_picture(runs, tmp_path, capsys):
    mine = {"b.md": "# My own notes\nimportant\n", "c.json": '{"mine": 1}\n', "c.png": "PNG-ish bytes"}
    for name, text in mine.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    for flag in ("--md", "--json", "--plot"):
        assert _compare(runs, tmp_path) == 2
        _one_error_line(capsys.readouterr().err, f"{flag} ")
        (tmp_path / {"--md": "b.md", "--json": "c.json", "--plot": "c.png"}[flag]).rename(tmp_path / f"{flag}.kept")
    assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.kept")} == {
        "--md.kept": mine["b.md"], "--json.kept": mine["c.json"], "--plot.kept": mine["c.png"]}
    # a model's own file as --json
    assert _compare(runs, tmp_path, "--json", runs / "linear" / "category_model.json") == 2
    _one_error_line(capsys.readouterr().err, "inside the model")
    assert not (runs / "compare.md").exists()


def test_compare_md_may_name_the_runs_own_table(tmp_path):
    """--md RUNS/compare.md (the docs' speed command) was refused as 'the input': it is the same output."""
    from bench import compare
    from predict_fixtures import make_dataset, make_linear

    runs = tmp_path / "runs"
    make_dataset(runs / "mwpd6")
    make_linear(runs / "linear")
    argv = ["--runs", runs, "--seconds", "0.02", "--no_export", "--md", runs / "compare.md", "--plot",
            runs / "compare.png"]
    assert run(compare.main, [str(a) for a in argv]) == 0
    text = (runs / "compare.md").read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "| linear |" in text and "compare.png" in text
    assert run(compare.main, [str(a) for a in argv]) == 0  # and again over its own table


@pytest.mark.parametrize("flags, words", [(["--seconds", "inf"], "--seconds"), (["--seconds", "nan"], "--seconds"),
                                          (["--seconds", "0"], "--seconds"), (["--threads", "-3"], "--threads"),
                                          (["--split", "nope"], "--split nope")])
def test_compare_impossible_flags_are_one_line_before_any_measurement(runs, tmp_path, capsys, flags, words):
    assert _compare(runs, tmp_path, *flags) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert list(tmp_path.iterdir()) == []


def test_compare_keeps_the_hand_written_part_and_writes_nothing_when_every_measurement_fails(runs, tmp_path, capsys):
    from bench.compare import KEEP_MARK

    doc = tmp_path / "b.md"
    doc.write_text(f"# old table\n\n{KEEP_MARK}\n# by hand\nkept\n", encoding="utf-8")
    assert _compare(runs, tmp_path) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and text.endswith(f"{KEEP_MARK}\n# by hand\nkept\n")
    assert json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))["rows"]
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = tmp_path / "broken_runs"
    broken.mkdir()
    os.symlink(runs / "mwpd6", broken / "mwpd6")
    (broken / "linear").mkdir()
    for p in (runs / "linear").iterdir():
        (broken / "linear" / p.name).write_bytes(p.read_bytes())
    (broken / "linear" / "linear_weights.npz").write_bytes(b"damaged")
    capsys.readouterr()
    assert _compare(broken, tmp_path) == 1
    assert "none of the 1 measurements succeeded" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == written


# --- the cross-validation scripts -------------------------------------------------------------------------

@pytest.mark.parametrize("script, argv, words", [
    ("linear_cv", ["--folds", "1"], "--folds must be"),
    ("linear_cv", ["--folds", "0"], "--folds must be"),
    ("linear_cv", ["--only", "typo"], "'typo': unknown configuration"),
    ("lora_cv", ["--folds", "-2"], "--folds must be"),
    ("lora_cv", ["--folds", "2", "--folds_to_run", "7"], "numbered 0 to 1"),
])
def test_cv_impossible_folds_and_names_are_one_line_before_reading(script, argv, words, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"bench.{script}").main
    extra = ["--out", str(tmp_path / "cv")] if script == "lora_cv" else []
    assert run(main, argv + extra) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert list(tmp_path.iterdir()) == []


def test_lora_cv_out_that_is_a_file_the_data_or_a_users_cv_json_is_refused(tmp_path, capsys):
    from bench import lora_cv

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n", encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cv.json").write_text('{"mine": 1}\n', encoding="utf-8")
    for out, words in ((notes, "is a file"), (REPO / "data", "lies inside"), (mine, "not an earlier cv.json")):
        assert run(lora_cv.main, ["--out", str(out), "--folds", "2"]) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert notes.read_text(encoding="utf-8") == "mine\n"
    assert (mine / "cv.json").read_text(encoding="utf-8") == '{"mine": 1}\n'


def test_lora_cv_a_torn_fold_json_or_marker_is_one_line(tmp_path):
    from bench.lora_cv import check_fold_text, finished_fold
    from category_classification.core.cli import UserError

    done = tmp_path / "fold.json"
    for text in ('{"lora_a', '["a list"]', '{"mine": 1}'):
        done.write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match="not a finished fold"):
            finished_fold(done, [])
    fold = tmp_path / "fold0"
    fold.mkdir()
    (fold / "text.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="not a fold marker"):
        check_fold_text(fold, False)


def test_lora_cv_a_fold_folder_holding_a_users_files_is_refused_and_kept(tmp_path):
    from bench.lora_cv import check_fold_text
    from category_classification.core.cli import UserError

    fold = tmp_path / "fold0"
    fold.mkdir()
    (fold / "notes.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(UserError, match="not a fold folder.*notes.txt"):
        check_fold_text(fold, False)
    (fold / "notes.txt").unlink()
    (fold / "data").mkdir()
    (fold / "data" / "mine.csv").write_text("a,b\n", encoding="utf-8")  # not a dataset: save_to_disk would write over
    with pytest.raises(UserError, match="not a fold's dataset"):
        check_fold_text(fold, False)
    assert (fold / "data" / "mine.csv").read_text(encoding="utf-8") == "a,b\n"
    assert not (fold / "text.json").exists()
    (fold / "data" / "mine.csv").unlink()
    (fold / ".text.tmp4242.json").write_text("{", encoding="utf-8")  # a killed run's write-beside file
    check_fold_text(fold, False)  # resumes
    assert (fold / "text.json").is_file()


def test_mwpd_minilm_a_cache_file_it_did_not_write_is_refused_and_kept(tmp_path):
    import numpy as np

    from bench.mwpd_minilm import _cached, _save
    from category_classification.core.cli import UserError

    ours = tmp_path / "minilm.npz"
    _save(ours, "k1", ["a", "b"], np.eye(2), {"train_seconds": 1.0})
    assert _cached(ours, "k1")["names"] == ["a", "b"]
    assert _cached(ours, "other offers") is None  # refitted and replaced: it is ours
    for name, write in (("text.npz", lambda p: p.write_text("mine", encoding="utf-8")),
                        ("arrays.npz", lambda p: np.savez(p, weights=np.ones(3)))):
        path = tmp_path / name
        write(path)
        before = path.read_bytes()
        with pytest.raises(UserError, match="not a cache file of bench/mwpd_minilm.py"):
            _cached(path, "k1")
        assert path.read_bytes() == before


def test_lora_oof_flags_and_its_saved_folds(tmp_path, capsys):
    import numpy as np

    from bench import lora_oof

    for argv, words in ((["--configs", "a b=--epochs 1"], "'a b' is not a new name"),
                        (["--configs", "a=;a=--epochs 4"], "'a' is not a new name"),
                        (["--configs", ";"], "names no fine-tune"),
                        (["--configs", "data=--epochs 1"], "nor 'data'"),
                        (["--seconds", "nan"], "--seconds"), (["--folds", "1"], "--folds must be"),
                        (["--device", "nonsense"], "--device"), (["--combine"], "no oof_*.npz")):
        assert run(lora_oof.main, ["--out", str(tmp_path / "o"), *argv]) == 2
        _one_error_line(capsys.readouterr().err, words)
    # what a stopped run kept is read back; a rerun with other flags for the same name is refused, not mixed
    path = tmp_path / "o" / "oof_e4.npz"
    lora_oof._write(path, {0: np.eye(3, dtype=np.float32)}, {"flags": ["--epochs", "4"], "folds": 5,
                                                              "seconds": {"0": 1.0}})
    assert list(lora_oof._done(path, 5)) == [0] and lora_oof._done(path, 5)[0].shape == (3, 3)
    assert run(lora_oof.main, ["--out", str(tmp_path / "o"), "--configs", "e4=--epochs 2"]) == 2
    _one_error_line(capsys.readouterr().err, "made with other flags")
    # another number of folds: its fold 0 is other offers (it was taken as done, or failed in a traceback)
    for argv in (["--configs", "e4=--epochs 4"], ["--combine"]):
        assert run(lora_oof.main, ["--out", str(tmp_path / "o"), "--folds", "3", *argv]) == 2
        _one_error_line(capsys.readouterr().err, "a 5-fold split, not of --folds 3")
    assert list(lora_oof._done(path, 5)) == [0]
    (tmp_path / "o" / "oof_mine.npz").write_text("my notes", encoding="utf-8")
    assert run(lora_oof.main, ["--out", str(tmp_path / "o"), "--combine"]) == 2
    _one_error_line(capsys.readouterr().err, "not a file of bench/lora_oof.py")
    assert (tmp_path / "o" / "oof_mine.npz").read_text(encoding="utf-8") == "my notes"


def test_open_set_cv_wrong_layout_and_unknown_names_are_one_line(runs, capsys):
    from bench import open_set_cv

    for argv, words in ((["--data", str(runs / "mwpd6")], "source_category"),
                        (["--data", str(runs / "mwpd6"), "--only", "typo"], "'typo': unknown configuration"),
                        (["--data", str(runs / "nothing")], "not found"),
                        (["--data", str(runs / "mwpd6"), "--folds", "1"], "--folds must be")):
        assert run(open_set_cv.main, argv) == 2
        _one_error_line(capsys.readouterr().err, words)


# --- the throughput, chaos and load benches ---------------------------------------------------------------

@pytest.mark.parametrize("script, argv, words", [
    ("build_throughput", ["--offers", "-5"], "--offers"),
    ("build_throughput", ["--offers", "100", "--members", "0"], "--members"),
    ("build_throughput", ["--offers", "100", "--mapped_fraction", "nan"], "--mapped_fraction"),
    ("zip_shard_start", ["--offers", "100", "--nproc", "0"], "--nproc"),
    ("zip_shard_start", ["--offers", "0"], "--offers"),
    ("chaos", ["--only", "nope"], "'nope': unknown part"),
    ("chaos", ["--only", "predict", "--kills", "-1"], "--kills"),
    ("chaos", ["--only", "predict", "--poison_rate", "2"], "--poison_rate"),
    ("chaos", ["--only", "predict", "--offers", "1"], "--offers must be at least 300"),
])
def test_bench_counts_are_one_line_before_any_work(script, argv, words, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"bench.{script}").main
    work = [] if script == "chaos" else ["--work", str(tmp_path / "w")]
    assert run(main, argv + work) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert list(tmp_path.iterdir()) == []


def test_zip_shard_start_a_run_logging_much_ends_with_its_error_tail(tmp_path):
    """Its ranks' stderr went to a pipe read only at the end: 64 kB of logs blocked them and the bench hung."""
    import os
    import sys
    import threading

    from bench.zip_shard_start import watch_ranks

    part = tmp_path / "part-00000-of-00001.jsonl"
    code = ("import sys, pathlib; sys.stderr.write('warning: x\\n' * 100000); "
            f"pathlib.Path({str(part)!r}).write_text('{{}}\\n'); sys.stderr.write('the last line'); sys.exit(3)")
    result = []
    t = threading.Thread(target=lambda: result.append(watch_ranks([sys.executable, "-c", code], dict(os.environ),
                                                                  [part])), daemon=True)
    t.start()
    t.join(60)
    assert result, "watch_ranks hung on a child's stderr"
    rc, wall, first, err = result[0]
    assert rc == 3 and err.endswith("the last line") and len(err) == 3000
    assert first[0] is not None or part.exists()


def test_a_zip_generation_killed_midway_is_never_reused(tmp_path, monkeypatch):
    import category_classification.data.synthetic_lspc as synthetic
    from bench.build_throughput import generated_zip

    real = synthetic.write_lspc_zip

    def dies_midway(out_dir, **kw):
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "lspcV2020.zip").write_bytes(b"PK\x03\x04 torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_lspc_zip", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        generated_zip(tmp_path / "z", n_offers=50, n_members=2, seed=1)
    assert list((tmp_path / "z").iterdir()) == []
    monkeypatch.setattr(synthetic, "write_lspc_zip", real)
    import zipfile

    path = generated_zip(tmp_path / "z", n_offers=50, n_members=2, seed=1)
    assert len(zipfile.ZipFile(path).namelist()) == 2
    assert sorted(p.name for p in (tmp_path / "z").iterdir()) == ["PDC2020_map.tsv", "lspcV2020.zip"]


def test_chaos_json_and_work_are_checked_before_any_run(tmp_path, capsys):
    from bench import chaos

    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}\n', encoding="utf-8")
    for argv, words in ((["--json", str(mine)], "--json"), (["--work", str(tmp_path / "none")], "not found"),
                        (["--json", str(REPO / "data" / "x.json")], "lies inside")):
        assert run(chaos.main, ["--only", "predict", *argv]) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert mine.read_text(encoding="utf-8") == '{"mine": 1}\n'


def test_load_test_refuses_before_starting_the_service(runs, tmp_path, capsys):
    from bench import load_test

    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}\n', encoding="utf-8")
    model = str(runs / "linear")
    for argv, words in ((["--model", str(tmp_path)], "not a trained model"),
                        (["--model", model, "--clients", "0"], "--clients"),
                        (["--model", model, "--seconds", "nan"], "--seconds"),
                        (["--model", model, "--seconds", "inf"], "--seconds"),
                        (["--model", model, "--titles_per_request", "5000"], "only 2000 titles"),
                        (["--model", model, "--json", str(mine)], "--json"),
                        (["--model", model, "--json", str(runs / "linear" / "metrics.json")], "inside the model")):
        assert run(load_test.main, argv) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert mine.read_text(encoding="utf-8") == '{"mine": 1}\n'


def test_load_test_passes_on_the_services_own_refusal_in_one_line(runs, capsys):
    from bench import load_test

    assert run(load_test.main, ["--model", str(runs / "linear"), "--max_batch", "0", "--seconds", "1",
                                "--warmup_s", "0"]) == 2
    _one_error_line(capsys.readouterr().err, "serve.py refused to start: --max_batch")


# --- the search, encoder and MiniLM benches ---------------------------------------------------------------

@pytest.mark.parametrize("script, argv, words", [
    ("mwpd_best_search", ["--variants", "bogus"], "is not FEATURES:MODE"),
    ("mwpd_best_search", ["--variants", "text:flat,nomode"], "unknown mode 'nomode'"),  # ran flat twice, silently
    ("mwpd_best_search", ["--variants", "text:pathsTx"], "unknown mode"),
    ("mwpd_best_search", ["--c", "nan"], "--c"),
    ("mwpd_best_search", ["--cv", "--temperatures", "{bad"], "not JSON"),
    ("mwpd_best_search", ["--cv", "--temperatures", '{"lvl1": -1}'], "positive numbers"),
    ("encoder_throughput", ["--presets", "nope"], "'nope': unknown preset"),
    ("encoder_throughput", ["--n", "0"], "--n"),
    ("encoder_throughput", ["--steps", "0"], "--steps"),
    ("encoder_throughput", ["--device", "nonsense"], "--device"),
    ("minilm_baselines", ["step", "--steps", "0"], "--steps"),
    ("minilm_baselines", ["step", "--batch", "0"], "--batch"),
    ("minilm_baselines", ["probe", "--threads", "100000"], "--threads"),
    ("mwpd_minilm", ["--out", "unused", "--tasks", "nope"], "'nope': unknown task"),
    ("mwpd_minilm", ["--out", "unused", "--device", "nonsense"], "--device"),
])
def test_search_and_encoder_benches_refuse_in_one_line_before_any_work(script, argv, words, capsys):
    import importlib

    assert run(importlib.import_module(f"bench.{script}").main, argv) == 2
    _one_error_line(capsys.readouterr().err, words)


def test_lora_minilm_refuses_an_ensemble_folder_of_a_users_files_before_training(runs, tmp_path, capsys):
    from bench import lora_minilm

    theirs = tmp_path / "lm_ensemble"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n", encoding="utf-8")
    argv = ["--data", str(runs / "mwpd6"), "--out", str(tmp_path / "lm"), "--ensemble_with", str(runs / "linear")]
    assert run(lora_minilm.main, argv) == 2
    _one_error_line(capsys.readouterr().err, "holds files a trainer did not write")
    assert not (tmp_path / "lm").exists() and (theirs / "notes.txt").read_text(encoding="utf-8") == "mine\n"
