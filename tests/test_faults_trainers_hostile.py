"""The encoder and LoRA trainers, the encoder's inference script, the latency tool and the ensemble builder
against impossible settings and output paths that name what they must not destroy (found by a review
session that attacked them: NaN adapters and untrained models saved with exit 0, a model's weights
overwritten by --save_preds, a model's config by --json_out)."""

import shutil

import pytest

pytest.importorskip("torch")

from category_classification import build_ensemble, infer_embedding_classifier, train_embedding_classifier  # noqa: E402
from category_classification.core.cli import run  # noqa: E402
from predict_fixtures import make_encoder, make_linear  # noqa: E402
from test_faults_train import TINY, make_data  # noqa: E402


def _one_error_line(err: str, words: str = ""):
    lines = [x for x in err.strip().splitlines() if x and not x.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("hostile_trainers") / "data", train_classes=(0, 1, 2, 3))


@pytest.mark.parametrize("flags,words", [
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"), (["--epochs", "0"], "--epochs"),
    (["--batch_size", "-4"], "--batch_size"), (["--seq_len", "0"], "--seq_len"), (["--grad_accum", "0"], "--grad_accum"),
    (["--dropout", "1.5"], "--dropout"), (["--label_smoothing", "-0.2"], "--label_smoothing"),
    (["--lr_warmup_steps", "-5"], "--lr_warmup_steps"), (["--num_heads", "3"], "--num_heads"),
    (["--num_kv_heads", "3"], "--num_kv_heads"), (["--device", "nonsense"], "--device"),
    (["--threads", "100000"], "--threads"), (["--eval_batch_size", "-1"], "--eval_batch_size")])
def test_impossible_encoder_settings_are_one_line_and_create_nothing(data, tmp_path, capsys, flags, words):
    out = tmp_path / "enc"
    argv = ["--data", str(data), "--out", str(out), *TINY, "--epochs", "1", *flags]
    assert run(train_embedding_classifier.main, argv) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert not out.exists()


def test_infer_save_preds_never_overwrites_the_model_or_a_user_file(data, tmp_path, capsys):
    enc = make_encoder(tmp_path / "enc")
    weights = {p.name: p.read_bytes() for p in enc.iterdir() if p.is_file()}
    mine = tmp_path / "notes.txt"
    mine.write_text("mine", encoding="utf-8")
    for target, words in ((enc / "model.safetensors", "inside the model"), (mine, "not an earlier")):
        assert run(infer_embedding_classifier.main, ["--data", str(data), "--checkpoint", str(enc),
                                                     "--save_preds", str(target)]) == 2
        _one_error_line(capsys.readouterr().err, words)
    for flags, words in ((["--batch_size", "-3"], "--batch_size"), (["--device", "gpu9"], "--device")):
        assert run(infer_embedding_classifier.main, ["--data", str(data), "--checkpoint", str(enc), *flags]) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert {p.name: p.read_bytes() for p in enc.iterdir() if p.is_file()} == weights
    assert mine.read_text(encoding="utf-8") == "mine"


def test_logits_never_come_from_uninitialised_memory():
    from category_classification.core.cli import UserError
    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.models.encoder_io import logits_for_ids

    model = EmbeddingClassifier(EmbeddingClassifierConfig(vocab_size=50, num_labels=3, hidden_size=16, num_layers=1,
                                                          num_heads=2, num_kv_heads=1, ffn_size=32, pad_token_id=0))
    with pytest.raises(UserError, match="--batch_size"):
        logits_for_ids(model, [[1, 2], [3]], batch_size=-3)


def test_latency_takes_the_shared_flag_names(tmp_path, capsys):
    """README: every script takes --data and --batch_size; this one knew only --dataset and --batch."""
    from category_classification import measure_lora_latency
    from predict_fixtures import make_dataset, make_hf

    model, data = make_hf(tmp_path / "hf"), make_dataset(tmp_path / "d")
    capsys.readouterr()
    assert run(measure_lora_latency.main, ["--model", str(model), "--data", str(data), "--limit", "4",
                                           "--batch_size", "2", "--warmup_batches", "0"]) == 0
    assert "4 offers in 2 batches of 2" in capsys.readouterr().out
    assert run(measure_lora_latency.main, ["--model", str(model), "--data", str(data), "--batch_size", "0"]) == 2
    _one_error_line(capsys.readouterr().err, "--batch_size must be at least 1")


