"""The encoder scripts end to end on a tiny generated dataset: train, resume, infer, v2, torchrun."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from category_classification.core.env import offline_env
from category_classification import train_embedding_classifier as trainer
from category_classification import train_embedding_classifier_v2 as trainer_v2
from category_classification.core.cli import run

REPO = Path(__file__).resolve().parents[1]
LABELS = ["Books", "Clothing", "Shoes"]
WORDS = {0: ["novel", "paperback", "author", "edition"], 1: ["shirt", "cotton", "dress", "jacket"],
         2: ["sneaker", "boot", "sandal", "heel"]}
# A model this small trains in a second or two; bpe:300 keeps the embedding matrix tiny.
TINY = ["--tokenizer", "bpe:300", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "4",
        "--num_kv_heads", "2", "--ffn_size", "64", "--seq_len", "16", "--batch_size", "8", "--lr", "3e-3",
        "--lr_warmup_steps", "5", "--lang_min_samples", "5", "--eval_batch_size", "32",
        "--num_threads", "1"]


def make_offers(n, seed):
    import random

    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 3
        words = rng.sample(WORDS[y], 2) + [rng.choice(["red", "blue", "new", "sale", "size", "xl"])]
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {rng.randint(1, 99)}")
        labels.append(y)
    return texts, labels


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    # text_bare as the builder adds it to breadcrumb (MWPD) datasets: the trainer must ignore it
    features = Features({"text": Value("string"), "text_bare": Value("string"), "label": ClassLabel(names=LABELS),
                         "cluster": Value("int64"), "language": Value("string")})
    splits = {}
    for name, n, seed in [("train", 96, 0), ("validation", 30, 1), ("test", 30, 2)]:
        texts, labels = make_offers(n, seed)
        splits[name] = Dataset.from_dict({"text": texts, "text_bare": [t.split(" | ")[0] for t in texts],
                                          "label": labels, "cluster": list(range(n)), "language": ["en"] * n},
                                         features=features)
    path = tmp_path_factory.mktemp("data") / "tiny"
    DatasetDict(splits).save_to_disk(str(path))
    return path


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_train_writes_a_complete_model_dir(data_dir, tmp_path, capsys):
    import torch

    from category_classification.models.encoder_io import load_encoder

    out = tmp_path / "enc"
    assert run(trainer.main, ["--data", str(data_dir), "--out", str(out), "--epochs", "3", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "parameters" in printed and "macro_f1" in printed
    info = json.loads((out / "category_model.json").read_text())
    assert info["kind"] == "encoder" and info["labels"] == LABELS and info["max_length"] == 16
    for name in ("metrics.json", "results_category.txt", "confusion_matrix.png", "tokenizer.json",
                 "encoder_config.json", "checkpoints/checkpoint-epoch3.pt"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints/checkpoint-epoch1.pt").exists()  # --keep_checkpoints 1 by default
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["macro_f1"] > 0.8  # the keywords make this easy
    assert metrics["test"]["per_language"]["en"]["n"] == 30

    model, tok, info = load_encoder(out)
    assert len(tok) <= 300 and info["labels"] == LABELS
    enc = tok(["cotton shirt red", "boot sneaker"], padding=True, return_tensors="pt")
    logits = model(enc["input_ids"], enc["attention_mask"])["logits"]
    assert logits.shape == (2, 3)
    assert logits.argmax(-1).tolist() == [1, 2]
    assert torch.isfinite(logits).all()


def test_resume_after_epoch_one_gives_the_same_weights(data_dir, tmp_path):
    import torch

    straight = tmp_path / "straight"
    # Dropout, drop-path and token dropout all draw random numbers: resume must restore the generators.
    args = ["--data", str(data_dir), "--epochs", "2", "--keep_checkpoints", "0", "--dropout", "0.2",
            "--max_drop_path", "0.2", "--token_dropout", "0.1", *TINY]
    assert run(trainer.main, [*args, "--out", str(straight)]) == 0
    # A run killed after epoch 1 and resumed from that checkpoint, in a fresh process state.
    torch.manual_seed(12345)
    resumed = tmp_path / "resumed"
    ckpt = straight / "checkpoints" / "checkpoint-epoch1.pt"
    assert run(trainer.main, [*args, "--out", str(resumed), "--resume", str(ckpt)]) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = json.loads((straight / "train_info.json").read_text())["history"]
    hb = json.loads((resumed / "train_info.json").read_text())["history"]
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]


def test_infer_script_and_v2_entry_point(data_dir, tmp_path, capsys):
    from category_classification import infer_embedding_classifier as infer

    out = tmp_path / "v2"
    assert run(trainer_v2.main, ["--data", str(data_dir), "--out", str(out), "--epochs", "2", *TINY]) == 0
    cfg = json.loads((out / "encoder_config.json").read_text())
    assert cfg["head"] == "residual" and cfg["label_smoothing"] == 0.1
    preds = tmp_path / "preds.jsonl"
    capsys.readouterr()
    assert run(infer.main, ["--data", str(data_dir), "--checkpoint", str(out), "--split", "test",
                            "--save_preds", str(preds), "--no_lang_metrics"]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 30 and {"text", "label", "pred", "prob"} <= rows[0].keys()
    acc = sum(r["label"] == r["pred"] for r in rows) / len(rows)
    test_acc = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    assert acc == pytest.approx(test_acc)
    assert f"accuracy={test_acc:.4f}" in capsys.readouterr().out


def test_user_errors_exit_2(tmp_path, data_dir):
    assert run(trainer.main, ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert run(trainer.main, ["--data", str(data_dir), "--out", str(tmp_path / "o"), "--resume",
                              str(tmp_path / "nope.pt"), *TINY]) == 2


def test_presets_fill_defaults_and_flags_win():
    small = trainer.parse_args(["--data", "d", "--out", "o", "--preset", "small"])
    assert small.tokenizer == trainer.PRESETS["small"]["tokenizer"]
    assert small.hidden_size == trainer.PRESETS["small"]["hidden_size"]
    mine = trainer.parse_args(["--data", "d", "--out", "o", "--preset", "small", "--hidden_size", "64"])
    assert mine.hidden_size == 64
    default = trainer.parse_args(["--data", "d", "--out", "o"])
    assert (default.tokenizer, default.hidden_size, default.num_layers) == ("qwen", 384, 10)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(data_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    env = offline_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(REPO / "category_classification" / "train_embedding_classifier.py"),
           "--data", str(data_dir), "--out", str(out), "--epochs", "2", "--device", "cpu", *TINY]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 30 and metrics["test"]["n"] == 30  # gathered from both ranks
    info = json.loads((out / "train_info.json").read_text())
    assert info["world_size"] == 2


def test_old_flag_names_are_aliases():
    for old, new in [(["--num_threads", "2"], ("threads", 2)), (["--cpu_threads", "2"], ("threads", 2)),
                     (["--batch", "4"], ("batch_size", 4)), (["--max_length", "48"], ("seq_len", 48))]:
        args = trainer.parse_args(["--data", "d", "--out", "o", *old])
        assert getattr(args, new[0]) == new[1], old
    v2 = trainer.parse_args(["--data", "d", "--out", "o"], defaults=trainer.V2_DEFAULTS)
    assert (v2.head, v2.classifier_hidden) == ("residual", 768)
    assert trainer.parse_args(["--data", "d", "--out", "o", "--amp"]).amp == "auto"


def test_dataclass_flags_round_trip():
    import argparse
    from dataclasses import dataclass

    from category_classification.core.cli import add_dataclass_args, dataclass_from_args, option

    @dataclass
    class Settings:
        name: str = option("", "required name")
        size: int = option(3, "a size", aliases=("--n",))
        rate: float | None = option(None, "a rate")
        kinds: tuple[str, ...] = option(("a",), "kinds", choices=("a", "b", "c"))
        fast: bool = option(True, "go fast")
        secret: int = option(0, "not a flag", cli=False)

    p = argparse.ArgumentParser()
    add_dataclass_args(p, Settings, {"size": 5}, required=("name",))
    with pytest.raises(SystemExit):
        p.parse_args([])  # --name is required
    s = dataclass_from_args(Settings, p.parse_args(["--name", "x"]))
    assert s == Settings(name="x", size=5, rate=None, kinds=("a",), fast=True)
    s = dataclass_from_args(Settings, p.parse_args(["--name", "x", "--n", "7", "--rate", "0.5", "--kinds", "b",
                                                    "c", "--no_fast"]))
    assert s == Settings(name="x", size=7, rate=0.5, kinds=("b", "c"), fast=False)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "x", "--kinds", "z"])  # choices apply to each item
    assert "--secret" not in p.format_help() and "go fast" in p.format_help()
