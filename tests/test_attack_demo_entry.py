"""An attack on `make demo` (demo.py), the seed's thin entry points and the cc-* console scripts: a demo
killed and run again, --runs folders holding a user's files or models of another kind, an encoder checkpoint of
another run, --save_preds rows after skipped offers, a .txt of bad bytes and a --seq_len past the model's
positions in the latency tool, and datasets with an empty validation or test split. Each test holds the input
that broke the code before its fix."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from category_classification.core.env import stay_offline

stay_offline()

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from category_classification import demo  # noqa: E402
from category_classification.core.cli import run  # noqa: E402
from test_attack_flags_early import _one_error  # noqa: E402

torch = pytest.importorskip("torch")

SOFAS = ("10000000_Home", "10010000_Furniture", "10010100_Sofas", ["sofa", "couch", "seat"])


def write_mwpd_dir(path: Path, n_train: int = 30) -> Path:
    """MWPD-format train and validation files of four GS1 paths and one out-of-scope one (test_demo's)."""
    from tests import test_mwpd_benchmark as bench_test

    paths = bench_test.PATHS
    bench_test.PATHS = paths + [SOFAS]
    try:
        path.mkdir(parents=True)
        bench_test.write_mwpd(path / "train.json.gz", n_train, 0)
        bench_test.write_mwpd(path / "validation.json.gz", 8, 1)
    finally:
        bench_test.PATHS = paths
    return path


@pytest.fixture(scope="module")
def mwpd(tmp_path_factory):
    return write_mwpd_dir(tmp_path_factory.mktemp("demo") / "mwpd")


@pytest.fixture(autouse=True)
def same_code(monkeypatch):
    """Other sessions edit the tree while tests run: the demo's code hash is held fixed."""
    monkeypatch.setattr(demo, "_code_version", lambda: "test-code", raising=False)


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# demo.py: every folder checked before any work


def _user_files(runs: Path, case: str):
    """(demo flags, words of the one error line, the user's file that must stay) for each hostile --runs."""
    from predict_fixtures import make_encoder, make_linear

    if case == "notes_in_linear_other":
        (runs / "linear_other").mkdir(parents=True)
        mine = runs / "linear_other" / "notes.txt"
        mine.write_text("my notes", encoding="utf-8")
        return ["--skip_encoder"], "holds files a trainer did not write", mine
    if case == "linear_model_in_encoder_small":
        mine = make_linear(runs / "encoder_small") / "category_model.json"
        return [], "holds a linear model", mine
    if case == "encoder_in_linear":
        mine = make_encoder(runs / "linear") / "model.safetensors"
        return ["--skip_encoder"], "holds an encoder model", mine
    if case == "foreign_steps_file":
        runs.mkdir(parents=True)
        mine = runs / "demo_steps.json"
        mine.write_text('{"mine": 1}\n', encoding="utf-8")
        return ["--skip_encoder"], "was not written by the demo", mine
    if case == "runs_is_a_file":
        runs.parent.mkdir(parents=True, exist_ok=True)
        runs.write_text("a file", encoding="utf-8")
        return ["--skip_encoder"], "--runs", runs
    assert case == "threshold_nan"
    return ["--skip_encoder", "--threshold", "nan"], "--threshold", None


@pytest.mark.parametrize("case", ["notes_in_linear_other", "linear_model_in_encoder_small", "encoder_in_linear",
                                  "foreign_steps_file", "runs_is_a_file", "threshold_nan"])
def test_demo_checks_every_folder_it_writes_before_any_work(mwpd, tmp_path, capsys, case):
    """Was: a --runs whose linear_other/ held a user's notes (or whose encoder_small/ held a linear model) was
    refused only after both builds and the linear fit before it (on the bundled data, minutes; encoder_small
    after 11); --threshold nan ran the whole demo and left every closed-model title unlabelled; a foreign
    demo_steps.json was not looked at; --runs a file said `cannot create the folder for --out FILE/mwpd6`."""
    runs = tmp_path / "runs"
    flags, words, mine = _user_files(runs, case)
    before = mine.read_bytes() if mine is not None else None
    capsys.readouterr()
    assert run(demo.main, ["--runs", str(runs), "--mwpd_dir", str(mwpd), *flags]) == 2
    _one_error(capsys.readouterr().err, words)
    assert not (runs / "mwpd6").exists() if runs.is_dir() else True  # nothing was built
    if mine is not None:
        assert mine.read_bytes() == before


# demo.py: a killed demo resumes

KILL_AFTER_EPOCH_2 = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{repo!r}]
    from category_classification import demo
    from category_classification.training import encoder
    demo._code_version = lambda: "test-code"
    end = encoder.end_of_epoch
    def end_then_kill(r, epoch, record):
        end(r, epoch, record)  # the epoch's checkpoint is written: then the process dies, no clean-up runs
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    encoder.end_of_epoch = end_then_kill
    demo.main(sys.argv[1:])
