"""One data-source interface: the builder, predict.py --zip and the profiler read the real WDC offers
(../shared/data/wdc_offers_sample, zipped as a *.json.gz member) and MWPD files through the same records,
so the text a model trains on is the text it is asked to classify."""

import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk

import webdata_discovery
from category_classification import build_lspc_dataset
from category_classification import predict as predict_script
from category_classification.data import lspc, mwpd
from category_classification.data.sources import SOURCES, LspcSource, MwpdSource, OfferRecord, pick_source
from category_classification.inference.batch import read_lspc_zip
from predict_fixtures import make_linear

REPO = Path(__file__).resolve().parents[1]
SAMPLE = next((p for p in (REPO.parent / "shared" / "data" / "wdc_offers_sample",
                           Path("/work/shared/data/wdc_offers_sample")) if p.is_dir()), None)
MWPD = REPO / "data" / "mwpd"
pytestmark = pytest.mark.skipif(SAMPLE is None, reason="the real WDC offer sample is not on this machine")


@pytest.fixture(scope="module")
def sample_zip(tmp_path_factory):
    """The 1,000 real offers, unchanged, as the one *.json.gz member of a corpus zip."""
    path = tmp_path_factory.mktemp("wdc") / "offers.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(SAMPLE / "offers_corpus_english_v2_1000.json.gz", "offers/offers_corpus_english_v2.json.gz")
    return path


@pytest.fixture(scope="module")
def built(sample_zip):
    out = sample_zip.parent / "ds"
    assert build_lspc_dataset.main(["--zip", str(sample_zip), "--out", str(out), "--other_label", "Other",
                                    "--quiet", "--read_workers", "1"]) == 0
    return load_from_disk(str(out)), json.loads((out / "build_report.json").read_text()), out


def test_sources_table_names_every_source():
    assert SOURCES == {"lspc": LspcSource, "mwpd": MwpdSource}
    args = build_lspc_dataset.build_parser().parse_args(["--mwpd", "x", "--out", "o"])
    assert pick_source(args) is MwpdSource


def test_builder_reads_the_real_sample_with_labels_from_its_category_field(built):
    dsd, report, out = built
    names = dsd["train"].features["label"].names
    assert names == ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes", "Other"]
    assert report["other_label"] == "Other" and report["lines_read"] == 1000
    skipped = report["skipped_by_reason"]
    # 19 offers have no title; 12 say `not found` (no category; one of them also has no title)
    assert skipped["missing_title"] + skipped["no_category"] == 1000 - report["records_kept"]
    counts = Counter()
    for split in ("train", "validation", "test"):
        counts.update(names[i] for i in dsd[split]["label"])
    assert counts["Jewelry"] <= 48 and counts["Other"] > 600
    other = report["other_by_source_category"]
    assert "Office_Products" in other and not set(other) & set(names[:-1])
    assert sum(other.values()) == counts["Other"]
    rows = (out / "PDC2020_map.tsv").read_text().splitlines()
    assert rows[0] == "cluster_id\tcategory" and len(rows) - 1 == report["category_field"]["clusters"]
    assert lspc.load_category_map(out / "PDC2020_map.tsv").report["clusters"] == len(rows) - 1


def test_training_text_equals_prediction_text_for_the_zip(built, sample_zip):
    dsd, _, _ = built
    trained = Counter((c, t) for s in ("train", "validation", "test")
                      for c, t in zip(dsd[s]["cluster"], dsd[s]["text"]))
    predicted = Counter((r.ref["cluster_id"], r.text) for r in read_lspc_zip(sample_zip) if r.text)
    assert trained and all(predicted[k] >= n for k, n in trained.items())
    # and the reader is the builder's own: same texts as its record iterator, lower-cased real offers
    records = list(LspcSource.records(sample_zip))
    assert len(records) == 1000 and sum(r.text is None for r in records) == 19
    assert all(isinstance(r, OfferRecord) for r in records)


def test_predict_zip_runs_on_the_real_sample(tmp_path, sample_zip, built):
    dsd, _, _ = built
    model = make_linear(tmp_path / "linear")
    out = tmp_path / "preds.jsonl"
    assert predict_script.main(["--model", str(model), "--zip", str(sample_zip), "--out", str(out),
                                "--keep_text", "--no_progress"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1000 and sum("error" in r for r in rows) == 19  # one line per offer, bad ones too
    rows = [r for r in rows if "error" not in r]
    texts = set(dsd["train"]["text"])
    assert sum(r["text"] in texts for r in rows) == len(dsd["train"])


def test_profiler_reads_the_real_sample(tmp_path, sample_zip):
    out = tmp_path / "profile.json"
    assert webdata_discovery.main(["--zip", str(sample_zip), "--workers", "1", "--out", str(out)]) == 0
    profile = json.loads(out.read_text())
    categories = Counter()
    for lang in profile["languages"].values():
        categories.update(lang["categories"])
    assert categories["Office_Products"] >= 115 and categories["Jewelry"] >= 45
    assert sum(categories.values()) == 1000 - 19 and profile["counts"]["missing_title"] == 19


def test_training_text_equals_prediction_text_for_mwpd(tmp_path):
    out = tmp_path / "mwpd"
    assert build_lspc_dataset.main(["--mwpd", str(MWPD / "validation.json.gz"), "--out", str(out), "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    built_texts = Counter(t for s in ("train", "validation", "test") for t in dsd[s]["text"])
    records = list(MwpdSource.records(MWPD / "validation.json.gz"))
    six = Counter(r.text for r in records if r.labels["six"])
    dropped = json.loads((out / "build_report.json").read_text())["skipped_by_reason"]
    assert built_texts == six and sum(six.values()) == 1662 and not dropped.get("duplicate_of_test")
    assert all(r.category for r in records) and records[0].group == mwpd.group_id(mwpd.normalize_title(
        json.loads(__import__("gzip").open(MWPD / "validation.json.gz").readline())["Name"]))


def test_a_copy_of_the_sample_with_a_bom_and_crlf_reads_the_same(tmp_path, sample_zip):
    import gzip

    raw = gzip.decompress((SAMPLE / "offers_corpus_english_v2_1000.json.gz").read_bytes())
    path = tmp_path / "bom.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.json.gz", gzip.compress(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n")))
    a = [r.text for r in read_lspc_zip(sample_zip)]
    b = [r.text for r in read_lspc_zip(path)]
    assert a == b[: len(a)] and a[0] is not None
    shutil.rmtree(tmp_path, ignore_errors=True)
