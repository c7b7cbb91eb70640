"""The main job on the bundled real data (`make demo`): build, train, evaluate, compare, classify.

Builds two datasets from data/mwpd (train file -> train/validation, the official 3,000-offer validation
file -> test): the 6 classes alone, and the 6 classes plus every other offer as `Other`. Trains the fast
linear default on both (refit on train + validation), optionally the small encoder, prints the closed
6-class figures beside the open-set ones and classifies example titles, some from other categories.
Every folder it writes is checked before any work; a step finished from the same inputs by the same code is
not run again (demo_steps.json in --runs records them), so a killed demo resumes where the kill came.
"""

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

from category_classification.core.cli import UserError, require_file, run

REPO = Path(__file__).resolve().parents[1]
# Written before any model was trained and never changed to suit one: plainly classifiable titles of the
# six classes, and products of other categories that a crawl is full of.
EXAMPLES = [
    "Michelin Pilot Sport 4 225/45 R17 94Y summer tyre",
    "Pampers Baby-Dry nappies size 4, 9-14 kg, 174 pack",
    "The Hobbit by J.R.R. Tolkien, paperback, 320 pages",
    "Levi's 501 Original Fit men's jeans, stonewash blue",
    "14k white gold diamond stud earrings 0.50 ct",
    "Nike Air Zoom Pegasus 39 men's road running shoes",
    "Chaussures de randonnée femme imperméables, cuir marron",
    "Samsung Galaxy S21 5G smartphone 128GB",  # other categories from here on
    "KIVIK 3-seat sofa, Hillared dark blue fabric",
    "Bosch PSB 500 RE hammer drill 500 W",
]
OTHER = "Other"
DATASETS = (("mwpd6", False), ("mwpd6_other", True))  # folder in --runs, with every other offer as OTHER
LINEAR = (("linear (6 classes)", "mwpd6", "linear"), ("linear + Other", "mwpd6_other", "linear_other"))
ENCODER = ("encoder small", "mwpd6", "encoder_small")  # (name, dataset, model folder)
STEPS_FILE = "demo_steps.json"  # in --runs: each finished step, what it was made from and what it made
WRITER = "category_classification.demo"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="folder for the datasets and the models")
    p.add_argument("--mwpd_dir", default=str(REPO / "data" / "mwpd"))
    p.add_argument("--skip_encoder", action="store_true", help="only the linear default")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="closed 6-class model: below this probability, no label")
    p.add_argument("--redo", action="store_true",
                   help="run every step again, even those an earlier run finished from the same inputs")
    return p


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def build_argv(mwpd: Path, out: Path, other: bool) -> list[str]:
    return ["--mwpd", str(mwpd / "train.json.gz"), "--mwpd_test", str(mwpd / "validation.json.gz"),
            "--out", str(out), "--val_size", "0.10", "--quiet"] + (["--other_label", OTHER] if other else [])


