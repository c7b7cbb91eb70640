"""Sharded batch prediction: torchrun with 2 gloo processes writes the same bytes as one process, on the
bundled offers with bad lines among them, and --resume continues each part where it stopped."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from category_classification import predict as predict_script
from category_classification.core.cli import UserError, run
from category_classification.core.env import offline_env
from category_classification.inference import sharding
from predict_fixtures import make_linear

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A linear model and a JSONL of the 3,000 bundled MWPD validation offers with bad lines mixed in."""
    root = tmp_path_factory.mktemp("sharded")
    lines = []
    with gzip.open(REPO / "data" / "mwpd" / "validation.json.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            offer = json.loads(line)
            lines.append(json.dumps({"id": offer["ID"], "title": offer["Name"]}, ensure_ascii=False))
            if i in (0, 1499, 1500, 2999):  # bad records next to the share boundary and at both ends
                lines += ["{not json", json.dumps({"id": f"no-title-{i}"}), ""]
    path = root / "offers.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = make_linear(root / "linear")
    single = root / "single.jsonl"
    assert run(predict_script.main, ["--model", str(model), "--input", str(path), "--out", str(single),
                                     "--no_progress", "--top_k", "2"]) == 0
    return {"root": root, "input": path, "model": model, "single": single}


def torchrun(args, nproc=2):
    env = offline_env(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(REPO / "category_classification" / "predict.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_shares_cover_every_record_once_in_order_cut_at_chunk_starts():
    from category_classification.inference.batch import Record

    for total in (0, 1, 5, 3012):
        for world in (1, 2, 3, 8):
            spans = [sharding.share(total, r, world) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1
    # records 0, 4, 5 and 9 have no text: they fill chunks too (each gets its error line)
    records = [Record({"line": i}, None if i in (0, 4, 5, 9) else "t") for i in range(10)]
    total, starts = sharding.chunk_starts(records, 2)
    assert (total, starts) == (10, [0, 2, 4, 6, 8])
    for world, expected in ((1, [(0, 10)]), (2, [(0, 6), (6, 10)]), (4, [(0, 4), (4, 6), (6, 8), (8, 10)])):
        assert [sharding.record_share(total, starts, r, world) for r in range(world)] == expected
    assert [sharding.record_share(3, [], r, 2) for r in range(2)] == [(0, 3), (3, 3)]  # nothing usable


def test_two_processes_write_the_single_process_bytes_and_resume_per_part(setup):
    out = setup["root"] / "sharded.jsonl"
    common = ["--model", str(setup["model"]), "--input", str(setup["input"]), "--out", str(out), "--no_progress",
              "--top_k", "2"]
    res = torchrun(common)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = setup["single"].read_bytes()
    assert out.read_bytes() == expected
    assert not sharding.shard_dir(out).exists()
    assert "joined 2 parts" in res.stderr

    # A killed run: part 0 in its .partial with 1,100 lines and half a line, part 1 complete (parts are
    # renamed into place when complete). --resume keeps part 1, and part 0's whole chunks (1,024 lines).
    out.unlink()
    lines = expected.decode("utf-8").splitlines(keepends=True)
    records = list(predict_script_records(setup["input"]))
    unit = sharding.chunk_size(64)  # predict.py's default --batch_size
    n_records, starts = sharding.chunk_starts(records, unit)
    half = sharding.record_share(n_records, starts, 0, 2)[1]  # one output line per record
    sharding.write_manifest(out, 2, n_records, unit)
    part0 = sharding.part_path(out, 0, 2)
    part0.with_name(part0.name + ".partial").write_text("".join(lines[:1100]) + '{"line": 9', encoding="utf-8")
    sharding.part_path(out, 1, 2).write_text("".join(lines[half:]), encoding="utf-8")
    res = torchrun(common + ["--resume"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_bytes() == expected
    assert "resumed after 1024" in res.stderr and "complete before the interruption, kept" in res.stderr

    # resuming with another process count is refused in one line, on every rank
    sharding.write_manifest(out.with_name("other.jsonl"), 3, n_records, unit)
    res = torchrun(["--model", str(setup["model"]), "--input", str(setup["input"]), "--out",
                    str(out.with_name("other.jsonl")), "--no_progress", "--resume"])
    assert res.returncode != 0 and "written by 3 processes, this run has 2" in res.stderr


def predict_script_records(path):
    from category_classification.inference.batch import open_records

    return open_records(input_path=path)


def test_single_process_is_unchanged_and_text_is_refused_under_torchrun(setup, monkeypatch):
    assert sharding.current_shard(setup["root"] / "x.jsonl") is None  # no WORLD_SIZE: one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="shards --input or --zip"):
        sharding.current_shard(None, texts_given=True)


def test_join_needs_every_part(tmp_path):
    out = tmp_path / "o.jsonl"
    sharding.write_manifest(out, 2, 10, 4)
    sharding.part_path(out, 0, 2).write_text("a\n", encoding="utf-8")
    with pytest.raises(UserError, match="part files missing"):
        sharding.join_parts(out, 2)
    sharding.part_path(out, 1, 2).write_text("b\n", encoding="utf-8")
    assert sharding.join_parts(out, 2).read_text(encoding="utf-8") == "a\nb\n"
    assert not sharding.shard_dir(out).exists()


def test_torch_model_gives_the_single_process_bytes(setup, tmp_path):
    """Float scores depend on the batch a title is padded with: the shares follow one process's chunks."""
    from predict_fixtures import make_encoder

    model = make_encoder(tmp_path / "encoder")
    path = tmp_path / "offers.jsonl"
    lines = setup["input"].read_text(encoding="utf-8").splitlines()[:700]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["--model", str(model), "--input", str(path), "--no_progress", "--batch_size", "8", "--threads", "1"]
    assert run(predict_script.main, common + ["--out", str(tmp_path / "single.jsonl")]) == 0
    res = torchrun(common + ["--out", str(tmp_path / "sharded.jsonl")], nproc=3)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "sharded.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()


def test_zip_members_are_shared_as_contiguous_runs_balanced_by_size():
    assert sharding.member_shares([10] * 5, 2) == [range(0, 2), range(2, 5)]
    assert sharding.member_shares([100, 1, 1, 1], 2) == [range(0, 1), range(1, 4)]  # by bytes, not by count
    assert sharding.member_shares([5] * 16, 4) == [range(4 * r, 4 * r + 4) for r in range(4)]
    assert [len(r) for r in sharding.member_shares([1, 1], 4)] == [0, 1, 0, 1]  # more ranks than members
    for sizes in ([3, 9, 1, 1, 7, 2, 8], [1] * 13, [50, 1, 1, 1, 1, 1, 50]):
        for world in (1, 2, 3, 5):
            runs = [r for r in sharding.member_shares(sizes, world) if len(r)]
            assert [i for r in runs for i in r] == list(range(len(sizes)))  # every member once, in zip order


def test_chunks_restart_at_each_member_and_resume_keeps_whole_chunks(tmp_path):
    from category_classification.inference.batch import Record, _resume_point, chunks

    recs = [Record({"member": m, "line": i}) for m, n in (("a", 5), ("b", 2), ("c", 4)) for i in range(n)]
    assert [[(r.ref["member"], r.ref["line"]) for r in c][0] for c in chunks(recs, 3)] == [
        ("a", 0), ("a", 3), ("b", 0), ("c", 0), ("c", 3)]
    assert [len(c) for c in chunks(recs, 3)] == [3, 2, 2, 3, 1]
    assert [len(c) for c in chunks([Record({"line": i}) for i in range(7)], 3)] == [3, 3, 1]  # no members
    partial = tmp_path / "p.jsonl.partial"
    for written, kept in ((7, 5), (8, 7), (10, 10), (11, 10)):  # a short last chunk may be a cut write
        partial.write_text("".join(json.dumps({**r.ref, "label": None}) + "\n" for r in recs[:written]),
                           encoding="utf-8")
        assert _resume_point(partial, 3) == kept


@pytest.fixture(scope="module")
def lspc_zip(tmp_path_factory):
    """A 5-member LSPC zip with bad lines in member 0 and a truncated last member."""
    from category_classification.data.synthetic_lspc import write_lspc_zip

    root = tmp_path_factory.mktemp("zipshard")
    zip_path, _, _ = write_lspc_zip(root, n_offers=1500, n_members=5, with_bad_lines=True, corrupt_member=True)
    return zip_path


def test_zip_ranks_read_only_their_members_and_write_the_single_process_bytes(setup, lspc_zip, tmp_path):
    single = tmp_path / "single.jsonl"
    common = ["--model", str(setup["model"]), "--zip", str(lspc_zip), "--no_progress", "--top_k", "2",
              "--batch_size", "8"]  # chunks of 128 offers
    assert run(predict_script.main, common + ["--out", str(single)]) == 0
    out = tmp_path / "sharded.jsonl"
    res = torchrun(common + ["--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    expected = single.read_bytes()
    assert out.read_bytes() == expected
    # the truncated last member is half the size of the others: 2 + 3 members balance the bytes
    assert "rank 0: 2 of 5 zip members" in res.stderr and "rank 1: 3 of 5 zip members" in res.stderr
    rows = [json.loads(line) for line in expected.decode("utf-8").splitlines()]
    assert any(r.get("error") == "corrupt_member" for r in rows) and any(r.get("error") for r in rows[:20])

    # killed: part 0 has 400 lines and half a line, in chunks of 128, 128, 51 (member 0's 307 lines end),
    # 93 (cut short), so 307 are kept; part 1 is complete
    names = [name for name, _ in sharding.zip_members(lspc_zip)]
    sharding.write_manifest(out, 2, [list(m) for m in sharding.zip_members(lspc_zip)], sharding.chunk_size(8))
    lines = expected.decode("utf-8").splitlines(keepends=True)
    half = sum(1 for r in rows if r["member"] in names[:2])
    part0 = sharding.part_path(out, 0, 2)
    part0.with_name(part0.name + ".partial").write_text("".join(lines[:400]) + '{"line": 9', encoding="utf-8")
    sharding.part_path(out, 1, 2).write_text("".join(lines[half:]), encoding="utf-8")
    out.unlink()
    res = torchrun(common + ["--out", str(out), "--resume"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_bytes() == expected
    assert "resumed after 307" in res.stderr and "complete before the interruption, kept" in res.stderr


def test_zip_with_a_torch_model_gives_the_single_process_bytes(lspc_zip, tmp_path):
    """Members of 300 offers and chunks of 128: without a chunk restart at each member, rank 1's batches
    (and the last digits of their scores) would differ from one process's."""
    from predict_fixtures import make_encoder

    model = make_encoder(tmp_path / "encoder")
    common = ["--model", str(model), "--zip", str(lspc_zip), "--no_progress", "--batch_size", "8", "--threads", "1"]
    assert run(predict_script.main, common + ["--out", str(tmp_path / "single.jsonl")]) == 0
    res = torchrun(common + ["--out", str(tmp_path / "sharded.jsonl")], nproc=3)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "sharded.jsonl").read_bytes() == (tmp_path / "single.jsonl").read_bytes()