def test_latency_json_out_never_overwrites_the_model_or_the_input(tmp_path, capsys):
    from category_classification import measure_lora_latency
    from predict_fixtures import make_hf

    model = make_hf(tmp_path / "hf")
    capsys.readouterr()  # the fixture's own output
    config_before = (model / "merged" / "config.json").read_bytes()
    txt = tmp_path / "offers.txt"
    txt.write_text("gold ring\nbaby stroller\n", encoding="utf-8")
    for target, words in ((model / "merged" / "config.json", "inside the model"), (txt, "is the input")):
        assert run(measure_lora_latency.main, ["--model", str(model), "--txt", str(txt), "--json_out", str(target)]) == 2
        _one_error_line(capsys.readouterr().err, words)
    assert run(measure_lora_latency.main, ["--model", str(model), "--txt", str(txt), "--limit", "-10"]) == 2
    _one_error_line(capsys.readouterr().err, "--limit")
    assert (model / "merged" / "config.json").read_bytes() == config_before


def test_an_ensemble_of_one_model_twice_is_refused(tmp_path, capsys):
    lin = make_linear(tmp_path / "lin")
    shutil.copytree(lin, tmp_path / "lin_copy")
    assert run(build_ensemble.main, ["--models", str(lin), str(tmp_path / "lin" / "."), "--out", str(tmp_path / "e")]) == 2
    _one_error_line(capsys.readouterr().err, "listed twice")


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    from category_classification.models.tokenization import load_qwen_tokenizer
    from fixtures import save_tiny_qwen3
    from test_lora import make_dataset

    root = tmp_path_factory.mktemp("hostile_lora")
    return {"data": make_dataset(root / "data", n_train=24, n_eval=6),
            "model": save_tiny_qwen3(root / "qwen3", load_qwen_tokenizer())}


@pytest.mark.parametrize("flags,words", [(["--lr", "inf"], "--lr"), (["--lr", "-1"], "--lr"), (["--epochs", "0"], "--epochs"),
                                         (["--warmup_ratio", "2"], "--warmup_ratio"), (["--lora_r", "0"], "--lora_r"),
                                         (["--lora_dropout", "1.5"], "--lora_dropout"), (["--device", "nonsense"], "--device"),
                                         (["--threads", "-1"], "--threads")])
def test_impossible_lora_settings_are_one_line_and_create_nothing(tiny_lora, tmp_path, capsys, flags, words):
    from category_classification import train_qwen3_lora
    from test_lora import _train_argv

    capsys.readouterr()
    out = tmp_path / "lora"
    assert run(train_qwen3_lora.main, _train_argv(tiny_lora, out, *flags)) == 2
    _one_error_line(capsys.readouterr().err, words)
    assert not out.exists()


def _with_train(data, tmp_path, name, edit):
    """A copy of the dataset whose train split went through `edit(list of rows) -> rows`."""
    from datasets import Dataset, DatasetDict, load_from_disk

    dsd = load_from_disk(str(data))
    rows = edit([dict(r) for r in dsd["train"]])
    out = tmp_path / name
    DatasetDict({"train": Dataset.from_list(rows, features=dsd["train"].features),
                 "validation": dsd["validation"], "test": dsd["test"]}).save_to_disk(str(out))
    return out


def test_encoder_data_that_cannot_train_is_one_line_and_bad_texts_are_skipped(data, tmp_path, capsys):
    argv = [*TINY, "--epochs", "1"]
    one = make_data(tmp_path / "one", train_classes=(0,))
    capsys.readouterr()  # the fixture's progress bars
    assert run(train_embedding_classifier.main, ["--data", str(one), "--out", str(tmp_path / "m1"), *argv]) == 2
    _one_error_line(capsys.readouterr().err, "at least two")
    unlabelled = _with_train(data, tmp_path, "neg", lambda rows: [dict(r, label=-1) if i == 0 else r
                                                                 for i, r in enumerate(rows)])
    capsys.readouterr()
    assert run(train_embedding_classifier.main, ["--data", str(unlabelled), "--out", str(tmp_path / "m2"), *argv]) == 2
    _one_error_line(capsys.readouterr().err, "outside the")
    odd = _with_train(data, tmp_path, "odd", lambda rows: [dict(r, text="" if i % 5 == 0 else None if i % 7 == 0
                                                                else r["text"]) for i, r in enumerate(rows)])
    capsys.readouterr()
    assert run(train_embedding_classifier.main, ["--data", str(odd), "--out", str(tmp_path / "m3"), *argv]) == 0
    assert "without a text" in capsys.readouterr().out
    assert (tmp_path / "m3" / "category_model.json").is_file()