def linear_argv(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--refit", "--no_lang_metrics"]


def encoder_argv(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--preset", "small", "--no_lang_metrics"]


def _code_version() -> str:
    """A hash of the toolkit's source: a step finished by other code is run again."""
    h = hashlib.sha1()
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _folder_stamp(folder: Path) -> str | None:
    """The checkpoints' fingerprint of a dataset or model folder (its JSON files in full, every other file by
    name and size): each build and each training writes other JSON, so it names one output."""
    from category_classification.training.checkpoints import data_fingerprint

    return data_fingerprint(folder, []) if folder.is_dir() else None


class Steps:
    """The steps an earlier demo finished in --runs (STEPS_FILE, written whole after each step): a step is
    skipped when its inputs, settings and the code are the same and its output is still the one it made."""

    def __init__(self, runs: Path, redo: bool):
        self.path = runs / STEPS_FILE
        self.steps = self._read()
        if redo:
            self.steps = {}
        self.code = _code_version()
        self.earlier = 0.0  # seconds of the steps kept from earlier runs

    def _read(self) -> dict:
        if not self.path.exists() and not self.path.is_symlink():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("written_by") == WRITER and isinstance(data.get("steps"), dict):
                return data["steps"]
        except (OSError, ValueError, RecursionError):  # RecursionError: a hand-made "[[[[..." was a traceback
            pass
        raise UserError(f"{self.path} was not written by the demo (or is damaged); move it away or choose another "
                        "--runs")

    def key(self, argv_for_key: list[str], inputs) -> str:
        return hashlib.sha1(json.dumps([self.code, argv_for_key, inputs]).encode()).hexdigest()[:16]

    def done(self, name: str, key: str, out: Path) -> float | None:
        """The seconds the step took, when an earlier run finished it from `key` and `out` still holds its
        output; else None."""
        rec = self.steps.get(name)
        if isinstance(rec, dict) and rec.get("made_from") == key and "output" in rec \
                and rec["output"] == _folder_stamp(out):
            seconds = rec.get("seconds") or 0.0
            # a hand-edited "seconds" ("x", a list) was a traceback: such a record is not the demo's, run it again
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds):
                return float(seconds)
        return None

    def started(self, name: str, key: str) -> bool:
        """Whether an earlier run began this step from `key` and did not finish it (killed)."""
        rec = self.steps.get(name)
        return isinstance(rec, dict) and rec.get("made_from") == key and "output" not in rec

    def record(self, name: str, key: str, out: Path | None = None, seconds: float = 0.0) -> None:
        """The step begun (no `out`) or finished (its output's stamp), written whole."""
        from category_classification.core.artifacts import write_text_atomic

        self.steps[name] = {"made_from": key} if out is None else \
            {"made_from": key, "output": _folder_stamp(out), "seconds": round(seconds, 1)}
        write_text_atomic(self.path, json.dumps({"written_by": WRITER, "steps": self.steps}, indent=1) + "\n")


def run_step(steps: Steps, name: str, title: str, main, argv: list[str], key_argv: list[str], inputs,
             out: Path, resumable: bool = False) -> float:
    """Run one step (a script's main on `argv`) unless an earlier run finished it; its seconds either way.
    A `resumable` step (the encoder trainer) that a killed run began from the same inputs gets --resume auto
    and continues from its last checkpoint; begun from other inputs, its trainer starts afresh."""
    key = steps.key(key_argv, inputs)
    seconds = steps.done(name, key, out)
    if seconds is not None:
        _step(f"{title}: done by an earlier run ({seconds:.1f}s), kept in {out} (--redo: run it again)")
        steps.earlier += seconds
        return seconds
    resume = resumable and steps.started(name, key)
    t = _step(title + (" (resuming the killed run's training)" if resume else ""))
    steps.record(name, key)
    if main(argv + (["--resume", "auto"] if resume else [])):
        raise SystemExit(1)
    seconds = time.perf_counter() - t
    steps.record(name, key, out, seconds)
    return seconds


def check_paths(runs: Path, mwpd: Path, skip_encoder: bool) -> list:
    """Everything the demo reads and writes, checked before any work, by the tools' own checks: a folder of
    --runs holding a user's files or a model of another kind was refused only after the builds and fits
    before it. Returns the MWPD input files' stamps (path, size, mtime)."""
    from category_classification.core.artifacts import check_model_out
    from category_classification.data.build_dir import check_out
    from category_classification.train_linear_baseline import OUT_KINDS as LINEAR_KINDS

    if runs.exists() and not runs.is_dir():
        raise UserError(f"--runs {runs} is a file; give a folder for the datasets and the models")
    inputs = [require_file(mwpd / name, "MWPD file") for name in ("train.json.gz", "validation.json.gz")]
    for name, _ in DATASETS:
        check_out(runs / name, inputs)
    for _, data, out in LINEAR:
        check_model_out(runs / out, [runs / data], kinds=LINEAR_KINDS)
    if not skip_encoder:
        from category_classification.training.encoder import OUT_KINDS as ENCODER_KINDS

        check_model_out(runs / ENCODER[2], [runs / ENCODER[1]], kinds=ENCODER_KINDS)
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in inputs]


def build(runs: Path, mwpd: Path, steps: Steps, inputs, timings: dict) -> None:
    from category_classification import build_lspc_dataset

    seconds = 0.0
    for name, other in DATASETS:
        seconds += run_step(steps, name, f"build {name} from the bundled MWPD offers"
                            + (f" (every other offer as {OTHER})" if other else " (6 classes)"),
                            build_lspc_dataset.main, build_argv(mwpd, runs / name, other),
                            build_argv(Path("MWPD"), Path("RUNS") / name, other), inputs, runs / name)
    timings["build"] = seconds


