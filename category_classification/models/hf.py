"""The one loader for Hugging Face sequence-classification folders: tokenizer, model, pad id and dtype.

The predictor, the ONNX exporter, the LoRA trainer and measure_lora_latency.py all load through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from category_classification.core.artifacts import MODEL_INFO, read_model_info
from category_classification.core.cli import UserError, require_dir
from category_classification.models.tokenization import load_tokenizer


@dataclass
class HFFolder:
    """A loaded folder: the model (eval mode), its tokenizer, the id it pads with and its category_model.json."""

    model: object
    tokenizer: object
    pad_id: int
    path: Path
    info: dict


def model_folder(path) -> tuple[Path, dict]:
    """(folder holding config.json and the weights, category_model.json or {}) for a trainer's output
    folder (its category_model.json points at merged/), merged/ itself, or any sequence-classification
    checkpoint."""
    p = require_dir(path, "model directory")
    info = {}
    if (p / MODEL_INFO).is_file():
        info = read_model_info(p)
        p = p / str(info.get("path", "."))
    if not (p / "config.json").is_file():
        raise UserError(f"no Hugging Face model in {p} (no config.json)")
    return p, info


def inference_dtype(device):
    """fp32 on CPU and MPS; on CUDA half precision (bf16 where supported, else fp16): inference needs no
    fp32 master weights."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(name_or_path, dtype=None, base: bool = False, **kwargs):
    """AutoModelForSequenceClassification (`base`: AutoModel, the encoder without a head) from a folder (or a
    cached hub name); `kwargs` go to from_pretrained (num_labels, id2label, quantization_config, ...)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weights-loading bar per load: noise in a service's or a job's log
    if dtype is not None:  # None: the library's default
        kwargs["dtype"] = dtype
    try:
        return (AutoModel if base else AutoModelForSequenceClassification).from_pretrained(str(name_or_path), **kwargs)
    except Exception as exc:
        # not on disk and no hub access, no weights in the folder, or a damaged config or weights file
        if not (isinstance(exc, OSError) or type(exc).__module__.startswith("safetensors")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load model {str(name_or_path)!r}: {first}") from None


def set_pad_id(model, tokenizer) -> int:
    """The id padded positions get: the tokenizer's pad (guaranteed by load_tokenizer), else the model's.
    The config learns it when it has none, since decoder classifiers (Qwen3) pool the last non-pad token."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = model.config.pad_token_id
    pad = int(pad or 0)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad
    return pad


def load_folder(path, device="cpu", dtype=None, **kwargs) -> HFFolder:
    """Tokenizer and eval-mode model of a folder `model_folder` accepts, on `device`.

    `dtype` None means fp32 (the predictor and ONNX export); measure_lora_latency passes
    `inference_dtype(device)`.
    """
    import torch

    folder, info = model_folder(path)
    tokenizer = load_tokenizer(folder)
    model = load_model(folder, dtype=dtype or torch.float32, **kwargs)
    model.to(device).eval()
    return HFFolder(model=model, tokenizer=tokenizer, pad_id=set_pad_id(model, tokenizer), path=folder, info=info)
