"""LoRA fine-tuning of a Hugging Face encoder or decoder for offer classification (transformers + peft).

Library side of train_qwen3_lora.py: settings, device/precision and batch derivation, model and tokenizer
loading, LoRA target detection for whatever architecture is loaded, the Trainer run, merge and save.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from category_classification.core.cli import UserError

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "paged_adamw_8bit", "adamw_bnb_8bit")
EIGHT_BIT_OPTIMIZERS = ("paged_adamw_8bit", "adamw_bnb_8bit")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
CONFIG_FILE = "lora_train_config.json"


@dataclass
class LoraTrainConfig:
    data: str = ""
    out: str = ""
    model: str = DEFAULT_MODEL  # a hub id or a local directory
    tokenizer: str | None = None  # None: the model's own; "qwen": the offline Qwen3 tokenizer; or a path
    batch: int = 32  # effective batch: micro-batch x gradient accumulation x processes
    micro_batch: int = 0  # per-device batch; 0 derives it from the device
    epochs: float = 1.0
    lr: float = 5e-5
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all"  # "all" (attention + MLP), "attention", "mlp" or a comma list of names
    lora_layers: int = 0  # LoRA in the top N blocks only (0 = every block): backward stops below them
    train_pooler: bool = True  # a BERT-style pooler is part of the head, trained in full with it
    seq_len: int = 256
    optim: str = "adamw_torch"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    seed: int = 42
    load_in_4bit: bool = False
    early_stopping_patience: int = 0  # evaluations without a better validation macro-F1; 0 = off
    eval_steps: int = 0  # 0 = evaluate once per epoch
    balance_to_min_class: bool = False
    max_samples_per_class: int = 0
    class_weighting: str = "none"  # "sqrt" or "balanced": weight the loss by (the root of) inverse class frequency
    group_by_length: bool = True  # batches of similar length: less padding, same examples per epoch
    device: str = "auto"
    cpu_threads: int = 0  # torch threads on CPU; 0 = torch's default (one per core)
    logging_steps: int = 20

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoraTrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def add_train_args(parser, defaults: LoraTrainConfig | None = None) -> None:
    """The trainer's flags; `defaults` lets an entry point (the v2 script, the MiniLM bench) change the default
    values; --data and --out are required unless the defaults name them."""
    d = defaults or LoraTrainConfig()
    p = parser
    p.add_argument("--data", required=not d.data, default=d.data or None,
                   help="dataset directory written by build_lspc_dataset.py")
    p.add_argument("--out", required=not d.out, default=d.out or None,
                   help="output directory (adapter, merged/, metrics)")
    p.add_argument("--model", default=d.model, help="hub id or local path of the base model")
    p.add_argument("--tokenizer", default=d.tokenizer,
                   help="tokenizer path or name; 'qwen' = the offline Qwen3 tokenizer; default: the model's")
    p.add_argument("--batch", type=int, default=d.batch, help="effective batch size")
    p.add_argument("--micro_batch", type=int, default=d.micro_batch,
                   help="per-device batch (0: derived from the device); gradient accumulation makes up the rest")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lora_r", type=int, default=d.lora_r)
    p.add_argument("--lora_alpha", type=int, default=d.lora_alpha)
    p.add_argument("--lora_dropout", type=float, default=d.lora_dropout)
    p.add_argument("--target_modules", default=d.target_modules,
                   help="all (attention + MLP projections), attention, mlp, or a comma list of module names")
    p.add_argument("--lora_layers", type=int, default=d.lora_layers,
                   help="put LoRA in the top N transformer blocks only (0: all); the backward pass stops "
                        "below them, so training is faster")
    p.add_argument("--no_train_pooler", dest="train_pooler", action="store_false",
                   help="keep a BERT-style pooler frozen instead of training it with the head")
    p.add_argument("--seq_len", type=int, default=d.seq_len, help="maximum tokens per offer")
    p.add_argument("--optim", default=d.optim, choices=OPTIMIZERS)
    p.add_argument("--warmup_ratio", type=float, default=d.warmup_ratio)
    p.add_argument("--max_grad_norm", type=float, default=d.max_grad_norm)
    p.add_argument("--weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--lr_scheduler_type", default=d.lr_scheduler_type, choices=SCHEDULERS)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--load_in_4bit", action="store_true", default=d.load_in_4bit,
                   help="QLoRA: 4-bit NF4 base weights (CUDA + bitsandbytes only)")
    p.add_argument("--early_stopping_patience", type=int, default=d.early_stopping_patience,
                   help="stop after this many evaluations without a better validation macro-F1 (0: off)")
    p.add_argument("--eval_steps", type=int, default=d.eval_steps,
                   help="evaluate on validation every N optimizer steps (0: once per epoch)")
    p.add_argument("--balance_to_min_class", action="store_true", default=d.balance_to_min_class,
                   help="downsample every class in train to the size of the smallest")
    p.add_argument("--max_samples_per_class", type=int, default=d.max_samples_per_class,
                   help="cap every class in train at N offers (0: no cap)")
    p.add_argument("--class_weighting", choices=("none", "sqrt", "balanced"), default=d.class_weighting,
                   help="weight the loss by inverse class frequency (balanced) or its square root (sqrt)")
    p.add_argument("--no_group_by_length", dest="group_by_length", action="store_false",
                   help="random batches instead of batches of similar length")
    p.add_argument("--device", default=d.device, help="auto, cuda, mps or cpu")
    p.add_argument("--cpu_threads", type=int, default=d.cpu_threads,
                   help="torch threads on CPU (0: one per core); 1 is much faster on a CPU shared with other jobs")
    p.add_argument("--logging_steps", type=int, default=d.logging_steps)


def config_from_args(args) -> LoraTrainConfig:
    return LoraTrainConfig.from_dict(vars(args))


# Device, precision, batches, optimizer


def world_size() -> int:
    """Processes in this run: torchrun and accelerate launch both set WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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


