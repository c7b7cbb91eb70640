"""The seed's build_lspc_dataset_full.py: build_lspc_dataset.py with --full (a split holding every record)."""

import sys

from category_classification import build_lspc_dataset
from category_classification.core.cli import run


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_lspc_dataset.main(argv if "--full" in argv else argv + ["--full"])


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
