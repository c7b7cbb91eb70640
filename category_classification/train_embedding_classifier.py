"""Train the from-scratch encoder classifier on a built dataset; the best epoch by validation macro-F1 is kept.

    python category_classification/train_embedding_classifier.py --data runs/mwpd6 --out runs/encoder --preset small
    torchrun --nproc_per_node 2 category_classification/train_embedding_classifier.py --data ... --out ...
"""

import argparse
import math
import sys
import time
from pathlib import Path

from category_classification.core.cli import UserError, add_eval_args, run

# Presets fill in flags the user did not give. "default" is the seed's 80M model with the Qwen3 vocabulary;
# "small" trains on the 6-class MWPD data in a few minutes on a 2-core CPU (see docs/embedding_classifier_architecture.md
# for the tuning log that chose it).
PRESETS = {
    "default": {},
    # hidden 128 / seq_len 128 (run s128_h128): validation macro-F1 0.866 in 221 s, where hidden 192 / seq_len 64
    # gave 0.822 in 663 s; wider or BPE-16k variants scored within validation noise and trained 1.5-2x longer.
    "small": dict(tokenizer="bpe:8000", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_size=512,
                  seq_len=128, batch_size=32, epochs=6, lr=2e-3, lr_warmup_steps=100, weight_decay=0.05,
                  dropout=0.1, embedding_dropout=0.1, max_drop_path=0.0, label_smoothing=0.1, num_threads=1),
}
# train_embedding_classifier_v2.py: the seed's v2 head and loss settings.
V2_DEFAULTS = dict(head="residual", classifier_hidden=768, classifier_dropout=0.2, label_smoothing=0.1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset directory written by build_lspc_dataset.py")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="a set of defaults; flags given explicitly still win")
    p.add_argument("--tokenizer", default="qwen",
                   help="'qwen' (Qwen3, offline), 'bpe:N' (train an N-token BPE on the train split), or a "
                        "Hugging Face tokenizer name/path")
    p.add_argument("--train_split", default="train")
    p.add_argument("--device", default="auto")
    p.add_argument("--num_threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default). On a small or shared CPU, 1 is often much "
                        "faster for small models: thread hand-offs cost more than the matrices")

    m = p.add_argument_group("model")
    m.add_argument("--hidden_size", type=int, default=384)
    m.add_argument("--num_layers", type=int, default=10)
    m.add_argument("--num_heads", type=int, default=6)
    m.add_argument("--num_kv_heads", type=int, default=2)
    m.add_argument("--ffn_size", type=int, default=1536)
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument("--embedding_dropout", type=float, default=0.0)
    m.add_argument("--attention_dropout", type=float, default=0.0)
    m.add_argument("--max_drop_path", type=float, default=0.1)
    m.add_argument("--pooler", choices=["mean", "first"], default="mean")
    m.add_argument("--head", choices=["mlp", "residual"], default="mlp")
    m.add_argument("--classifier_hidden", type=int, default=None, help="head width (default: hidden size)")
    m.add_argument("--classifier_dropout", type=float, default=0.1)

    t = p.add_argument_group("training")
    t.add_argument("--seq_len", type=int, default=128, help="tokens per offer (title + description), truncated")
    t.add_argument("--batch_size", type=int, default=32)
    t.add_argument("--grad_accum", type=int, default=1)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--lr_schedule", choices=["none", "cosine", "exponential"], default="cosine")
    t.add_argument("--lr_warmup_steps", type=int, default=200)
    t.add_argument("--lr_min_scale", type=float, default=0.05)
    t.add_argument("--weight_decay", type=float, default=0.05)
    t.add_argument("--grad_clip", type=float, default=1.0)
    t.add_argument("--label_smoothing", type=float, default=0.0)
    t.add_argument("--focal_gamma", type=float, default=0.0, help="> 0 switches to focal loss")
    t.add_argument("--focal_alpha", type=float, default=None)
    t.add_argument("--token_dropout", type=float, default=0.0,
                   help="remove each training token with this probability (word dropout; a regulariser)")
    t.add_argument("--class_weighting", choices=["none", "balanced", "sqrt"], default="none",
                   help="weight the loss by inverse class frequency (or its square root)")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--amp", nargs="?", const="auto", default="auto", choices=["auto", "off", "bf16", "fp16"],
                   help="mixed precision on CUDA (auto: bf16 where supported, else fp16); the CPU runs fp32")
    t.add_argument("--eval_batch_size", type=int, default=128)
    t.add_argument("--save_every", type=int, default=1, help="write a checkpoint every N epochs (0: never)")
    t.add_argument("--keep_checkpoints", type=int, default=1, help="keep the newest N checkpoints (0: all)")
    t.add_argument("--resume", default=None, help="checkpoint file, or 'auto' for the newest in --out")
    t.add_argument("--memory_summary_freq", type=int, default=0, help="print memory use every N steps (0: off)")
    t.add_argument("--max_steps_per_epoch", type=int, default=0, help=argparse.SUPPRESS)  # tests and benches
    add_eval_args(p)
    return p


