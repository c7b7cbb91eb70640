"""The LoRA trainer: batch sizing and optimizer checks, training-set sampling, tokenization, the Hugging Face
Trainer keeping the best validation macro-F1, evaluation and the output folder (adapter, merged/, metrics)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError
from category_classification.models.lora import (CONFIG_FILE, EIGHT_BIT_OPTIMIZERS, OPTIMIZERS, LoraTrainConfig,
                                                  add_lora, count_parameters, load_classifier, load_tokenizer_for,
                                                  merge, merge_from_adapter_dir, meta_classifier, precision_for,
                                                  with_size_defaults)
from category_classification.models.hf import check_tokenizer_fits, position_limit
from category_classification.models.tokenization import user_tokenizer_path
from category_classification.training.distributed import is_main_process, resolve_device, world_size

# Device, batches, optimizer


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
    micro, accum = derive_batches(cfg.batch_size, micro, world_size())
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


def settle_config(cfg: LoraTrainConfig, log=print) -> LoraTrainConfig:
    """Check the flags, then fill the settings left unset with the defaults for the model's size (read from
    its config, before any weights are loaded) and say what was chosen."""
    from category_classification.core.cli import check_settings

    if cfg.seq_len is not None and cfg.seq_len < 8:
        raise UserError(f"--seq_len must be at least 8, got {cfg.seq_len}")
    # impossible settings, before any work: `--lr inf` once saved an adapter of NaNs, `--epochs 0` an untrained one
    check_settings(cfg, whole=("lora_r", "lora_alpha", "batch_size", "logging_steps"), positive=("lr", "epochs"),
                   non_negative=("max_grad_norm", "weight_decay", "eval_steps", "early_stopping_patience",
                                 "max_samples_per_class", "micro_batch", "lora_layers", "evals_per_epoch"),
                   shares=("lora_dropout", "warmup_ratio"), seeds=("seed",))
    meta = meta_classifier(cfg.model)
    limit = position_limit(meta)  # a model reads at most this many tokens; more crash inside it mid-run
    if cfg.seq_len is not None and limit and cfg.seq_len > limit:
        raise UserError(f"--seq_len {cfg.seq_len} is more than the {limit} tokens model {cfg.model!r} can read")
    if not cfg.unset():
        return cfg
    n_params = sum(p.numel() for p in meta.parameters())
    cfg, size, chosen = with_size_defaults(cfg, n_params)
    if limit and cfg.seq_len > limit:
        cfg.seq_len = chosen["seq_len"] = limit
    if is_main_process():
        log(f"model size {n_params / 1e6:.1f}M parameters ({size}): chose "
            + ", ".join(f"{k}={v}" for k, v in chosen.items()) + " (flags given explicitly win)")
    return cfg


def eval_steps_for(cfg: LoraTrainConfig, n_train: int) -> int:
    """Optimizer steps between validations: --eval_steps, or a share of an epoch for --evals_per_epoch > 1
    (0 = once per epoch)."""
    if cfg.eval_steps or (cfg.evals_per_epoch or 1) <= 1:
        return cfg.eval_steps
    return max(1, math.ceil(n_train / cfg.batch_size / cfg.evals_per_epoch))


def load_splits(cfg: LoraTrainConfig) -> dict:
    """labels, the (sampled) train split, validation and test, and the classes absent from train."""
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.training.loop import classes_without_training_examples

    dsd = load_dataset_dir(cfg.data)
    labels = label_names(dsd)
    train_split = select_per_class(get_split(dsd, "train", train=True), cfg.balance_to_min_class,
                                   cfg.max_samples_per_class, cfg.seed)
    splits = {"train": train_split, "validation": get_split(dsd, "validation"), "test": get_split(dsd, "test")}
    if not len(splits["validation"]):  # (built with --allow_empty_splits) was a traceback at the first evaluation
        raise UserError(f"the validation split of {cfg.data} holds no offers to score, and the LoRA trainer picks "
                        "its best checkpoint on it; build the dataset with a validation split that holds offers")
    if not len(splits["test"]):  # nothing to report on (--test_size 0): left out, as the encoder trainer does
        del splits["test"]
    missing = classes_without_training_examples(splits, labels)
    return {"labels": labels, "splits": splits, "missing": missing}


def build_model(cfg: LoraTrainConfig, labels, device):
    """(tokenizer, LoRA-wrapped model): base in the device's load dtype (4-bit for QLoRA), head trained in full."""
    tokenizer = load_tokenizer_for(cfg)
    quant = _quantization_config(cfg, device)
    model = load_classifier(cfg.model, labels, dtype=precision_for(device)["load_dtype"],
                            quantization_config=quant, pad_token_id=tokenizer.pad_token_id)
    check_tokenizer_fits(model, tokenizer, cfg.model)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return tokenizer, add_lora(model, cfg)


