"""LoRA trainer on a tiny random Qwen3 with the offline Qwen3 tokenizer: targets, batches, errors, and the
whole script end to end (adapter, merged model, results files)."""

import json
import random

import pytest

from category_classification.core.env import stay_offline  # noqa: E402

stay_offline()

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from category_classification.models import lora  # noqa: E402
from category_classification.training import lora as lora_training  # noqa: E402
from category_classification.core.cli import run  # noqa: E402
from fixtures import save_tiny_qwen3  # noqa: E402

LABELS = ["Automotive", "Books", "Shoes"]
WORDS = {"Automotive": ["brake", "tyre", "engine", "bumper", "wiper"],
         "Books": ["novel", "paperback", "author", "chapter", "edition"],
         "Shoes": ["sneaker", "boot", "sandal", "heel", "loafer"]}


def make_dataset(path, n_train=240, n_eval=30, seed=0):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rng = random.Random(seed)
    # text_bare as the builder adds it to breadcrumb (MWPD) datasets: the trainer must ignore it
    feats = Features({"text": Value("string"), "text_bare": Value("string"), "label": ClassLabel(names=LABELS),
                      "cluster": Value("int64")})

    def rows(n, offset):
        out = []
        for i in range(n):
            y = i % len(LABELS)
            words = rng.sample(WORDS[LABELS[y]], 3) + [rng.choice(["red", "new", "sale", "x2"])]
            out.append({"text": " ".join(words) + " | Home", "text_bare": " ".join(words), "label": y,
                        "cluster": offset + i})
        return Dataset.from_list(out, features=feats)

    DatasetDict({"train": rows(n_train, 0), "validation": rows(n_eval, 10_000),
                 "test": rows(n_eval, 20_000)}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from category_classification.models.tokenization import load_qwen_tokenizer

    root = tmp_path_factory.mktemp("lora")
    model_dir = save_tiny_qwen3(root / "tiny_qwen3", load_qwen_tokenizer())
    data_dir = make_dataset(root / "data")
    return {"root": root, "model": model_dir, "data": data_dir}


def _train_argv(tiny, out, *extra):
    return ["--data", str(tiny["data"]), "--out", str(out), "--model", str(tiny["model"]),
            "--seq_len", "16", "--batch", "16", "--micro_batch", "8", "--epochs", "1", "--lr", "5e-3",
            "--device", "cpu", "--cpu_threads", "1", "--logging_steps", "5", "--no_lang_metrics", *extra]


def test_derive_batches():
    assert lora_training.derive_batches(32, 16, 1) == (16, 2)
    assert lora_training.derive_batches(512, 16, 2) == (16, 16)  # 16 x 16 x 2 processes
    assert lora_training.derive_batches(8, 16, 1) == (8, 1)  # never a micro-batch larger than the effective batch
    assert lora_training.derive_batches(30, 8, 1) == (8, 4)  # rounds up to the next multiple
    from category_classification.core.cli import UserError

    with pytest.raises(UserError):
        lora_training.derive_batches(0, 8, 1)


def test_target_modules_follow_the_architecture(tiny):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    qwen = AutoModelForSequenceClassification.from_pretrained(str(tiny["model"]), num_labels=3)
    assert lora.lora_target_modules(qwen) == sorted(
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])
    assert lora.lora_target_modules(qwen, "mlp") == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    assert lora.head_modules(qwen) == ["score"]

    bert = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3))
    targets = lora.lora_target_modules(bert)
    assert "attention.self.query" in targets and "intermediate.dense" in targets and "output.dense" in targets
    assert lora.lora_target_modules(bert, "attention") == [
        "attention.output.dense", "attention.self.key", "attention.self.query", "attention.self.value"]
    assert lora.head_modules(bert) == ["classifier", "pooler"]
    assert lora.head_modules(bert, train_pooler=False) == ["classifier"]
    # the pooler is a head module, never a LoRA target, though its layer is also called `dense`
    peft_bert = lora.add_lora(bert, lora.LoraTrainConfig(lora_r=2, lora_alpha=4))
    names = [n for n, _ in peft_bert.named_modules()]
    assert not any("pooler" in n and "lora_A" in n for n in names)
    assert any("layer.1.output.dense.lora_A" in n for n in names)