def default_micro_batch(device) -> int:
    """Per-device batch when none is given: large enough to keep the device busy, small enough to fit."""
    if device.type == "cuda":
        import torch

        gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        return 32 if gib >= 40 else 16 if gib >= 16 else 8
    if device.type == "mps":
        return 8
    return 16


def derive_batches(effective: int, micro: int, n_processes: int) -> tuple[int, int]:
    """(micro-batch, gradient accumulation) so that micro x accum x processes is about `effective`.

    The micro-batch never exceeds what one process needs; when `effective` is not a multiple, the
    accumulation rounds up, so the real effective batch is the nearest multiple above.
    """
    if effective < 1 or micro < 1 or n_processes < 1:
        raise UserError(f"batch sizes must be positive (batch={effective}, micro_batch={micro})")
    per_process = math.ceil(effective / n_processes)
    micro = min(micro, per_process)
    accum = math.ceil(per_process / micro)
    return micro, accum


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # ImportError, or a CUDA-less build raising at import
        return False
    return True


def check_optimizer(optim: str, device) -> None:
    """8-bit optimizers exist only in bitsandbytes, on CUDA: say so before loading anything."""
    if optim not in OPTIMIZERS:
        raise UserError(f"--optim {optim!r} is not one of {', '.join(OPTIMIZERS)}")
    if optim in EIGHT_BIT_OPTIMIZERS:
        if device.type != "cuda":
            raise UserError(f"--optim {optim} needs a CUDA GPU (this run is on {device.type}); "
                            "use adamw_torch or adafactor")
        if not bitsandbytes_available():
            raise UserError(f"--optim {optim} needs bitsandbytes: pip install 'category-classification[cuda]'")


def check_4bit(load_in_4bit: bool, device) -> None:
    if not load_in_4bit:
        return
    if device.type != "cuda":
        raise UserError(f"--load_in_4bit (QLoRA) needs a CUDA GPU (this run is on {device.type})")
    if not bitsandbytes_available():
        raise UserError("--load_in_4bit needs bitsandbytes: pip install 'category-classification[cuda]'")


def resolve_device(preference: str):
    """The device this process trains on; under DDP each process gets its LOCAL_RANK GPU."""
    import torch

    from category_classification.core.devices import pick_device

    device = pick_device(preference)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# Model, tokenizer, LoRA targets


def load_tokenizer_for(cfg: LoraTrainConfig):
    """The tokenizer named by cfg.tokenizer (default: the model's own), with a pad token guaranteed."""
    from category_classification.models.tokenization import load_qwen_tokenizer, load_tokenizer

    spec = cfg.tokenizer or cfg.model
    if str(spec).lower() in ("qwen", "qwen3"):
        return load_qwen_tokenizer()
    return load_tokenizer(spec)


def load_classifier(name_or_path: str, labels, dtype=None, quantization_config=None, pad_token_id=None):
    """AutoModelForSequenceClassification with our labels in the config (id2label/label2id)."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
              "label2id": {name: i for i, name in enumerate(labels)}}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(name_or_path), **kwargs)
    except OSError as exc:  # not on disk and no hub access, or no weights in the folder
        raise UserError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    if pad_token_id is not None:
        # decoder classifiers (Qwen3) pick the last non-pad token, so the config must know the pad id
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
    """Modules trained in full next to LoRA: the classification head (and a BERT-style pooler)."""
    names = {n.split(".")[-1] for n, _ in model.named_children()}
    head = [n for n in ("classifier", "score") if n in names]
    if not head:
        raise UserError(f"{type(model).__name__} has no `classifier` or `score` head")
    if train_pooler:
        base = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if base is not None and getattr(base, "pooler", None) is not None:
            head.append("pooler")
    return head


def add_lora(model, cfg: LoraTrainConfig):
    """Wrap `model` with LoRA adapters (task SEQ_CLS); the head is trained in full, in fp32."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    lora_cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout,
                          target_modules=lora_target_modules(model, cfg.target_modules),
                          layers_to_transform=top_layers(model, cfg.lora_layers),
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