""")


def _stamp(path: Path) -> tuple:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_a_killed_demo_resumes_where_the_kill_came_and_keeps_what_was_finished(mwpd, tmp_path, capsys):
    """Was: every re-run of a killed demo built both datasets and fitted both linear models again (on the
    bundled data 11 of its 15 minutes before the encoder), and the rebuilt dataset made the killed encoder
    run's checkpoints "of another run": moved into checkpoints/earlier-*/ (kept for good, a new folder per
    kill) and the encoder trained from epoch 1."""
    runs = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_EPOCH_2.format(repo=str(REPO)), "--runs", str(runs),
                             "--mwpd_dir", str(mwpd)], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (runs / "encoder_small" / "checkpoints" / "checkpoint-epoch2.pt").is_file()
    assert not (runs / "encoder_small" / "category_model.json").exists()
    kept = {p: _stamp(runs / p) for p in ("mwpd6/build_report.json", "mwpd6_other/build_report.json",
                                           "linear/category_model.json", "linear_other/metrics.json")}
    capsys.readouterr()
    assert run(demo.main, ["--runs", str(runs), "--mwpd_dir", str(mwpd)]) == 0
    out = capsys.readouterr().out
    assert out.count("done by an earlier run") == 4, out
    assert "resumed from" in out and "after epoch 2" in out
    assert {p: _stamp(runs / p) for p in kept} == kept  # finished steps are not redone
    assert not list((runs / "encoder_small" / "checkpoints").glob("earlier-*"))
    info = json.loads((runs / "encoder_small" / "train_info.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3, 4, 5, 6]
    assert "encoder small" in out.split("classify example titles")[1]
    # a third run has nothing left to do; --redo does it all again
    assert run(demo.main, ["--runs", str(runs), "--mwpd_dir", str(mwpd), "--skip_encoder"]) == 0
    assert capsys.readouterr().out.count("done by an earlier run") == 4
    assert run(demo.main, ["--runs", str(runs), "--mwpd_dir", str(mwpd), "--skip_encoder", "--redo"]) == 0
    assert "done by an earlier run" not in capsys.readouterr().out
    assert _stamp(runs / "mwpd6/build_report.json") != kept["mwpd6/build_report.json"]


def test_a_dataset_built_again_trains_its_models_again(mwpd, tmp_path, capsys):
    """A step's inputs are its dataset's files: a dataset changed by hand after the demo is built again by the
    demo and its models are trained again, never kept beside a dataset they were not trained on."""
    from category_classification import build_lspc_dataset

    runs = tmp_path / "runs"
    argv = ["--runs", str(runs), "--mwpd_dir", str(mwpd), "--skip_encoder"]
    assert run(demo.main, argv) == 0
    assert run(build_lspc_dataset.main, ["--mwpd", str(mwpd / "train.json.gz"), "--out", str(runs / "mwpd6"),
                                         "--seed", "7", "--quiet"]) == 0
    capsys.readouterr()
    assert run(demo.main, argv) == 0
    out = capsys.readouterr().out
    assert "build mwpd6 from" in out and "build mwpd6 from the bundled MWPD offers (6 classes): done" not in out
    assert out.count("done by an earlier run") == 2  # mwpd6_other and linear_other only


# infer_embedding_classifier.py

TINY = ["--tokenizer", "bpe:300", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "4",
        "--num_kv_heads", "2", "--ffn_size", "64", "--seq_len", "16", "--batch_size", "8", "--lr", "3e-3",
        "--lr_warmup_steps", "5", "--eval_batch_size", "32", "--threads", "1", "--no_lang_metrics"]


def _dataset(path: Path, test_texts, test_labels, seed: int = 1, upper: bool = False) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from predict_fixtures import LABELS, toy_offers

    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64")})

    def split(texts, labels):
        texts = [t.upper() if upper and t else t for t in texts]
        return Dataset.from_dict({"text": texts, "label": labels, "cluster": list(range(len(texts)))},
                                 features=feats)

    DatasetDict({"train": split(*toy_offers(8, seed)), "validation": split(*toy_offers(3, seed + 1)),
                 "test": split(test_texts, test_labels)}).save_to_disk(str(path))
    return path


def test_infer_save_preds_names_the_dataset_row_after_skipped_offers(tmp_path, capsys):
    """Was: the `index` of each --save_preds line counted the offers kept, so after a null and a blank text
    (rows 1 and 2, skipped) row 3 "brake pad" was written as index 1: joined back to the dataset by it,
    every later prediction named another offer."""
    from category_classification import infer_embedding_classifier
    from predict_fixtures import make_encoder

    enc = make_encoder(tmp_path / "enc")
    data = _dataset(tmp_path / "d", ["gold ring", None, "  ", "brake pad"], [4, 0, 1, 0])
    preds = tmp_path / "p.jsonl"
    assert run(infer_embedding_classifier.main, ["--data", str(data), "--checkpoint", str(enc),
                                                 "--save_preds", str(preds)]) == 0
    lines = [json.loads(x) for x in preds.read_text(encoding="utf-8").splitlines()]
    assert [(x["index"], x["text"]) for x in lines] == [(0, "gold ring"), (3, "brake pad")]


def test_infer_refuses_a_checkpoint_of_another_run_in_one_line(tmp_path, capsys):
    """Was: a retraining into a model folder killed after its first epoch leaves its checkpoint beside the
    previous model; `--checkpoint OUT/checkpoints/checkpoint-epoch1.pt` loaded its weights into the previous
    model's tokenizer and config: a RuntimeError traceback (other shapes), or, where the shapes agree,
    predictions from another BPE's ids without a word."""
    import shutil

    from category_classification import infer_embedding_classifier, train_embedding_classifier
    from predict_fixtures import make_encoder

    a = _dataset(tmp_path / "a", ["gold ring", "brake pad"], [4, 0])
    b = _dataset(tmp_path / "b", ["gold ring", "brake pad"], [4, 0], seed=5, upper=True)
    for data, out in ((a, tmp_path / "enc_a"), (b, tmp_path / "enc_b")):
        assert run(train_embedding_classifier.main, ["--data", str(data), "--out", str(out), *TINY,
                                                     "--epochs", "1"]) == 0
    foreign = tmp_path / "enc_a" / "checkpoints" / "checkpoint-epoch1.pt"
    foreign.unlink()
    shutil.copy(tmp_path / "enc_b" / "checkpoints" / "checkpoint-epoch1.pt", foreign)
    capsys.readouterr()
    assert run(infer_embedding_classifier.main, ["--data", str(a), "--checkpoint", str(foreign)]) == 2
    _one_error(capsys.readouterr().err, "another training run", "the data")
    # a model folder without a run record (an older save) and a checkpoint of other shapes
    old = make_encoder(tmp_path / "old")
    (old / "checkpoints").mkdir()
    shutil.copy(tmp_path / "enc_b" / "checkpoints" / "checkpoint-epoch1.pt", old / "checkpoints")
    assert run(infer_embedding_classifier.main, ["--data", str(a), "--checkpoint",
                                                 str(old / "checkpoints" / "checkpoint-epoch1.pt")]) == 2
    _one_error(capsys.readouterr().err, "does not fit the model")
    # the run's own checkpoint still loads
    assert run(infer_embedding_classifier.main, ["--data", str(b), "--checkpoint",
                                                 str(tmp_path / "enc_b" / "checkpoints" / "checkpoint-epoch1.pt")]) == 0


