"""The encoder trainer (train_embedding_classifier.py): its settings as one dataclass that also makes the flags,
the presets, and the run in named phases: set-up, data, model, resume, epochs, evaluation and save."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError, option
from category_classification.models.tokenization import user_tokenizer_path

# Presets fill in settings the user did not give. "default" is the seed's 80M model with the Qwen3 vocabulary;
# "small" trains on the 6-class MWPD data in a few minutes on a 2-core CPU (docs/embedding_classifier_architecture.md
# has the tuning log that chose it).
PRESETS = {
    "default": {},
    # hidden 128 / seq_len 128 (run s128_h128): validation macro-F1 0.866 in 221 s, where hidden 192 / seq_len 64
    # gave 0.822 in 663 s; wider or BPE-16k variants scored within validation noise and trained 1.5-2x longer.
    "small": dict(tokenizer="bpe:8000", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_size=512,
                  seq_len=128, batch_size=32, epochs=6, lr=2e-3, lr_warmup_steps=100, weight_decay=0.05,
                  dropout=0.1, embedding_dropout=0.1, max_drop_path=0.0, label_smoothing=0.1, threads=1),
}
# train_embedding_classifier_v2.py: the seed's v2 head and loss settings.
V2_DEFAULTS = dict(head="residual", classifier_hidden=768, classifier_dropout=0.2, label_smoothing=0.1)
# Settings that do not change the trained weights: a checkpoint may be resumed with other values of these.
RUN_NEUTRAL = ("data", "out", "preset", "device", "threads", "eval_batch_size", "save_every", "keep_checkpoints",
               "resume", "memory_summary_freq")
OUT_KINDS = ("encoder",)  # the model folders this trainer replaces (the demo checks them too)
M, T = "model", "training"


@dataclass
class EncoderTrainConfig:
    data: str = option("", "dataset directory written by build_lspc_dataset.py")
    out: str = option("", "model directory to write")
    preset: str = option("default", "a set of defaults; flags given explicitly still win", choices=sorted(PRESETS))
    tokenizer: str = option("qwen", "'qwen' (Qwen3, offline), 'bpe:N' (train an N-token BPE on the train split), "
                                    "or a Hugging Face tokenizer name/path")
    train_split: str = option("train", "the split to train on")
    device: str = option("auto", "auto, cuda, mps or cpu")
    threads: int = option(0, "CPU threads for torch (0: torch's default). On a small or shared CPU, 1 is often "
                             "much faster for small models: thread hand-offs cost more than the matrices",
                          aliases=("--num_threads", "--cpu_threads"))
    hidden_size: int = option(384, "hidden width", group=M)
    num_layers: int = option(10, "transformer blocks", group=M)
    num_heads: int = option(6, "attention heads", group=M)
    num_kv_heads: int = option(2, "key/value heads (grouped-query attention)", group=M)
    ffn_size: int = option(1536, "feed-forward width", group=M)
    dropout: float = option(0.1, "dropout in the blocks", group=M)
    embedding_dropout: float = option(0.0, "dropout on the token embeddings", group=M)
    attention_dropout: float = option(0.0, "dropout on the attention weights", group=M)
    max_drop_path: float = option(0.1, "stochastic depth of the top block", group=M)
    pooler: str = option("mean", "how the offer vector is read from the tokens", choices=("mean", "first"), group=M)
    head: str = option("mlp", "classification head", choices=("mlp", "residual"), group=M)
    classifier_hidden: int | None = option(None, "head width (default: hidden size)", group=M)
    classifier_dropout: float = option(0.1, "dropout in the head", group=M)
    seq_len: int = option(128, "tokens per offer (title + description), truncated", aliases=("--max_length",),
                          group=T)
    batch_size: int = option(32, "offers per micro-batch", aliases=("--batch",), group=T)
    grad_accum: int = option(1, "micro-batches per optimizer step", group=T)
    epochs: int = option(6, "training epochs", group=T)
    lr: float = option(3e-4, "peak learning rate", group=T)
    lr_schedule: str = option("cosine", "decay after warm-up", choices=("none", "cosine", "exponential"), group=T)
    lr_warmup_steps: int = option(200, "linear warm-up steps", group=T)
    lr_min_scale: float = option(0.05, "final learning rate as a share of the peak", group=T)
    weight_decay: float = option(0.05, "AdamW weight decay (matrices only)", group=T)
    grad_clip: float = option(1.0, "gradient clipping norm (0: off)", group=T)
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy", group=T)
    focal_gamma: float = option(0.0, "> 0 switches to focal loss", group=T)
    focal_alpha: float | None = option(None, "focal loss alpha", group=T)
    token_dropout: float = option(0.0, "remove each training token with this probability (word dropout; a "
                                       "regulariser)", group=T)
    class_weighting: str = option("none", "weight the loss by inverse class frequency (or its square root)",
                                  choices=("none", "balanced", "sqrt"), group=T)
    seed: int = option(42, "random seed", group=T)
    amp: str = option("auto", "mixed precision on CUDA (auto: bf16 where supported, else fp16); the CPU runs fp32",
                      nargs="?", const="auto", choices=("auto", "off", "bf16", "fp16"), group=T)
    eval_batch_size: int = option(128, "offers per evaluation batch", group=T)
    save_every: int = option(1, "write a checkpoint every N epochs (0: never)", group=T)
    keep_checkpoints: int = option(1, "keep the newest N checkpoints of this run (0: all)", group=T)
    resume: str | None = option(None, "checkpoint file, or 'auto' for the newest in --out; refused when it was "
                                      "made with other settings or data", group=T)
    memory_summary_freq: int = option(0, "print memory use every N steps (0: off)", group=T)
    max_steps_per_epoch: int = option(0, "cap on optimizer steps per epoch (tests and benches)", hidden=True,
                                      group=T)

    def to_dict(self) -> dict:
        return asdict(self)

    def run_settings(self) -> dict:
        """The settings a checkpoint must share with the run resuming it."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_NEUTRAL}

    @classmethod
    def settings_keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in RUN_NEUTRAL]