# Data


def select_per_class(split, balance_to_min: bool, max_per_class: int, seed: int):
    """Downsample the training split per class (deterministic for a seed); unchanged when both are off."""
    import numpy as np

    if not balance_to_min and not max_per_class:
        return split
    labels = np.asarray(split["label"])
    classes, counts = np.unique(labels, return_counts=True)
    cap = int(counts.min()) if balance_to_min else None
    if max_per_class:
        cap = min(cap, max_per_class) if cap else max_per_class
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) > cap:
            idx = rng.choice(idx, size=cap, replace=False)
        keep.extend(idx.tolist())
    return split.select(sorted(keep))


def tokenize_split(split, tokenizer, seq_len: int):
    """input_ids/attention_mask (+ token_type_ids) and `labels`, unpadded: the collator pads per batch."""
    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=seq_len)
        enc["labels"] = batch["label"]
        return enc

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="tokenizing")


# Training


def _macro_f1_metric(labels):
    import numpy as np

    from category_classification.evaluation.metrics import compute_metrics

    def metric(eval_pred):
        logits, y = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        m = compute_metrics(np.asarray(y).tolist(), np.argmax(logits, axis=-1).tolist(), labels)
        return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}

    return metric


def weighted_loss(class_weights, train_labels):
    """compute_loss_func for the Trainer: class-weighted cross-entropy.

    The weights are rescaled so that their mean over the training offers is 1, and the summed loss is divided
    by the number of labels in the whole accumulated (and, under DDP, all-process) batch, which is how the
    Trainer expects a custom loss to be normalised; the loss scale then matches the unweighted one.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    w = np.asarray(class_weights, dtype=float)
    w = w / w[np.asarray(train_labels, dtype=np.int64)].mean()
    weight = torch.tensor(w, dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()
        total = F.cross_entropy(logits, labels, weight=weight.to(logits.device), reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


def _trainer_class():
    """Trainer whose evaluation keeps the dataset order.

    With train_sampling_strategy="group_by_length" transformers 5 also length-groups evaluation
    batches, which shuffles the order of `predict` outputs against the split; we need them aligned.
    """
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class OrderedEvalTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):
            if self.args.world_size <= 1:
                return SequentialSampler(eval_dataset)
            return None  # accelerate shards it in order and gather_for_metrics restores the order

    return OrderedEvalTrainer


def training_arguments(cfg: LoraTrainConfig, device, work_dir: Path):
    """TrainingArguments (transformers 5 names) for this config, device and process count."""
    from transformers import TrainingArguments

    prec = precision_for(device)
    micro = cfg.micro_batch or default_micro_batch(device)
    micro, accum = derive_batches(cfg.batch, micro, world_size())
    strategy = "steps" if cfg.eval_steps else "epoch"
    kwargs = dict(
        output_dir=str(work_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=max(micro, 32),
        gradient_accumulation_steps=accum,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps in transformers 5
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        bf16=prec["bf16"],
        fp16=prec["fp16"],
        eval_strategy=strategy,
        save_strategy=strategy,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        save_total_limit=1,
        seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        dataloader_num_workers=0,
        # LoRA touches every block, so every trainable parameter gets a gradient in each step
        ddp_find_unused_parameters=False,
    )
    if cfg.eval_steps:
        kwargs.update(eval_steps=cfg.eval_steps, save_steps=cfg.eval_steps)
    if world_size() > 1 and device.type == "cpu":
        kwargs["ddp_backend"] = "gloo"
    return TrainingArguments(**kwargs), {"micro_batch": micro, "grad_accum": accum,
                                         "processes": world_size(),
                                         "effective_batch": micro * accum * world_size(),
                                         "precision": prec["name"]}


def _quantization_config(cfg: LoraTrainConfig, device):
    if not cfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    compute = precision_for(device)["load_dtype"]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute if compute is not None else None)


def train(cfg: LoraTrainConfig, eval_args=None, log=print) -> dict:
    """The whole run: data, model, LoRA, Trainer with the best validation macro-F1 kept, evaluation,
    adapter + merged model + results files. Returns {"validation": metrics, "test": metrics, ...}."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    from category_classification.core import artifacts
    from category_classification.evaluation import metrics as evaluation
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.core.devices import seed_everything
    from category_classification.training.loop import class_weights

    device = resolve_device(cfg.device)
    if cfg.cpu_threads > 0:
        import torch

        torch.set_num_threads(cfg.cpu_threads)
    check_optimizer(cfg.optim, device)
    check_4bit(cfg.load_in_4bit, device)
    if cfg.seq_len < 8:
        raise UserError(f"--seq_len must be at least 8, got {cfg.seq_len}")
    out = Path(cfg.out)
    dsd = load_dataset_dir(cfg.data)
    labels = label_names(dsd)
    train_split = select_per_class(get_split(dsd, "train"), cfg.balance_to_min_class,
                                   cfg.max_samples_per_class, cfg.seed)
    val_split, test_split = get_split(dsd, "validation"), get_split(dsd, "test")
    seed_everything(cfg.seed)

    tokenizer = load_tokenizer_for(cfg)
    prec = precision_for(device)
    quant = _quantization_config(cfg, device)
    model = load_classifier(cfg.model, labels, dtype=prec["load_dtype"], quantization_config=quant,
                            pad_token_id=tokenizer.pad_token_id)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    model = add_lora(model, cfg)
    trainable, total = count_parameters(model)

    tokenized = {name: tokenize_split(s, tokenizer, cfg.seq_len)
                 for name, s in (("train", train_split), ("validation", val_split), ("test", test_split))}
    args, batches = training_arguments(cfg, device, out / "checkpoints")
    if is_main_process():
        log(f"model {cfg.model}: {trainable:,} of {total:,} parameters trainable "
            f"({100 * trainable / total:.2f}%); device {device.type} {batches['precision']}, "
            f"micro-batch {batches['micro_batch']} x accumulation {batches['grad_accum']} x "
            f"{batches['processes']} process(es) = {batches['effective_batch']}; "
            f"{len(train_split)} train / {len(val_split)} validation / {len(test_split)} test offers")
    callbacks = ([EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)]
                 if cfg.early_stopping_patience > 0 else [])
    weights = class_weights(train_split["label"], len(labels), cfg.class_weighting)
    if weights is not None and is_main_process():
        log("class weights: " + ", ".join(f"{name} {w:.2f}" for name, w in zip(labels, weights)))
    trainer = _trainer_class()(model=model, args=args, train_dataset=tokenized["train"],
                               eval_dataset=tokenized["validation"], processing_class=tokenizer,
                               data_collator=DataCollatorWithPadding(tokenizer),
                               compute_metrics=_macro_f1_metric(labels), callbacks=callbacks,
                               compute_loss_func=weighted_loss(weights, train_split["label"]) if weights else None)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0

    # every process takes part in prediction (the Trainer gathers); only the main one writes
    preds = {}
    for name in ("validation", "test"):
        logits = trainer.predict(tokenized[name]).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds[name] = logits.argmax(axis=-1).tolist()
    if not is_main_process():
        return {}

    m_val = evaluation.evaluate_split(val_split, preds["validation"], labels, eval_args)
    m_test = evaluation.evaluate_split(test_split, preds["test"], labels, eval_args)
    peft_model = trainer.model
    peft_model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    merged_dir = out / "merged"
    merged = merge_from_adapter_dir(out, cfg.model, labels, prec["load_dtype"],
                                                tokenizer.pad_token_id) if cfg.load_in_4bit else merge(peft_model)
    merged.save_pretrained(str(merged_dir))
    tokenizer.save_pretrained(str(merged_dir))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)

    config = cfg.to_dict()
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    info = {"base_model": cfg.model, "max_length": cfg.seq_len, "lora_r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha}
    artifacts.write_model_info(out, "hf_sequence_classification", labels, path="merged", adapter=".", **info)
    artifacts.write_model_info(merged_dir, "hf_sequence_classification", labels, path=".", **info)
    extra = {"train_seconds": round(train_seconds, 1), "trainable_parameters": trainable,
             "total_parameters": total, **batches, "best_validation_macro_f1": trainer.state.best_metric,
             "device": device.type}
    evaluation.write_results(out, f"lora:{Path(cfg.model).name}", config,
                             {"validation": m_val, "test": m_test}, labels, extra=extra)
    return {"validation": m_val, "test": m_test, "labels": labels, **extra}


def save_tiny_qwen3(path, tokenizer, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Qwen3 of a few million parameters (mostly the 151k-row embedding) with
    `tokenizer`, saved like a hub checkpoint: the stand-in for Qwen3-Embedding in tests and benchmarks."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=hidden_size // 4, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    path = Path(path)
    Qwen3Model(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


# Inference and latency


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
