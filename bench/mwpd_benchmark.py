"""The MWPD 2020 product-classification benchmark (task 2): GS1 levels 1-3 and the toolkit's 6 classes.

    .venv/bin/python bench/mwpd_benchmark.py --out runs/mwpd_bench [--models reference,linear,hier_linear] [--test FILE]

Each model kind is trained on data/mwpd/train.json.gz and scored on the official validation file (3,000
offers), or, with --test FILE (same format), trained on train + validation (settings and calibration chosen
on validation first, then refit) and scored on FILE. The official metric is the weighted F1 per GS1 level
averaged over the three levels; macro-F1 is reported beside it. "six_class" is the 6-class task of
data/mwpd/README.md on the offers of those classes. Each kind runs in its own process, so its peak memory
(peak_rss_mib) is its own. Writes OUT/benchmark.json and prints the table.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MWPD = REPO / "data" / "mwpd"
LEVELS = ("lvl1", "lvl2", "lvl3")
DEFAULT_MODEL = "linear"
# The default list: every kind that trains in well under 30 minutes on 2 CPU cores. The MiniLM LoRA kinds
# (bench/mwpd_minilm.py: four fine-tunes, ~8 minutes each on 2 cores) run when named, on a GPU in minutes.
DEFAULT_MODELS = ("reference", "linear", "hier_linear", "linear_breadcrumb", "hier_linear_breadcrumb",
                  "fielded_linear")
TRANSFORMER_MODELS = ("minilm_lora", "linear+minilm_lora")
# The linear default with all-MiniLM-L6-v2's frozen sentence embeddings appended (LinearConfig.embed_model):
# no fine-tuning, but every offer goes through MiniLM (25 offers/s on one CPU core in bench/compare.py).
EMBEDDING_MODELS = ("linear_minilm", "linear_minilm_breadcrumb")
MODELS = DEFAULT_MODELS + EMBEDDING_MODELS + TRANSFORMER_MODELS
DESCRIPTION = {
    "reference": "scikit-learn TF-IDF word 1-2 + char_wb 2-5, LinearSVC(C=0.5, balanced), per level",
    "linear": "the fast default (models/linear.py), one model per level; 6 classes as GS1 level-3 sub-classes",
    "hier_linear": "per-level linear models, decoded along the GS1 paths seen in training",
    "fielded_linear": "per-field TF-IDF (offer text, breadcrumb, URL words), GS1 path decoding (models/fielded.py)",
    "linear_breadcrumb": "the fast default, text + the shop's breadcrumb (CategoryText)",
    "linear_minilm": "the fast default + all-MiniLM-L6-v2 sentence embeddings of the text (--embed_model)",
    "linear_minilm_breadcrumb": "linear_minilm, text + the shop's breadcrumb (CategoryText)",
    "hier_linear_breadcrumb": "hier_linear, text + the shop's breadcrumb (CategoryText)",
    "minilm_lora": "all-MiniLM-L6-v2 + LoRA (the trainer's small-model defaults), one fine-tune per level",
    "linear+minilm_lora": "the average of the linear default's and minilm_lora's probabilities, per level",
}


def read_offers(path, breadcrumb: bool = False, counts: Counter | None = None, raw: bool = False) -> list[dict]:
    """MWPD offers as {"text", "bare", "title", "lvl1", "lvl2", "lvl3", "six"}: labels keep their GS1 codes
    ("67000000_Clothing"); an offer without a title or a level label is skipped and counted. With `breadcrumb`
    the text ends with the shop's breadcrumb by the builder's rule (text.offer_text; build_lspc_dataset.py
    --breadcrumb); "bare" is the text without it and "title" the title alone, which the linear kinds also fit
    as the trainer does with a dataset's text_bare and text_title (fit_copies). `raw`: each
    offer's JSON object under "offer" too. Read as every MWPD reader reads (data/mwpd.file_lines: gzip or not
    by its bytes, one JSON array or JSON lines); a damaged file is an error, never scored in part."""
    from category_classification.core.cli import UserError
    from category_classification.data.lspc import parse_json_object
    from category_classification.data.mwpd import BREADCRUMB_FIELD, file_lines, gs1_label
    from category_classification.data.text import clean, has_visible_text, offer_text

    counts = Counter() if counts is None else counts
    out = []
    for line in file_lines(path, counts):
        offer = parse_json_object(line, counts)
        if offer is None:
            continue
        title = clean(offer.get("Name"))
        levels = {lv: clean(offer.get(lv)) for lv in LEVELS}
        if not title or not has_visible_text(title) or not all(levels.values()):
            counts["skipped_no_title_or_label"] += 1
            continue
        bare = offer_text(title, clean(offer.get("Description")))
        text = offer_text(title, clean(offer.get("Description")),
                          breadcrumb=offer.get(BREADCRUMB_FIELD) if breadcrumb else None)
        out.append({"text": text, "bare": bare, "title": offer_text(title), **levels, "six": gs1_label(levels, "six")}
                   | ({"offer": offer} if raw else {}))
    if counts["corrupt_file"]:
        raise UserError(f"cannot read {path}: damaged gzip data after {len(out):,} offers")
    if not out:
        raise UserError(f"{path} holds no MWPD offer with a Name and the lvl1, lvl2 and lvl3 labels ({dict(counts)})")
    return out


def write_scored_file(path: Path, offers: list[dict], training: list[dict]) -> dict:
    """The offers to score, written where every kind reads them (fielded_linear and the MiniLM kinds read the
    file themselves; two readers of the user's file could keep different offers and misalign predictions
    with labels): the readable offers only, as the file has them (a numeric title as text), each level label
    in the training files' spelling when it names the same class (mwpd.same_classes: a file that writes
    "67000000" or "67000000_clothing" for "67000000_Clothing" would otherwise score every offer a miss).
    Returns {level: number of labels respelled}."""
    from category_classification.core.artifacts import write_text_atomic
    from category_classification.data.mwpd import same_classes
    from category_classification.data.text import clean

    respell = {lv: same_classes({o[lv] for o in offers}, {o[lv] for o in training}) for lv in LEVELS}
    lines = []
    for o in offers:
        offer = dict(o["offer"])  # every field as the file has it: a kind reading it sees the offer unchanged
        if not isinstance(offer.get("Name"), str):  # a number: as text, as this reader took it
            offer["Name"] = clean(offer.get("Name"))
        offer.update({lv: respell[lv].get(o[lv], o[lv]) for lv in LEVELS})
        lines.append(json.dumps(offer) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(lines))
    return {lv: len(v) for lv, v in respell.items()}


def six_of(lvl1: str, lvl3: str) -> str | None:
    from category_classification.data.mwpd import gs1_label

    return gs1_label({"lvl1": lvl1, "lvl3": lvl3}, "six")


def _split(train: list[dict], seed: int = 0):
    """A grouped 10% calibration part of `train` (title groups kept whole) for kinds that need a held-out set."""
    from category_classification.data.text import group_id, normalize_title

    g = np.array([group_id(normalize_title(o["text"][:80])) for o in train])
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(np.unique(g))[: max(1, len(np.unique(g)) // 10)].tolist())
    mask = np.array([x in held for x in g])
    return [o for o, m in zip(train, mask) if not m], [o for o, m in zip(train, mask) if m]


def _flat_model(kind: str, labels):
    """One flat classifier of `kind` over `labels`: fit(texts, y_idx), predict(texts) -> idx."""
    from category_classification.models.linear import LinearTextClassifier

    if kind == "reference":  # the ten lines of issue 13, verbatim
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline, make_union
        from sklearn.svm import LinearSVC

        return make_pipeline(make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
                             LinearSVC(C=0.5, class_weight="balanced"))
    return LinearTextClassifier(labels, linear_config(kind))


def linear_config(kind: str):
    """The LinearConfig of a linear kind: the defaults, with MiniLM's sentence embeddings for linear_minilm."""
    from category_classification.models.linear import LinearConfig

    if kind != "linear_minilm":
        return LinearConfig()
    from bench.lora_minilm import minilm_dir

    return LinearConfig(embed_model=str(minilm_dir()))


