"""The file that makes a trained model directory self-describing: `category_model.json`.

Every trainer writes it; models/registry.py reads it to pick the right loader (the kinds are listed there),
so any output directory can be used for prediction, evaluation and serving without flags saying what it holds.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from category_classification.core.cli import UserError

MODEL_INFO = "category_model.json"
# The builder's settings that shape a model's input text (build_report.json "config"): prediction paths that
# build text from title + description (+ breadcrumb) fields must use the trained values (text_settings below).
TEXT_SETTINGS = ("max_description_chars", "breadcrumb")


def dataset_text_settings(data_dir) -> dict:
    """TEXT_SETTINGS as the dataset at `data_dir` was built with them ({} when it has no build report)."""
    from category_classification.data.dataset_dir import build_report

    config = build_report(data_dir).get("config")
    return {k: config[k] for k in TEXT_SETTINGS if isinstance(config, dict) and k in config}


def write_model_info(model_dir, kind: str, labels, data=None, **extra) -> Path:
    """Write `category_model.json`: kind, labels and whatever the loader of that kind needs. `data`, the
    training dataset's folder, is recorded with the text settings it was built with."""
    if not isinstance(kind, str) or not kind.isidentifier():  # the registry checks it is known, on load
        raise ValueError(f"a model kind is a name, not {kind!r}")
    path = Path(model_dir) / MODEL_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    from_data = {"data": str(data), **dataset_text_settings(data)} if data is not None else {}
    info = {"kind": kind, "labels": list(labels),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **from_data, **extra}
    path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _our_leftover(name: str) -> bool:
    """What a killed trainer leaves in its --out: staged saves, LoRA's run folder, renamed-aside files."""
    return name.startswith((".save-", ".checkpoints-")) or (name.startswith(".") and (".old" in name or ".tmp" in name))


def _is_inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _overlap(a, b) -> bool:
    """Whether one of two paths is, or lies inside, the other (symlinks resolved)."""
    a, b = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return _is_inside(a, b) or _is_inside(b, a)


def check_apart(out, sources: dict) -> None:
    """Refuse an --out that is, holds or lies inside a local model folder the run reads (`sources`: flag ->
    value, e.g. {"--model": ...}; symlinks resolved): a backbone inside --out (an earlier run's merged/) is
    trained over its own base and the save replaces or removes the folder it was read from. A value that is
    no local path (a hub id, None) is nothing to lose here."""
    target = Path(out).expanduser().resolve()
    for flag, src in sources.items():
        if src is None or not str(src).strip() or not Path(str(src)).expanduser().exists():
            continue
        folder = Path(str(src)).expanduser().resolve()
        if _overlap(folder, target):
            where = ("is" if folder == target else "lies inside" if _is_inside(folder, target) else "holds")
            raise UserError(f"{flag} {src} {where} --out {out}: the save would write over the model the run reads; "
                            "name an --out apart from it")


def check_model_out(out, inputs=(), kinds=None, sources=None) -> Path:
    """Refuse, before any work, a model --out that would lose something: a file, a folder that is or holds an
    input (the dataset, a member model), one that is, holds or lies inside a model folder the run reads
    (`sources`: check_apart), a folder holding files no trainer of ours wrote (ours: a model folder, or a
    run's checkpoints to resume from), a model folder of a kind this tool does not write (`kinds`: an export
    never replaces a trained model), or one that cannot be written. Returns it as a Path."""
    import tempfile

    check_apart(out, sources or {})
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; a model is a folder: name a new one")
    try:  # a model whose save was killed midway is put back first, so the checks below see it
        restore_interrupted_publish(out)
    except OSError:
        pass
    for src in inputs:
        if src is not None and _overlap(out, src):
            raise UserError(f"--out {out} is or holds the input {src}; name a folder of its own")
    if out.is_dir() and any(out.iterdir()):
        ours = ((out / MODEL_INFO).is_file() or (out / "checkpoints").is_dir()
                or any(_our_leftover(p.name) for p in out.iterdir()))
        if not ours:
            raise UserError(f"--out {out} holds files a trainer did not write; name a new or empty folder")
        if kinds is not None and (out / MODEL_INFO).is_file():
            try:
                found = json.loads((out / MODEL_INFO).read_text(encoding="utf-8")).get("kind")
            except (OSError, ValueError, UnicodeDecodeError, AttributeError):
                found = None
            if found not in kinds:
                found = str(found) if found else "damaged"
                raise UserError(f"--out {out} holds {'an' if found[0] in 'aeiou' else 'a'} {found} model, which this "
                                f"tool does not write ({' / '.join(kinds)}); name a new or empty folder")
    probe = out.resolve()
    while not probe.exists():  # nothing is created here: a run that stops on a later error leaves no folder
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.TemporaryFile(dir=probe):  # the one reliable test of writability (root ignores modes)
            pass
    except OSError as exc:
        raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    return out


