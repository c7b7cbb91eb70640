"""The transformer kinds of bench/mwpd_benchmark.py: the MiniLM LoRA fine-tune (bench/lora_minilm.py's model,
the LoRA trainer's small-model defaults) for each GS1 level and for the 6 classes, and its average with the
linear default.

Each task (lvl1, lvl2, lvl3, six) gets a dataset folder like build_lspc_dataset.py writes: train = the
training offers less a grouped 10% that is the validation split (it picks the LoRA checkpoint and the linear
model's temperature), test = the scored offers whose class has training offers. Both models are trained on
the same parts; the scored file is predicted through the predictor a user loads (`load_predictor`), and its
class probabilities are kept in WORK/TASK/{minilm,linear}.npz, keyed by the training and scored offers, so
`minilm_lora` and `linear+minilm_lora` share one fine-tune per task, and fine-tunes made on a GPU machine
(bench/gpu_mwpd.sh) serve the average computed on a CPU one.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path

import numpy as np

TASKS = ("lvl1", "lvl2", "lvl3", "six")
VAL_FOLDS = 10  # the validation split: 1 of 10 label-stratified grouped folds of the training offers


def _fingerprint(texts, labels) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels):
        h.update(f"{t}\t{y}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def _task_offers(task: str, offers: list[dict]) -> list[dict]:
    return [o for o in offers if o[task]]  # "six" is None outside the 6 classes


def write_task_data(out: Path, task: str, train: list[dict], test: list[dict], seed: int = 0) -> list[str]:
    """The task's dataset folder (see the module doc); returns its class names (the training offers' classes)."""
    from bench.lora_cv import write_fold_data
    from category_classification.data.text import group_id, normalize_title

    names = sorted({o[task] for o in train})
    index = {n: i for i, n in enumerate(names)}
    scored = [o for o in test if o[task] in index]  # a class without training offers cannot be a label here
    offers = train + scored
    texts = [o["text"] for o in offers]
    y = np.array([index[o[task]] for o in offers])
    groups = np.array([group_id(normalize_title(t[:80])) for t in texts])
    write_fold_data(out, texts, names, y, groups, np.arange(len(train)), np.arange(len(train), len(offers)), seed)
    return names


def _gpu_peak_mib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def _fit_minilm(data: Path, out: Path, device: str) -> dict:
    from bench.lora_minilm import minilm_dir
    from category_classification.models.lora import LoraTrainConfig
    from category_classification.training.lora import train

    cfg = LoraTrainConfig(model=str(minilm_dir()), data=str(data), out=str(out), device=device, logging_steps=200)
    result = train(cfg)
    return {"device": str(result["device"]), "train_seconds": result["train_seconds"],
            "validation_macro_f1": result["validation"]["macro_f1"]}


def _fit_linear(data: Path, names: list[str]):
    """The linear default on the task's train split, its temperature fitted on the validation split."""
    from category_classification.data.dataset_dir import get_split, load_dataset_dir
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    dsd = load_dataset_dir(data)
    train, val = get_split(dsd, "train"), get_split(dsd, "validation")
    model = LinearTextClassifier(names, LinearConfig()).fit(list(train["text"]), np.array(train["label"]))
    model.calibrate(list(val["text"]), np.array(val["label"]))
    return model


def _cached(path: Path, key: str) -> dict | None:
    """The cached probabilities when they were made from these offers (`key`); None when there are none or
    they are of other offers (then refitted and replaced). A file there that this script did not write is
    refused, never replaced."""
    from category_classification.core.cli import UserError

    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return {"names": z["names"].tolist(), "probs": z["probs"], "info": json.loads(str(z["info"]))}
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{path} is not a cache file of bench/mwpd_minilm.py: use another --out or remove it") from None


def _save(path: Path, key: str, names: list[str], probs: np.ndarray, info: dict) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, key=key, names=np.array(names), probs=probs.astype(np.float32), info=json.dumps(info))
    tmp.replace(path)


