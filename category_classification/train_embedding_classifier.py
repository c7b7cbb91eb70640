"""Train the from-scratch encoder classifier on a built dataset; the best epoch by validation macro-F1 is kept.

    python category_classification/train_embedding_classifier.py --data runs/mwpd6 --out runs/encoder --preset small
    torchrun --nproc_per_node 2 category_classification/train_embedding_classifier.py --data ... --out ...
"""

import argparse
import sys

from category_classification.core.cli import (add_dataclass_args, add_eval_args, dataclass_from_args,
                                               parse_with_preset, run)
from category_classification.training.encoder import PRESETS, V2_DEFAULTS, EncoderTrainConfig  # noqa: F401


def build_parser(defaults: dict | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataclass_args(p, EncoderTrainConfig, defaults, required=("data", "out"))
    add_eval_args(p)
    return p


def parse_args(argv=None, defaults: dict | None = None) -> argparse.Namespace:
    """Field defaults < entry-point defaults (v2) < the preset < flags given explicitly."""
    return parse_with_preset(build_parser(defaults), argv, PRESETS)


def main(argv=None, defaults: dict | None = None):
    from category_classification.evaluation.metrics import eval_options
    from category_classification.training.encoder import train

    args = parse_args(argv, defaults)
    return train(dataclass_from_args(EncoderTrainConfig, args), eval_options(args))


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
