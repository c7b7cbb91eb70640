"""`make demo` end to end on tiny MWPD-format files: both datasets, closed and open-set figures, examples."""

import json

from tests import test_mwpd_benchmark as bench_test


def test_demo_runs_closed_and_open_set(tmp_path, monkeypatch, capsys):
    from category_classification import demo

    paths = bench_test.PATHS + [("10000000_Home", "10010000_Furniture", "10010100_Sofas", ["sofa", "couch", "seat"])]
    monkeypatch.setattr(bench_test, "PATHS", paths)
    mwpd = tmp_path / "mwpd"
    mwpd.mkdir()
    bench_test.write_mwpd(mwpd / "train.json.gz", 30, 0)
    bench_test.write_mwpd(mwpd / "validation.json.gz", 8, 1)
    assert demo.main(["--runs", str(tmp_path / "runs"), "--mwpd_dir", str(mwpd), "--skip_encoder"]) == 0
    out = capsys.readouterr().out
    assert "linear + Other" in out and "accepted_prec" in out
    assert (tmp_path / "runs" / "linear_other" / "open_set_test.png").exists()
    info = json.loads((tmp_path / "runs" / "linear_other" / "category_model.json").read_text())
    assert info["other_subclasses"] and info["labels"][-1] == "Other"  # Other split by source category
    assert "source-category sub-classes" in out
    examples = out.split("classify example titles")[1]
    sofa = next(line for line in examples.splitlines() if "KIVIK" in line and line.startswith("  Other"))
    assert sofa  # the open model names a sofa Other
