"""LoRA for a Hugging Face encoder or decoder classifier: the trainer's settings (one dataclass that also makes
the flags, with defaults chosen by model size), model loading, LoRA target detection, wrapping and merging."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from category_classification.core.cli import UserError, add_dataclass_args, dataclass_from_args, option

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "paged_adamw_8bit", "adamw_bnb_8bit")
EIGHT_BIT_OPTIMIZERS = ("paged_adamw_8bit", "adamw_bnb_8bit")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
CONFIG_FILE = "lora_train_config.json"
BY_SIZE = "default: by model size"

# Defaults for the settings left at None, by the base model's parameter count (docs/lora.md).
# "small" is the MiniLM recipe chosen on validation (all-MiniLM-L6-v2, 23M parameters: top 3 blocks, no
# dropout, sqrt class weights, 96 tokens, 2 epochs at 1e-3, best of 4 half-epoch validations kept); with the
# "large" values (those of Qwen3-Embedding-0.6B) MiniLM scored test macro-F1 0.249, predicting 1-2 classes.
SMALL_MODEL_MAX_PARAMETERS = 150_000_000
SIZE_DEFAULTS = {
    "small": dict(epochs=2.0, lr=1e-3, lora_dropout=0.0, lora_layers=3, seq_len=96, batch_size=32,
                  micro_batch=32, warmup_ratio=0.06, class_weighting="sqrt", evals_per_epoch=2),
    "large": dict(epochs=1.0, lr=5e-5, lora_dropout=0.05, lora_layers=0, seq_len=256, batch_size=32,
                  micro_batch=0, warmup_ratio=0.0, class_weighting="none", evals_per_epoch=1),
}
RENAMED = {"batch": "batch_size", "cpu_threads": "threads"}  # old config-file keys


@dataclass
class LoraTrainConfig:
    data: str = option("", "dataset directory written by build_lspc_dataset.py")
    out: str = option("", "output directory (adapter, merged/, metrics)")
    model: str = option(DEFAULT_MODEL, "hub id or local path of the base model")
    tokenizer: str | None = option(None, "tokenizer path or name; 'qwen' = the offline Qwen3 tokenizer; "
                                         "default: the model's")
    batch_size: int | None = option(None, f"effective batch size ({BY_SIZE})", aliases=("--batch",))
    micro_batch: int | None = option(None, "per-device batch (0: derived from the device); gradient "
                                           f"accumulation makes up the rest ({BY_SIZE})")
    epochs: float | None = option(None, f"training epochs ({BY_SIZE})")
    lr: float | None = option(None, f"peak learning rate ({BY_SIZE})")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scale numerator (the update is scaled by alpha / r)")
    lora_dropout: float | None = option(None, f"dropout on the LoRA input ({BY_SIZE})")
    target_modules: str = option("all", "all (attention + MLP projections), attention, mlp, or a comma list "
                                        "of module names")
    lora_layers: int | None = option(None, "put LoRA in the top N transformer blocks only (0: all); the "
                                           f"backward pass stops below them, so training is faster ({BY_SIZE})")
    train_pooler: bool = option(True, "train a BERT-style pooler in full with the head (--no_train_pooler "
                                      "keeps it frozen)")
    seq_len: int | None = option(None, f"maximum tokens per offer ({BY_SIZE})", aliases=("--max_length",))
    optim: str = option("adamw_torch", "optimizer", choices=OPTIMIZERS)
    warmup_ratio: float | None = option(None, f"share of the steps spent warming up ({BY_SIZE})")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lr_scheduler_type: str = option("linear", "learning-rate schedule", choices=SCHEDULERS)
    seed: int = option(42, "random seed")
    load_in_4bit: bool = option(False, "QLoRA: 4-bit NF4 base weights (CUDA + bitsandbytes only)")
    early_stopping_patience: int = option(0, "stop after this many evaluations without a better validation "
                                             "macro-F1 (0: off)")
    eval_steps: int = option(0, "evaluate on validation every N optimizer steps (0: --evals_per_epoch)")
    evals_per_epoch: int | None = option(None, "validations per epoch when --eval_steps is 0, the best kept "
                                               f"({BY_SIZE})")
    balance_to_min_class: bool = option(False, "downsample every class in train to the size of the smallest")
    max_samples_per_class: int = option(0, "cap every class in train at N offers (0: no cap)")
    class_weighting: str | None = option(None, "weight the loss by inverse class frequency (balanced) or its "
                                               f"square root (sqrt) ({BY_SIZE})",
                                         choices=("none", "sqrt", "balanced"))
    group_by_length: bool = option(True, "batches of similar length: less padding, same examples per epoch "
                                         "(--no_group_by_length: random batches)")
    device: str = option("auto", "auto, cuda, mps or cpu")
    threads: int = option(0, "torch threads on CPU (0: one per core); 1 is much faster on a CPU shared with "
                             "other jobs", aliases=("--cpu_threads", "--num_threads"))
    logging_steps: int = option(20, "log the training loss every N steps")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoraTrainConfig":
        d = {RENAMED.get(k, k): v for k, v in d.items()}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def unset(self) -> list[str]:
        """The settings still to be chosen by model size."""
        return [name for name in SIZE_DEFAULTS["small"] if getattr(self, name) is None]


# train_qwen3_lora_v2.py: the seed's v2 settings (the rest still by model size).
V2_DEFAULTS = LoraTrainConfig(lora_r=32, lora_alpha=64, micro_batch=16, batch_size=16 * 32,
                              lr_scheduler_type="cosine", warmup_ratio=0.05, max_grad_norm=0.5)


def add_train_args(parser, defaults: LoraTrainConfig | None = None) -> None:
    """The trainer's flags, made from LoraTrainConfig; `defaults` lets an entry point (the v2 script, the
    MiniLM bench) change default values; --data and --out are required unless the defaults name them."""
    add_dataclass_args(parser, LoraTrainConfig, defaults, required=("data", "out"))


def config_from_args(args) -> LoraTrainConfig:
    return dataclass_from_args(LoraTrainConfig, args)


def size_class(n_parameters: int) -> str:
    return "small" if n_parameters <= SMALL_MODEL_MAX_PARAMETERS else "large"


def meta_classifier(name_or_path: str, num_labels: int = 2):
    """The classifier built from the model's config on the meta device (no weights read): its size and the
    tokens it can read, known before any loading."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(name_or_path), num_labels=num_labels)
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError) as exc:  # not on disk and no hub access, no/garbled config.json, no such head
        raise UserError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None


