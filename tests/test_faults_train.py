"""Trainer faults with the exact bad inputs: checkpoints of another run (never deleted, adopted or resumed),
truncated or foreign checkpoint files, and a class that occurs in validation/test but not in train."""

import json
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from category_classification import train_embedding_classifier as trainer  # noqa: E402
from category_classification.core.cli import run  # noqa: E402

LABELS = ["Books", "Clothing", "Shoes", "Baby"]
WORDS = {0: ["novel", "paperback", "author", "edition"], 1: ["shirt", "cotton", "dress", "jacket"],
         2: ["sneaker", "boot", "sandal", "heel"], 3: ["stroller", "diaper", "bib", "pacifier"]}
TINY = ["--tokenizer", "bpe:300", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "4",
        "--num_kv_heads", "2", "--ffn_size", "64", "--seq_len", "16", "--batch_size", "8", "--lr", "3e-3",
        "--lr_warmup_steps", "5", "--eval_batch_size", "32", "--threads", "1", "--no_lang_metrics"]


def make_data(path, train_classes=(0, 1, 2), n=48, seed=0):
    """Train holds only `train_classes`; validation and test hold every class (Baby only there by default)."""
    import random

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rng = random.Random(seed)
    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64")})

    def rows(classes, count, offset):
        out = []
        for i in range(count):
            y = classes[i % len(classes)]
            out.append({"text": " ".join(rng.sample(WORDS[y], 2)) + f" {rng.randint(1, 99)}", "label": y,
                        "cluster": offset + i})
        return Dataset.from_list(out, features=feats)

    DatasetDict({"train": rows(list(train_classes), n, 0), "validation": rows([0, 1, 2, 3], 16, 1000),
                 "test": rows([0, 1, 2, 3], 16, 2000)}).save_to_disk(str(path))
    return path


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("faults") / "data")


def _train(data, out, *extra):
    return run(trainer.main, ["--data", str(data), "--out", str(out), *TINY, *extra])


def test_a_new_run_keeps_its_checkpoint_and_moves_an_older_runs_aside(data, tmp_path, capsys):
    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "3") == 0
    old_epoch3 = (out / "checkpoints" / "checkpoint-epoch3.pt").read_bytes()
    # A new run with another learning rate into the same --out: 1 epoch, so its checkpoint sorts older.
    capsys.readouterr()
    assert _train(data, out, "--epochs", "1", "--lr", "1e-3") == 0
    printed = capsys.readouterr().out
    assert "of another run (epochs 3 -> 1; lr 0.003 -> 0.001): moved to" in printed and "trained in" in printed
    assert (out / "checkpoints" / "checkpoint-epoch1.pt").is_file()  # its own fresh checkpoint survives
    assert not (out / "checkpoints" / "checkpoint-epoch3.pt").exists()  # the older run's is not adopted ...
    earlier = list((out / "checkpoints").glob("earlier-*/checkpoint-epoch3.pt"))
    assert len(earlier) == 1 and earlier[0].read_bytes() == old_epoch3  # ... nor deleted: moved, untouched
    info = json.loads((out / "train_info.json").read_text())
    assert info["args"]["lr"] == 1e-3 and len(info["history"]) == 1  # the model is the new run's
    # --resume auto now continues the new run, not the older one
    assert _train(data, out, "--epochs", "1", "--lr", "1e-3", "--resume", "auto") == 0
    assert "nothing left to train" in capsys.readouterr().out


def test_resume_auto_with_other_settings_is_refused_naming_them(data, tmp_path, capsys):
    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "1") == 0
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    capsys.readouterr()
    assert _train(data, out, "--epochs", "2", "--lr", "1e-3", "--resume", "auto") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checkpoint ") and "Traceback" not in err
    assert "lr 0.003 -> 0.001" in err and "epochs 1 -> 2" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing touched

    other = make_data(tmp_path / "other_data", seed=7)  # same labels, other offers
    assert _train(other, out, "--epochs", "1", "--resume", "auto") == 2
    assert "the data" in capsys.readouterr().err