def fit_copies(offers: list[dict], config, columns: dict) -> tuple[list, dict]:
    """The texts and `columns` (name -> per-offer values) a linear model with `config` fits on `offers`: each
    text, then the bare and title copies its config asks for (models/linear.copy_variants, with_copies), as
    train_linear_baseline.py fits a dataset's text_bare and text_title."""
    from category_classification.models.linear import copy_variants, with_copies

    variants = copy_variants(config, {"breadcrumb": [o["bare"] for o in offers], "title": [o["title"] for o in offers]})
    texts, columns, _ = with_copies([o["text"] for o in offers], list(variants.values()), columns)
    return texts, columns


def run_flat(kind: str, train: list[dict], test: list[dict]) -> dict:
    """Independent per-level classifiers and a 6-class one; predictions as label names."""
    pred = {}
    for lv in LEVELS:
        labels = sorted({o[lv] for o in train})
        y = {"y": [labels.index(o[lv]) for o in train]}
        texts, y = (fit_copies(train, linear_config(kind), y) if kind != "reference"
                    else ([o["text"] for o in train], y))
        model = _flat_model(kind, labels).fit(texts, y["y"])
        pred[lv] = [labels[i] for i in model.predict([o["text"] for o in test])]
    six_train = [o for o in train if o["six"]]
    labels = sorted({o["six"] for o in six_train})
    if not any(o["six"] for o in test):  # a file without offers of the 6 classes: nothing to predict (or fit)
        return pred | {"six": []}
    if kind == "reference":
        model = _flat_model(kind, labels).fit([o["text"] for o in six_train], [labels.index(o["six"]) for o in six_train])
    else:
        model = six_class_linear(six_train, labels, linear_config(kind))
    pred["six"] = [labels[i] for i in model.predict([o["text"] for o in test if o["six"]])]
    return pred


