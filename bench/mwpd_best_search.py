"""Search for the best MWPD 2020 task 2 model trainable in 30 minutes on 2 CPU cores: trains each variant on
data/mwpd/train.json.gz, scores it on data/mwpd/validation.json.gz (3,000 offers) and prints one table row.

Columns: avg weighted F1 over GS1 lvl1-3 (the challenge metric), per-level weighted F1, 6-class macro-F1 on the
validation file's 1,662 six-class offers, train seconds. Run:
    PYTHONPATH=$PWD .venv/bin/python bench/mwpd_best_search.py [--variants 'feats:mode,mode;feats:mode']
    PYTHONPATH=$PWD .venv/bin/python bench/mwpd_best_search.py --cv --temperatures '{"lvl1": T1, ...}' [--workers 2]
                                                               [--no_title_copies]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

from category_classification.data.mwpd import gs1_label
from category_classification.data.text import breadcrumb_text, clean, offer_text

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("lvl1", "lvl2", "lvl3")
SIX = ("Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes")


def load(path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def six_of(lvl1: str, lvl3: str) -> str:
    return gs1_label({"lvl1": lvl1, "lvl3": lvl3}, "six") or "none"


_URL_SPLIT = re.compile(r"[^a-z]+")
_URL_STOP = {"http", "https", "www", "com", "html", "htm", "php", "aspx", "asp", "net", "org", "co", "uk", "de",
             "product", "products", "p", "id", "index", "shop", "store", "item"}


def url_words(url) -> str:
    words = _URL_SPLIT.split(clean(url).lower())
    return " ".join(w for w in words if len(w) > 1 and w not in _URL_STOP)


def fields(offers, desc_chars=300):
    f = {"text": [], "title": [], "desc": [], "cat": [], "url": []}
    for o in offers:
        title, desc = clean(o.get("Name")), clean(o.get("Description"))
        f["text"].append(offer_text(title, desc, desc_chars))
        f["title"].append(title)
        f["desc"].append(clean(desc, 1000))
        f["cat"].append(breadcrumb_text(o.get("CategoryText")))
        f["url"].append(url_words(o.get("URL")))
    return f


def text_vectorizers():
    return [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1)]


def block_spec(name):
    """Per variant: list of (field, vectorizer, weight)."""
    base = [("text", v, 1.0) for v in text_vectorizers()]
    cat = [("cat", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), 0.5),
           ("cat", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True), 0.5)]
    url = [("url", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), 0.5)]
    return {"text": base, "text+cat": base + cat, "text+url": base + url, "text+cat+url": base + cat + url}[name]


def featurize(spec, tr, va):
    xs_tr, xs_va = [], []
    for field, vec, w in spec:
        xs_tr.append(vec.fit_transform(tr[field]) * w)
        xs_va.append(vec.transform(va[field]) * w)
    return sp.hstack(xs_tr).tocsr(), sp.hstack(xs_va).tocsr()


def score_table(y_va, pred, n_train_s):
    row = {lvl: f1_score(y_va[lvl], pred[lvl], average="weighted") for lvl in LEVELS}
    row["avg"] = float(np.mean([row[lvl] for lvl in LEVELS]))
    gold6 = [six_of(a, c) for a, c in zip(y_va["lvl1"], y_va["lvl3"])]
    pred6 = [six_of(a, c) for a, c in zip(pred["lvl1"], pred["lvl3"])]
    keep = [i for i, g in enumerate(gold6) if g != "none"]
    row["six"] = f1_score([gold6[i] for i in keep], [pred6[i] for i in keep], labels=list(SIX), average="macro")
    row["n6"] = len(keep)
    row["train_s"] = n_train_s
    return row


def paths_of(y):
    return sorted(set(zip(y["lvl1"], y["lvl2"], y["lvl3"])))


def decode_paths(scores, classes, paths, weights=(1.0, 1.0, 1.0)):
    """Best lvl1>lvl2>lvl3 path seen in training by summed per-level scores."""
    idx = [np.array([list(classes[k]).index(p[k]) for p in paths]) for k in range(3)]
    total = sum(w * s[:, i] for w, s, i in zip(weights, scores, idx))
    best = total.argmax(axis=1)
    return {lvl: [paths[b][k] for b in best] for k, lvl in enumerate(LEVELS)}


def log_softmax(z, t=1.0):
    z = z * t
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def svc_scores(x_tr, y, x_va, c=0.5):
    m = LinearSVC(C=c, class_weight="balanced").fit(x_tr, y)
    return m.decision_function(x_va), m.classes_


def run_variant(feats, modes, tr_off, va_off, y_tr, y_va, c=0.5):
    """Rows for one feature set: features fit once, the per-level SVMs shared by the decoding modes."""
    t0 = time.time()
    tr, va = fields(tr_off), fields(va_off)
    x_tr, x_va = featurize(block_spec(feats), tr, va)
    t_feat = time.time() - t0
    rows, cache = {}, {}
    for mode in modes:
        t1 = time.time()
        if mode == "six":  # a 6-class model on the six-class offers only
            keep_tr = [i for i, o in enumerate(tr_off) if gs1_label(o, "six")]
            keep_va = [i for i, o in enumerate(va_off) if gs1_label(o, "six")]
            m = LinearSVC(C=c, class_weight="balanced").fit(x_tr[keep_tr], [gs1_label(tr_off[i], "six") for i in keep_tr])
            gold = [gs1_label(va_off[i], "six") for i in keep_va]
            six = f1_score(gold, m.predict(x_va[keep_va]), labels=list(SIX), average="macro")
            rows[mode] = {"avg": float("nan"), "lvl1": float("nan"), "lvl2": float("nan"), "lvl3": float("nan"),
                          "six": six, "train_s": t_feat + time.time() - t1}
            continue
        if mode == "lvl3":  # one lvl3 model, parents derived
            s, cl = svc_scores(x_tr, y_tr["lvl3"], x_va, c)
            parent = {p[2]: p for p in paths_of(y_tr)}
            best = [parent[cl[i]] for i in s.argmax(axis=1)]
            pred = {lvl: [b[k] for b in best] for k, lvl in enumerate(LEVELS)}
        else:
            if "levels" not in cache:
                cache["levels"] = [svc_scores(x_tr, y_tr[lvl], x_va, c) for lvl in LEVELS]
                cache["levels_s"] = time.time() - t1
            scores, classes = zip(*cache["levels"])
            if mode == "flat":
                pred = {lvl: list(cl[s.argmax(axis=1)]) for lvl, s, cl in zip(LEVELS, scores, classes)}
            elif mode == "paths":
                pred = decode_paths(scores, classes, paths_of(y_tr))
            elif mode.startswith("pathsT"):
                t = float(mode[6:])
                pred = decode_paths([log_softmax(s, t) for s in scores], classes, paths_of(y_tr))
        rows[mode] = score_table(y_va, pred, t_feat + cache.get("levels_s", 0) + time.time() - t1)
    return rows


FEATURES = ("text", "text+cat", "text+url", "text+cat+url")  # block_spec's names
MODES = ("flat", "paths", "lvl3", "six")  # and pathsT<temperature>


def parse_variants(text: str) -> list[tuple[str, list[str]]]:
    """--variants 'feats:mode,mode;feats:mode' as [(feats, [modes])]; a UserError naming what is unknown."""
    from category_classification.core.cli import UserError

    specs = []
    for spec in (x for x in text.split(";") if x.strip()):
        feats, sep, modes = spec.strip().partition(":")
        if not sep or feats not in FEATURES:
            raise UserError(f"--variants: {spec!r} is not FEATURES:MODE,...; features are {', '.join(FEATURES)}")
        modes = [m for m in modes.split(",") if m]
        for mode in modes:
            t = mode[6:] if mode.startswith("pathsT") else None
            try:
                ok = mode in MODES or (t is not None and 0 < float(t) < float("inf"))
            except ValueError:
                ok = False
            if not ok:
                raise UserError(f"--variants: unknown mode {mode!r} in {spec!r}; modes are "
                                f"{', '.join(MODES)}, pathsT<temperature>")
        if not modes:
            raise UserError(f"--variants: {spec!r} names no mode")
        specs.append((feats, modes))
    if not specs:
        raise UserError("--variants names no variant")
    return specs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="text:flat,six;text+cat+url:flat,paths,pathsT5,lvl3,six")
    ap.add_argument("--c", type=float, default=0.5)
    ap.add_argument("--cv", action="store_true", help="grouped 5-fold CV of the packaged recipe instead")
    ap.add_argument("--temperatures", default=None, help="JSON {level: T} for --cv (from a trained model)")
    ap.add_argument("--no_title_copies", action="store_true",
                    help="--cv: fit without each offer's title alone (FieldedConfig.title_copies off)")
    ap.add_argument("--workers", type=int, default=5, help="--cv: folds fitted side by side")
    args = ap.parse_args(argv)
    from category_classification.core.cli import UserError, check_settings

    check_settings(args, whole=("workers",), positive=("c",))
    specs = parse_variants(args.variants)  # every name checked before hours of fitting
    if args.cv:
        try:
            temperatures = json.loads(args.temperatures) if args.temperatures else None
        except ValueError as exc:
            raise UserError(f"--temperatures is not JSON: {exc}") from None
        if temperatures is not None and not (isinstance(temperatures, dict) and set(temperatures) <= set(LEVELS)
                                             and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                     and 0 < t < float("inf") for t in temperatures.values())):
            raise UserError(f"--temperatures must map levels of {', '.join(LEVELS)} to positive numbers, "
                            f"got {args.temperatures}")
        return grouped_cv(temperatures=temperatures, workers=args.workers, title_copies=not args.no_title_copies)
    tr_off, va_off = load(ROOT / "data/mwpd/train.json.gz"), load(ROOT / "data/mwpd/validation.json.gz")
    y_tr = {lvl: [o[lvl] for o in tr_off] for lvl in LEVELS}
    y_va = {lvl: [o[lvl] for o in va_off] for lvl in LEVELS}
    print(f"train {len(tr_off)} offers, validation {len(va_off)} offers")
    print(f"{'variant':32s} {'avgWF1':>7s} {'lvl1':>6s} {'lvl2':>6s} {'lvl3':>6s} {'six mF1':>7s} {'train_s':>7s}")
    for feats, modes in specs:
        rows = run_variant(feats, modes, tr_off, va_off, y_tr, y_va, args.c)
        for mode, r in rows.items():
            print(f"{feats + ':' + mode:32s} {r['avg']:7.4f} {r['lvl1']:6.4f} {r['lvl2']:6.4f} {r['lvl3']:6.4f} "
                  f"{r['six']:7.4f} {r['train_s']:7.1f}", flush=True)


def _cv_data():
    from category_classification.data.text import group_id, normalize_title
    from category_classification.models.fielded import mwpd_fielded_text, mwpd_title_text

    offers = load(ROOT / "data/mwpd/train.json.gz") + load(ROOT / "data/mwpd/validation.json.gz")
    texts = np.array([mwpd_fielded_text(o) for o in offers], dtype=object)
    # each offer's title alone, as train_fielded_linear.read_offers gives it (FieldedConfig.title_copies)
    titles = np.array([mwpd_title_text(o) for o in offers], dtype=object)
    groups = [group_id(normalize_title(clean(o.get("Name")))) for o in offers]
    y = {lvl: np.array([o[lvl] for o in offers]) for lvl in LEVELS}
    six = np.array([gs1_label(o, "six") or "" for o in offers])
    return texts, groups, y, six, titles


def _cv_fold(job):
    """Fit the packaged recipe on one fold's training part and score its held-out part."""
    from category_classification.models.fielded import FieldedConfig, FieldedLinear

    k, (tr, te, temperatures, title_copies) = job
    texts, _, y, six, titles = _cv_data()
    cfg = FieldedConfig(title_copies=title_copies)
    t0 = time.process_time()
    names = {lvl: sorted(set(y[lvl][tr])) for lvl in LEVELS}
    model = FieldedLinear(names, cfg).fit(
        list(texts[tr]), {lvl: [names[lvl].index(v) for v in y[lvl][tr]] for lvl in LEVELS}, titles=list(titles[tr]))
    model.temperatures = dict(temperatures or model.temperatures)
    probs = model.predict_levels(list(texts[te]))
    pred = {lvl: [names[lvl][i] for i in probs[lvl].argmax(axis=1)] for lvl in LEVELS}
    r = score_table({lvl: list(y[lvl][te]) for lvl in LEVELS}, pred, time.process_time() - t0)
    s_tr, s_te = [i for i in tr if six[i]], [i for i in te if six[i]]
    six_names = sorted(set(six[s_tr]))
    m6 = FieldedLinear({"six": six_names}, cfg).fit(list(texts[s_tr]), {"six": [six_names.index(v) for v in six[s_tr]]},
                                                    titles=list(titles[s_tr]))
    p6 = [six_names[i] for i in m6.predict_levels(list(texts[s_te]))["six"].argmax(axis=1)]
    r["six_model"] = f1_score(list(six[s_te]), p6, labels=list(SIX), average="macro")
    # the same offers asked with their titles alone (predict.py --text, a feed of product names)
    probs = model.predict_levels(list(titles[te]))
    r["title_avg"] = float(np.mean([f1_score(list(y[lvl][te]), [names[lvl][i] for i in probs[lvl].argmax(axis=1)],
                                             average="weighted", zero_division=0) for lvl in LEVELS]))
    p6 = [six_names[i] for i in m6.predict_levels(list(titles[s_te]))["six"].argmax(axis=1)]
    r["title_six_model"] = f1_score(list(six[s_te]), p6, labels=list(SIX), average="macro")
    return k, r