def train(cfg: EncoderTrainConfig, eval_options: dict | None = None) -> int:
    """The whole run; every phase reads and extends one namespace `r` (settings, data, model, progress)."""
    r = setup(cfg)
    load_data(r)
    build_model(r)
    plan_batches(r)
    resume_or_start(r)
    t0 = time.perf_counter()
    r.model.train()
    for epoch in range(r.start_epoch, cfg.epochs):
        record = train_epoch(r, epoch)
        end_of_epoch(r, epoch, record)
    finish(r, time.perf_counter() - t0, eval_options or {})
    return 0


def setup(cfg: EncoderTrainConfig):
    """Threads, processes and device, seeds, the output paths."""
    from types import SimpleNamespace

    import torch

    from category_classification.core.devices import seed_everything
    from category_classification.training.distributed import setup_distributed

    check_encoder_settings(cfg)  # before anything is created or trained
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info, device = setup_distributed(cfg.device)
    seed_everything(cfg.seed)
    out = check_model_out(cfg.out, [cfg.data], kinds=OUT_KINDS,
                          sources={"--tokenizer": user_tokenizer_path(cfg.tokenizer)})
    return SimpleNamespace(cfg=cfg, dist=dist_info, device=device, out=out, ckpt_dir=out / "checkpoints",
                           log=print if dist_info.is_main else (lambda *a, **k: None))


