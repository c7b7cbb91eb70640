"""Latency of a trained Hugging Face classifier (measure_lora_latency.py; models/hf.py loads it): classify
texts in timed batches and summarise items/s and p50/p95/p99."""

from __future__ import annotations

import time


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
