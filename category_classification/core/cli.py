"""Shared command-line plumbing: user errors end in one line and exit code 2, never a traceback.

Scripts call `run(main)`; library code raises `UserError` for what a user can cause (a missing file,
a bad flag value) and lets every other exception propagate, since those are our bugs.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error the user caused and can fix: printed as one line, exit code 2."""


def require_file(path, what: str = "file"):
    """Return `path` as a Path, or raise UserError naming it when it is not an existing file."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():  # "not found" would send the user looking for a path that is there
        raise UserError(f"{what} {p} is a folder, not a file")
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


def require_dir(path, what: str = "directory"):
    """Return `path` as a Path, or raise UserError naming it when it is not an existing folder."""
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} is a file, not a folder")
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
    except BrokenPipeError:  # stdout piped into a reader that stopped (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    return int(code or 0)


def check_threads(threads) -> None:
    """--threads: None (the library's default) or 1 .. 4x this machine's cores (far more starts as many OS
    threads as asked, which can crash the process)."""
    most = 4 * (os.cpu_count() or 1)
    if threads is not None and not 1 <= threads <= most:
        raise UserError(f"--threads must be between 1 and {most} on this machine, got {threads}")


def add_eval_args(parser) -> None:
    """The evaluation flags every trainer shares (per-language metrics)."""
    g = parser.add_argument_group("evaluation")
    g.add_argument("--no_lang_metrics", action="store_true", help="skip per-language metrics")
    g.add_argument("--lang_min_samples", type=int, default=30,
                   help="a language needs this many test offers to get its own metrics")
    g.add_argument("--lang_top_k", type=int, default=10, help="report at most this many languages")


# One config pattern: a dataclass declares each setting once (default, help, choices, aliases in the field's
# metadata); these helpers turn it into argparse flags and the parsed flags back into the dataclass.


def option(default=None, help: str = "", **meta):
    """A dataclass field carrying its flag's help text and extras: choices=, aliases=("--old",), nargs=,
    const=, metavar=, group="model" (an argument group of that title), hidden=True (no help line),
    cli=False (not a flag)."""
    import dataclasses

    meta["help"] = help
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_type(hint):
    """(element type, is_sequence) of a type hint such as `int`, `float | None` or `tuple[str, ...]`."""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return (args[0] if args else str), True
    if args and origin is not None:  # Optional[X] / X | None
        return _field_type(args[0])
    return hint, False


def add_dataclass_args(parser, cls, defaults=None, required: Sequence[str] = ()) -> None:
    """Add one flag per field of dataclass `cls` to `parser` (or an argument group).

    Defaults come from `defaults` (an instance, or a dict of field values) over the field defaults; a bool
    field gets `--name` and `--no_name`; fields named in `required` are required unless a default is given.
    """
    import argparse
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    given = defaults if isinstance(defaults, dict) else dataclasses.asdict(defaults) if defaults else {}
    groups = {}
    root = parser
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if meta.get("cli", True) is False:
            continue
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = root.add_argument_group(meta["group"])
            parser = groups[meta["group"]]
        else:
            parser = root
        if f.name in given:
            default = given[f.name]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = argparse.SUPPRESS if meta.get("hidden") else meta.get("help") or None
        names = [f"--{f.name}", *meta.get("aliases", ())]
        kind, many = _field_type(hints[f.name])
        if kind is bool:
            parser.add_argument(*names, dest=f.name, action="store_true", default=default, help=help_text)
            parser.add_argument(f"--no_{f.name}", dest=f.name, action="store_false",
                                help=argparse.SUPPRESS if help_text == argparse.SUPPRESS else None)
            continue
        kwargs = {"dest": f.name, "default": default, "help": help_text, "type": kind}
        if many:
            kwargs["nargs"] = meta.get("nargs", "+")
        for key in ("choices", "nargs", "const", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        if f.name in required and default in (None, ""):
            kwargs.update(required=True, default=None)
        parser.add_argument(*names, **kwargs)


def dataclass_from_args(cls, args):
    """An instance of dataclass `cls` from an argparse namespace (or dict): fields missing from it keep
    their defaults, other keys are ignored; sequences given with nargs become the field's type."""
    import dataclasses

    values = args if isinstance(args, dict) else vars(args)
    kept = {}
    for f in dataclasses.fields(cls):
        if f.name in values and f.init:
            v = values[f.name]
            kept[f.name] = tuple(v) if isinstance(v, list) and "tuple" in str(f.type) else v
    return cls(**kept)


def parse_with_preset(parser, argv, presets: dict, dest: str = "preset"):
    """Parse `argv` so that field defaults < the chosen preset < flags given explicitly."""
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**presets[getattr(first, dest)])
    return parser.parse_args(argv)


def check_settings(cfg, whole=(), positive=(), non_negative=(), shares=(), seeds=()) -> None:
    """One line (UserError) for the first impossible setting of a config: `whole` fields are integers >= 1,
    `positive` finite numbers > 0, `non_negative` finite numbers >= 0, `shares` numbers in [0, 1), `seeds`
    whole numbers numpy and torch accept as a seed (0 .. 2**32 - 1: others are a ValueError mid-run); a field
    set to None (left to a default chosen later) is not checked. Called before any work, so an impossible
    setting never trains into a saved, broken model."""
    import math

    def value(name):
        return getattr(cfg, name)

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for name in whole:
        v = value(name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise UserError(f"--{name} must be a whole number of at least 1, got {v!r}")
    for name in positive:
        v = value(name)
        if v is not None and not (number(v) and v > 0):
            raise UserError(f"--{name} must be a positive number, got {v!r}")
    for name in non_negative:
        v = value(name)
        if v is not None and not (number(v) and v >= 0):
            raise UserError(f"--{name} must be a number of at least 0, got {v!r}")
    for name in shares:
        v = value(name)
        if v is not None and not (number(v) and 0 <= v < 1):
            raise UserError(f"--{name} must be at least 0 and below 1, got {v!r}")
    for name in seeds:
        v = value(name)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**32 - 1):
            raise UserError(f"--{name} must be a whole number between 0 and {2**32 - 1}, got {v!r}")
    check_device(getattr(cfg, "device", None))
    threads = getattr(cfg, "threads", None)
    check_threads(threads or None)  # 0: the library's default
    if threads is not None and threads < 0:
        raise UserError(f"--threads must be 0 (the default) or more, got {threads}")


DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def check_names(flag: str, given, known, what: str, prefix: bool = False) -> None:
    """A UserError naming every value given to `flag` that is none of `known` (with `prefix`: that begins none
    of them), or when none is given: a typo would otherwise run nothing, or everything, after minutes."""
    given, known = list(given), list(known)
    bad = [g for g in given if not any(k.startswith(g) if prefix else k == g for k in known)]
    if bad or not given:
        raise UserError(f"{flag} {', '.join(map(repr, bad)) or '(nothing)'}: unknown {what}; known: "
                        + "; ".join(known))


def check_device(device) -> None:
    """--device: auto, cpu, cuda, mps, or cuda:N."""
    if device is None:
        return
    name, _, index = str(device).partition(":")
    if name not in DEVICE_NAMES or (index and not (name == "cuda" and index.isdigit())):
        raise UserError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
