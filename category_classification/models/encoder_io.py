"""Saving and loading a trained encoder directory: weights, config, tokenizer and category_model.json.

A directory written by `save_encoder` is all that inference needs: the predictor, the ONNX exporter and
infer_embedding_classifier.py load it with `load_encoder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from category_classification.core.artifacts import read_model_info, staged_folder, write_model_info
from category_classification.core.cli import UserError
from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "encoder_config.json"
TRAIN_INFO_FILE = "train_info.json"


def save_encoder(model_dir, model: EmbeddingClassifier, config: EmbeddingClassifierConfig, tokenizer, labels,
                 train_info: dict, results=None) -> Path:
    """Write weights (safetensors), encoder_config.json, the tokenizer, train_info.json, category_model.json
    (and, with `results(stage)`, the trainer's figures, moved in with the model).

    `train_info` must hold `max_length` (the token length the model was trained with); the rest (flags,
    figures) is kept for the record.
    """
    from safetensors.torch import save_file

    out = Path(model_dir)
    # written into a folder beside the files they replace, then each moved in by a rename: a run killed
    # while saving never leaves a torn weights file in place of the previous model
    with staged_folder(out) as stage:
        model = getattr(model, "module", model)  # unwrap DDP
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(stage / WEIGHTS_FILE))
        (stage / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(str(stage))
        (stage / TRAIN_INFO_FILE).write_text(json.dumps(train_info, indent=2, default=str) + "\n", encoding="utf-8")
        # data: the training dataset, whose text settings category_model.json records (core/artifacts.py)
        write_model_info(stage, "encoder", labels, data=train_info.get("args", {}).get("data"),
                         max_length=int(train_info["max_length"]), weights=WEIGHTS_FILE,
                         config=CONFIG_FILE, tokenizer=".", pad_token_id=config.pad_token_id,
                         num_parameters=model.num_parameters(), pooler=config.pooler, head=config.head)
        if results is not None:
            results(stage)
    return out


def load_encoder(model_dir, device="cpu"):
    """(model in eval mode on `device`, tokenizer, info) for a directory written by `save_encoder`.

    `info` is category_model.json (labels, max_length, ...) plus `config` and `train_info`.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    d = Path(model_dir)
    info = read_model_info(d)
    if info.get("kind") != "encoder":
        raise UserError(f"{d} holds a {info.get('kind')!r} model, not an encoder")
    weights = d / info.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise UserError(f"encoder weights missing: {weights}")
    config = EmbeddingClassifierConfig.from_dict(json.loads((d / info.get("config", CONFIG_FILE)).read_text()))
    model = EmbeddingClassifier(config)
    model.load_state_dict(load_file(str(weights)))
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(d / info.get("tokenizer", ".")))
    train_info_path = d / TRAIN_INFO_FILE
    info = dict(info, config=config.to_dict(),
                train_info=json.loads(train_info_path.read_text()) if train_info_path.is_file() else {})
    return model, tokenizer, info


@torch.no_grad()
def logits_for_ids(model, ids, batch_size: int = 64, device="cpu", autocast_dtype=None):
    """Logits (n, num_labels) for token id lists, batched longest-first so little time goes to padding."""
    from category_classification.training.loop import pad_batch

    if not (isinstance(batch_size, int) and batch_size >= 1):  # range() would run no batch: uninitialised logits
        raise UserError(f"--batch_size must be at least 1, got {batch_size!r}")
    pad_id = model.config.pad_token_id
    ids = [s if len(s) else [pad_id] for s in ids]  # an empty text still gets one position
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.full((len(ids), model.config.num_labels), float("nan"))
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in idx], pad_id)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            logits = model(input_ids.to(device), mask.to(device))["logits"]
        out[idx] = logits.float().cpu()
    model.train(was_training)
    return out


def predict_logits(model, tokenizer, texts, max_length: int, batch_size: int = 64, device="cpu"):
    """Logits (n, num_labels) for raw texts, tokenized as in training (truncated to max_length tokens)."""
    texts = list(texts)
    if not texts:
        return torch.zeros((0, model.config.num_labels))
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return logits_for_ids(model, ids, batch_size=batch_size, device=device)
