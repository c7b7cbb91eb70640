"""The text_title column against the builder's options and its readers: row alignment under --add_language,
--full and --read_workers on the real WDC sample, the LSPC records' title beside the builder's, and
evaluate.py --titles_only on a hand-made column with missing or blank titles."""

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from datasets import Value, load_from_disk

from category_classification import build_lspc_dataset, evaluate, train_linear_baseline
from category_classification.core.cli import run
from category_classification.data.builder import TEXT_TITLE_COLUMN
from category_classification.data.sources import LspcSource
from tests.test_breadcrumb import build_offer_datasets

REPO = Path(__file__).resolve().parents[1]
SAMPLE = next((p for p in (REPO.parent / "shared" / "data" / "wdc_offers_sample",
                           Path("/work/shared/data/wdc_offers_sample")) if p.is_dir()), None)


def aligned_rows(dsd) -> list:
    """(split, row) of every row whose text does not start with its text_title (the title): none in a built dataset."""
    return [(name, i) for name, split in dsd.items()
            for i, (text, title) in enumerate(zip(split["text"], split[TEXT_TITLE_COLUMN]))
            if not (isinstance(title, str) and title and text.startswith(title))]


@pytest.mark.skipif(SAMPLE is None, reason="the real WDC offer sample is not on this machine")
def test_lspc_records_carry_the_title_the_builder_keeps(tmp_path):
    """The one record type's title_text was left None by the LSPC reader (MWPD's carried it): a caller of
    LspcSource.records could not get the title the builder trains the title copies on."""
    zip_path = tmp_path / "offers.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(SAMPLE / "offers_corpus_english_v2_1000.json.gz", "offers/offers_corpus_english_v2.json.gz")
    out = tmp_path / "ds"
    assert build_lspc_dataset.main(["--zip", str(zip_path), "--out", str(out), "--categories", "all", "--full",
                                    "--add_language", "--read_workers", "2", "--allow_empty_splits",
                                    "--quiet"]) == 0
    dsd = load_from_disk(str(out))
    assert aligned_rows(dsd) == []
    from category_classification.data.language import detect_languages

    for split in dsd.values():  # the language column belongs to the row's own text
        assert split["language"] == detect_languages(t[:200] for t in split["text"])
    full = dsd["full"]
    built = Counter(zip(full["text"], full[TEXT_TITLE_COLUMN]))
    # the offers the builder keeps: a title, and a category (12 of the sample have none)
    records = Counter((r.text, r.title_text) for r in LspcSource.records(zip_path) if r.text and r.category)
    assert sum(built.values()) > 900 and records == built


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("titles_eval")
    build_offer_datasets(root, 12, 4, {"data": []})
    data = root / "data"
    model = root / "model"
    assert train_linear_baseline.main(["--data", str(data), "--out", str(model), "--class_split", "none"]) == 0
    return root, data, model


def _with_titles(data, out, titles):
    dsd = load_from_disk(str(data))
    test = dsd["test"].remove_columns(TEXT_TITLE_COLUMN)
    dsd["test"] = test.add_column(TEXT_TITLE_COLUMN, titles, feature=Value("string"))
    dsd.save_to_disk(str(out))
    (out / "build_report.json").write_text((data / "build_report.json").read_text())
    return out


def test_titles_only_skips_and_counts_offers_without_a_usable_title(trained, capsys):
    """A hand-made text_title with a missing title (docs/data.md: optional values) refused the whole run in
    one line, and a blank or invisible title was scored and given a label; now each is skipped and counted,
    the rest scored, and --save_preds names every scored offer by its dataset row."""
    root, data, model = trained
    titles = list(load_from_disk(str(data))["test"][TEXT_TITLE_COLUMN])
    n = len(titles)
    titles[0], titles[2], titles[5] = None, "   ", "\u200b\u2063"
    hand = _with_titles(data, root / "hand", titles)
    preds = root / "preds.jsonl"
    assert run(evaluate.main, ["--model", str(model), "--data", str(hand), "--split", "test", "--titles_only",
                               "--save_preds", str(preds)]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 offers without a usable text_title" in out and "rows 0, 2, 5" in out
    rows = [json.loads(x)["row"] for x in preds.read_text().splitlines()]
    assert rows == [i for i in range(n) if i not in (0, 2, 5)]
    assert f"{n - 3} offers in" in out


def test_titles_only_with_no_usable_title_is_one_line(trained, capsys):
    root, data, model = trained
    n = len(load_from_disk(str(data))["test"])
    hand = _with_titles(data, root / "blank", [None, " "] * (n // 2) + [None] * (n % 2))
    assert run(evaluate.main, ["--model", str(model), "--data", str(hand), "--split", "test", "--titles_only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no offer of") and "text_title" in err[0]