def check_encoder_settings(cfg: EncoderTrainConfig) -> None:
    """Impossible settings as one line, before any work: a NaN or zero learning rate, zero epochs, a
    negative batch size once trained into a saved model that had never learnt (or had NaN weights)."""
    from category_classification.core.cli import check_settings

    check_settings(cfg, whole=("hidden_size", "num_layers", "num_heads", "num_kv_heads", "ffn_size", "seq_len",
                               "batch_size", "grad_accum", "epochs", "eval_batch_size"),
                   positive=("lr",), non_negative=("lr_warmup_steps", "lr_min_scale", "weight_decay", "grad_clip",
                                                   "focal_gamma", "save_every", "keep_checkpoints"),
                   shares=("dropout", "embedding_dropout", "attention_dropout", "max_drop_path",
                           "classifier_dropout", "label_smoothing", "token_dropout"), seeds=("seed",))
    if cfg.hidden_size % cfg.num_heads or (cfg.hidden_size // cfg.num_heads) % 2:
        raise UserError(f"--hidden_size ({cfg.hidden_size}) must be --num_heads ({cfg.num_heads}) times an even "
                        "head width")
    if cfg.num_heads % cfg.num_kv_heads:
        raise UserError(f"--num_heads ({cfg.num_heads}) must be a multiple of --num_kv_heads ({cfg.num_kv_heads})")


def load_data(r) -> None:
    """Splits, tokenizer (a BPE is trained on the train split by one rank) and token ids; the run record."""
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.models.tokenization import resolve_tokenizer
    from category_classification.training.checkpoints import data_fingerprint, run_record
    from category_classification.training.distributed import barrier
    from category_classification.training.loop import classes_without_training_examples, report_missing_classes

    cfg = r.cfg
    dsd = load_dataset_dir(cfg.data)
    r.labels = label_names(dsd)
    train_split = get_split(dsd, cfg.train_split, train=True)
    r.eval_splits = {name: get_split(dsd, name) for name in ("validation", "test") if name in dsd}
    # an empty split (built with --allow_empty_splits) was an IndexError traceback: an empty test is left out
    r.eval_splits = {name: s for name, s in r.eval_splits.items() if len(s) or name == "validation"}
    if "validation" not in r.eval_splits:
        raise UserError("the dataset needs a validation split to pick the best epoch")
    if not len(r.eval_splits["validation"]):
        raise UserError(f"the validation split of {cfg.data} holds no offers to score, and the best epoch is picked "
                        "on it; build the dataset with a validation split that holds offers")
    r.missing = classes_without_training_examples({"train": train_split, **r.eval_splits}, r.labels)
    r.record = run_record(cfg.run_settings(), data_fingerprint(cfg.data, r.labels))
    labels = list(train_split["label"])
    bad = [y for y in labels if not 0 <= y < len(r.labels)]
    if bad:  # -1 is a ClassLabel's "no label"; a hand-made dataset can hold anything
        raise UserError(f"{len(bad)} {cfg.train_split} offers have a label outside the {len(r.labels)} classes "
                        f"(e.g. {bad[0]}); rebuild the dataset with build_lspc_dataset.py")
    if len(set(labels)) < 2:
        raise UserError(f"the {cfg.train_split} split holds {len(set(labels))} class(es); a classifier needs at least two")
    texts = list(train_split["text"])
    keep = [i for i, t in enumerate(texts) if isinstance(t, str)]
    if len(keep) < len(texts):  # a missing text is skipped and counted, never the run's end
        r.log(f"skipped {len(texts) - len(keep)} {cfg.train_split} offers without a text")
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    t0 = time.perf_counter()
    if cfg.tokenizer.lower().startswith("bpe:") and r.dist.enabled:
        # One rank trains the vocabulary, the others load it, so every rank has the same ids.
        tok_dir = r.out / "tokenizer-build"
        if r.dist.is_main:
            resolve_tokenizer(cfg.tokenizer, texts).save_pretrained(str(tok_dir))
        barrier(r.dist)
        r.tokenizer = resolve_tokenizer(str(tok_dir))
    else:
        r.tokenizer = resolve_tokenizer(cfg.tokenizer, texts)
    pad = r.tokenizer.pad_token_id or 0
    # an empty text still gets one position (as at inference): a batch of only empty texts has no length
    r.train_ids = [ids or [pad] for ids in r.tokenizer(texts, truncation=True, max_length=cfg.seq_len)["input_ids"]]
    r.eval_ids = {name: r.tokenizer([t if isinstance(t, str) else "" for t in s["text"]], truncation=True,
                                    max_length=cfg.seq_len)["input_ids"]
                  for name, s in r.eval_splits.items()}
    r.train_labels = labels
    n_tokens = sum(len(s) for s in r.train_ids)
    r.log(f"tokenizer {cfg.tokenizer}: {len(r.tokenizer)} ids, {n_tokens / max(len(r.train_ids), 1):.1f} tokens "
          f"per train offer, {time.perf_counter() - t0:.1f}s")
    report_missing_classes(r.missing, r.log)


def build_model(r) -> None:
    """The model from its config, DDP-wrapped when distributed, AdamW (no decay on norms and biases), AMP."""
    import torch

    from category_classification.core.devices import autocast_dtype
    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.training.loop import class_weights

    cfg = r.cfg
    r.config = EmbeddingClassifierConfig(
        vocab_size=len(r.tokenizer), num_labels=len(r.labels), hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads, ffn_size=cfg.ffn_size,
        dropout=cfg.dropout, embedding_dropout=cfg.embedding_dropout, attention_dropout=cfg.attention_dropout,
        max_drop_path=cfg.max_drop_path, pooler=cfg.pooler, head=cfg.head, classifier_hidden=cfg.classifier_hidden,
        classifier_dropout=cfg.classifier_dropout, pad_token_id=r.tokenizer.pad_token_id,
        label_smoothing=cfg.label_smoothing, focal_gamma=cfg.focal_gamma, focal_alpha=cfg.focal_alpha,
        class_weights=class_weights(r.train_labels, len(r.labels), cfg.class_weighting))
    r.raw_model = EmbeddingClassifier(r.config).to(r.device)
    r.counts = r.raw_model.parameter_counts()
    r.log(f"model: {r.counts['total']:,} parameters (embedding {r.counts['embedding']:,}, blocks "
          f"{r.counts['blocks']:,}, head {r.counts['head']:,}); device {r.device}, {r.dist.world_size} process(es)")
    r.model = r.raw_model
    if r.dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        r.model = DistributedDataParallel(r.raw_model, device_ids=[r.device.index] if r.device.type == "cuda"
                                          else None)
    decay = [p for p in r.raw_model.parameters() if p.dim() >= 2]
    no_decay = [p for p in r.raw_model.parameters() if p.dim() < 2]  # norms, biases, residual scales
    r.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    r.amp_dtype = None if cfg.amp == "off" else autocast_dtype(r.device)
    if r.amp_dtype is not None and cfg.amp in ("bf16", "fp16"):
        r.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    r.scaler = torch.amp.GradScaler(r.device.type, enabled=r.amp_dtype == torch.float16)


def plan_batches(r) -> None:
    """Length-bucketed batches (the distributed sampler too) and the step count the LR schedule spans."""
    from category_classification.training.loop import LengthBucketBatchSampler

    cfg = r.cfg
    r.sampler = LengthBucketBatchSampler([len(s) for s in r.train_ids], cfg.batch_size, shuffle=True, seed=cfg.seed,
                                         rank=r.dist.rank, world_size=r.dist.world_size)
    r.batches_per_epoch = len(r.sampler)
    if cfg.max_steps_per_epoch:
        r.batches_per_epoch = min(r.batches_per_epoch, cfg.max_steps_per_epoch * cfg.grad_accum)
    r.total_steps = math.ceil(r.batches_per_epoch / cfg.grad_accum) * cfg.epochs


def resume_or_start(r) -> None:
    """Resume restores everything that affects the result, so the run continues as if never stopped; only a
    checkpoint of this run (same settings and data) is accepted, and the checkpoint folder becomes this run's."""
    from category_classification.training.checkpoints import checkpoint_to_resume, claim_folder
    from category_classification.training.distributed import barrier
    from category_classification.training.loop import restore_rng_state, save_checkpoint

    cfg, keys = r.cfg, EncoderTrainConfig.settings_keys()
    r.start_epoch, r.step, r.best, r.history, r.own_checkpoints = 0, 0, {"macro_f1": -1.0, "epoch": None}, [], []
    path, ckpt = checkpoint_to_resume(cfg.resume, r.ckpt_dir, r.record, keys, r.log)
    barrier(r.dist)  # every rank has read its checkpoint before rank 0 may move files
    if r.dist.is_main:
        claim_folder(r.ckpt_dir, r.record, keys, r.log)
    if ckpt is None:
        return
    r.raw_model.load_state_dict(ckpt["model"])
    r.optimizer.load_state_dict(ckpt["optimizer"])
    r.scaler.load_state_dict(ckpt["scaler"])
    restore_rng_state(ckpt["rng"][min(r.dist.rank, len(ckpt["rng"]) - 1)])
    r.start_epoch, r.step, r.best, r.history = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["history"]
    if r.dist.is_main and ckpt.get("best_model") is not None:
        save_checkpoint(r.ckpt_dir / "best_model.pt", ckpt["best_model"])
    if path.parent.resolve() == r.ckpt_dir.resolve():
        r.own_checkpoints.append(path)
    left = cfg.epochs - r.start_epoch
    r.log(f"resumed from {path} after epoch {r.start_epoch}, step {r.step}"
          + ("" if left > 0 else "; it had finished every epoch, so only the evaluation and save run"))


def train_epoch(r, epoch: int) -> dict:
    """One pass over the epoch's batches with gradient accumulation, clipping and the scheduled LR."""
    import contextlib

    import torch

    from category_classification.training.loop import drop_tokens, lr_at, pad_batch

    cfg = r.cfg
    r.sampler.set_epoch(epoch)
    t0, loss_sum, n_batches, n_tokens = time.perf_counter(), 0.0, 0, 0
    batches = list(iter(r.sampler))[:r.batches_per_epoch]
    for bi, batch in enumerate(batches):
        input_ids, mask = pad_batch(drop_tokens([r.train_ids[i] for i in batch], cfg.token_dropout),
                                    r.config.pad_token_id)
        y = torch.tensor([r.train_labels[i] for i in batch], device=r.device)
        input_ids, mask = input_ids.to(r.device), mask.to(r.device)
        last_of_step = (bi + 1) % cfg.grad_accum == 0 or bi + 1 == len(batches)
        # Under DDP only the last micro-batch of a step needs the gradient all-reduce.
        sync = r.model.no_sync() if r.dist.enabled and not last_of_step else contextlib.nullcontext()
        with sync:
            with torch.autocast(device_type=r.device.type, dtype=r.amp_dtype, enabled=r.amp_dtype is not None):
                loss = r.model(input_ids, mask, labels=y)["loss"]
            r.scaler.scale(loss / cfg.grad_accum).backward()
        loss_sum += loss.item()
        n_batches += 1
        n_tokens += int(mask.sum())
        if last_of_step:
            for group in r.optimizer.param_groups:
                group["lr"] = lr_at(r.step, r.total_steps, cfg.lr, cfg.lr_schedule, cfg.lr_warmup_steps,
                                    cfg.lr_min_scale)
            if cfg.grad_clip > 0:
                r.scaler.unscale_(r.optimizer)
                torch.nn.utils.clip_grad_norm_(r.raw_model.parameters(), cfg.grad_clip)
            r.scaler.step(r.optimizer)
            r.scaler.update()
            r.optimizer.zero_grad(set_to_none=True)
            r.step += 1
            if cfg.memory_summary_freq and r.step % cfg.memory_summary_freq == 0:
                r.log(f"  step {r.step}: loss {loss.item():.4f}, {memory_line(r.device)}")
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": loss_sum / max(n_batches, 1), "seconds": round(seconds, 2),
            "train_tokens_per_s": round(n_tokens * r.dist.world_size / max(seconds, 1e-9), 1)}


