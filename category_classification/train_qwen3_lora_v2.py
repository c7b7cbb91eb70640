"""train_qwen3_lora.py with the v2 defaults: r=32, alpha=64, micro-batch 16 x accumulation 32, cosine,
warmup 0.05, max_grad_norm 0.5. Every flag can still be overridden."""

import sys

from category_classification.core.cli import run
from category_classification.models.lora import V2_DEFAULTS
from category_classification.train_qwen3_lora import main as train_main


def main(argv=None):
    return train_main(argv, defaults=V2_DEFAULTS)


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