def read_model_info(model_dir) -> dict:
    """category_model.json of `model_dir`; missing, damaged or without kind and labels: a UserError."""
    path = Path(model_dir) / MODEL_INFO
    if not path.is_file():
        why = ""
        try:  # a save killed while it moved its files in: the previous model goes back first
            restore_interrupted_publish(model_dir)
        except OSError as exc:
            why = f": {exc.strerror or exc}"
        if not path.is_file() and Path(model_dir).is_dir() and any(Path(model_dir).glob(PUBLISH_BACKUP + "*")):
            raise UserError(f"{model_dir} has no {MODEL_INFO}: a save into it is still moving its files in, or "
                            f"was killed and its previous model (kept in {PUBLISH_BACKUP}*) could not be put back"
                            f"{why}; run again when the save ends, with write access to the folder")
    if not path.is_file():
        raise UserError(f"{model_dir} is not a trained model directory (no {MODEL_INFO})")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{model_dir}: {MODEL_INFO} is damaged (not JSON: {exc}); retrain or re-export "
                        "the model") from None
    labels = info.get("labels") if isinstance(info, dict) else None
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
            and isinstance(info.get("kind"), str)):
        raise UserError(f"{model_dir}: {MODEL_INFO} is damaged (it needs a kind and a list of labels)")
    return info


def _info_of(info_or_dir) -> dict:
    if isinstance(info_or_dir, dict):
        return info_or_dir
    try:
        return read_model_info(info_or_dir)
    except UserError:  # a folder that is not a model is reported by its loader
        return {}


def description_chars(info_or_dir) -> int:
    """The description length (characters) a model's texts were built with: category_model.json
    "max_description_chars" (of a model folder, or of its info already read), else the builder's default
    (models trained before it was recorded)."""
    from category_classification.data.text import DEFAULT_MAX_DESCRIPTION_CHARS

    value = _info_of(info_or_dir).get("max_description_chars")
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else DEFAULT_MAX_DESCRIPTION_CHARS


def text_settings(info_or_dir) -> dict:
    """Every TEXT_SETTINGS value a model's texts were built with, as keyword arguments of the prediction
    readers: "breadcrumb" is True only when category_model.json says so (models of datasets without it,
    and LSPC ones, were trained on title + description); "fielded" for a fielded_linear model (or an
    ensemble of them), whose texts carry the breadcrumb and URL words behind markers (models/fielded.py)."""
    info = _info_of(info_or_dir)
    return {"max_description_chars": description_chars(info), "breadcrumb": info.get("breadcrumb") is True,
            "fielded": info.get("kind") == "fielded_linear" or info.get("fielded") is True}


def refuse_inside(flag: str, out, folders) -> None:
    """A UserError when `out` is, or lies inside, one of `folders` (a model, a dataset): a tool's output
    never replaces a file of its inputs."""
    target = Path(out).resolve()
    for folder in folders:
        if folder is not None and _is_inside(target, Path(folder).resolve()):
            raise UserError(f"{flag} {out} is or lies inside the model or dataset {folder}; name a place of its own")


