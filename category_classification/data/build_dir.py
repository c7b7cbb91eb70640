"""The builder's output folder: checked before any work, built beside --out and swapped in when complete.

A build killed at any point leaves the previous dataset intact; the next run removes its temp folder.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

from category_classification.core.cli import UserError

# What a build writes into --out besides the split folders named in dataset_dict.json.
OWN_FILES = {"dataset_dict.json", "build_report.json", "hierarchy.json", "PDC2020_map.tsv"}
MARKER = "builder.json"  # inside a temp folder: {"pid": ...}, so a later run knows it is ours
PREVIOUS = "previous"  # the old dataset, moved aside during the swap


def _own_entries(out: Path) -> set | None:
    """Names a dataset we wrote holds, or None when `out` is not one (no report + dataset_dict.json)."""
    try:
        splits = json.loads((out / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        report = json.loads((out / "build_report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(splits, list):
        return None
    # the optional files only where this build wrote them: a user's PDC2020_map.tsv put into a dataset
    # built with --map was deleted by the next build
    source = report.get("source") if isinstance(report.get("source"), dict) else {}
    optional = {"PDC2020_map.tsv": report.get("derived_map") == "PDC2020_map.tsv",
                "hierarchy.json": source.get("label_level") == "all"}
    return {n for n in OWN_FILES if optional.get(n, True)} | {str(s) for s in splits}


def check_out(out, inputs=()) -> Path:
    """Refuse, in one line and before any work, an --out that is a file, cannot be written, holds files
    this builder did not write, or holds an input."""
    out = Path(out).resolve()
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:  # the folder is replaced as a whole, which would pull it from under you
        raise UserError(f"--out {out} is or holds the current folder; give a folder beside it")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the dataset")
    for path in inputs:
        resolved, base = Path(path).resolve(), out.resolve()
        if resolved == base or base in resolved.parents:
            raise UserError(f"--out {out} holds the input {path}; choose another folder")
    if out.is_dir() and any(out.iterdir()):
        own = _own_entries(out)
        foreign = sorted(p.name for p in out.iterdir() if own is None or p.name not in own)
        if foreign:
            raise UserError(f"--out {out} holds files this builder did not write ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); choose an empty or new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder for --out {out}: {exc.strerror or exc}") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: folder {out.parent} is not writable")
    return out


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def clean_stale(out: Path) -> list[str]:
    """Remove temp folders of killed builds into `out` (ours: named .build-<out>-*, holding MARKER, their
    process gone). A build killed mid-swap left the old dataset in it: that is moved back first."""
    removed = []
    # escaped: an --out named like a pattern (ds[1]) never matched its own temp folders, so a dataset a kill
    # left in one was never moved back
    for tmp in out.parent.glob(f".build-{glob.escape(out.name)}-*"):
        try:
            marker = json.loads((tmp / MARKER).read_text(encoding="utf-8"))
            pid, owner = marker.get("pid"), marker.get("out")
        except (OSError, ValueError, AttributeError):
            continue  # not recognisably ours: leave it
        if not isinstance(owner, str) or os.path.abspath(owner) != os.path.abspath(out):
            continue  # a build into another --out whose name starts like this one (ds and ds-v2)
        if _alive(pid) and int(pid) != os.getpid():
            continue  # a build running now
        if not out.exists() and (tmp / PREVIOUS).is_dir():
            os.rename(tmp / PREVIOUS, out)
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return removed


class BuildDir:
    """`with BuildDir(out) as b:` work in b.tmp, write the dataset into b.dataset, then b.commit()."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def __enter__(self):
        import tempfile

        stale = clean_stale(self.out)
        if stale:
            print(f"removed {len(stale)} temp folder(s) of killed builds: {', '.join(stale)}", flush=True)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".build-{self.out.name}-", dir=self.out.parent))
        except OSError as exc:
            raise UserError(f"cannot write beside --out {self.out}: {exc.strerror or exc}") from None
        (self.tmp / MARKER).write_text(json.dumps({"pid": os.getpid(), "out": os.path.abspath(self.out)}) + "\n")
        self.dataset = self.tmp / "dataset"
        return self

    def commit(self) -> None:
        """Swap the finished dataset in: two renames in one folder; a kill between them is undone by
        the next run's clean_stale."""
        if self.out.exists():
            os.rename(self.out, self.tmp / PREVIOUS)
        os.rename(self.dataset, self.out)

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False
