"""Evaluate a trained encoder directory on a dataset split; optionally write predictions to JSONL.

    python category_classification/infer_embedding_classifier.py --data runs/mwpd6 --checkpoint runs/encoder \
        --split test --save_preds runs/encoder/test_preds.jsonl
"""

import argparse
import json
import sys
import time
from pathlib import Path

from category_classification.core.cli import UserError, add_eval_args, run


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset directory written by build_lspc_dataset.py")
    p.add_argument("--checkpoint", required=True,
                   help="model directory written by train_embedding_classifier.py (or a checkpoint-epochX.pt "
                        "inside its checkpoints/ folder)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch_size", "--batch", type=int, default=128)
    p.add_argument("--seq_len", "--max_length", dest="max_length", type=int, default=None,
                   help="tokens per offer (default: as trained)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--save_preds", default=None, help="JSONL file: one {text, label, pred, ...} per offer")
    p.add_argument("--device", default="auto")
    add_eval_args(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import torch

    from category_classification.evaluation import metrics as evaluation
    from category_classification.data.dataset_dir import label_names, load_dataset_dir, usable_split
    from category_classification.core.devices import pick_device
    from category_classification.models.encoder_io import load_encoder, predict_logits
    from category_classification.training.checkpoints import epoch_weights

    from category_classification.core.artifacts import check_file_out, jsonl_first_line_has, write_text_atomic
    from category_classification.core.cli import check_settings

    check_settings(args, whole=("batch_size",))  # and --device, --threads
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--seq_len must be at least 1, got {args.max_length}")
    ckpt = Path(args.checkpoint)
    model_dir = ckpt.parent.parent if ckpt.is_file() else ckpt
    if not ckpt.exists():
        raise UserError(f"checkpoint not found: {ckpt}")
    if args.save_preds:  # before any work; never the model's own files, an input or a file of the user's
        check_file_out(args.save_preds, [args.data, ckpt], lambda p: jsonl_first_line_has(p, ("index", "label", "pred")),
                       "predictions file of this script", folders=(model_dir,))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model, tokenizer, info = load_encoder(model_dir, device=device)
    if ckpt.is_file():  # weights of one epoch's training checkpoint instead of the kept best epoch
        try:
            model.load_state_dict(epoch_weights(ckpt, info["train_info"].get("run"), model_dir))
        except RuntimeError as exc:  # a checkpoint without a run record, of another shape
            raise UserError(f"checkpoint {ckpt} does not fit the model in {model_dir}: its weights have other "
                            f"names or shapes ({type(exc).__name__}); it is another training run's") from None
    labels = info["labels"]
    dsd = load_dataset_dir(args.data)
    if label_names(dsd) != labels:
        raise UserError(f"the dataset's labels {label_names(dsd)} differ from the model's {labels}")
    split, rows = usable_split(dsd, args.split)  # rows: the dataset rows kept, which --save_preds names
    max_length = args.max_length or info["max_length"]
    texts = list(split["text"])
    t0 = time.perf_counter()
    logits = predict_logits(model, tokenizer, texts, max_length, args.batch_size, device)
    seconds = time.perf_counter() - t0
    probs = torch.softmax(logits, -1)
    preds = logits.argmax(-1).tolist()
    metrics = evaluation.evaluate_split(split, preds, labels, **evaluation.eval_options(args))
    print(evaluation.format_metrics(metrics, labels, title=f"[{args.split}] {model_dir}"))
    print(f"{len(texts)} offers in {seconds:.2f}s ({len(texts) / max(seconds, 1e-9):.0f} offers/s)")
    if args.save_preds:
        gold = list(split["label"])
        write_text_atomic(args.save_preds, "".join(
            json.dumps({"index": int(rows[i]), "text": text, "label": labels[y], "label_id": int(y), "pred": labels[p],
                        "pred_id": int(p), "prob": round(float(probs[i, p]), 6)}, ensure_ascii=False) + "\n"
            for i, (text, y, p) in enumerate(zip(texts, gold, preds))))
        print(f"predictions written to {args.save_preds}")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
