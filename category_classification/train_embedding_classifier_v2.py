"""The seed's v2 trainer name: train_embedding_classifier.py with the residual head and label smoothing."""

import sys

from category_classification.core.cli import run
from category_classification.train_embedding_classifier import V2_DEFAULTS
from category_classification.train_embedding_classifier import main as train_main


def main(argv=None):
    return train_main(argv, defaults=V2_DEFAULTS)


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
