"""Inference speed of a LoRA-trained (merged) classifier: items/s and p50/p95/p99 latency per batch and
per item, tokenization included, on whatever device is there."""

import argparse
import json
import sys

from category_classification.core.cli import UserError, require_file, run


def read_texts(args):
    """(texts, label names or None, the dataset's label names or None) from --dataset/--split or --txt (one
    offer per line)."""
    if args.txt:  # read as predict.py reads a .txt: a line that is not UTF-8 is skipped and counted, not a traceback
        from category_classification.data.text import model_text, text_problem
        from category_classification.inference.batch import read_txt

        texts, skipped = [], []
        for rec in read_txt(require_file(args.txt, "text file")):
            problem = rec.reason or text_problem(rec.text)
            if not problem:
                texts.append(model_text(rec.text))
            elif problem != "blank text":  # blank lines were always passed over
                skipped.append(f"line {rec.ref['line']}: {problem}")
        if skipped:
            print(f"note: skipped {len(skipped)} lines of {args.txt} ({', '.join(skipped[:3])}"
                  + (", ..." if len(skipped) > 3 else "") + ")")
        labels = names = None
    else:
        from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir

        dsd = load_dataset_dir(args.dataset)
        split, names = get_split(dsd, args.split), label_names(dsd)
        texts, labels = list(split["text"]), [names[y] for y in split["label"]]
    if args.limit:
        texts = texts[: args.limit]
        labels = labels[: args.limit] if labels is not None else None
    if not texts:
        raise UserError("no offers to classify")
    return texts, labels, names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="trainer output dir, its merged/ dir, or any sequence-classification model dir")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", "--dataset", dest="dataset", help="dataset directory (build_lspc_dataset.py output)")
    src.add_argument("--txt", help="a text file, one offer per line")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=1000, help="classify at most N offers (0: all)")
    parser.add_argument("--batch_size", "--batch", dest="batch", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=0, help="max tokens (0: the model's training seq_len)")
    parser.add_argument("--warmup_batches", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", "--cpu_threads", dest="cpu_threads", type=int, default=0,
                        help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--json_out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    from category_classification.core.artifacts import check_file_out, json_file_with_keys
    from category_classification.core.cli import check_device, check_threads

    if args.batch < 1:
        raise UserError("--batch_size must be at least 1")
    if args.limit < 0 or args.seq_len < 0 or args.warmup_batches < 0 or args.cpu_threads < 0:
        raise UserError("--limit, --seq_len, --warmup_batches and --threads must be at least 0")
    check_device(args.device)
    check_threads(args.cpu_threads or None)
    if args.json_out:  # before any work: never the model's files, the --txt input or a file of the user's
        check_file_out(args.json_out, [args.model, args.txt, args.dataset],
                       lambda p: json_file_with_keys(p, ("items_per_second", "batch_p50_ms")), "figures file of this script",
                       folders=(args.model,))

    import torch

    from category_classification.models.hf import inference_dtype, load_folder
    from category_classification.inference.latency import latency_summary, time_batches
    from category_classification.training.distributed import resolve_device

    if args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
    texts, labels, data_labels = read_texts(args)
    device = resolve_device(args.device)
    folder = load_folder(args.model, device=device, dtype=inference_dtype(device))
    tokenizer, model, info = folder.tokenizer, folder.model, folder.info
    model_labels = info.get("labels") or [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels is not None:  # accuracy is by label name: the model's order need not be the dataset's
        from category_classification.evaluate import dataset_columns

        dataset_columns(model_labels, data_labels)  # a model of other classes: one line, before the timing
        if len(model_labels) != model.config.num_labels:  # each output is named by one label, in order
            raise UserError(f"{args.model}: category_model.json names {len(model_labels)} labels but the model "
                            f"has {model.config.num_labels} outputs; retrain or re-export the model")
    seq_len = args.seq_len or int(info.get("max_length", 128))
    from category_classification.models.hf import position_limit

    limit = position_limit(model)  # a longer input crashes inside the model, after the timing began
    if limit and seq_len > limit:
        raise UserError(f"--seq_len {seq_len} is more than the {limit} tokens model {args.model!r} can read")
    preds, seconds, sizes = time_batches(model, tokenizer, texts, args.batch, seq_len, device,
                                         args.warmup_batches)
    summary = {"model": str(args.model), "device": device.type, "dtype": str(model.dtype).replace("torch.", ""),
               "batch": args.batch, "seq_len": seq_len, "threads": torch.get_num_threads(),
               **latency_summary(seconds, sizes)}
    if labels is not None:
        summary["accuracy"] = sum(int(model_labels[p] == y) for p, y in zip(preds, labels)) / len(labels)
    print(f"{summary['items']} offers in {summary['batches']} batches of {args.batch} on {device.type} "
          f"({summary['dtype']}, seq_len {seq_len}, {summary['threads']} threads): "
          f"{summary['items_per_second']:.1f} items/s")
    print(f"per batch: p50 {summary['batch_p50_ms']:.1f} ms  p95 {summary['batch_p95_ms']:.1f} ms  "
          f"p99 {summary['batch_p99_ms']:.1f} ms")
    print(f"per item:  p50 {summary['item_p50_ms']:.2f} ms  p95 {summary['item_p95_ms']:.2f} ms  "
          f"p99 {summary['item_p99_ms']:.2f} ms")
    if "accuracy" in summary:
        print(f"accuracy on these offers: {summary['accuracy']:.4f}")
    if args.json_out:
        from category_classification.core.artifacts import write_text_atomic

        write_text_atomic(args.json_out, json.dumps(summary, indent=2) + "\n")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
