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
        model, loading = (AutoModel if base else AutoModelForSequenceClassification).from_pretrained(
            str(name_or_path), output_loading_info=True, **kwargs)
    except Exception as exc:
        # not on disk and no hub access, no weights in the folder, a damaged config or weights file, a model type
        # transformers does not know or that has no classification head (ValueError), weights of other sizes
        if isinstance(exc, RuntimeError) and "mismatched" in str(exc):
            raise UserError(f"cannot load model {str(name_or_path)!r}: its weights do not have the sizes its "
                            "config.json gives (the config of another model?)") from None
        if not (isinstance(exc, (OSError, ValueError)) or type(exc).__module__.startswith("safetensors")):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load model {str(name_or_path)!r}: {first}") from None
    check_weights_found(model, loading.get("missing_keys", ()), name_or_path)
    return model


def check_weights_found(model, missing_keys, name_or_path) -> None:
    """Refuse a model most of whose encoder weights were not in the folder: transformers initialises them at
    random with only a warning (config.json of one model beside the weights of another), and a random encoder
    trains into a useless model with exit code 0. A new head (classifier, score) is expected to be missing."""
    prefix = "" if model.base_model is model else model.base_model_prefix + "."
    # counted in tensors, not numbers: an embedding table named alike in both models can outweigh every block
    names = [name for name, _ in model.named_parameters() if name.startswith(prefix)]
    lost = len(set(names) & set(missing_keys))
    if names and lost > len(names) / 2:
        raise UserError(f"cannot load model {str(name_or_path)!r}: its weights file lacks {lost} of the "
                        f"{len(names)} encoder weight tensors its config.json describes (the config of another "
                        "model?)")


def position_limit(model) -> int | None:
    """The most tokens `model` (loaded, or built on the meta device) reads at once: the rows of its learned
    position table, less the offset RoBERTa-style models start positions at (padding_idx + 1); else its
    config's max_position_embeddings; None when it gives neither, or when the model adds no absolute positions
    (DeBERTa-v2/v3: relative attention reads any length). Longer inputs crash inside the model."""
    from torch import nn

    embeddings = getattr(model.base_model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if isinstance(table, nn.Embedding):
        offset = getattr(embeddings, "padding_idx", None)
        return table.num_embeddings - (offset + 1 if isinstance(offset, int) else 0)
    if getattr(model.config, "position_biased_input", True) is False:
        return None
    limit = getattr(model.config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def check_tokenizer_fits(model, tokenizer, name_or_path) -> None:
    """A tokenizer whose ids run past the model's embedding rows (another model's) fails mid-run with an
    IndexError: refuse it before any work."""
    check_vocab(tokenizer, model.get_input_embeddings().num_embeddings, name_or_path)


def check_vocab(tokenizer, rows: int, name_or_path) -> None:
    """The check of check_tokenizer_fits for a model known by its number of embedding rows (an ONNX export
    records it): a tokenizer with more tokens is another model's."""
    if len(tokenizer) > rows:
        raise UserError(f"the tokenizer has {len(tokenizer):,} tokens but model {str(name_or_path)!r} embeds "
                        f"{rows:,}: it is another model's tokenizer; use the model's own")


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