def check_file_out(out, inputs=(), ours=lambda path: False, what: str = "output", folders=(),
                   flag: str = "--out") -> Path:
    """Refuse, before any work, a single-file --out that would lose something: a folder or special file,
    an input (by any spelling) or a path inside one of the input `folders`, or an existing file `ours(path)`
    does not recognise as an earlier output of the same tool; or one that cannot be written. Nothing is
    created here. `flag` names the option in the messages."""
    import tempfile

    refuse_inside(flag, out, folders)
    out = Path(out)
    if out.exists() and not out.is_file():
        raise UserError(f"{flag} {out} exists and is not a regular file; name a file for the {what}")
    for src in inputs:
        if src is None:
            continue
        src = Path(src)
        if (out.exists() and src.exists() and os.path.samefile(out, src)) or out.resolve() == src.resolve():
            raise UserError(f"{flag} {out} is the input {src}: writing it would destroy the input")
    if out.is_file() and out.stat().st_size and not ours(out):
        raise UserError(f"{flag} {out} exists and is not an earlier {what}; name a new file")
    probe = out.absolute().parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {flag} {out}: {exc.strerror or exc}") from None
    return out


def check_results_folder(out, results_file: str, keys, script: str, inputs=(), folders=()) -> Path:
    """A bench's --out folder, refused before any work when it is a file, lies inside one of `folders` (the
    bundled data), or holds a `results_file` that is an input or not an earlier one of `script` (a JSON
    object with `keys`). Returns OUT/results_file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; {script} writes a folder ({results_file}, ...): name a new one")
    refuse_inside("--out", out, folders)
    return check_file_out(out / results_file, inputs, lambda p: json_file_with_keys(p, keys),
                          what=f"{results_file} of {script}")


@contextmanager
def written_whole(path):
    """`with written_whole(path) as tmp:` write the file `tmp` (beside `path`, with its suffix, so writers
    that pick a format by suffix keep it); it is renamed to `path` when the block ends, so readers see the
    old file or the new one whole. A failed write removes `tmp`; an OSError is one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    """Write `text` beside `path` and rename it into place: readers see the old file or the new one whole."""
    with written_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def link_identical_files(src, dst) -> int:
    """Replace each file under `dst` whose bytes equal the file at the same place under `src` by a hard link
    to it (the GS1 levels' copies of one encoder: one copy on disk instead of three). Only for files a save
    has just written into its stage and never rewrites in place; where links are not possible the copy
    stays. Returns the bytes saved."""
    import filecmp

    saved = 0
    src, dst = Path(src), Path(dst)
    for f in sorted(p for p in dst.rglob("*") if p.is_file() and not p.is_symlink()):
        twin = src / f.relative_to(dst)
        if not twin.is_file() or twin.is_symlink() or twin.stat().st_size != f.stat().st_size \
                or os.path.samefile(twin, f) or not filecmp.cmp(twin, f, shallow=False):
            continue
        tmp = f.with_name(f".{f.name}.link{os.getpid()}")
        try:
            os.link(twin, tmp)
            os.replace(tmp, f)
            saved += f.stat().st_size
        except OSError:
            tmp.unlink(missing_ok=True)
    return saved