def test_lora_layers_limits_adapters_to_the_top_blocks(tiny):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=3,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3))
    peft_bert = lora.add_lora(bert, lora.LoraTrainConfig(lora_r=2, lora_alpha=4, lora_layers=1))
    with_lora = {n.split(".layer.")[1].split(".")[0] for n, _ in peft_bert.named_modules()
                 if "lora_A" in n and ".layer." in n}
    assert with_lora == {"2"}
    # nothing below the top block needs a gradient, so the backward pass stops there
    trainable = [n for n, p in peft_bert.named_parameters() if p.requires_grad]
    assert trainable and not any(".layer.0." in n or ".layer.1." in n or "embeddings" in n for n in trainable)

    qwen = AutoModelForSequenceClassification.from_pretrained(str(tiny["model"]), num_labels=3)
    peft_qwen = lora.add_lora(qwen, lora.LoraTrainConfig(lora_r=2, lora_alpha=4, lora_layers=1))
    layers = {n.split(".layers.")[1].split(".")[0] for n, _ in peft_qwen.named_modules()
              if "lora_A" in n and ".layers." in n}
    assert layers == {str(qwen.config.num_hidden_layers - 1)}
    assert lora.top_layers(qwen, 0) is None and lora.top_layers(qwen, 99) is None


@pytest.mark.parametrize("flags, message", [
    (["--optim", "paged_adamw_8bit"], "needs a CUDA GPU"),
    (["--optim", "adamw_bnb_8bit"], "needs a CUDA GPU"),
    (["--load_in_4bit"], "needs a CUDA GPU"),
])
def test_cuda_only_options_fail_clearly_on_cpu(tiny, tmp_path, capsys, flags, message):
    from category_classification import train_qwen3_lora

    code = run(train_qwen3_lora.main, _train_argv(tiny, tmp_path / "out", *flags))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "merged").exists()


def test_script_end_to_end(tiny, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from category_classification import train_qwen3_lora

    out = tmp_path / "run"
    assert run(train_qwen3_lora.main, _train_argv(tiny, out, "--lora_r", "4", "--lora_alpha", "8")) == 0

    # results files through the shared evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 0.0 <= metrics[split]["macro_f1"] <= 1.0 and metrics[split]["n"] == 30
    assert (out / "results_category.txt").is_file() and (out / "confusion_matrix.png").is_file()
    assert json.loads((out / lora.CONFIG_FILE).read_text())["lora_r"] == 4
    assert not (out / "checkpoints").exists()

    # the model directory describes itself, at the top and inside merged/
    top = json.loads((out / "category_model.json").read_text())
    inner = json.loads((out / "merged" / "category_model.json").read_text())
    assert top["kind"] == inner["kind"] == "hf_sequence_classification"
    assert top["path"] == "merged" and inner["path"] == "."
    assert top["labels"] == inner["labels"] == LABELS and top["max_length"] == 16

    merged = AutoModelForSequenceClassification.from_pretrained(str(out / "merged")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "merged"))
    assert merged.config.id2label == dict(enumerate(LABELS))
    assert merged.config.label2id == {n: i for i, n in enumerate(LABELS)}

    # LoRA weights moved; base weights did not: merged = base + B A * alpha / r, exactly
    adapter = load_file(str(out / "adapter_model.safetensors"))
    base = load_file(str(tiny["model"] / "model.safetensors"))
    scale = 8 / 4
    checked = 0
    for key, b in adapter.items():
        if ".lora_B." not in key:
            continue
        assert b.abs().sum() > 0, f"{key} never trained (lora_B starts at zero)"
        a = adapter[key.replace(".lora_B.", ".lora_A.")]
        module = key.split("base_model.model.", 1)[1].rsplit(".lora_B.", 1)[0]  # model.layers.0.mlp.up_proj
        base_w = base[module.split("model.", 1)[1] + ".weight"]
        merged_w = merged.state_dict()[module + ".weight"]
        assert not torch.allclose(merged_w, base_w)
        torch.testing.assert_close(merged_w - (b @ a) * scale, base_w, atol=1e-5, rtol=1e-4)
        checked += 1
    assert checked == 2 * 7  # 2 layers x 7 projections
    torch.testing.assert_close(merged.model.embed_tokens.weight, base["embed_tokens.weight"])
    assert any(k.startswith("base_model.model.score") for k in adapter)  # the head is saved in full

    # the merged model gives the logits of base + adapter
    with_adapter = lora.load_adapter_model(out, str(tiny["model"]), LABELS, pad_token_id=tok.pad_token_id).eval()
    batch = tok(["brake engine red", "novel author", "a much longer sneaker boot heel title x2"],
                padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, with_adapter(**batch).logits, atol=1e-5, rtol=1e-4)


