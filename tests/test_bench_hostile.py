"""The bench/ scripts against a hostile but realistic user: outputs that would replace a user's file, the repo's
data or an input; impossible flag values; damaged inputs; a measuring process that dies. Each refusal is one
line on stderr and exit 2, before any work; what the scripts write appears whole (docs/reliability.md section 6)."""

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