# measure_lora_latency.py


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    from predict_fixtures import make_hf

    return make_hf(tmp_path_factory.mktemp("latency") / "hf")


def test_latency_reads_a_txt_as_predict_does(hf_model, tmp_path, capsys):
    """Was: one line of bytes that are not UTF-8 anywhere in --txt stopped the tool with a UnicodeDecodeError
    traceback; a byte-order mark was timed as part of the first title."""
    from category_classification import measure_lora_latency

    txt = tmp_path / "offers.txt"
    txt.write_bytes(b"\xef\xbb\xbfgold ring\n\xff\xfe bad bytes\n\nbrake pad\n")
    capsys.readouterr()
    assert run(measure_lora_latency.main, ["--model", str(hf_model), "--txt", str(txt), "--warmup_batches", "0"]) == 0
    out = capsys.readouterr().out
    assert "note: skipped 1 lines" in out and "line 2: invalid UTF-8" in out
    assert "2 offers in 1 batches" in out


def test_latency_refuses_a_seq_len_past_the_models_positions_before_timing(hf_model, tmp_path, capsys):
    """Was: --seq_len 100000 on a model of 64 positions crashed inside the model with a RuntimeError traceback
    once the timing reached an offer of more than 64 tokens (the LoRA trainer refuses it; this tool did not)."""
    from category_classification import measure_lora_latency

    data = _dataset(tmp_path / "d", [" ".join(["gold ring necklace"] * 100), "brake pad"], [4, 0])
    capsys.readouterr()
    assert run(measure_lora_latency.main, ["--model", str(hf_model), "--data", str(data), "--seq_len", "100000",
                                           "--warmup_batches", "0"]) == 2
    captured = capsys.readouterr()
    _one_error(captured.err, "--seq_len 100000", "64 tokens")
    assert "offers in" not in captured.out
    assert run(measure_lora_latency.main, ["--model", str(hf_model), "--data", str(data), "--seq_len", "64",
                                           "--warmup_batches", "0"]) == 0