def make_trainer(cfg: LoraTrainConfig, model, tokenizer, data: dict, device, work_dir: Path, log=print):
    """(Trainer, batch figures): tokenized splits, class-weighted loss, early stopping, best-F1 checkpointing."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    from category_classification.training.loop import class_weights

    labels, splits = data["labels"], data["splits"]
    data["tokenized"] = {name: tokenize_split(s, tokenizer, cfg.seq_len) for name, s in splits.items()}
    args, batches = training_arguments(cfg, device, work_dir)
    callbacks = ([EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)]
                 if cfg.early_stopping_patience > 0 else [])
    weights = class_weights(splits["train"]["label"], len(labels), cfg.class_weighting)
    if weights is not None and is_main_process():
        log("class weights: " + ", ".join(f"{name} {w:.2f}" for name, w in zip(labels, weights)))
    loss = weighted_loss(weights, splits["train"]["label"]) if weights else None
    trainer = _trainer_class()(model=model, args=args, train_dataset=data["tokenized"]["train"],
                               eval_dataset=data["tokenized"]["validation"], processing_class=tokenizer,
                               data_collator=DataCollatorWithPadding(tokenizer),
                               compute_metrics=_macro_f1_metric(labels), callbacks=callbacks,
                               compute_loss_func=loss)
    return trainer, batches


def run_dir_name(cfg: LoraTrainConfig) -> str:
    """This run's own checkpoint folder inside --out: never another run's (each run starts empty and deletes
    only its own). Every process of a distributed run derives the same name from the launcher's rendezvous."""
    if world_size() > 1:
        key = "|".join(os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"))
    else:
        key = f"{os.getpid()}-{time.time_ns()}"
    key += json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return ".checkpoints-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def claim_run_dir(out: Path, work_dir: Path) -> None:
    """Mark `work_dir` as this live process's (owner.json: host and pid), after removing the run folders that
    killed runs on this host left in `out` (their owner process is gone); folders of live runs, of other
    hosts or without an owner file are left alone."""
    import socket

    host = socket.gethostname()
    runs = sorted(out.glob(".checkpoints-*"), key=lambda p: not p.name.endswith("-out")) if out.is_dir() else []
    for old in runs:  # staged "-out" folders first: their owner file is in the run folder
        try:
            run = old.with_name(old.name.removesuffix("-out"))  # a run's staged outputs go with it
            owner = json.loads((run / "owner.json").read_text(encoding="utf-8"))
            if owner.get("host") != host or int(owner["pid"]) == os.getpid():
                continue
            os.kill(int(owner["pid"]), 0)  # alive: not ours to remove
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError, KeyError, TypeError, OverflowError):
            continue
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "owner.json").write_text(json.dumps({"host": host, "pid": os.getpid()}), encoding="utf-8")


def predict_splits(trainer, tokenized: dict) -> dict:
    """Validation and test predictions (test when the dataset has one); every process takes part (the Trainer
    gathers)."""
    preds = {}
    for name in [n for n in ("validation", "test") if n in tokenized]:
        logits = trainer.predict(tokenized[name]).predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds[name] = logits.argmax(axis=-1).tolist()
    return preds


