"""Out-of-fold probabilities of MiniLM LoRA fine-tunes over the grouped 6-class folds of bench/linear_cv.py,
for several fine-tune settings, and their averages with several linear models.

  python bench/lora_oof.py --out DIR --configs "default=;e4=--epochs 4" [--device cuda] [--seconds 600]
  python bench/lora_oof.py --out DIR --combine

The fine-tunes: each fold's training part is split as bench/lora_cv.py splits it (a grouped tenth picks the
checkpoint, the rest trains) and the fine-tune (bench/lora_minilm.py with the settings after `NAME=`, title
+ description texts) predicts the held-out fold. DIR/oof_NAME.npz gets each fold's probabilities as soon as
the fold ends (written whole), so a stopped run keeps the folds that finished and a rerun skips them;
--seconds stops starting new fine-tunes after that long (a GPU lease). --combine (on any machine) fits the
linear models of LINEAR on each fold's same training part, calibrates them on the same tenth, and prints
the held-out macro-F1 per fold of each fine-tune, each linear model and each plain average of the two.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.linear_cv import bundled_offers, check_folds, grouped_folds

# The linear halves: (text, LinearConfig overrides, bare copies, level-3 sub-classes). "plain" is the linear
# member of bench/lora_cv.py (title + description, one column per class).
LINEAR = {
    "plain": dict(breadcrumb=False, url_words=False, fine=False),
    "breadcrumb+fine": dict(breadcrumb=True, url_words=False, fine=True),
    "breadcrumb+url+fine": dict(breadcrumb=True, url_words=True, fine=True),
    # + the frozen all-MiniLM-L6-v2 sentence embeddings (LinearConfig.embed_model): does the fine-tune's
    # backbone, frozen, add to the pair what it adds to the linear model alone?
    "breadcrumb+fine+minilm": dict(breadcrumb=True, url_words=False, fine=True, embed=True),
}


def parse_configs(spec: str) -> dict[str, list[str]]:
    """"a=--epochs 4;b=" -> {"a": ["--epochs", "4"], "b": []}; names are letters, digits, '-', '_'."""
    from category_classification.core.cli import UserError

    out = {}
    for part in (p.strip() for p in spec.split(";") if p.strip()):
        name, _, flags = part.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name.strip()) or name.strip() in out or name.strip() == "data":
            raise UserError(f"--configs: {name.strip()!r} is not a new name of letters, digits, '-' or '_' "
                            "(nor 'data', the folds' dataset folder)")
        out[name.strip()] = shlex.split(flags)
    if not out:
        raise UserError("--configs names no fine-tune")
    return out


def _done(path: Path, folds: int) -> dict:
    """fold -> held-out probabilities kept in `path` ({} when there is none); a file this script did not
    write, or one made over another number of folds, is one line, never read as folds or replaced."""
    import zipfile

    from category_classification.core.cli import UserError

    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            made_for = json.loads(str(z["info"])).get("folds", 5)  # files from before the field: the default
            kept = {int(k.removeprefix("fold")): z[k] for k in z.files if re.fullmatch(r"fold\d+", k)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{path} is not a file of bench/lora_oof.py: use another --out or remove it") from None
    if made_for != folds:
        raise UserError(f"{path} holds folds of a {made_for}-fold split, not of --folds {folds}: use another --out")
    return kept


def _write(path: Path, folds: dict, info: dict) -> None:
    from category_classification.core.artifacts import written_whole

    with written_whole(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would add .npz to the name
            np.savez(fh, info=json.dumps(info), **{f"fold{k}": v for k, v in folds.items()})


def fine_tune(args, configs) -> None:
    from bench.lora_cv import write_fold_data
    from bench.lora_minilm import main as lora_main
    from category_classification.inference.predictors import load_predictor

    texts, names, y, groups, _ = bundled_offers("six")
    folds = grouped_folds(y, groups, args.folds)
    work = Path(args.work or args.out) / "work"
    t0 = time.perf_counter()
    for name, flags in configs.items():
        path = Path(args.out) / f"oof_{name}.npz"
        done, info = _done(path, args.folds), {"flags": flags, "folds": args.folds, "seconds": {}}
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
            if info.get("flags") != flags:
                from category_classification.core.cli import UserError

                raise UserError(f"{path} was made with other flags ({info.get('flags')}): use another --out")
        for k, (train_idx, test_idx) in enumerate(folds):
            if k in done:
                continue
            if args.seconds and time.perf_counter() - t0 > args.seconds:
                print(f"--seconds {args.seconds} spent: {name} fold {k} not started", flush=True)
                return
            fold_dir = work / f"fold{k}"
            if not (fold_dir / "data" / "dataset_dict.json").is_file():
                write_fold_data(fold_dir / "data", texts, names, y, groups, train_idx, test_idx, seed=k)
            out = fold_dir / name
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            # a merged model scoring apart from the trainer (bf16 on a GPU: one offer) is noted, not fatal: the
            # probabilities kept are the merged model's, through the predictor, as users get them
            if lora_main(["--data", str(fold_dir / "data"), "--out", str(out), "--device", args.device, *flags]):
                info.setdefault("reload_differs", []).append(k)
            done[k] = load_predictor(out, device=args.device, batch_size=256).predict_proba(
                [texts[i] for i in test_idx]).astype(np.float32)
            info["seconds"][str(k)] = round(time.perf_counter() - t, 1)
            _write(path, done, info)
            shutil.rmtree(out, ignore_errors=True)
            print(f"{name} fold {k}: {info['seconds'][str(k)]} s", flush=True)


def combine(args) -> None:
    from bench.lora_cv import inner_split  # the split the fine-tunes' fold datasets were carved with
    from bench.lora_minilm import minilm_dir
    from category_classification.evaluation.metrics import label_scores
    from category_classification.models.linear import LinearConfig, LinearTextClassifier, with_copies

    plain, names, y, groups, fine = bundled_offers("six")
    folds = grouped_folds(y, groups, args.folds)
    lora = {p.stem.removeprefix("oof_"): _done(p, args.folds) for p in sorted(Path(args.out).glob("oof_*.npz"))}
    if not lora:
        from category_classification.core.cli import UserError

        raise UserError(f"no oof_*.npz in {args.out}: run the fine-tunes first")
    texts = {}
    for key in ("plain", "bc", "bc_url"):
        texts[key] = plain if key == "plain" else bundled_offers("six", True, key == "bc_url")[0]

    def f1(idx, pred):
        return label_scores([names[i] for i in y[idx]], [names[i] for i in pred])["macro_f1"]

    rows: dict[str, list] = {}
    for k, (train_idx, test_idx) in enumerate(folds):
        fit_idx, val_idx = inner_split(y, groups, train_idx, k)
        for lin, spec in LINEAR.items():
            t = texts["bc_url" if spec["url_words"] else "bc" if spec["breadcrumb"] else "plain"]
            fit_texts, cols = [t[i] for i in fit_idx], {"y": list(y[fit_idx]), "fine": [fine[i] for i in fit_idx]}
            if spec["breadcrumb"]:
                fit_texts, cols, _ = with_copies(fit_texts, [[plain[i] for i in fit_idx]], cols)
            model = LinearTextClassifier(names, LinearConfig(class_split="fine" if spec["fine"] else "none",
                                                             embed_model=str(minilm_dir()) if spec.get("embed") else None))
            model.fit(fit_texts, np.asarray(cols["y"]), fine=cols["fine"] if spec["fine"] else None)
            model.calibrate([t[i] for i in val_idx], y[val_idx])
            p_lin = model.predict_proba([t[i] for i in test_idx])
            rows.setdefault(f"linear {lin}", []).append(f1(test_idx, p_lin.argmax(1)))
            for name, done in lora.items():
                if k in done:
                    rows.setdefault(f"LoRA {name}", [None] * len(folds))[k] = f1(test_idx, done[k].argmax(1))
                    rows.setdefault(f"LoRA {name} + linear {lin}", [None] * len(folds))[k] = \
                        f1(test_idx, (done[k] + p_lin).argmax(1))
        print(f"fold {k} done", flush=True)
    print(f"\n| model | {' | '.join(f'fold {k}' for k in range(len(folds)))} | mean ± std (finished folds) |")
    print("|---|" + "---:|" * (len(folds) + 1))
    for name, vals in rows.items():
        got = [v for v in vals if v is not None]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals)
              + f" | {np.mean(got):.4f} ± {np.std(got):.4f} ({len(got)}) |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder of the oof_NAME.npz files")
    p.add_argument("--configs", default="default=", help='"NAME=LORA FLAGS;..." (bench/lora_minilm.py flags)')
    p.add_argument("--combine", action="store_true", help="score the fine-tunes in --out with the linear models")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=0, help="start no fine-tune after this many seconds (0: no limit)")
    p.add_argument("--work", default=None, help="where the fold datasets and models go (default: OUT/work)")
    args = p.parse_args(argv)
    from category_classification.core.cli import UserError, check_device

    check_folds(args.folds)
    check_device(args.device)
    if not (args.seconds >= 0 and np.isfinite(args.seconds)):
        raise UserError(f"--seconds must be a number of at least 0, got {args.seconds}")
    configs = None if args.combine else parse_configs(args.configs)  # before anything is written
    if args.combine:
        combine(args)
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        fine_tune(args, configs)
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