def six_class_linear(offers: list[dict], labels: list[str], config=None):
    """The linear trainer's 6-class default: each class learnt as its GS1 level-3 sub-classes
    (LinearConfig.class_split), the temperature that their summed probabilities depend on fitted on a
    grouped 10% of `offers`, then refit on all of them with it (train_linear_baseline.py --refit)."""
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    config = config or LinearConfig()

    def fit(part):
        texts, cols = fit_copies(part, config, {"y": [labels.index(o["six"]) for o in part],
                                                "fine": [o["lvl3"] for o in part]})
        return LinearTextClassifier(labels, config).fit(texts, cols["y"], fine=cols["fine"])

    fit_part, calib = _split(offers)
    model = fit(fit_part)
    model.calibrate([o["text"] for o in calib], [labels.index(o["six"]) for o in calib])
    final = fit(offers)
    final.temperature = model.temperature
    return final


def run_hier(train: list[dict], calib: list[dict], test: list[dict], refit: bool) -> dict:
    """Per-level models calibrated on `calib` (fit on `train` without it unless `refit` says calib is extra
    data), then fit on train + calib with those temperatures; 6 classes read off the decoded paths."""
    from category_classification.models.hierarchical import HierarchicalLinear
    from category_classification.models.linear import LinearConfig

    names = {lv: sorted({o[lv] for o in train + calib}) for lv in LEVELS}

    def fit(offers):
        texts, cols = fit_copies(offers, LinearConfig(), {lv: [names[lv].index(o[lv]) for o in offers]
                                                          for lv in LEVELS})
        return HierarchicalLinear(names).fit(texts, cols)
    first = fit(train)
    first.calibrate([o["text"] for o in calib], {lv: [names[lv].index(o[lv]) for o in calib] for lv in LEVELS})
    model = fit(train + calib) if refit else first
    if refit:
        for lv in LEVELS:
            model.models[lv].temperature = first.models[lv].temperature
    levels = model.predict_levels([o["text"] for o in test])
    pred = {lv: [names[lv][i] for i in levels[lv][0]] for lv in LEVELS}
    model.mode = "lvl3"  # the other decoding, printed for the record (models/hierarchical.py MODES)
    alt = model.predict_levels([o["text"] for o in test])
    from category_classification.evaluation.metrics import gs1_metrics

    alt_avg = gs1_metrics({lv: [o[lv] for o in test] for lv in LEVELS},
                          {lv: [names[lv][i] for i in alt[lv][0]] for lv in LEVELS})["avg_weighted_f1"]
    print(f"    (decoding 'lvl3', the level-3 argmax and its parents: avg weighted F1 {alt_avg:.4f})", flush=True)
    model.mode = "paths"
    pred["six"] = [six_of(a, c) or "(none of the 6)" for a, c, o in zip(pred["lvl1"], pred["lvl3"], test) if o["six"]]
    return pred


def score(pred: dict, test: list[dict]) -> dict:
    from category_classification.evaluation.metrics import gs1_metrics, label_scores

    gs1 = gs1_metrics({lv: [o[lv] for o in test] for lv in LEVELS}, pred)
    for lv in LEVELS:
        gs1[lv] = {k: gs1[lv][k] for k in ("weighted_f1", "macro_f1")}
    six = label_scores([o["six"] for o in test if o["six"]], pred["six"])
    if not six["n"]:  # no offer of the 6 classes in the scored file: no figure, not a 0
        six = {"macro_f1": None, "accuracy": None}
    return {"gs1": {lv: gs1[lv] for lv in LEVELS} | {"avg_weighted_f1": gs1["avg_weighted_f1"]},
            "six_class": {"macro_f1": six["macro_f1"], "accuracy": six["accuracy"]}}


