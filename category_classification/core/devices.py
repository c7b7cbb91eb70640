"""Device and precision choice shared by the trainers, the predictor and the benchmarks."""

from __future__ import annotations


def pick_device(preference: str | None = None):
    """'auto' (or None) picks CUDA, then MPS, then CPU; anything else is passed to torch.device, once this
    machine is known to have it (a CUDA device asked for where there is none was an AssertionError trace
    from the first tensor moved there)."""
    import torch

    from category_classification.core.cli import UserError, check_device

    check_device(preference)
    if preference and preference != "auto":
        device = torch.device(preference)
        mps = getattr(torch.backends, "mps", None)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.type == "cuda" and (device.index or 0) >= count:
            raise UserError(f"--device {preference}: this machine has {count or 'no'} CUDA device"
                            f"{'s' if count != 1 else ''} torch can use; pass --device cpu or auto")
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise UserError(f"--device {preference}: no MPS device here; pass --device cpu or auto")
        return device
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