def end_of_epoch(r, epoch: int, record: dict) -> None:
    """Validation macro-F1 (the best epoch's weights kept aside) and, every --save_every epochs, a checkpoint
    holding everything a resume needs, this run's record included."""
    from category_classification.evaluation.metrics import compute_metrics
    from category_classification.training.checkpoints import prune
    from category_classification.training.distributed import barrier, broadcast, gather_to_main
    from category_classification.training.loop import capture_rng_state, load_checkpoint, save_checkpoint

    cfg = r.cfg
    val_preds = predict_ids(r, r.eval_ids["validation"])
    if r.dist.is_main:
        m = compute_metrics(r.eval_splits["validation"]["label"], val_preds, r.labels)
        record.update(val_macro_f1=m["macro_f1"], val_accuracy=m["accuracy"])
        improved = m["macro_f1"] > r.best["macro_f1"]
        if improved:
            r.best = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "epoch": epoch + 1}
            save_checkpoint(r.ckpt_dir / "best_model.pt", {k: v.detach().cpu().clone()
                                                           for k, v in r.raw_model.state_dict().items()})
        r.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}  val macro-F1 {m['macro_f1']:.4f} "
              f"acc {m['accuracy']:.4f}  {record['seconds']:.1f}s ({record['train_tokens_per_s']:.0f} tokens/s)"
              f"{'  *best' if improved else ''}")
    r.history.append(record)
    r.best = broadcast(r.best, r.dist)
    if not cfg.save_every or (epoch + 1) % cfg.save_every:
        return
    rng_states = gather_to_main(capture_rng_state(), r.dist)
    if r.dist.is_main:
        best_file = r.ckpt_dir / "best_model.pt"
        path = save_checkpoint(r.ckpt_dir / f"checkpoint-epoch{epoch + 1}.pt", {
            "model": r.raw_model.state_dict(), "optimizer": r.optimizer.state_dict(),
            "scaler": r.scaler.state_dict(), "rng": rng_states, "epoch": epoch + 1, "step": r.step,
            "best": r.best, "best_model": load_checkpoint(best_file) if best_file.is_file() else None,
            "history": r.history, "config": r.config.to_dict(), "args": cfg.to_dict(), "run": r.record})
        r.own_checkpoints = prune([p for p in r.own_checkpoints if p != path] + [path], cfg.keep_checkpoints)
    barrier(r.dist)