def test_resume_auto_with_the_same_settings_continues(data, tmp_path, capsys):
    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "1", "--keep_checkpoints", "0") == 0
    capsys.readouterr()
    # the neutral settings (threads, evaluation batch, kept checkpoints) may differ
    assert _train(data, out, "--epochs", "1", "--eval_batch_size", "7", "--resume", "auto") == 0
    assert "resumed from" in capsys.readouterr().out


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (lambda good: good[: len(good) // 2], "truncated or not a checkpoint"),
    (lambda good: os.urandom(4096), "truncated or not a checkpoint"),
    (lambda good: b"", "truncated or not a checkpoint"),
    (lambda good: pickle.dumps({"weights": [1, 2, 3]}), "truncated or not a checkpoint"),
    (lambda good: _torch_bytes({"weights": torch.zeros(3)}), "is not a training checkpoint (missing model"),
])
def test_a_broken_checkpoint_is_one_line_and_exit_2(data, tmp_path, capsys, content, message):
    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "1") == 0
    ckpt = out / "checkpoints" / "checkpoint-epoch1.pt"
    ckpt.write_bytes(content(ckpt.read_bytes()))
    capsys.readouterr()
    for resume in ("auto", str(ckpt)):
        assert _train(data, out, "--epochs", "1", "--resume", resume) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_broken_checkpoint_for_infer_is_one_line(data, tmp_path, capsys):
    from category_classification import infer_embedding_classifier as infer

    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "1") == 0
    ckpt = out / "checkpoints" / "checkpoint-epoch1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    capsys.readouterr()
    assert run(infer.main, ["--data", str(data), "--checkpoint", str(ckpt), "--split", "test"]) == 2
    assert "truncated or not a checkpoint" in capsys.readouterr().err


def test_a_class_absent_from_train_is_a_named_miss_in_the_encoder(data, tmp_path, capsys):
    out = tmp_path / "enc"
    assert _train(data, out, "--epochs", "2") == 0
    printed = capsys.readouterr().out
    assert "not in train" in printed and "Baby" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes_without_training_examples"] == ["Baby"]
    assert metrics["test"]["per_class"]["Baby"]["support"] == 4 and metrics["test"]["per_class"]["Baby"]["f1"] == 0
    assert json.loads((out / "train_info.json").read_text())["classes_without_training_examples"] == ["Baby"]


def test_model_files_are_staged_and_renamed_into_place(data, tmp_path):
    out = tmp_path / "enc"
    killed = out / ".save-999999999"  # left by a save that was killed (no such process)
    (killed / "model.safetensors").parent.mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"torn")
    assert _train(data, out, "--epochs", "1") == 0
    assert not killed.exists()
    first = (out / "model.safetensors").stat().st_ino
    assert _train(data, out, "--epochs", "1", "--seed", "3") == 0
    assert (out / "model.safetensors").stat().st_ino != first  # a new file renamed in, not rewritten in place
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_publish_dir_replaces_files_and_folders(tmp_path):
    from category_classification.core.artifacts import publish_dir

    out, stage = tmp_path / "out", tmp_path / "out" / ".stage"
    (out / "merged").mkdir(parents=True)
    (out / "merged" / "old.bin").write_text("old")
    (out / "notes.txt").write_text("mine")
    (stage / "merged").mkdir(parents=True)
    (stage / "merged" / "new.bin").write_text("new")
    (stage / "model.bin").write_text("weights")
    publish_dir(stage, out)
    assert sorted(p.name for p in out.iterdir()) == ["merged", "model.bin", "notes.txt"]
    assert [p.name for p in (out / "merged").iterdir()] == ["new.bin"]
    assert (out / "notes.txt").read_text() == "mine"


def test_model_out_that_would_lose_something_is_refused_before_any_work(data, tmp_path, capsys):
    """Every trainer checks --out through core.artifacts.check_model_out: the linear and encoder trainers here."""
    from category_classification import train_linear_baseline

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "metrics.json").write_text("my own notes\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [(notes, "did not write"), (a_file, "is a file"), (data, "input"), (data / "sub", "input"),
             (a_file / "m", "cannot write")]
    for out, words in cases:
        for script, argv in ((train_linear_baseline.main, ["--data", str(data), "--out", str(out)]),
                             (trainer.main, ["--data", str(data), "--out", str(out), *TINY])):
            assert run(script, argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert (notes / "metrics.json").read_text() == "my own notes\n" and a_file.read_text() == "x"
    assert not (data / "sub").exists()


def test_a_killed_lora_runs_folder_is_removed_by_the_next_run_and_a_live_ones_kept(tmp_path):
    import socket
    import subprocess
    import sys

    from category_classification.training.lora import claim_run_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    owners = {".checkpoints-dead": int(dead.stdout), ".checkpoints-live": os.getppid()}  # parent: alive
    for name, pid in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "owner.json").write_text(json.dumps({"host": host, "pid": pid}))
    (tmp_path / ".checkpoints-dead-out").mkdir()  # the killed run's staged outputs
    (tmp_path / ".checkpoints-noowner").mkdir()  # written by an older version: not provably dead
    claim_run_dir(tmp_path, tmp_path / ".checkpoints-new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".checkpoints-live", ".checkpoints-new", ".checkpoints-noowner"]
    assert json.loads((tmp_path / ".checkpoints-new" / "owner.json").read_text())["pid"] == os.getpid()
