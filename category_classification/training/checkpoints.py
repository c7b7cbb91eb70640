"""Checkpoints that belong to their run: each records the settings that change the result and a fingerprint
of the data, so a resume with other settings is refused and a new run never deletes or adopts another's."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from category_classification.core.cli import UserError

RUN_FILE = "run.json"  # the record of the run whose checkpoints are in the folder
CHECKPOINT_GLOB = "checkpoint-epoch*.pt"
REQUIRED_KEYS = ("model", "optimizer", "scaler", "rng", "epoch", "step", "best", "history")


def data_fingerprint(data_dir, labels) -> str:
    """A hash of the dataset folder (its JSON metadata in full, every other file by name and size) and the
    label names: it changes when the dataset is rebuilt differently, without reading the Arrow data."""
    h = hashlib.sha1(json.dumps(list(labels)).encode())
    root = Path(data_dir)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


def run_record(settings: dict, data_fp: str) -> dict:
    """What a run is made from: its result-changing settings and data fingerprint, with their hash."""
    body = {"settings": settings, "data": data_fp}
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return {**body, "fingerprint": digest}


def differences(mine: dict, theirs: dict) -> list[str]:
    """Human-readable differences between two run records ("lr 0.0003 -> 0.001", "the data")."""
    a, b = theirs.get("settings", {}), mine.get("settings", {})
    out = [f"{k} {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    if theirs.get("data") is not None and theirs.get("data") != mine.get("data"):
        out.append("the data")
    return out


def read_checkpoint(path) -> dict:
    """A checkpoint dict, or one clear UserError for a missing, truncated or foreign file."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        # the checkpoint holds numpy/python RNG states, so it is not a weights-only file
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"cannot read checkpoint {p}: truncated or not a checkpoint "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{p} is not a training checkpoint (missing {', '.join(missing)})")
    return ckpt


def epoch_weights(path, model_run: dict | None, model_dir) -> dict:
    """The model weights of training checkpoint `path`, for the model folder whose run record is `model_run`
    (train_info.json): a checkpoint of another run (a retraining into the folder killed before it saved, a
    file copied in) holds weights for another tokenizer or shape, so it is refused in one line, never loaded
    into this folder's tokenizer and config."""
    ckpt = read_checkpoint(path)
    theirs = ckpt.get("run")
    if model_run and theirs and model_run.get("fingerprint") != theirs.get("fingerprint"):
        diff = differences(model_run, theirs) or ["unknown settings"]
        raise UserError(f"checkpoint {path} was made by another training run than the model in {model_dir} "
                        f"({'; '.join(diff)}): its weights do not go with that folder's tokenizer and config")
    return ckpt["model"]


def record_of(ckpt: dict, settings_keys) -> dict:
    """The run record stored in a checkpoint; for one written before records existed, its flags (no data
    fingerprint), so a resume can still be checked against the settings."""
    if "run" in ckpt:
        return ckpt["run"]
    args = ckpt.get("args") or {}
    return {"settings": {k: args[k] for k in settings_keys if k in args}, "data": None}


def check_same_run(record: dict, theirs: dict, what) -> None:
    diff = differences(record, theirs)
    if diff:
        raise UserError(f"{what} was made by another run ({'; '.join(diff)}): resume only with the same "
                        "settings and data, or start a new run without --resume")


def folder_record(ckpt_dir: Path, settings_keys) -> dict | None:
    """The record of the run owning `ckpt_dir`: run.json, else (older folders) its newest checkpoint's flags;
    an unreadable one counts as a foreign run."""
    run_file = ckpt_dir / RUN_FILE
    if run_file.is_file():
        try:
            return json.loads(run_file.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return {"settings": {}, "data": "unreadable", "fingerprint": "unreadable"}
    newest = latest_checkpoint(ckpt_dir)
    if newest is None:
        return None
    try:
        return record_of(read_checkpoint(newest), settings_keys)
    except UserError:
        return {"settings": {}, "data": "unreadable", "fingerprint": "unreadable"}


def latest_checkpoint(directory) -> Path | None:
    found = []
    for p in Path(directory).glob(CHECKPOINT_GLOB):
        try:
            found.append((int(p.stem.removeprefix("checkpoint-epoch")), p))
        except ValueError:
            continue
    return max(found)[1] if found else None


def checkpoint_to_resume(resume: str | None, ckpt_dir: Path, record: dict, settings_keys, log=print):
    """(path, checkpoint) to resume from, or (None, None) for a fresh start. `--resume auto` takes the newest
    in the run's folder and refuses one made by another run, naming what differs; so does a named file."""
    if not resume:
        return None, None
    path = latest_checkpoint(ckpt_dir) if resume == "auto" else Path(resume)
    if path is None:
        log("no checkpoint to resume from; starting fresh")
        return None, None
    ckpt = read_checkpoint(path)
    check_same_run(record, record_of(ckpt, settings_keys), f"checkpoint {path}")
    return path, ckpt


def claim_folder(ckpt_dir: Path, record: dict, settings_keys, log=print) -> None:
    """Make `ckpt_dir` this run's: another run's checkpoints there are moved, untouched, into
    `earlier-<its fingerprint>/` beside them (never deleted, never resumed); then run.json names this run."""
    owner = folder_record(ckpt_dir, settings_keys) if ckpt_dir.is_dir() else None
    if owner is not None and (owner.get("fingerprint") != record["fingerprint"] or owner.get("data") is None):
        diff = differences(record, owner) or ["unknown settings"]
        keep = ckpt_dir / f"earlier-{owner.get('fingerprint') or 'run'}-{time.strftime('%Y%m%d%H%M%S')}"
        keep.mkdir(parents=True, exist_ok=True)
        moved = 0
        for p in list(ckpt_dir.glob(CHECKPOINT_GLOB)) + [ckpt_dir / "best_model.pt", ckpt_dir / RUN_FILE]:
            if p.is_file():
                os.replace(p, keep / p.name)
                moved += 1
        log(f"{ckpt_dir} held {moved} file(s) of another run ({'; '.join(diff)}): moved to {keep}, untouched")
    from category_classification.core.artifacts import write_text_atomic

    write_text_atomic(ckpt_dir / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")


def prune(own: list[Path], keep: int) -> list[Path]:
    """Delete all but the newest `keep` of the checkpoints this run wrote (0 keeps all); others are never
    touched. Returns the ones kept."""
    if keep <= 0 or len(own) <= keep:
        return own
    for old in own[:-keep]:
        old.unlink(missing_ok=True)
    return own[-keep:]