def json_file_with_keys(path, keys) -> bool:
    """True when `path` holds a JSON object with every one of `keys` (how a tool knows its own output)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in keys)


def jsonl_first_line_has(path, keys) -> bool:
    """True when the first line of `path` is a JSON object with every one of `keys` (a JSONL output of ours)."""
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.readline(1 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in keys)


PUBLISH_BACKUP = ".published.old"  # + pid: the files a publish replaces, kept until its last rename
INCOMING = ".incoming.json"  # in a backup: the names a publish moves in that `out` lacked (a restore removes them)
READER_WAIT_S = 10.0  # how long a loader waits for a save that is moving its files in


def _pid_is_gone(pid: str) -> bool:
    """True when the process `pid` (decimal text) has ended; False for a live one, ours or unknowable."""
    if not pid.isdecimal() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        pass
    return False


def _open_folder(folder) -> int | None:
    """A read-only descriptor of `folder` to flock, or None where there are no locks (not POSIX: no fcntl)
    or no such folder."""
    if os.name != "posix":
        return None
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


@contextmanager
def _publish_lock(out: Path, wait_s: float | None, shared: bool = False):
    """Hold the publish lock of the folder `out`: an flock on the folder itself, dropped by the kernel when
    its holder dies (a pid is reused, in a container every run is pid 1; a lock never outlives its process).
    Yields True when held, False when a live publish still held it after `wait_s` seconds (None: wait as long
    as it takes), None where the file system has no locks (then a backup's pid tells whether it is stale)."""
    fd = _open_folder(out)
    if fd is None:
        yield None
        return
    import fcntl

    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                            | (0 if deadline is None else fcntl.LOCK_NB))
                held = True
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                held = False
            except OSError:  # a file system without flock (some network mounts)
                held = None
            break
        yield held
    finally:
        os.close(fd)


def publish_dir(staging, out) -> Path:
    """Move every file and folder of `staging` into `out`, each by a rename, and remove `staging`: a reader
    never sees a half-written file. What a staged item replaces is first moved into a backup folder
    (PUBLISH_BACKUP + pid), removed after the last rename; a run killed between the renames leaves the
    previous model there, and restore_interrupted_publish puts it back. Publishes into one folder take turns
    (its publish lock), so two saves racing never leave a mixture of their files."""
    import shutil

    staging, out = Path(staging), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the model info goes last and the old one leaves first: no reader ever loads old weights under a new
    # info or new weights under an old one
    items = sorted(staging.iterdir(), key=lambda p: (p.name == MODEL_INFO, p.name))
    if any(i.name.startswith(PUBLISH_BACKUP) for i in items):  # it would later pass for a killed save's backup
        raise ValueError(f"{staging} holds a {PUBLISH_BACKUP}* item; a model never publishes one")
    with _publish_lock(out, None) as held:
        _restore(out, locked=bool(held))  # a killed save's backup first: it could bear our pid
        backup = out / f"{PUBLISH_BACKUP}{os.getpid()}"
        backup.mkdir()
        replaced = sorted((out / i.name for i in items if os.path.lexists(out / i.name)),
                          key=lambda p: p.name != MODEL_INFO)
        new_only = sorted({i.name for i in items} - {p.name for p in replaced})
        (backup / INCOMING).write_text(json.dumps(new_only), encoding="utf-8")
        for old in replaced:
            os.replace(old, backup / old.name)
        for item in items:
            os.replace(item, out / item.name)
        shutil.rmtree(backup, ignore_errors=True)
    staging.rmdir()
    return out


def restore_interrupted_publish(out, wait_s: float | None = READER_WAIT_S) -> list[str]:
    """Undo what a publish_dir killed midway did in `out` (its process gone): when `out` has no model info,
    the files it had moved aside go back, replacing the new ones it had moved in; when the new model info
    is there, the publish had finished and only its backup is removed. A publish still running is waited
    for (`wait_s` seconds at most, None: as long as it takes), then left alone. Returns the names put back."""
    out = Path(out)
    if not out.is_dir() or not any(out.glob(PUBLISH_BACKUP + "*")):
        return []
    with _publish_lock(out, wait_s) as held:
        return [] if held is False else _restore(out, locked=bool(held))


@contextmanager
def reading_model(model_dir, wait_s: float = READER_WAIT_S):
    """Hold the folder's publish lock shared while a loader reads a model's files: a save never finishes
    moving its files in between the loader reading the model info and the weights it names (old info with
    new weights). A killed save is put back first; a publish still running after `wait_s` is not waited for."""
    try:
        restore_interrupted_publish(model_dir, wait_s)
    except OSError:
        pass  # read_model_info names the backup that could not be put back
    path = Path(model_dir)
    if not path.is_dir():
        yield
        return
    with _publish_lock(path, wait_s, shared=True):
        yield