def test_v2_entry_point_has_its_defaults():
    from category_classification.train_qwen3_lora import build_parser
    from category_classification.train_qwen3_lora_v2 import V2_DEFAULTS

    args = build_parser(V2_DEFAULTS).parse_args(["--data", "d", "--out", "o"])
    assert (args.lora_r, args.lora_alpha, args.micro_batch, args.batch_size) == (32, 64, 16, 512)
    assert (args.lr_scheduler_type, args.warmup_ratio, args.max_grad_norm) == ("cosine", 0.05, 0.5)
    assert args.model == lora.DEFAULT_MODEL


def test_latency_script_on_a_trained_model(tiny, tmp_path, capsys):
    from category_classification import measure_lora_latency, train_qwen3_lora

    out = tmp_path / "run"
    assert run(train_qwen3_lora.main, _train_argv(tiny, out, "--epochs", "0.2", "--class_weighting", "sqrt")) == 0
    assert "class weights: Automotive 1.00" in capsys.readouterr().out  # balanced toy data: equal weights
    assert json.loads((out / lora.CONFIG_FILE).read_text())["class_weighting"] == "sqrt"
    report = tmp_path / "latency.json"
    assert run(measure_lora_latency.main, ["--model", str(out), "--dataset", str(tiny["data"]), "--split", "test",
                                           "--batch", "8", "--warmup_batches", "1", "--cpu_threads", "1",
                                           "--json_out", str(report)]) == 0
    figures = json.loads(report.read_text())
    assert figures["items"] == 30 and figures["batches"] == 4 and figures["seq_len"] == 16
    assert figures["items_per_second"] > 0
    assert figures["batch_p50_ms"] <= figures["batch_p95_ms"] <= figures["batch_p99_ms"]
    assert figures["item_p99_ms"] <= figures["batch_p99_ms"]
    assert "items/s" in capsys.readouterr().out
    # the same offers in a dataset whose label order is reversed: accuracy is by name, so it is the same
    from datasets import ClassLabel, load_from_disk

    dsd = load_from_disk(str(tiny["data"]))
    names = dsd["test"].features["label"].names
    for order, path in ((names[::-1], tmp_path / "reversed"), ([n + "X" for n in names], tmp_path / "others")):
        moved = dsd.map(lambda row: {"label": order.index(names[row["label"]])} if order[0] in names else {})
        moved.cast_column("label", ClassLabel(names=order)).save_to_disk(str(path))
    again = tmp_path / "latency_reversed.json"
    assert run(measure_lora_latency.main, ["--model", str(out), "--dataset", str(tmp_path / "reversed"),
                                           "--batch", "8", "--cpu_threads", "1", "--json_out", str(again)]) == 0
    assert json.loads(again.read_text())["accuracy"] == figures["accuracy"]
    capsys.readouterr()
    assert run(measure_lora_latency.main, ["--model", str(out), "--dataset", str(tmp_path / "others")]) == 2
    assert "differ from the dataset's" in capsys.readouterr().err

    lines = tmp_path / "offers.txt"
    lines.write_text("brake engine\n\nnovel author\n", encoding="utf-8")
    assert run(measure_lora_latency.main, ["--model", str(out / "merged"), "--txt", str(lines), "--batch", "1",
                                           "--json_out", str(report)]) == 0
    assert json.loads(report.read_text())["items"] == 2
    assert run(measure_lora_latency.main, ["--model", str(tmp_path / "missing"), "--txt", str(lines)]) == 2


def test_weighted_loss_scales_like_the_trainer_expects():
    import torch.nn.functional as F

    from category_classification.training.loop import class_weights

    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
    plain = F.cross_entropy(logits, labels)
    same = lora_training.weighted_loss([2.0, 2.0, 2.0], labels.tolist())  # uniform weights: the plain mean
    torch.testing.assert_close(same({"logits": logits}, labels), plain)
    # two accumulated micro-batches: each divides by the labels of both, so their sum is the full mean
    torch.testing.assert_close(same({"logits": logits}, labels, num_items_in_batch=12), plain / 2)

    w = class_weights(labels.tolist(), 3, "balanced")  # counts 4, 1, 1
    assert w[1] == w[2] == pytest.approx(4 * w[0])
    root = class_weights(labels.tolist(), 3, "sqrt")
    assert root[1] == pytest.approx(2 * root[0])
    assert class_weights(labels.tolist(), 3, "none") is None
    weighted = lora_training.weighted_loss(w, labels.tolist())({"logits": logits}, labels)
    per = F.cross_entropy(logits, labels, reduction="none")
    ex_w = torch.tensor([1.0, 1, 1, 1, 4, 4]) / 2.0  # mean over the training offers is 1
    torch.testing.assert_close(weighted, (ex_w * per).mean())


