"""Device and precision choice shared by the trainers, the predictor and the benchmarks."""

from __future__ import annotations


def pick_device(preference: str | None = None):
    """'auto' (or None) picks CUDA, then MPS, then CPU; anything else is passed to torch.device."""
    import torch

    from category_classification.core.cli import check_device

    check_device(preference)
    if preference and preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device):
    """bf16 on CUDA where supported, else fp16; None (full fp32) on MPS and CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
