"""Fine-tune a Hugging Face model (Qwen3-Embedding-0.6B by default) for offer classification with LoRA.

Writes the adapter and head, merged/ (a plain transformers model), metrics and results files.
Settings not given are chosen by the model's size and printed (docs/lora.md).
Runs unchanged under `torchrun --nproc_per_node N` and `accelerate launch` (see docs/lora.md).
"""

import argparse
import sys

from category_classification.core.cli import add_eval_args, run
from category_classification.models.lora import LoraTrainConfig, add_train_args, config_from_args


def build_parser(defaults: LoraTrainConfig | None = None, description: str | None = None):
    parser = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    add_train_args(parser, defaults)
    add_eval_args(parser)
    return parser


def main(argv=None, defaults: LoraTrainConfig | None = None):
    from category_classification.evaluation.metrics import eval_options, format_metrics
    from category_classification.training.lora import train

    args = build_parser(defaults).parse_args(argv)
    result = train(config_from_args(args), eval_options(args))
    if result:  # empty on the non-main processes of a distributed run
        print(f"trained in {result['train_seconds']:.1f}s; validation macro_f1="
              f"{result['validation']['macro_f1']:.4f} accuracy={result['validation']['accuracy']:.4f}")
        if "test" in result:  # a dataset without test offers has no test figures
            print(format_metrics(result["test"], result["labels"], title="[test]"))
        print(f"model written to {args.out} (merged model in {args.out}/merged)")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
