"""The seed's v2 trainer name: train_embedding_classifier.py with the residual head and label smoothing."""

if __package__ in (None, ""):  # run as a file: import the package, not the script's folder
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import sys

from category_classification.cli import run
from category_classification.train_embedding_classifier import V2_DEFAULTS
from category_classification.train_embedding_classifier import main as train_main


def main(argv=None):
    return train_main(argv, defaults=V2_DEFAULTS)


if __name__ == "__main__":
    sys.exit(run(main))