# the _v2 trainers on datasets with an empty split (build_lspc_dataset.py --allow_empty_splits)


@pytest.fixture(scope="module")
def empty_splits(tmp_path_factory):
    from category_classification import build_lspc_dataset

    root = tmp_path_factory.mktemp("empty")
    mw = write_mwpd_dir(root / "mwpd", n_train=30)
    out = {}
    for name, flags in (("no_validation", ["--mwpd_test", str(mw / "validation.json.gz"), "--val_size", "0"]),
                        ("no_test", ["--val_size", "0.2", "--test_size", "0"])):
        assert build_lspc_dataset.main(["--mwpd", str(mw / "train.json.gz"), "--out", str(root / name),
                                        "--allow_empty_splits", "--quiet", *flags]) == 0
        out[name] = root / name
    return out


def test_encoder_v2_on_an_empty_validation_or_test_split(empty_splits, tmp_path, capsys):
    """Was: an IndexError traceback from the tokenizer for either (the builder writes such datasets with
    --allow_empty_splits). Now an empty validation split is one line before any folder is made (the best epoch
    is picked on it), and an empty test split is left out of the figures."""
    from category_classification import train_embedding_classifier_v2

    out = tmp_path / "enc"
    argv = [*TINY, "--epochs", "1", "--out", str(out)]
    capsys.readouterr()
    assert run(train_embedding_classifier_v2.main, ["--data", str(empty_splits["no_validation"]), *argv]) == 2
    _one_error(capsys.readouterr().err, "validation split", "holds no offers")
    assert not out.exists()
    assert run(train_embedding_classifier_v2.main, ["--data", str(empty_splits["no_test"]), *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "validation" in metrics and "test" not in metrics


def test_lora_v2_stops_early_on_an_empty_validation_split_and_trains_without_test_offers(
        empty_splits, tmp_path, capsys, monkeypatch):
    """Was: with an empty validation split a KeyError traceback (`eval_macro_f1` not found) at the first
    evaluation, with an empty test split an AttributeError traceback after the whole training (on a GPU, hours
    lost), each leaving an empty --out folder. Now an empty validation split is one line before the model
    loads, and an empty test split is left out of the figures."""
    from category_classification import train_qwen3_lora_v2
    from category_classification.models.tokenization import load_qwen_tokenizer
    from category_classification.training import lora
    from fixtures import save_tiny_qwen3

    model = save_tiny_qwen3(tmp_path / "qwen", load_qwen_tokenizer())

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the splits were checked")

    argv = ["--model", str(model), "--epochs", "1", "--device", "cpu", "--threads", "1", "--seq_len", "16"]
    with monkeypatch.context() as m:
        m.setattr(lora, "build_model", no_model)
        out = tmp_path / "lora_no_validation"
        capsys.readouterr()
        assert run(train_qwen3_lora_v2.main, ["--data", str(empty_splits["no_validation"]), "--out", str(out),
                                              *argv]) == 2
        _one_error(capsys.readouterr().err, "validation split", "holds no offers")
        assert not out.exists()
    # an empty test split (--test_size 0) is left out, as the encoder trainer does: trained, figures of validation
    out = tmp_path / "lora_no_test"
    assert run(train_qwen3_lora_v2.main, ["--data", str(empty_splits["no_test"]), "--out", str(out), *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "validation" in metrics and "test" not in metrics


# the cc-* console scripts


def test_every_script_with_a_cli_has_a_console_script():
    """Was: train_fielded_linear.py, build_lspc_dataset_full.py and the two _v2 scripts define `cli()` as
    "Console-script entry point (see [project.scripts] in pyproject.toml)", but pyproject.toml named none of
    them: no cc-* command for the fielded model README calls the best, nor for the seed's entry points."""
    import ast
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    targets = set(scripts.values())
    for path in sorted((REPO / "category_classification").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "cli" for n in tree.body):
            assert f"category_classification.{path.stem}:cli" in targets, path.name
    for name, target in scripts.items():
        module, func = target.split(":")
        assert name.startswith("cc-") and callable(getattr(__import__(module, fromlist=[func]), func)), name
