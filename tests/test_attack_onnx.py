"""An attack on the ONNX export and the ONNX runtime path (2026-11-28): parity on hostile texts, a parity check
that fails, a --check_data of other labels, re-exports over an earlier export, and ONNX folders whose parts
(labels, tokenizer, graph, settings) are not the export's own."""

import json
import shutil

import numpy as np
import pytest

from category_classification import evaluate as evaluate_script
from category_classification import export_onnx as export_script
from category_classification import predict as predict_script
from category_classification.core.artifacts import read_model_info
from category_classification.core.cli import run
from category_classification.inference.predictors import load_predictor, training_figures
from predict_fixtures import LABELS, make_dataset, make_encoder, make_hf, minilm_tokenizer, toy_offers

HOSTILE = ["gold ring", "", "   ", "\t\n\r", "x" * 100_000, "ring " * 20_000, "\x00gold\x00ring\x00", "\x01\x02\x7f",
           "gold \ud800 ring", "\udfff", "خاتم ذهب \u202e ring", "💍💍 gold ring 👟", "\u200b\u200b", "Nike\u00adAir",
           "[PAD] [PAD]", "gold [SEP] [CLS] ring", "a", "ß" * 3000, "\ufeffboots"]


def one_error(err: str, *words: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def export(model, out, *flags) -> int:
    return run(export_script.main, ["--model", str(model), "--out", str(out), *flags])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack_onnx")
    m = {"enc": make_encoder(root / "enc"), "bert": make_hf(root / "bert"), "data": make_dataset(root / "data")}
    assert export(m["enc"], root / "enc_onnx", "--quantize", "int8") == 0
    m["enc_onnx"] = root / "enc_onnx"
    return m


def test_exports_give_torchs_labels_and_scores_on_hostile_texts(models, tmp_path):
    """Held before the attack: every text rule and padding path gives the torch model's answer (fp32 to 1e-4,
    int8 the same label), for the encoder and a decoder (Qwen3 pools its last non-pad token)."""
    qwen = make_hf(tmp_path / "qwen", "qwen3")
    assert export(qwen, tmp_path / "qwen_onnx", "--quantize", "int8") == 0
    for src, dst in ((models["enc"], models["enc_onnx"]), (qwen, tmp_path / "qwen_onnx")):
        ref = load_predictor(src, batch_size=4).predict(HOSTILE, top_k=6)
        for precision, batch_size in (("fp32", 7), ("int8", 64)):
            got = load_predictor(dst, precision=precision, batch_size=batch_size).predict(HOSTILE, top_k=6)
            for text, r, g in zip(HOSTILE, ref, got):
                assert r.get("error") == g.get("error"), text[:20]
                if "error" in r:
                    continue
                assert g["label"] == r["label"], (precision, text[:20])
                if precision == "fp32":
                    probs = lambda row: [p["prob"] for p in sorted(row["top_k"], key=lambda p: p["label"])]  # noqa: E731
                    np.testing.assert_allclose(probs(g), probs(r), atol=1e-4)


def _outlier_encoder(path):
    """An encoder with one outlier channel in its norms, as trained transformers grow them: per-batch int8
    activations lose the other channels' precision (95.8% agreement on the toy test split)."""
    import torch

    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.models.encoder_io import save_encoder

    tok = minilm_tokenizer()
    torch.manual_seed(0)
    cfg = EmbeddingClassifierConfig(vocab_size=len(tok), num_labels=len(LABELS), hidden_size=32, num_layers=2,
                                    num_heads=4, num_kv_heads=2, ffn_size=64, pad_token_id=tok.pad_token_id)
    model = EmbeddingClassifier(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p[0] = 50.0
    save_encoder(path, model, cfg, tok, LABELS, {"max_length": 32})
    return path


def test_an_export_missing_its_parity_target_replaces_nothing(models, tmp_path, capsys):
    """Before: the int8 file was never held to its target (docs: >= 99%) and became the folder's default
    precision; and the check ran after the export had replaced the earlier one, so even an fp32 failure
    left the failed export in place."""
    out = tmp_path / "served"
    assert export(models["bert"], out, "--quantize", "int8", "--check_data", str(models["data"])) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    bad = _outlier_encoder(tmp_path / "outlier")
    assert export(bad, out, "--quantize", "int8", "--check_data", str(models["data"])) == 2
    one_error(capsys.readouterr().err, "int8 agrees with torch on only", "not written")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a first export that fails its check leaves no folder
    assert export(bad, tmp_path / "new", "--quantize", "int8", "--check_data", str(models["data"])) == 2
    assert not (tmp_path / "new").exists()


def _relabelled(src, dst, names):
    """The same offers as the dataset at `src`, their classes given in the order `names`."""
    from datasets import ClassLabel, DatasetDict, load_from_disk

    dsd = load_from_disk(str(src))
    old = dsd["train"].features["label"].names
    out = {}
    for split, ds in dsd.items():
        ds = ds.map(lambda r: {"label": names.index(old[r["label"]])})
        out[split] = ds.cast_column("label", ClassLabel(names=names))
    DatasetDict(out).save_to_disk(str(dst))
    return dst


def test_check_data_labels_are_read_by_name(models, tmp_path, capsys):
    """Before: parity read the dataset's label ids as the model's, so a dataset naming the same classes in
    another order scored the wrong classes, and one with other classes was scored all the same."""
    rev = _relabelled(models["data"], tmp_path / "rev", list(reversed(LABELS)))
    reports = []
    for i, data in enumerate((models["data"], rev)):
        assert export(models["enc"], tmp_path / f"o{i}", "--check_data", str(data)) == 0
        reports.append(json.loads((tmp_path / f"o{i}" / "parity.json").read_text()))
    assert reports[0]["torch"]["macro_f1"] == pytest.approx(reports[1]["torch"]["macro_f1"])
    other = _relabelled(models["data"], tmp_path / "other", LABELS + ["Other"])
    capsys.readouterr()
    assert export(models["enc"], tmp_path / "o2", "--check_data", str(other)) == 2
    one_error(capsys.readouterr().err, "--check_data", "the model")
    assert not (tmp_path / "o2").exists()


def test_a_reexport_keeps_no_file_of_the_earlier_export(models, tmp_path, capsys):
    """Before: a re-export of a model without metrics.json kept the earlier model's, which GET /model served
    as the new model's figures, and tokenizer files an earlier export wrote (transformers 4 wrote
    special_tokens_map.json; Qwen tokenizers added_tokens.json) were read with the new tokenizer.json."""
    out = tmp_path / "out"
    enc = tmp_path / "enc"
    shutil.copytree(models["enc"], enc)
    (enc / "metrics.json").write_text(json.dumps({"model": "enc", "test": {"macro_f1": 0.99}}))
    assert export(enc, out) == 0
    (out / "special_tokens_map.json").write_text(json.dumps({"cls_token": "[MASK]", "pad_token": "[UNK]"}))
    (out / "added_tokens.json").write_text(json.dumps({"goldring": 30522}))
    (out / "notes.md").write_text("mine")
    info = json.loads((out / "category_model.json").read_text())
    written = info.pop("written")  # an export made before its model info listed the files it wrote
    assert "metrics.json" in written and "special_tokens_map.json" not in written
    (out / "category_model.json").write_text(json.dumps(info))
    assert export(models["bert"], out) == 0
    assert not (out / "metrics.json").exists() and training_figures(out) == {}
    assert not (out / "special_tokens_map.json").exists() and not (out / "added_tokens.json").exists()
    assert (out / "notes.md").read_text() == "mine"
    # an export that lists what it wrote: a file of the user's under a tokenizer file's name is kept
    mine = next(f for f in ("vocab.txt", "merges.txt", "spm.model") if not (out / f).exists())
    (out / mine).write_text("my own notes")
    assert export(models["bert"], out) == 0 and (out / mine).read_text() == "my own notes"
    texts = ["goldring necklace", "boots"] + toy_offers(2, seed=5)[0]
    np.testing.assert_allclose(load_predictor(out).logits(texts), load_predictor(models["bert"]).logits(texts),
                               atol=1e-4)


def _edit_info(folder, **changes):
    info = json.loads((folder / "category_model.json").read_text())
    info.update(changes)
    (folder / "category_model.json").write_text(json.dumps(info))


def _bigger_tokenizer(folder):
    """Another model's tokenizer: the same one with tokens the model has no embedding rows for."""
    tok = minilm_tokenizer()
    tok.add_tokens(["goldring", "sneakerboot"])
    tok.save_pretrained(str(folder))


def _graph_with(folder, extra_input=None, output=None):
    import onnx
    from onnx import TensorProto, helper

    path = folder / "model.int8.onnx"
    m = onnx.load(str(path))
    if extra_input:  # another exporter's graph (token_type_ids)
        m.graph.input.append(helper.make_tensor_value_info(extra_input, TensorProto.INT64, ["batch", "sequence"]))
    if output:
        for node in m.graph.node:
            node.output[:] = [output if o == "logits" else o for o in node.output]
        m.graph.output[0].name = output
    onnx.save(m, str(path))


@pytest.mark.parametrize("damage,words", [
    (lambda d: _edit_info(d, labels=LABELS + ["Other"]), ["gives 6 scores", "names 7 labels"]),
    (lambda d: _edit_info(d, labels=LABELS[:5]), ["gives 6 scores", "names 5 labels"]),
    (_bigger_tokenizer, ["tokenizer has 30,524 tokens", "embeds 30,522"]),
    (lambda d: _graph_with(d, extra_input="token_type_ids"), ["token_type_ids", "re-export"]),
    (lambda d: _graph_with(d, output="scores"), ["gives ['scores']", "re-export"]),
    (lambda d: _edit_info(d, max_length=-3), ["category_model.json is damaged", "max_length -3"]),
])
def test_an_onnx_folder_whose_parts_do_not_fit_is_one_line(models, tmp_path, capsys, damage, words):
    """Before: a traceback once two offers shared a batch, or for one offer an error line and exit 0; a bigger
    tokenizer failed only the offers with a new token and labelled the others."""
    d = tmp_path / "onnx"
    shutil.copytree(models["enc_onnx"], d)
    damage(d)
    capsys.readouterr()
    assert run(predict_script.main, ["--model", str(d), "--text", "goldring", "--text", "boots", "--no_progress"]) == 2
    one_error(capsys.readouterr().err, *words)
    assert run(evaluate_script.main, ["--model", str(d), "--data", str(models["data"])]) == 2
    one_error(capsys.readouterr().err, *words)


def test_a_torch_folder_whose_parts_do_not_fit_is_refused_by_predict_and_export(models, tmp_path, capsys):
    """Before: the encoder with a bigger tokenizer failed the offers with a new token (a traceback when every
    offer of a batch had one) and labelled the others, exit 0; an encoder whose category_model.json
    names 7 labels for its 6 outputs exported with exit 0 into an ONNX folder no tool could run."""
    d = tmp_path / "enc"
    shutil.copytree(models["enc"], d)
    _bigger_tokenizer(d)
    capsys.readouterr()
    assert run(predict_script.main, ["--model", str(d), "--text", "goldring", "--text", "boots"]) == 2
    one_error(capsys.readouterr().err, "tokenizer has 30,524 tokens")
    assert export(d, tmp_path / "x") == 2
    one_error(capsys.readouterr().err, "tokenizer has 30,524 tokens")
    e = tmp_path / "enc7"
    shutil.copytree(models["enc"], e)
    _edit_info(e, labels=LABELS + ["Other"])
    assert export(e, tmp_path / "y") == 2
    one_error(capsys.readouterr().err, "gives 6 scores", "names 7 labels")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    _edit_info(e, labels=LABELS, max_length=-3)
    assert export(e, tmp_path / "z") == 2
    one_error(capsys.readouterr().err, "max_length -3")
    assert read_model_info(models["enc_onnx"])["vocab_size"] == 30522  # what an export's load checks


def test_a_device_this_machine_lacks_is_one_line(models, tmp_path, capsys):
    """Found by the same review: `predict.py --device cuda` of a torch folder on a machine without CUDA was an
    AssertionError traceback from the first tensor moved there; `--device cuda:7` on one GPU the same."""
    import torch

    from category_classification.core.cli import UserError
    from category_classification.core.devices import pick_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(UserError, match="CUDA device"):
        pick_device(f"cuda:{count}")
    assert pick_device("cpu").type == "cpu"
    if count:
        return
    out = tmp_path / "preds.jsonl"
    assert run(predict_script.main, ["--model", str(models["enc"]), "--text", "gold ring", "--device", "cuda",
                                     "--out", str(out)]) == 2
    one_error(capsys.readouterr().err, "--device cuda", "no CUDA")
    assert not out.exists()