def run_kind(kind: str, files: dict) -> dict:
    """Train and score one model kind (in a child process: its peak memory is its own)."""
    breadcrumb = kind.endswith("_breadcrumb")
    base = kind.removesuffix("_breadcrumb")
    train = read_offers(files["train"], breadcrumb)
    test = read_offers(files["test"], breadcrumb)
    if files.get("max_offers"):  # a quick check of the wiring, not a benchmark figure
        train, test = train[: files["max_offers"]], test[: files["max_offers"]]
    t0 = time.perf_counter()
    info = None
    if kind in TRANSFORMER_MODELS:
        from bench.mwpd_minilm import run_minilm

        val = read_offers(files["validation"], breadcrumb) if files.get("validation") else []
        pred = run_minilm(kind, train + val, test, Path(files["work"]), files.get("device", "auto"))
        info = pred.pop("_info")
    elif kind == "fielded_linear":  # reads the MWPD files itself: it needs the breadcrumb and URL fields
        from category_classification.train_fielded_linear import benchmark_predictions

        pred = benchmark_predictions(files["train"], files["test"], files.get("validation"))
    elif files.get("validation"):  # --test: validation is extra training data after calibration
        val = read_offers(files["validation"], breadcrumb)
        pred = run_hier(train, val, test, refit=True) if base == "hier_linear" else run_flat(base, train + val, test)
    elif base == "hier_linear":
        fit_part, calib = _split(train)
        pred = run_hier(fit_part, calib, test, refit=True)
    else:
        pred = run_flat(base, train, test)
    seconds = time.perf_counter() - t0  # training and predicting the test file (a few seconds of it)
    out = score(pred, test)
    missing = {lv: sorted({o[lv] for o in test} - {o[lv] for o in train}) for lv in LEVELS}
    out.update(train_seconds=round(seconds, 1),
               peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               classes_without_training_examples={lv: len(v) for lv, v in missing.items()})
    if info is not None:  # per task: device, train seconds, prediction speed, peak GPU memory
        out["train_seconds"] = info.pop("train_seconds")  # the fits alone (a fine-tune may come from the cache)
        out["transformer"] = info
    return out


class KindFailed(Exception):
    """A kind's process failed or died: its traceback (if any) is above, the rows finished before it are kept."""


def _child(kind, files, queue):
    from category_classification.core.cli import UserError

    try:
        result = ("ok", run_kind(kind, files))
    except UserError as exc:  # one line in the parent, exit 2
        result = ("user", str(exc))
    except BaseException:
        queue.put(("bug", None))
        raise  # the traceback goes to stderr from this process
    queue.put(result)


def run_isolated(kind: str, files: dict) -> dict:
    """run_kind in a fresh process (peak memory counts this kind only); a child that fails or dies never leaves
    the parent waiting."""
    import queue as queues

    from category_classification.core.cli import UserError

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, files, queue))
    proc.start()
    try:
        while True:
            try:
                status, result = queue.get(timeout=1.0)
                break
            except queues.Empty:
                if not proc.is_alive() and queue.empty():
                    raise KindFailed(f"{kind}: its process ended with exit code {proc.exitcode} and no result") from None
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    if status == "user":
        raise UserError(result)
    if status != "ok":
        raise KindFailed(f"{kind} failed (its traceback is above)")
    return result


def table(results: dict) -> str:
    head = (f"{'model':<24}{'avg wF1':>8}{'lvl1 wF1':>9}{'lvl2 wF1':>9}{'lvl3 wF1':>9}{'lvl3 mF1':>9}"
            f"{'6-cls mF1':>10}{'train s':>9}{'peak MiB':>9}")
    lines = [head]
    for name, r in results.items():
        g = r["gs1"]
        lines.append(f"{name:<24}{g['avg_weighted_f1']:>8.4f}{g['lvl1']['weighted_f1']:>9.4f}"
                     f"{g['lvl2']['weighted_f1']:>9.4f}{g['lvl3']['weighted_f1']:>9.4f}{g['lvl3']['macro_f1']:>9.4f}"
                     + (f"{r['six_class']['macro_f1']:>10.4f}" if r["six_class"]["macro_f1"] is not None else f"{'-':>10}")
                     + f"{r['train_seconds']:>9.1f}{r['peak_rss_mib']:>9.0f}")
    return "\n".join(lines)


