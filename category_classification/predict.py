"""Classify offers with any trained model directory (linear, encoder, merged LoRA, ONNX) and write JSONL.

    python category_classification/predict.py --model runs/linear --text "Nike Air Max 90" --text "Pampers size 3" --out preds.jsonl
    python category_classification/predict.py --model runs/encoder_onnx --input offers.jsonl --text_field title --out preds.jsonl --resume
    python category_classification/predict.py --model runs/linear --zip lspcV2020.zip --out lspc_preds.jsonl --threshold 0.6

Output goes to OUT.partial and is renamed to OUT when complete; every input record gets one line, in input
order (a bad record gets {"error": reason, "label": null}). Details: docs/reliability.md.

In Python: `from category_classification.predict import load_predictor`, then
`load_predictor(model_dir).predict(titles, top_k=3, threshold=0.6)`.
"""

import argparse
import sys

from category_classification.core.cli import UserError, check_threads, run
from category_classification.inference.predictors import Predictor, choose_threshold, load_predictor  # noqa: F401 (API)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained model directory (holds category_model.json)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a title to classify (repeatable)")
    src.add_argument("--input", help="offers to classify: .txt (one per line), .jsonl or .csv")
    src.add_argument("--zip", help="the LSPC corpus zip (lspcV2020.zip): every offer of every member")
    p.add_argument("--text_field", default=None,
                   help="JSONL key / CSV column holding the text (default: text, then title, then name)")
    p.add_argument("--out", default=None, help="output JSONL (default: print to stdout for --text)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--top_k", type=int, default=1, help="how many labels with probabilities to list per offer")
    p.add_argument("--threshold", type=float, default=None,
                   help="below this top probability the label is null (none of the trained classes); "
                        "pick it on validation data with evaluate.py --target_precision")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (torch models)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="ONNX directories: which export to run (default: the directory's default)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch / onnxruntime")
    p.add_argument("--resume", action="store_true",
                   help="continue after the last complete line of OUT.partial, the file a killed run leaves")
    p.add_argument("--keep_text", action="store_true", help="copy the input text into each output line")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out even if it is not an earlier predictions file")
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from category_classification.core.artifacts import text_settings
    from category_classification.inference.batch import (_output_line, check_output_path, count_lines,
                                                          open_records, predict_stream, predicted_rows)
    from category_classification.inference.sharding import current_shard

    if args.batch_size < 1 or args.top_k < 1:
        raise UserError("--batch_size and --top_k must be at least 1")
    check_threads(args.threads)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError("--threshold is a probability between 0 and 1")
    if args.out is None and args.text is None:
        raise UserError("--out is required with --input and --zip")
    # texts built from fields (JSONL/CSV title, description, breadcrumb; --zip) use the settings of training
    settings = text_settings(args.model)
    records = open_records(input_path=args.input, texts=args.text, zip_path=args.zip, text_field=args.text_field,
                           **settings)
    if args.out is not None:  # checked before the model loads: a bad --out costs nothing
        check_output_path(args.out, [args.input, args.zip, args.model], overwrite=args.overwrite)
    shard = current_shard(args.out, texts_given=args.text is not None)  # under torchrun: this process's share
    if shard:
        records = shard.begin(lambda members=None: open_records(input_path=args.input, zip_path=args.zip,
                                                                text_field=args.text_field, members=members,
                                                                **settings),
                              args.resume, args.batch_size, zip_path=args.zip,
                              log=lambda msg: print(msg, file=sys.stderr))
        args.device, args.out = shard.device(args.device), str(shard.part)
        if args.resume and shard.part.is_file():  # parts are renamed into place only when complete
            print(f"{shard.part}: complete before the interruption, kept", file=sys.stderr)
            shard.finish(log=lambda msg: print(msg, file=sys.stderr))
            return 0
    predictor = load_predictor(args.model, device=args.device, batch_size=args.batch_size,
                               precision=args.precision, threads=args.threads)
    if args.out is None:  # --text without --out: print the predictions
        for rows in predicted_rows(predictor, records, top_k=args.top_k, threshold=args.threshold):
            for row in rows:
                print(_output_line(row), end="")
        return 0
    total = shard.size if shard else count_lines(args.input) if args.input else (len(args.text) if args.text else None)
    summary = predict_stream(predictor, records, args.out, batch_size=args.batch_size, top_k=args.top_k,
                             threshold=args.threshold, resume=args.resume, keep_text=args.keep_text,
                             total=total, progress=not args.no_progress)
    print(f"{args.out}: {summary.line()}", file=sys.stderr)
    if shard:
        shard.finish(log=lambda msg: print(msg, file=sys.stderr))  # rank 0 joins the parts into --out
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