def grouped_cv(folds=5, temperatures=None, workers=5, title_copies=True):
    """Grouped k-fold CV of the packaged recipe (models/fielded.py) on train + validation pooled (13,012 offers;
    groups = normalized title): avg weighted F1, 6-class macro-F1 from the decoded path and from a separate
    6-class model, per fold, then mean and standard deviation; "title_" rows score the same test offers by
    their titles alone. train_s is CPU seconds of the fold's fit."""
    import multiprocessing as mp

    from sklearn.model_selection import GroupKFold

    texts, groups, _, _, _ = _cv_data()
    jobs = [(tr, te, temperatures, title_copies) for tr, te in GroupKFold(n_splits=folds).split(texts, groups=groups)]
    rows = []
    with mp.get_context("fork").Pool(workers) as pool:
        for k, r in pool.imap_unordered(_cv_fold, list(enumerate(jobs))):
            rows.append(r)
            print(f"fold {k}: avg {r['avg']:.4f} lvl1 {r['lvl1']:.4f} lvl2 {r['lvl2']:.4f} lvl3 {r['lvl3']:.4f} "
                  f"six(path) {r['six']:.4f} six(model) {r['six_model']:.4f} ({r['n6']} six-class offers) "
                  f"{r['train_s']:.0f} CPU s", flush=True)
    for key in ("avg", "lvl1", "lvl2", "lvl3", "six", "six_model", "title_avg", "title_six_model"):
        v = np.array([r[key] for r in rows])
        print(f"{key:10s} mean {v.mean():.4f} std {v.std(ddof=1):.4f} min {v.min():.4f} max {v.max():.4f}")


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