def earlier_rows(path: Path, scored_on: str, files: dict) -> dict:
    """The rows an earlier run left in OUT/benchmark.json when it scored the same file the same way: a run
    of other kinds adds its rows instead of replacing them (a row run again is replaced)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(earlier, dict) or not isinstance(earlier.get("models"), dict):
        return {}
    same = earlier.get("scored_on") == scored_on and earlier.get("max_offers") == files["max_offers"]
    return dict(earlier["models"]) if same else {}


def write_json(path: Path, payload: dict) -> None:
    from category_classification.core.artifacts import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def main(argv=None) -> int:
    from category_classification.core.cli import check_names, check_settings, require_file

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for benchmark.json")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated, of: {', '.join(MODELS)} (default: all but the embedding and transformer kinds)")
    p.add_argument("--test", help="a test file in the MWPD format; then train + validation are training data")
    p.add_argument("--mwpd_dir", default=str(MWPD))
    p.add_argument("--device", default="auto", help="for the transformer kinds: auto, cuda or cpu")
    p.add_argument("--max_offers", type=int, default=0,
                   help="use only the first N offers of each file: a quick check of the wiring (0: all)")
    args = p.parse_args(argv)
    check_settings(args, non_negative=("max_offers",))  # and --device
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    check_names("--models", models, MODELS, "model kind")
    mwpd = Path(args.mwpd_dir)
    files = {"train": str(require_file(mwpd / "train.json.gz", "MWPD train file"))}
    if args.test:
        files.update(validation=str(require_file(mwpd / "validation.json.gz", "MWPD validation file")),
                     test=str(require_file(args.test, "test file")))
    else:
        files["test"] = str(require_file(mwpd / "validation.json.gz", "MWPD validation file"))
    scored_on = "test file " + args.test if args.test else "MWPD validation file (3,000 offers)"
    out = Path(args.out)
    from category_classification.core.artifacts import check_results_folder

    check_results_folder(out, "benchmark.json", ("models", "scored_on"), "bench/mwpd_benchmark.py",
                         [files.get(k) for k in ("train", "validation", "test")], folders=[REPO / "data"])
    # a damaged or unlabelled file: one line now, not in a child later
    training = [o for k in ("train", "validation") if k in files for o in read_offers(files[k])]
    counts = Counter()
    scored = read_offers(files["test"], counts=counts, raw=True)
    if args.max_offers:
        scored = scored[: args.max_offers]
    print(f"MWPD benchmark: scored on the {scored_on}")
    skipped = {k: v for k, v in counts.items() if k != "empty_line"}
    if skipped:  # every offer of the file is scored or named here
        print(f"WARNING: {sum(skipped.values()):,} entries of {files['test']} are not scored "
              f"({', '.join(f'{k}: {v:,}' for k, v in skipped.items())}); {len(scored):,} offers are", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    files.update(work=str(out / "work"), device=args.device, max_offers=args.max_offers)
    files["test"] = str(out / "work" / "scored_offers.jsonl")
    respelled = write_scored_file(Path(files["test"]), scored, training)
    if any(respelled.values()):
        print("    labels of the scored file spelled otherwise than the training files', matched by GS1 code or name: "
              + ", ".join(f"{lv} {n}" for lv, n in respelled.items() if n))
    scored_file = {"offers": len(scored), "not_scored": skipped}
    results = earlier_rows(out / "benchmark.json", scored_on, files)
    for kind in models:
        print(f"  {kind}: {DESCRIPTION[kind]}", flush=True)
        try:
            results[kind] = run_isolated(kind, files)
        except KindFailed as exc:
            print(f"error: {exc}; the rows finished before it are in {out / 'benchmark.json'}", file=sys.stderr)
            return 1
        missing = {lv: n for lv, n in results[kind].pop("classes_without_training_examples").items() if n}
        if missing:
            print("    classes of the scored file without training offers (scored as misses): "
                  + ", ".join(f"{lv} {n}" for lv, n in missing.items()))
        # issue 13's schema exactly; written after each kind, so a long run keeps its finished rows
        write_json(out / "benchmark.json", {"default_model": DEFAULT_MODEL, "models": results,
                                            "scored_on": scored_on, "max_offers": files["max_offers"],
                                            "scored_file": scored_file})
    print(table(results))
    print(f"written: {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