def parse_args(argv=None, defaults: dict | None = None) -> argparse.Namespace:
    """Flags < preset < explicit flags: the preset is read first, then applied as parser defaults."""
    parser = build_parser()
    if defaults:
        parser.set_defaults(**defaults)
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PRESETS[first.preset])
    return parser.parse_args(argv)


def memory_line(device) -> str:
    import resource

    import torch

    if device.type == "cuda":
        return f"cuda peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def main(argv=None, defaults: dict | None = None):
    args = parse_args(argv, defaults)
    import numpy as np
    import torch

    from category_classification.evaluation import metrics as evaluation
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.core.devices import autocast_dtype, seed_everything
    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.models.encoder_io import load_encoder, logits_for_ids, save_encoder
    from category_classification.models.tokenization import resolve_tokenizer
    from category_classification.training.loop import (LengthBucketBatchSampler, barrier, capture_rng_state,
                                                   class_weights, cleanup_distributed, drop_tokens, gather_to_main,
                                                   latest_checkpoint, load_checkpoint, lr_at, pad_batch,
                                                   restore_rng_state, save_checkpoint, setup_distributed)

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    dist_info, device = setup_distributed(args.device)
    log = print if dist_info.is_main else (lambda *a, **k: None)
    seed_everything(args.seed)
    out = Path(args.out)
    ckpt_dir = out / "checkpoints"

    # Data and tokenizer.
    dsd = load_dataset_dir(args.data)
    labels = label_names(dsd)
    train = get_split(dsd, args.train_split)
    eval_splits = {name: dsd[name] for name in ("validation", "test") if name in dsd}
    if "validation" not in eval_splits:
        raise UserError("the dataset needs a validation split to pick the best epoch")
    train_texts = list(train["text"])
    t0 = time.perf_counter()
    if args.tokenizer.lower().startswith("bpe:") and dist_info.enabled:
        # One rank trains the vocabulary, the others load it, so every rank has the same ids.
        tok_dir = out / "tokenizer-build"
        if dist_info.is_main:
            resolve_tokenizer(args.tokenizer, train_texts).save_pretrained(str(tok_dir))
        barrier(dist_info)
        tokenizer = resolve_tokenizer(str(tok_dir))
    else:
        tokenizer = resolve_tokenizer(args.tokenizer, train_texts)
    train_ids = tokenizer(train_texts, truncation=True, max_length=args.seq_len)["input_ids"]
    eval_ids = {name: tokenizer(list(s["text"]), truncation=True, max_length=args.seq_len)["input_ids"]
                for name, s in eval_splits.items()}
    n_tokens = sum(len(s) for s in train_ids)
    log(f"tokenizer {args.tokenizer}: {len(tokenizer)} ids, {n_tokens / len(train_ids):.1f} tokens per train "
        f"offer, {time.perf_counter() - t0:.1f}s")
    train_labels = list(train["label"])

    # Model.
    config = EmbeddingClassifierConfig(
        vocab_size=len(tokenizer), num_labels=len(labels), hidden_size=args.hidden_size,
        num_layers=args.num_layers, num_heads=args.num_heads, num_kv_heads=args.num_kv_heads,
        ffn_size=args.ffn_size, dropout=args.dropout, embedding_dropout=args.embedding_dropout,
        attention_dropout=args.attention_dropout, max_drop_path=args.max_drop_path, pooler=args.pooler,
        head=args.head, classifier_hidden=args.classifier_hidden, classifier_dropout=args.classifier_dropout,
        pad_token_id=tokenizer.pad_token_id, label_smoothing=args.label_smoothing, focal_gamma=args.focal_gamma,
        focal_alpha=args.focal_alpha, class_weights=class_weights(train_labels, len(labels), args.class_weighting))
    model = EmbeddingClassifier(config).to(device)
    counts = model.parameter_counts()
    log(f"model: {counts['total']:,} parameters (embedding {counts['embedding']:,}, blocks {counts['blocks']:,}, "
        f"head {counts['head']:,}); device {device}, {dist_info.world_size} process(es)")
    raw_model = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    decay = [p for n, p in raw_model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in raw_model.named_parameters() if p.dim() < 2]  # norms, biases, residual scales
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    amp_dtype = None if args.amp == "off" else autocast_dtype(device)
    if amp_dtype is not None and args.amp in ("bf16", "fp16"):
        amp_dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    sampler = LengthBucketBatchSampler([len(s) for s in train_ids], args.batch_size, shuffle=True, seed=args.seed,
                                       rank=dist_info.rank, world_size=dist_info.world_size)
    batches_per_epoch = len(sampler)
    if args.max_steps_per_epoch:
        batches_per_epoch = min(batches_per_epoch, args.max_steps_per_epoch * args.grad_accum)
    steps_per_epoch = math.ceil(batches_per_epoch / args.grad_accum)
    total_steps = steps_per_epoch * args.epochs

    # Resume: everything that affects the result comes back, so the run continues as if never stopped.
    start_epoch, step, best = 0, 0, {"macro_f1": -1.0, "epoch": None}
    history = []
    resume = latest_checkpoint(ckpt_dir) if args.resume == "auto" else args.resume
    if args.resume == "auto" and resume is None:
        log("no checkpoint to resume from; starting fresh")
    if resume:
        if not Path(resume).is_file():
            raise UserError(f"checkpoint not found: {resume}")
        ckpt = load_checkpoint(resume)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"][min(dist_info.rank, len(ckpt["rng"]) - 1)])
        start_epoch, step, best, history = ckpt["epoch"], ckpt["step"], ckpt["best"], ckpt["history"]
        if dist_info.is_main and ckpt.get("best_model") is not None:
            save_checkpoint(ckpt_dir / "best_model.pt", ckpt["best_model"])
        log(f"resumed from {resume} after epoch {start_epoch}, step {step}")

    def predict(ids):
        """Predictions for a list of id lists; under DDP each rank does a strided share, rank 0 gathers."""
        mine = list(range(dist_info.rank, len(ids), dist_info.world_size))
        logits = logits_for_ids(raw_model, [ids[i] for i in mine], args.eval_batch_size, device, amp_dtype)
        parts = gather_to_main((mine, logits.argmax(-1).tolist()), dist_info)
        if parts is None:
            return None
        preds = [0] * len(ids)
        for idx, p in parts:
            for i, y in zip(idx, p):
                preds[i] = y
        return preds

    run_t0 = time.perf_counter()
    model.train()
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        ep_t0, ep_loss, ep_batches, ep_tokens = time.perf_counter(), 0.0, 0, 0
        batches = list(iter(sampler))[:batches_per_epoch]
        for bi, batch in enumerate(batches):
            input_ids, mask = pad_batch(drop_tokens([train_ids[i] for i in batch], args.token_dropout),
                                        config.pad_token_id)
            y = torch.tensor([train_labels[i] for i in batch], device=device)
            input_ids, mask = input_ids.to(device), mask.to(device)
            last_of_step = (bi + 1) % args.grad_accum == 0 or bi + 1 == len(batches)
            # Under DDP only the last micro-batch of a step needs the gradient all-reduce.
            sync = model.no_sync() if dist_info.enabled and not last_of_step else _nullcontext()
            with sync:
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = model(input_ids, mask, labels=y)["loss"]
                scaler.scale(loss / args.grad_accum).backward()
            ep_loss += loss.item()
            ep_batches += 1
            ep_tokens += int(mask.sum())
            if last_of_step:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, args.lr, args.lr_schedule, args.lr_warmup_steps,
                                        args.lr_min_scale)
                if args.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if args.memory_summary_freq and step % args.memory_summary_freq == 0:
                    log(f"  step {step}: loss {loss.item():.4f}, {memory_line(device)}")
        ep_time = time.perf_counter() - ep_t0

        val_preds = predict(eval_ids["validation"])
        record = {"epoch": epoch + 1, "train_loss": ep_loss / max(ep_batches, 1), "seconds": round(ep_time, 2),
                  "train_tokens_per_s": round(ep_tokens * dist_info.world_size / max(ep_time, 1e-9), 1)}
        if dist_info.is_main:
            m = evaluation.compute_metrics(eval_splits["validation"]["label"], val_preds, labels)
            record.update(val_macro_f1=m["macro_f1"], val_accuracy=m["accuracy"])
            improved = m["macro_f1"] > best["macro_f1"]
            if improved:
                best = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "epoch": epoch + 1}
                save_checkpoint(ckpt_dir / "best_model.pt", {k: v.detach().cpu().clone()
                                                             for k, v in raw_model.state_dict().items()})
            log(f"epoch {epoch + 1}/{args.epochs}: loss {record['train_loss']:.4f}  val macro-F1 "
                f"{m['macro_f1']:.4f} acc {m['accuracy']:.4f}  {ep_time:.1f}s "
                f"({record['train_tokens_per_s']:.0f} tokens/s){'  *best' if improved else ''}")
        history.append(record)
        best = _broadcast(best, dist_info)
        if args.save_every and (epoch + 1) % args.save_every == 0:
            rng_states = gather_to_main(capture_rng_state(), dist_info)
            if dist_info.is_main:
                best_model = load_checkpoint(ckpt_dir / "best_model.pt") if (ckpt_dir / "best_model.pt").is_file() \
                    else None
                save_checkpoint(ckpt_dir / f"checkpoint-epoch{epoch + 1}.pt", {
                    "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "rng": rng_states, "epoch": epoch + 1, "step": step,
                    "best": best, "best_model": best_model, "history": history, "config": config.to_dict(),
                    "args": vars(args)})
                _prune_checkpoints(ckpt_dir, args.keep_checkpoints)
            barrier(dist_info)
    train_seconds = time.perf_counter() - run_t0

    # The best epoch's weights, evaluated on validation and test, saved with everything inference needs.
    barrier(dist_info)
    if (ckpt_dir / "best_model.pt").is_file():
        raw_model.load_state_dict(load_checkpoint(ckpt_dir / "best_model.pt"))
    split_preds = {name: predict(ids) for name, ids in eval_ids.items()}
    if dist_info.is_main:
        split_metrics = {name: evaluation.evaluate_split(eval_splits[name], preds, labels, args)
                         for name, preds in split_preds.items()}
        train_info = {"max_length": args.seq_len, "tokenizer": args.tokenizer, "preset": args.preset,
                      "args": vars(args), "best": best, "history": history,
                      "train_seconds": round(train_seconds, 1), "world_size": dist_info.world_size,
                      "device": str(device), "parameters": counts}
        save_encoder(out, raw_model, config, tokenizer, labels, train_info)
        cfg_record = {**vars(args), "num_parameters": counts["total"], "vocab_size": len(tokenizer)}
        evaluation.write_results(out, "embedding_classifier", cfg_record, split_metrics, labels,
                                 extra={"best_epoch": best["epoch"], "train_seconds": round(train_seconds, 1)})
        main_split = "test" if "test" in split_metrics else "validation"
        print(evaluation.format_metrics(split_metrics[main_split], labels,
                                        title=f"[{main_split}] embedding_classifier, best epoch {best['epoch']}"))
        print(f"trained in {train_seconds:.1f}s; model saved to {out}")
        # Loading what was written proves the directory is complete before anyone relies on it.
        load_encoder(out)
    barrier(dist_info)
    cleanup_distributed()
    return 0


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _broadcast(obj, dist_info):
    """Rank 0's value of a small picklable object, on every rank."""
    if not dist_info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    found = sorted(ckpt_dir.glob("checkpoint-epoch*.pt"), key=lambda p: int(p.stem.removeprefix("checkpoint-epoch")))
    for old in found[:-keep]:
        old.unlink()


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