def train(runs: Path, steps: Steps, timings: dict, skip_encoder: bool) -> dict:
    """Train the linear default on both datasets (and the encoder on the 6 classes); name -> model folder.
    A step's inputs are its dataset's stamp: a dataset built again (another build) trains its models again."""
    from category_classification import train_linear_baseline

    todo = [(name, data, out, f"train the fast linear default on {data}, refit on train + validation",
             train_linear_baseline.main, linear_argv, False) for name, data, out in LINEAR]
    if not skip_encoder:
        from category_classification import train_embedding_classifier

        name, data, out = ENCODER
        todo.append((name, data, out, "train the small from-scratch encoder on the 6 classes (--preset small)",
                     train_embedding_classifier.main, encoder_argv, True))
    models = {}
    for name, data, out, title, main, argv, resumable in todo:
        timings[name] = run_step(steps, out, title, main, argv(runs / data, runs / out),
                                 argv(Path("RUNS") / data, Path("RUNS") / out), _folder_stamp(runs / data),
                                 runs / out, resumable)
        models[name] = runs / out
    return models


def show_figures(models: dict, timings: dict) -> None:
    _step("figures on the MWPD validation file, never trained or tuned on (macro-F1 is the headline)")
    print(f"{'model':<20} {'6-class macro_f1':>16} {'accepted_prec':>13} {'in_scope_rec':>12} "
          f"{'other_accepted':>14} {'step time':>10}")
    for name, d in models.items():
        m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))["test"]
        o = m.get("open_set")
        if o:  # 6-class macro-F1 on the in-scope offers, an Other answer counted wrong
            row = f"{o['target_macro_f1']:>16.4f} {o['accepted_precision']:>13.4f} {o['in_scope_recall']:>12.4f} " \
                  f"{o['out_of_scope_accept_rate']:>14.4f}"
        else:
            row = f"{m['macro_f1']:>16.4f} {'-':>13} {m['accuracy']:>12.4f} {'(all)':>14}"
        print(f"{name:<20} {row} {timings[name]:>9.1f}s")
    print("closed models: in_scope_rec is accuracy on in-scope offers; they label every out-of-scope offer "
          "(other_accepted = all of them). Open set: accepted_prec = share of given labels that are right.")
    for name, d in models.items():
        print(f"{name}: {d / 'results_category.txt'}, {d / 'confusion_matrix.png'}")


def show_examples(models: dict, threshold: float) -> None:
    from category_classification.models.registry import load_predictor

    _step(f"classify example titles (closed models: '-' when the top probability is under {threshold}; "
          f"the open model answers {OTHER} itself)")
    for name, d in models.items():
        predictor = load_predictor(d)
        open_set = OTHER in predictor.labels
        print(f"[{name}]")
        for title, r in zip(EXAMPLES, predictor.predict(EXAMPLES, top_k=2, threshold=None if open_set else threshold)):
            second = r["top_k"][1] if len(r["top_k"]) > 1 else None
            alt = f"  (then {second['label']} {second['prob']:.2f})" if second else ""
            shown = r["label"] or f"-({r['top_k'][0]['label']})"  # below the threshold: top guess in brackets
            print(f"  {shown:<13} {r['score']:.2f}  {title}{alt}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):  # nan left every title unlabelled
        raise UserError(f"--threshold is a probability between 0 and 1, got {args.threshold}")
    runs, mwpd = Path(args.runs), Path(args.mwpd_dir)
    inputs = check_paths(runs, mwpd, args.skip_encoder)
    steps = Steps(runs, args.redo)
    timings = {}
    build(runs, mwpd, steps, inputs, timings)
    models = train(runs, steps, timings, args.skip_encoder)
    show_figures(models, timings)
    show_examples(models, args.threshold)
    earlier = f" ({steps.earlier:.0f}s of it in earlier runs)" if steps.earlier else ""
    print(f"\ndone in {sum(timings.values()):.0f}s{earlier}; outputs under {runs}/")
    return 0


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
