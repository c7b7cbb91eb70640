"""Faults a review of the evening's changes found (title copies, the shared field rule, backbone checks,
JSON arrays in predict.py, evaluate.py's texts), each reproduced before it was fixed."""

import json

from category_classification.core.cli import run


def test_a_model_without_absolute_positions_has_no_token_limit():
    import torch
    from transformers import AutoModel, BertConfig, DebertaV2Config

    from category_classification.models.hf import position_limit

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=64, vocab_size=100)
    with torch.device("meta"):
        deberta = AutoModel.from_config(DebertaV2Config(position_biased_input=False, relative_attention=True,
                                                        **small))
        bert = AutoModel.from_config(BertConfig(**small))
    assert position_limit(deberta) is None  # relative attention reads any length (DeBERTa-v3)
    assert position_limit(bert) == 64


def test_blank_or_invisible_copies_are_never_fitted():
    from category_classification.models.linear import with_copies

    texts, cols, counts = with_copies(["red tee | Tops", "blue jeans"], [["", "   "], ["\u200b", "blue"]],
                                      {"y": [0, 1]})
    assert texts == ["red tee | Tops", "blue jeans", "blue"] and cols == {"y": [0, 1, 1]} and counts == [0, 1]


def test_an_lspc_title_that_is_an_empty_literal_gives_way_to_the_name():
    from category_classification.data.lspc import offer_title_description

    assert offer_title_description({"title": '""', "name": "Nike Air Max 90"}) == ("Nike Air Max 90", "")
    assert offer_title_description({"title": '"  "@en', "name": '"Nike Air Max 90"@en',
                                    "description": '""', "Description": "running shoe"}) == (
        "Nike Air Max 90", "running shoe")


def test_a_json_lines_file_whose_first_line_is_an_array_is_read_line_by_line(tmp_path, monkeypatch):
    from category_classification.data import mwpd
    from category_classification.inference.batch import open_records

    monkeypatch.setattr(mwpd, "MAX_ARRAY_BYTES", 200)  # the file is "too large" for an array
    path = tmp_path / "offers.jsonl"
    path.write_text('["a stray first line"]\n' + "".join(json.dumps({"title": f"gold ring {i}"}) + "\n"
                                                          for i in range(20)))
    records = list(open_records(input_path=str(path)))
    assert len(records) == 21 and records[0].reason == "not a JSON object"
    assert [r.text for r in records[1:]] == [f"gold ring {i}" for i in range(20)]


def test_evaluate_notes_a_dataset_cut_otherwise_than_the_models_texts(tmp_path, capsys):
    from category_classification import evaluate, train_linear_baseline
    from tests.test_breadcrumb import build_offer_datasets

    build_offer_datasets(tmp_path, 10, 3, {"d300": [], "d4": ["--max_description_chars", "4"]})
    assert train_linear_baseline.main(["--data", str(tmp_path / "d300"), "--out", str(tmp_path / "m"),
                                       "--other_bias", "auto"]) == 0
    capsys.readouterr()
    for data, noted in (("d300", False), ("d4", True)):
        assert run(evaluate.main, ["--model", str(tmp_path / "m"), "--data", str(tmp_path / data)]) == 0
        err = capsys.readouterr().err
        assert ("cut descriptions to 4 characters" in err) is noted
