"""Export an encoder or merged LoRA model directory to ONNX, optionally int8, and check parity with torch.

    python category_classification/export_onnx.py --model runs/encoder_small --out runs/encoder_small_onnx --quantize int8
    python category_classification/export_onnx.py --model runs/lora_minilm --out runs/lora_minilm_onnx --quantize int8 --check_data runs/mwpd6

The output directory runs anywhere predict.py, evaluate.py and serve.py take --model.
"""

import argparse
import sys

from category_classification.core.artifacts import check_model_out
from category_classification.core.cli import UserError, run
from category_classification.core.env import stay_offline


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="an encoder or LoRA (merged) model directory")
    p.add_argument("--out", required=True, help="directory for model.onnx, the tokenizer and category_model.json")
    p.add_argument("--quantize", choices=("int8",), default=None, help="also write model.int8.onnx")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--check_data", default=None,
                   help="a dataset directory: compare ONNX and torch predictions on --check_split")
    p.add_argument("--check_split", default="test")
    p.add_argument("--check_limit", type=int, default=0, help="only the first N offers of the split (0: all)")
    p.add_argument("--batch_size", type=int, default=64)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    stay_offline()  # models come from their folders, never the hub
    if not 14 <= args.opset <= 21:  # what torch's exporter writes and onnxruntime runs
        raise UserError(f"--opset must be between 14 and 21, got {args.opset}")
    if args.batch_size < 1 or args.check_limit < 0:
        raise UserError("--batch_size must be at least 1 and --check_limit at least 0")
    check_model_out(args.out, [args.model, args.check_data], kinds=("onnx",))
    from category_classification.inference.onnx_export import export_staged, parity, write_parity
    from category_classification.inference.predictors import load_predictor

    split = None
    if args.check_data:  # read before the export: a wrong dataset or split costs nothing
        from category_classification.data.dataset_dir import get_split, load_dataset_dir

        split = get_split(load_dataset_dir(args.check_data), args.check_split)
        if args.check_limit:
            split = split.select(range(min(args.check_limit, len(split))))
    info = export_staged(args.model, args.out, quantize=args.quantize, opset=args.opset)
    print(f"{args.out}: kind onnx from {info['source_kind']}, files {info['files']}")
    if split is not None:
        torch_pred = load_predictor(args.model, batch_size=args.batch_size)
        onnx_preds = {p: load_predictor(args.out, batch_size=args.batch_size, precision=p) for p in info["files"]}
        report = parity(torch_pred, onnx_preds, split["text"], split["label"])
        report["split"] = args.check_split
        write_parity(args.out, report)
        print(f"parity on {args.check_split} ({report['n']} offers): torch macro-F1 {report['torch']['macro_f1']:.4f}")
        for p in info["files"]:
            r = report[p]
            print(f"  {p}: agreement {r['agreement']:.4%}, macro-F1 {r['macro_f1']:.4f} "
                  f"({r['macro_f1_delta']:+.4f}), max |logit diff| {r['max_abs_logit_diff']:.2e}")
        if report["fp32"]["agreement"] < 0.999:
            raise UserError(f"fp32 export agrees with torch on only {report['fp32']['agreement']:.4%} (< 99.9%)")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