def task_probs(work: Path, task: str, train: list[dict], test: list[dict], device: str, model: str) -> dict:
    """One model's ("minilm" or "linear") probabilities over the offers of `test` with a `task` class, fitted
    once and cached in WORK/TASK/MODEL.npz (a fine-tune made on a GPU serves a CPU run of the average);
    returns {"names", "probs", "info"}."""
    from category_classification.inference.predictors import load_predictor

    train, test = _task_offers(task, train), _task_offers(task, test)
    texts = [o["text"] for o in test]
    key = _fingerprint([o["text"] for o in train] + texts, [o[task] for o in train] + [""] * len(texts))
    folder = work / task
    cached = _cached(folder / f"{model}.npz", key)
    if cached is not None:
        return cached
    data = folder / f"data-{key}"
    names = write_task_data(data, task, train, test)  # deterministic: both models see the same parts
    t0 = time.perf_counter()
    if model == "linear":
        probs = _fit_linear(data, names).predict_proba(texts)
        info = {"train_seconds": round(time.perf_counter() - t0, 1)}
    else:
        info = _fit_minilm(data, folder / f"minilm-{key}", device)
        predictor = load_predictor(folder / f"minilm-{key}", device=info["device"], batch_size=256)
        predictor.predict_proba(texts[:256])  # warm-up: the speed below is the steady state
        t1 = time.perf_counter()
        probs = predictor.predict_proba(texts)
        info.update(predict_offers_per_s=round(len(texts) / (time.perf_counter() - t1), 1),
                    gpu_peak_mib=_gpu_peak_mib(), train_offers=len(train))
    _save(folder / f"{model}.npz", key, names, probs, info)
    return {"names": names, "probs": probs, "info": info}


def run_minilm(kind: str, train: list[dict], test: list[dict], work: Path, device: str = "auto") -> dict:
    """Predictions of `minilm_lora` (the fine-tune alone) or `linear+minilm_lora` (the plain average of the two
    models' probabilities) for every task, as label names, and the fine-tunes' figures under "_info"."""
    models = ("minilm",) if kind == "minilm_lora" else ("minilm", "linear")
    pred, info = {}, {}
    for task in TASKS:
        parts = {m: task_probs(work, task, train, test, device, m) for m in models}
        probs = sum(p["probs"] for p in parts.values()) / len(parts)
        pred[task] = [parts["minilm"]["names"][i] for i in probs.argmax(axis=1)]
        info[task] = {**parts["minilm"]["info"],
                      **({"linear_seconds": parts["linear"]["info"]["train_seconds"]} if "linear" in parts else {})}
    # the fit time of what the kind uses, also when a fine-tune came from the cache (made on another machine)
    info["train_seconds"] = round(sum(i["train_seconds"] + i.get("linear_seconds", 0) for i in info.values()), 1)
    pred["_info"] = info
    return pred


def main(argv=None) -> int:
    """Fit the fine-tunes of some tasks into a benchmark's work folder (on a GPU machine, say); a later
    `mwpd_benchmark.py --models minilm_lora,...` with the same --out takes them from there."""
    import argparse

    from bench.mwpd_benchmark import MWPD, read_offers

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", required=True, help="the benchmark's --out (fine-tunes go to OUT/work/TASK)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of: {', '.join(TASKS)}")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from category_classification.core.cli import UserError, check_device, check_names

    tasks = [t for t in args.tasks.split(",") if t]
    check_names("--tasks", tasks, TASKS, "task")  # before reading and before any fine-tune
    check_device(args.device)
    work = Path(args.out) / "work"
    if Path(args.out).exists() and not Path(args.out).is_dir() or work.exists() and not work.is_dir():
        raise UserError(f"--out {args.out}: OUT and OUT/work must be folders")
    train, test = read_offers(MWPD / "train.json.gz"), read_offers(MWPD / "validation.json.gz")
    for task in tasks:
        info = task_probs(work, task, train, test, args.device, "minilm")["info"]
        print(f"{task}: {json.dumps(info)}", flush=True)
    return 0


if __name__ == "__main__":
    import sys

    if __package__ in (None, ""):
        sys.path[0] = str(Path(__file__).resolve().parents[1])
    from category_classification.core.cli import run

    sys.exit(run(main))