def _restore(out: Path, locked: bool) -> list[str]:
    """restore_interrupted_publish's work; `locked`: the caller holds the folder's publish lock, so every
    backup in it is a dead publish's (else a backup's pid must be gone)."""
    import shutil

    restored: list[str] = []
    for backup in sorted(out.glob(PUBLISH_BACKUP + "*")):
        if backup.is_symlink() or not backup.is_dir() or not (
                locked or _pid_is_gone(backup.name.removeprefix(PUBLISH_BACKUP))):
            continue
        if not (out / MODEL_INFO).is_file():
            try:  # what the killed publish moved in that the previous model did not have goes too
                incoming = json.loads((backup / INCOMING).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                incoming = []
            for name in incoming if isinstance(incoming, list) else []:
                new = out / str(name)
                if Path(str(name)).name != str(name) or not os.path.lexists(new):
                    continue
                if new.is_dir() and not new.is_symlink():
                    shutil.rmtree(new)
                else:
                    new.unlink()
            for old in sorted(backup.iterdir(), key=lambda p: p.name == MODEL_INFO):
                if old.name == INCOMING:
                    continue
                dest = out / old.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                os.replace(old, dest)
                restored.append(old.name)
        shutil.rmtree(backup, ignore_errors=True)
    return restored


def _try_lock(folder: Path) -> int | None:
    """An open descriptor of `folder` holding an exclusive flock on it (kept until closed, dropped by the
    kernel when its process dies); None when a live process holds it or it cannot be locked. Callers ask
    only where the folder above it could be locked, so None means "held"."""
    fd = _open_folder(folder)
    if fd is None:
        return None
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


# a save's stage: `.save-<pid>-<8 hex digits>` (one per save, so two saves of one pid, threads or two
# containers' pid 1, never share one); `.save-<pid>` from before. Nothing else is ever taken for a stage.
STAGE_NAME = re.compile(r"\.save-(\d+)(?:-[0-9a-f]{8})?")


def remove_stale_stages(out: Path, locks: bool = False) -> None:
    """Remove the stage folders left in `out` by saves that were killed. With `locks` (the caller holds the
    folder's publish lock, under which every save makes and locks its stage) a stage is stale when no live
    save holds its lock, whatever its pid (pids are reused: every container run is pid 1); otherwise, or
    where the file system has no locks, when its pid is gone. Links and files are never stages."""
    import shutil

    for p in out.glob(".save-*") if out.is_dir() else []:
        name = STAGE_NAME.fullmatch(p.name)
        if name is None or p.is_symlink() or not p.is_dir():
            continue
        if locks:
            fd = _try_lock(p)
            if fd is None:  # a live save holds it
                continue
            os.close(fd)
        elif not _pid_is_gone(name.group(1)):
            continue
        shutil.rmtree(p, ignore_errors=True)


def save_staged(model_dir, write, results=None) -> Path:
    """`write(stage)` writes a model and `results(stage)` (optional) a trainer's figures into a stage of
    `model_dir` (staged_folder): both are moved in together, so figures never sit beside another model."""
    with staged_folder(model_dir) as stage:
        write(stage)
        if results is not None:
            results(stage)
    return Path(model_dir)


@contextmanager
def staged_folder(out):
    """`with staged_folder(out) as stage:` write a model into `stage` (a folder inside `out`, so every move
    is a rename on one file system); when the block ends, each file is moved into `out` (publish_dir).
    A save killed or failing midway leaves the previous model whole and the user's own files untouched;
    an exception removes the stage, a killed process's stage is removed by the next save."""
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".save-{os.getpid()}-{secrets.token_hex(4)}"
    # under the folder's lock: a killed save put back first, and no other save judges our stage stale
    # between its mkdir and its lock
    with _publish_lock(out, wait_s=None) as held:
        _restore(out, locked=bool(held))
        remove_stale_stages(out, locks=held is True)
        stage.mkdir()
        stage_lock = _try_lock(stage) if held else None
    try:
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        publish_dir(stage, out)
    finally:
        if stage_lock is not None:
            os.close(stage_lock)