def test_defaults_follow_the_model_size_and_flags_win():
    cfg = lora.LoraTrainConfig(lr=2e-4)
    small, size, chosen = lora.with_size_defaults(cfg, 22_700_000)  # all-MiniLM-L6-v2
    assert size == "small" and "lr" not in chosen and small.lr == 2e-4  # given explicitly: kept
    assert (small.epochs, small.lora_layers, small.lora_dropout, small.seq_len, small.class_weighting,
            small.evals_per_epoch) == (2.0, 3, 0.0, 96, "sqrt", 2)
    large, size, _ = lora.with_size_defaults(lora.LoraTrainConfig(), 596_000_000)  # Qwen3-Embedding-0.6B
    assert size == "large" and (large.lr, large.epochs, large.lora_layers, large.seq_len) == (5e-5, 1.0, 0, 256)
    assert not large.unset()
    # half-epoch validations: 100 offers at batch 10 = 10 steps per epoch, so every 5 steps
    assert lora_training.eval_steps_for(small.__class__(**{**small.to_dict(), "batch_size": 10}), 100) == 5
    assert lora_training.eval_steps_for(large, 100) == 0  # once per epoch


def test_parameters_are_counted_from_the_config_alone(tiny, tmp_path):
    import shutil

    weightless = tmp_path / "config_only"
    weightless.mkdir()
    shutil.copy(tiny["model"] / "config.json", weightless / "config.json")
    from transformers import AutoModelForSequenceClassification

    real = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(
        str(tiny["model"]), num_labels=2).parameters())
    assert lora.parameters_from_config(weightless) == real
    from category_classification.core.cli import UserError

    with pytest.raises(UserError):
        lora.parameters_from_config(tmp_path / "missing")


def test_old_flag_names_still_work():
    from category_classification.train_qwen3_lora import build_parser

    args = build_parser().parse_args(["--data", "d", "--out", "o", "--batch", "8", "--cpu_threads", "3",
                                      "--max_length", "64", "--no_group_by_length"])
    cfg = lora.config_from_args(args)
    assert (cfg.batch_size, cfg.threads, cfg.seq_len, cfg.group_by_length) == (8, 3, 64, False)
    old = lora.LoraTrainConfig.from_dict({"batch": 16, "cpu_threads": 2, "lr": 1e-4, "unknown": 1})
    assert (old.batch_size, old.threads, old.lr) == (16, 2, 1e-4)


def test_size_choice_is_printed_and_a_class_absent_from_train_is_named(tiny, tmp_path, capsys):
    from datasets import load_from_disk

    from category_classification import train_qwen3_lora

    data = tmp_path / "data"
    dsd = load_from_disk(str(tiny["data"]))
    dsd["train"] = dsd["train"].filter(lambda row: row["label"] != LABELS.index("Shoes"))
    dsd.save_to_disk(str(data))
    out = tmp_path / "run"
    foreign = out / "checkpoints" / "checkpoint-7"  # another run's Trainer checkpoint
    foreign.mkdir(parents=True)
    (foreign / "trainer_state.json").write_text("{}")
    argv = ["--data", str(data), "--out", str(out), "--model", str(tiny["model"]), "--batch_size", "16",
            "--micro_batch", "8", "--epochs", "0.3", "--threads", "1", "--no_lang_metrics"]
    assert run(train_qwen3_lora.main, argv) == 0
    printed = capsys.readouterr().out
    assert "(small): chose lr=0.001, lora_dropout=0.0, lora_layers=3, seq_len=96" in printed
    assert "not in train" in printed and "Shoes" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes_without_training_examples"] == ["Shoes"]
    assert metrics["test"]["per_class"]["Shoes"]["support"] == 10
    assert (foreign / "trainer_state.json").is_file()  # never deleted
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # its own work folders are gone
    saved = json.loads((out / lora.CONFIG_FILE).read_text())
    assert saved["seq_len"] == 96 and saved["lr"] == 1e-3  # the chosen values are recorded