def predict_ids(r, ids):
    """Predictions for a list of id lists; under DDP each rank does a strided share and rank 0 gathers."""
    from category_classification.models.encoder_io import logits_for_ids
    from category_classification.training.distributed import gather_to_main

    mine = list(range(r.dist.rank, len(ids), r.dist.world_size))
    logits = logits_for_ids(r.raw_model, [ids[i] for i in mine], r.cfg.eval_batch_size, r.device, r.amp_dtype)
    parts = gather_to_main((mine, logits.argmax(-1).tolist()), r.dist)
    if parts is None:
        return None
    preds = [0] * len(ids)
    for idx, p in parts:
        for i, y in zip(idx, p):
            preds[i] = y
    return preds


def finish(r, train_seconds: float, eval_options: dict) -> None:
    """The best epoch's weights, evaluated on validation and test and saved with everything inference needs
    (written beside --out and moved in when complete), then loaded back to prove the folder is whole."""
    from category_classification.evaluation import metrics as evaluation
    from category_classification.models.encoder_io import load_encoder, save_encoder
    from category_classification.training.distributed import barrier, cleanup_distributed
    from category_classification.training.loop import load_checkpoint

    cfg = r.cfg
    barrier(r.dist)
    if (r.ckpt_dir / "best_model.pt").is_file():
        r.raw_model.load_state_dict(load_checkpoint(r.ckpt_dir / "best_model.pt"))
    split_preds = {name: predict_ids(r, ids) for name, ids in r.eval_ids.items()}
    if r.dist.is_main:
        metrics = {name: evaluation.evaluate_split(r.eval_splits[name], preds, r.labels, **eval_options)
                   for name, preds in split_preds.items()}
        train_info = {"max_length": cfg.seq_len, "tokenizer": cfg.tokenizer, "preset": cfg.preset,
                      "args": cfg.to_dict(), "best": r.best, "history": r.history,
                      "train_seconds": round(train_seconds, 1), "world_size": r.dist.world_size,
                      "device": str(r.device), "parameters": r.counts, "run": r.record,
                      "classes_without_training_examples": r.missing}
        cfg_record = {**cfg.to_dict(), "num_parameters": r.counts["total"], "vocab_size": len(r.tokenizer)}
        save_encoder(r.out, r.raw_model, r.config, r.tokenizer, r.labels, train_info, results=lambda stage: (
            evaluation.write_results(stage, "embedding_classifier", cfg_record, metrics, r.labels, history_from=r.out,
                                     extra={"best_epoch": r.best["epoch"], "train_seconds": round(train_seconds, 1),
                                            "classes_without_training_examples": r.missing})))
        main_split = "test" if "test" in metrics else "validation"
        print(evaluation.format_metrics(metrics[main_split], r.labels,
                                        title=f"[{main_split}] embedding_classifier, best epoch {r.best['epoch']}"))
        done = ("nothing left to train (the checkpoint had finished every epoch)" if r.start_epoch >= cfg.epochs
                else f"trained in {train_seconds:.1f}s")
        print(f"{done}; model saved to {r.out}")
        load_encoder(r.out)
    barrier(r.dist)
    cleanup_distributed()


def memory_line(device) -> str:
    import resource

    import torch

    if device.type == "cuda":
        return f"cuda peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
