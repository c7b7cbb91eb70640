"""Shared command-line plumbing: user errors end in one line and exit code 2, never a traceback.

Scripts call `run(main)`; library code raises `UserError` for what a user can cause (a missing file,
a bad flag value) and lets every other exception propagate, since those are our bugs.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error the user caused and can fix: printed as one line, exit code 2."""


def require_file(path, what: str = "file"):
    """Return `path` as a Path, or raise UserError naming it when it is not an existing file."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


def require_dir(path, what: str = "directory"):
    from pathlib import Path

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{what} not found: {p}")
    return p


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call `main(argv)`; turn UserError into `error: ...` on stderr and exit code 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def add_eval_args(parser) -> None:
    """The evaluation flags every trainer shares (per-language metrics)."""
    g = parser.add_argument_group("evaluation")
    g.add_argument("--no_lang_metrics", action="store_true", help="skip per-language metrics")
    g.add_argument("--lang_min_samples", type=int, default=30,
                   help="a language needs this many test offers to get its own metrics")
    g.add_argument("--lang_top_k", type=int, default=10, help="report at most this many languages")