def save_outputs(cfg: LoraTrainConfig, trainer, tokenizer, labels, device, staging: Path) -> None:
    """Adapter + head, tokenizer, merged/ (a plain transformers model) and the config, into `staging`."""
    from category_classification.core import artifacts

    peft_model = trainer.model
    peft_model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    merged = (merge_from_adapter_dir(staging, cfg.model, labels, precision_for(device)["load_dtype"],
                                     tokenizer.pad_token_id) if cfg.load_in_4bit else merge(peft_model))
    merged.save_pretrained(str(staging / "merged"))
    tokenizer.save_pretrained(str(staging / "merged"))
    (staging / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    info = {"base_model": cfg.model, "max_length": cfg.seq_len, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "data": cfg.data}  # recorded with the dataset's text settings (core/artifacts.py)
    artifacts.write_model_info(staging, "hf_sequence_classification", labels, path="merged", adapter=".", **info)
    artifacts.write_model_info(staging / "merged", "hf_sequence_classification", labels, path=".", **info)


def train(cfg: LoraTrainConfig, eval_options: dict | None = None, log=print) -> dict:
    """The whole run: settings, data, model, Trainer with the best validation macro-F1 kept, evaluation,
    adapter + merged model + results files. Returns {"validation": metrics, "test": metrics, "config": ...}."""
    from category_classification.core.devices import seed_everything
    from category_classification.evaluation import metrics as evaluation
    from category_classification.core.artifacts import publish_dir
    from category_classification.training.loop import report_missing_classes

    # Set-up: the flags checked and the defaults for the model's size, then device, threads and the checks
    # that need the device.
    cfg = settle_config(cfg, log)
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    check_optimizer(cfg.optim, device)
    check_4bit(cfg.load_in_4bit, device)
    out = check_model_out(cfg.out, [cfg.data], kinds=("hf_sequence_classification",),
                          sources={"--model": cfg.model, "--tokenizer": user_tokenizer_path(cfg.tokenizer)})
    data = load_splits(cfg)
    labels, splits = data["labels"], data["splits"]
    cfg.eval_steps = eval_steps_for(cfg, len(splits["train"]))
    seed_everything(cfg.seed)

    tokenizer, model = build_model(cfg, labels, device)
    trainable, total = count_parameters(model)
    work_dir = out / run_dir_name(cfg)
    if is_main_process():
        claim_run_dir(out, work_dir)
    trainer, batches = make_trainer(cfg, model, tokenizer, data, device, work_dir, log)
    if is_main_process():
        log(f"model {cfg.model}: {trainable:,} of {total:,} parameters trainable "
            f"({100 * trainable / total:.2f}%); device {device.type} {batches['precision']}, "
            f"micro-batch {batches['micro_batch']} x accumulation {batches['grad_accum']} x "
            f"{batches['processes']} process(es) = {batches['effective_batch']}; "
            + " / ".join(f"{len(s)} {name}" for name, s in splits.items()) + " offers")
        report_missing_classes(data["missing"], log)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    preds = predict_splits(trainer, data["tokenized"])
    if not is_main_process():
        return {}

    # Evaluation and the output folder, written beside --out and moved in when complete.
    eval_options = eval_options or {}
    split_metrics = {name: evaluation.evaluate_split(splits[name], preds[name], labels, **eval_options)
                     for name in preds}
    staging = out / (work_dir.name + "-out")
    save_outputs(cfg, trainer, tokenizer, labels, device, staging)
    extra = {"train_seconds": round(train_seconds, 1), "trainable_parameters": trainable,
             "total_parameters": total, **batches, "best_validation_macro_f1": trainer.state.best_metric,
             "device": device.type, "classes_without_training_examples": data["missing"]}
    # the figures are published with the model they describe
    evaluation.write_results(staging, f"lora:{Path(cfg.model).name}", cfg.to_dict(), split_metrics, labels,
                             extra=extra, history_from=out)
    publish_dir(staging, out)
    shutil.rmtree(work_dir, ignore_errors=True)
    return {**split_metrics, "labels": labels, "config": cfg, **extra}
