"""Latency of a trained Hugging Face classifier: load it for inference, classify texts in timed batches and
summarise items/s and p50/p95/p99 (measure_lora_latency.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from category_classification.core.cli import UserError


def resolve_model_dir(path) -> tuple[Path, dict]:
    """The directory holding the transformers weights: a trainer's out dir (its category_model.json
    points at merged/), merged/ itself, or any sequence-classification checkpoint."""
    from category_classification.core.artifacts import MODEL_INFO
    from category_classification.core.cli import require_dir

    p = require_dir(path, "model directory")
    info = {}
    if (p / MODEL_INFO).is_file():
        info = json.loads((p / MODEL_INFO).read_text(encoding="utf-8"))
        p = p / info.get("path", ".")
    if not (p / "config.json").is_file():
        raise UserError(f"no transformers model in {p} (no config.json)")
    return p, info


def load_for_inference(path, device):
    """Tokenizer, eval-mode model on `device` (bf16/fp16 on CUDA), and the model-dir info."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from category_classification.models.tokenization import load_tokenizer

    model_dir, info = resolve_model_dir(path)
    tokenizer = load_tokenizer(model_dir)
    from category_classification.models.lora import precision_for

    dtype = precision_for(device)["load_dtype"]
    if device.type == "cuda" and dtype == torch.float32:
        dtype = torch.float16  # inference needs no fp32 master weights
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model, info


def time_batches(model, tokenizer, texts, batch: int, seq_len: int, device, warmup_batches: int = 2):
    """Classify `texts` in batches, timing each end to end (tokenize, forward, argmax on the host).

    Returns (predictions, seconds per timed batch, sizes of the timed batches); the first
    `warmup_batches` batches run but are not timed.
    """
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    warm = [batches[i % len(batches)] for i in range(warmup_batches)] if batches else []
    preds, seconds, sizes = [], [], []
    with torch.inference_mode():
        for chunk in warm:
            enc = tokenizer(chunk, truncation=True, max_length=seq_len, padding=True, return_tensors="pt")
            model(**enc.to(device))
        sync()
        for chunk in batches:
            t0 = time.perf_counter()
            enc = tokenizer(chunk, truncation=True, max_length=seq_len, padding=True, return_tensors="pt")
            pred = model(**enc.to(device)).logits.argmax(dim=-1).cpu()
            sync()
            seconds.append(time.perf_counter() - t0)
            sizes.append(len(chunk))
            preds.extend(pred.tolist())
    return preds, seconds, sizes


def latency_summary(seconds, sizes) -> dict:
    """items/s and p50/p95/p99 latency per batch and per item (a batch's time over its size), in ms."""
    import numpy as np

    s = np.asarray(seconds, dtype=float)
    per_item = s / np.asarray(sizes, dtype=float)
    pct = (50, 95, 99)
    return {"items": int(sum(sizes)), "batches": len(sizes), "seconds": float(s.sum()),
            "items_per_second": float(sum(sizes) / s.sum()) if s.sum() > 0 else 0.0,
            **{f"batch_p{q}_ms": float(np.percentile(s, q) * 1e3) for q in pct},
            **{f"item_p{q}_ms": float(np.percentile(per_item, q) * 1e3) for q in pct}}