def parameters_from_config(name_or_path: str, num_labels: int = 2) -> int:
    """The classifier's parameter count, from its config (meta_classifier)."""
    return sum(p.numel() for p in meta_classifier(name_or_path, num_labels).parameters())


def with_size_defaults(cfg: LoraTrainConfig, n_parameters: int) -> tuple[LoraTrainConfig, str, dict]:
    """(cfg with its unset settings filled for the model's size, the size class, the values filled in)."""
    size = size_class(n_parameters)
    chosen = {name: SIZE_DEFAULTS[size][name] for name in cfg.unset()}
    return replace(cfg, **chosen), size, chosen


# Model, tokenizer, LoRA targets


def precision_for(device) -> dict:
    """Load dtype and Trainer flags: CUDA bf16 (fp16 where bf16 is missing), MPS and CPU fp32.

    With fp16 the weights stay fp32 and only autocast runs in half precision, because the grad scaler
    refuses fp16 trainable parameters; bf16 needs no scaler, so the frozen base can be stored in bf16.
    """
    import torch

    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return {"load_dtype": torch.bfloat16, "bf16": True, "fp16": False, "name": "bf16"}
        return {"load_dtype": torch.float32, "bf16": False, "fp16": True, "name": "fp16"}
    return {"load_dtype": torch.float32, "bf16": False, "fp16": False, "name": "fp32"}


def load_tokenizer_for(cfg: LoraTrainConfig):
    """The tokenizer named by cfg.tokenizer (default: the model's own), with a pad token guaranteed."""
    from category_classification.models.tokenization import load_qwen_tokenizer, load_tokenizer

    spec = cfg.tokenizer or cfg.model
    if str(spec).lower() in ("qwen", "qwen3"):
        return load_qwen_tokenizer()
    return load_tokenizer(spec)


def load_classifier(name_or_path: str, labels, dtype=None, quantization_config=None, pad_token_id=None):
    """The base model through the one Hugging Face loader (models/hf.py), with our labels in its config
    (id2label/label2id) and, for decoder classifiers (Qwen3) that pool the last non-pad token, the pad id."""
    from category_classification.models.hf import load_model

    kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {name: i for i, name in enumerate(labels)}}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    model = load_model(name_or_path, dtype=dtype, **kwargs)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model


