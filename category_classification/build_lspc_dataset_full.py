"""The seed's build_lspc_dataset_full.py: build_lspc_dataset.py with --full (a split holding every record)."""

if __package__ in (None, ""):  # run as a file: import the package, not the script's folder
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import sys

from category_classification import build_lspc_dataset
from category_classification.cli import run


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_lspc_dataset.main(argv if "--full" in argv else argv + ["--full"])


if __name__ == "__main__":
    sys.exit(run(main))
