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
                   help="a dataset directory: compare ONNX and torch predictions on --check_split; an export "
                        "agreeing with torch on under 99.9%% (fp32) or 99%% (int8) of its offers is not written")
    p.add_argument("--check_split", default="test")
    p.add_argument("--check_limit", type=int, default=0, help="only the first N offers of the split (0: all)")
    p.add_argument("--batch_size", type=int, default=64)
    return p


def parity_check(args, texts, y_true):
    """The check export_staged runs on the finished export before anything is moved in: parity with torch on
    `texts` (y_true in the model's label order), printed; an export below its target replaces nothing."""
    from category_classification.inference.onnx_export import check_export, missed_targets

    def check(stage):
        report = check_export(args.model, stage, texts, y_true, batch_size=args.batch_size, split=args.check_split)
        print(f"parity on {args.check_split} ({report['n']} offers): torch macro-F1 {report['torch']['macro_f1']:.4f}")
        for p in ("fp32", "int8"):
            if p in report:
                r = report[p]
                print(f"  {p}: agreement {r['agreement']:.4%}, macro-F1 {r['macro_f1']:.4f} "
                      f"({r['macro_f1_delta']:+.4f}), max |logit diff| {r['max_abs_logit_diff']:.2e}")
        missed = missed_targets(report)
        if missed:
            raise UserError(f"the export was not written to {args.out}: {'; '.join(missed)}")

    return check


def main(argv=None):
    args = build_parser().parse_args(argv)
    stay_offline()  # models come from their folders, never the hub
    if not 14 <= args.opset <= 21:  # what torch's exporter writes and onnxruntime runs
        raise UserError(f"--opset must be between 14 and 21, got {args.opset}")
    if args.batch_size < 1 or args.check_limit < 0:
        raise UserError("--batch_size must be at least 1 and --check_limit at least 0")
    check_model_out(args.out, [args.model, args.check_data], kinds=("onnx",))
    from category_classification.core.artifacts import read_model_info
    from category_classification.inference.onnx_export import export_staged

    check = None
    if args.check_data:  # read before the export: a wrong dataset or split costs nothing
        from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir

        dsd = load_dataset_dir(args.check_data)
        split = get_split(dsd, args.check_split)
        if args.check_limit:
            split = split.select(range(min(args.check_limit, len(split))))
        labels, data_labels = read_model_info(args.model)["labels"], label_names(dsd)
        if sorted(labels) != sorted(data_labels):  # its figures would score one class as another
            raise UserError(f"--check_data {args.check_data} has the labels {data_labels}, the model {labels}: "
                            "check on a dataset of the model's labels")
        check = parity_check(args, split["text"], [labels.index(data_labels[y]) for y in split["label"]])
    info = export_staged(args.model, args.out, check=check, quantize=args.quantize, opset=args.opset)
    print(f"{args.out}: kind onnx from {info['source_kind']}, files {info['files']}")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