def _block_linear_names(model) -> list[str]:
    """Names, relative to their transformer block, of the Linear layers inside the repeated blocks.

    The blocks are found as `<...>.<index>.<rest>` paths; `<rest>` is the same in every block
    (`self_attn.q_proj`, `mlp.down_proj` for Qwen3; `attention.self.query`, `output.dense` for BERT).
    """
    import re

    from torch import nn

    names = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) and type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        m = re.match(r"^(.*)\.(\d+)\.(.+)$", name)
        if m:
            names.add(m.group(3))
    return sorted(names)


def _is_attention(rel_name: str) -> bool:
    return "attn" in rel_name or "attention" in rel_name


def lora_target_modules(model, which: str = "all") -> list[str]:
    """LoRA targets for the loaded architecture: its attention and/or MLP projections in every block.

    Returned as block-relative paths, which peft matches as name suffixes, so a BERT pooler
    (`pooler.dense`) is never mistaken for a block's `output.dense`.
    """
    rel = _block_linear_names(model)
    if not rel:
        raise UserError(f"found no Linear layers inside repeated blocks of {type(model).__name__}; "
                        "name them with --target_modules")
    if which == "all":
        chosen = rel
    elif which == "attention":
        chosen = [n for n in rel if _is_attention(n)]
    elif which == "mlp":
        chosen = [n for n in rel if not _is_attention(n)]
    else:
        chosen = [n.strip() for n in which.split(",") if n.strip()]
        unknown = [n for n in chosen if not any(r == n or r.endswith("." + n) for r in rel)]
        if unknown:
            raise UserError(f"--target_modules {', '.join(unknown)} not in the model's blocks "
                            f"(has: {', '.join(rel)})")
    if not chosen:
        raise UserError(f"--target_modules {which} matches nothing in {type(model).__name__}")
    return chosen


def top_layers(model, n: int) -> list[int] | None:
    """Indices of the top `n` transformer blocks (None = all blocks, peft's default)."""
    if n <= 0:
        return None
    total = getattr(model.config, "num_hidden_layers", None)
    if not total:
        raise UserError(f"--lora_layers needs config.num_hidden_layers, which {type(model).__name__} lacks")
    if n >= total:
        return None
    return list(range(total - n, total))


def head_modules(model, train_pooler: bool = True) -> list[str]:
    """Modules trained in full next to LoRA: the classification head, with every other module outside the
    encoder that has weights (DeBERTa's pooler, DistilBERT's pre_classifier: new, random, no LoRA), and a
    BERT-style pooler inside the encoder (pretrained; --no_train_pooler keeps it frozen)."""
    prefix = getattr(model, "base_model_prefix", "")
    names = [n for n, m in model.named_children() if n != prefix and next(m.parameters(), None) is not None]
    head = [n for n in ("classifier", "score") if n in names]
    if not head:
        raise UserError(f"{type(model).__name__} has no `classifier` or `score` head")
    head += [n for n in names if n not in head]
    if train_pooler and "pooler" not in head:
        base = getattr(model, prefix, None)
        if base is not None and getattr(base, "pooler", None) is not None:
            head.append("pooler")
    return head


def add_lora(model, cfg: LoraTrainConfig):
    """Wrap `model` with LoRA adapters (task SEQ_CLS); the head is trained in full, in fp32."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    lora_cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout or 0.0,
                          target_modules=lora_target_modules(model, cfg.target_modules),
                          layers_to_transform=top_layers(model, cfg.lora_layers or 0),
                          modules_to_save=head_modules(model, cfg.train_pooler))
    peft_model = get_peft_model(model, lora_cfg)
    # the optimizer keeps trainable weights in their own dtype; bf16 master weights lose small updates
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def merge(peft_model):
    """A plain transformers model with the LoRA deltas folded into the base weights."""
    return peft_model.merge_and_unload()


def load_adapter_model(adapter_dir, base_model: str, labels, dtype=None, pad_token_id=None):
    """Base model (with our label count) + the saved adapter and head, ready for inference."""
    from peft import PeftModel

    base = load_classifier(base_model, labels, dtype=dtype, pad_token_id=pad_token_id)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def merge_from_adapter_dir(adapter_dir, base_model: str, labels, dtype=None, pad_token_id=None):
    """Reload base + adapter unquantized and merge: the way for QLoRA, whose base is 4-bit."""
    return load_adapter_model(adapter_dir, base_model, labels, dtype, pad_token_id).merge_and_unload()


