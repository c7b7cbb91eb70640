"""Evaluation shared by every trainer: metrics, per-language breakdown and the results files.

Each trainer ends with `write_results`, which writes `metrics.json`, appends a readable block to
`results_category.txt` and draws the confusion matrix, so every model is compared the same way.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> np.ndarray:
    """Rows are true labels, columns predicted labels."""
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _scores_from_cm(cm: np.ndarray) -> dict:
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = cm.sum()
    # Macro over the classes that occur in the truth or the predictions (sklearn's default):
    # a class absent from both says nothing about the model and would drag the mean to 0.
    present = (support > 0) | (predicted > 0)
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    weighted_f1 = float((f1 * support).sum() / n) if n else 0.0
    accuracy = float(tp.sum() / n) if n else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "present": present,
            "macro_f1": macro_f1, "weighted_f1": weighted_f1, "accuracy": accuracy, "n": int(n)}


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str],
                    languages: Sequence[str] | None = None, lang_min_samples: int = 30,
                    lang_top_k: int = 10) -> dict:
    """Accuracy, macro/micro/weighted F1, per-class scores, confusion matrix, per-language scores.

    Micro-F1 equals accuracy for single-label classification; it is reported under its own name
    because readers of multi-label papers look for it.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    k = len(label_names)
    cm = confusion_matrix(y_true, y_pred, k)
    s = _scores_from_cm(cm)
    out = {
        "n": s["n"],
        "accuracy": s["accuracy"],
        "macro_f1": s["macro_f1"],
        "micro_f1": s["accuracy"],
        "weighted_f1": s["weighted_f1"],
        "per_class": {
            name: {"precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
                   "f1": float(s["f1"][i]), "support": int(s["support"][i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.tolist(),
    }
    if languages is not None:
        out["per_language"] = per_language_metrics(y_true, y_pred, k, languages,
                                                   lang_min_samples, lang_top_k)
    return out


def per_language_metrics(y_true, y_pred, num_labels: int, languages: Sequence[str],
                         min_samples: int = 30, top_k: int = 10) -> dict:
    """Scores for the `top_k` most frequent languages that have at least `min_samples` offers."""
    if len(languages) != len(y_true):
        raise ValueError(f"{len(languages)} languages for {len(y_true)} labels")
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    langs = np.asarray([lang or "unknown" for lang in languages])
    result = {}
    for lang, count in Counter(langs.tolist()).most_common():
        if count < min_samples or len(result) >= top_k:
            continue
        idx = langs == lang
        s = _scores_from_cm(confusion_matrix(y_true[idx], y_pred[idx], num_labels))
        result[lang] = {"n": int(count), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
                        "micro_f1": s["accuracy"]}
    return result


def evaluate_split(split, predictions: Sequence[int], label_names: Sequence[str], lang_metrics: bool = True,
                   lang_min_samples: int = 30, lang_top_k: int = 10) -> dict:
    """Metrics for a datasets split and its predictions, per language too when the split has a `language`
    column and `lang_metrics` is on (see `eval_options` for the shared flags)."""
    langs = split["language"] if lang_metrics and "language" in split.column_names else None
    return compute_metrics(split["label"], predictions, label_names, languages=langs,
                           lang_min_samples=lang_min_samples, lang_top_k=lang_top_k)


def eval_options(args) -> dict:
    """evaluate_split's keyword arguments from the flags of core.cli.add_eval_args."""
    return {"lang_metrics": not args.no_lang_metrics, "lang_min_samples": args.lang_min_samples,
            "lang_top_k": args.lang_top_k}


def format_metrics(m: Mapping, label_names: Sequence[str], title: str = "") -> str:
    """A plain-text block: headline figures, per-class table, confusion matrix, languages."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"n={m['n']}  accuracy={m['accuracy']:.4f}  macro_f1={m['macro_f1']:.4f}  "
                 f"micro_f1={m['micro_f1']:.4f}  weighted_f1={m['weighted_f1']:.4f}")
    width = max(12, max(len(n) for n in label_names))
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name in label_names:
        c = m["per_class"][name]
        lines.append(f"{name:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} "
                     f"{c['support']:>8d}")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    short = [n[:7] for n in label_names]
    lines.append(" " * (width + 1) + " ".join(f"{s:>7}" for s in short))
    for name, row in zip(label_names, m["confusion_matrix"]):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>7d}" for v in row))
    if m.get("per_language"):
        lines.append("per language")
        for lang, v in m["per_language"].items():
            lines.append(f"  {lang:<8} n={v['n']:<7d} accuracy={v['accuracy']:.4f} "
                         f"macro_f1={v['macro_f1']:.4f}")
    return "\n".join(lines)


def _save_figure(fig, path) -> Path:
    """Lay out, write as PNG and free one matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


MAX_FIGURE_INCHES = 24.0
MAX_LABELLED_CLASSES = 60


def plot_confusion_matrix(cm, label_names: Sequence[str], path, title: str = "") -> Path:
    """Row-normalised heat map with raw counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(label_names)
    # Capped: GS1 level 3 has ~280 classes, and 0.6 inch a class drew a 20,000-pixel square for minutes.
    size = min(max(4.0, 0.6 * k + 2), MAX_FIGURE_INCHES)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(k), label_names, rotation=45, ha="right", fontsize=8 if k > 10 else 10)
        ax.set_yticks(range(k), label_names, fontsize=8 if k > 10 else 10)
    else:  # names would overlap: classes in label order (metrics.json has the per-class figures)
        title = f"{title or 'confusion matrix'} ({k} classes in label order)"
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title or "confusion matrix")
    return _save_figure(fig, path)


def write_results(out_dir, model_name: str, config: Mapping, split_metrics: Mapping[str, Mapping],
                  label_names: Sequence[str], extra: Mapping | None = None, history_from=None) -> dict:
    """Write metrics.json, append to results_category.txt, draw confusion_matrix[_split].png.

    `split_metrics` maps a split name ("validation", "test") to `compute_metrics` output. `history_from`:
    the folder whose results_category.txt this one continues (out_dir is a model's stage, published with
    the model: the figures never describe another model than the one beside them).
    Returns the dict written to metrics.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = Path(history_from) / "results_category.txt" if history_from is not None else None
    if earlier is not None and earlier.is_file() and not (out / "results_category.txt").exists():
        import shutil

        shutil.copyfile(earlier, out / "results_category.txt")
    date = time.strftime("%Y-%m-%d %H:%M:%S")
    payload = {"model": model_name, "date": date, "labels": list(label_names),
               "config": dict(config), **{k: dict(v) for k, v in split_metrics.items()}}
    if extra:
        payload.update(extra)
    from category_classification.core.artifacts import write_text_atomic

    write_text_atomic(out / "metrics.json", json.dumps(payload, indent=2, default=str) + "\n")

    for split, m in split_metrics.items():
        plot_confusion_matrix(m["confusion_matrix"], label_names, out / f"confusion_matrix_{split}.png",
                              title=f"{model_name}: {split}")
    for split, m in split_metrics.items():
        if m.get("open_set", {}).get("curve"):
            plot_open_set_curve(m["open_set"]["curve"], out / f"open_set_{split}.png",
                                title=f"{model_name}: {split}, open set")
    main_split = "test" if "test" in split_metrics else next(iter(split_metrics), None)
    if main_split:
        plot_confusion_matrix(split_metrics[main_split]["confusion_matrix"], label_names,
                              out / "confusion_matrix.png", title=f"{model_name}: {main_split}")

    block = [f"=== {model_name} | {date} ===",
             "config: " + json.dumps(dict(config), default=str, sort_keys=True)]
    if extra:
        block.append("extra: " + json.dumps(dict(extra), default=str, sort_keys=True))
    for split, m in split_metrics.items():
        block.append(format_metrics(m, label_names, title=f"[{split}]"))
        if m.get("open_set"):
            block.append(format_open_set(m["open_set"]))
    with open(out / "results_category.txt", "a", encoding="utf-8") as fh:
        fh.write("\n".join(block) + "\n\n")
    return payload


# ---- Named-label scores: the MWPD official metric, classes unseen in training, open-set figures ----

def label_scores(y_true: Sequence[str], y_pred: Sequence[str | None]) -> dict:
    """Weighted F1 (weights = true support), macro-F1 and accuracy over label *names*.

    Works on names so a class that only the evaluation data holds (no training offer, so the model
    can never predict it) simply scores F1 0 with its support counted; None predictions are misses.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    names = sorted({str(v) for v in y_true} | {str(v) for v in y_pred if v is not None})
    index = {n: i for i, n in enumerate(names)}
    miss = len(names)  # an abstention: a column of its own, never right
    cm = confusion_matrix([index[str(v)] for v in y_true],
                          [miss if v is None else index[str(v)] for v in y_pred], miss + 1)
    s = _scores_from_cm(cm)
    # every name occurs in the truth or the predictions, so all count in the macro mean
    macro = float(s["f1"][:miss].mean()) if miss else 0.0
    return {"weighted_f1": s["weighted_f1"], "macro_f1": macro, "accuracy": s["accuracy"], "n": s["n"]}


def gs1_metrics(truth: Mapping[str, Sequence[str]], predictions: Mapping[str, Sequence[str]],
                levels: Sequence[str] = ("lvl1", "lvl2", "lvl3")) -> dict:
    """The MWPD 2020 official metric: weighted F1 per GS1 level, averaged over the levels; macro-F1 beside it."""
    out = {lv: {k: v for k, v in label_scores(truth[lv], predictions[lv]).items()
                if k in ("weighted_f1", "macro_f1", "accuracy")} for lv in levels}
    out["avg_weighted_f1"] = float(np.mean([out[lv]["weighted_f1"] for lv in levels]))
    out["avg_macro_f1"] = float(np.mean([out[lv]["macro_f1"] for lv in levels]))
    return out


def classes_without_training_examples(train_labels: Sequence[str], eval_labels: Sequence[str]) -> list[str]:
    """Classes the evaluation data holds that no training offer has: the model scores them as misses."""
    return sorted(set(eval_labels) - set(train_labels))


def open_set_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str],
                     other_label: str, accepted: Sequence[bool] | None = None) -> dict:
    """The open-set figures of a split that holds an out-of-scope class (`other_label`).

    An offer gets a target label when its prediction is not Other (and `accepted`, when a threshold
    is applied). accepted_precision: share of those labels that are right; in_scope_recall: share of
    target-class offers given their right label; out_of_scope_accept_rate: share of Other offers given
    a target label; target_macro_f1: macro-F1 of the target classes over the in-scope offers alone,
    an Other (or abstained) answer counted wrong, so it compares with a model trained without Other: over
    the target classes those offers hold or are given, as macro_f1 counts (a target class the split lacks
    was a 0 in the mean: a perfect model scored 0.67 on a file without one of three classes).
    """
    if other_label not in label_names:
        raise ValueError(f"{other_label!r} is not one of the labels")
    other = list(label_names).index(other_label)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    given = p != other
    if accepted is not None:
        given &= np.asarray(accepted, dtype=bool)
    in_scope = t != other
    right = given & (p == t)
    targets = [i for i in range(len(label_names)) if i != other]
    cm = confusion_matrix(t[in_scope], np.where(given, p, other)[in_scope], len(label_names))
    scores = _scores_from_cm(cm)
    f1 = scores["f1"]
    targets = [i for i in targets if scores["present"][i]]
    return {
        "accepted_precision": float(right.sum() / given.sum()) if given.any() else 0.0,
        "in_scope_recall": float(right[in_scope].mean()) if in_scope.any() else 0.0,
        "out_of_scope_accept_rate": float(given[~in_scope].mean()) if (~in_scope).any() else 0.0,
        "target_macro_f1": float(np.mean([f1[i] for i in targets])) if targets else 0.0,
        "n_in_scope": int(in_scope.sum()), "n_out_of_scope": int((~in_scope).sum()),
        "other_label": other_label,
    }


def open_set_curve(probs: np.ndarray, y_true: Sequence[int], label_names: Sequence[str], other_label: str,
                   thresholds: Sequence[float] | None = None) -> list[dict]:
    """accepted_precision and in_scope_recall as the threshold on the top probability moves."""
    probs = np.asarray(probs)
    pred, top = probs.argmax(axis=1), probs.max(axis=1)
    points = []
    for th in (np.round(np.linspace(0.0, 0.99, 34), 3) if thresholds is None else thresholds):
        m = open_set_metrics(y_true, pred, label_names, other_label, accepted=top >= th)
        points.append({"threshold": float(th), "accepted_precision": m["accepted_precision"],
                       "in_scope_recall": m["in_scope_recall"],
                       "out_of_scope_accept_rate": m["out_of_scope_accept_rate"]})
    return points


def accepted_by_source(y_true, y_pred, label_names, other_label: str, sources) -> dict:
    """{source category: out-of-scope offers of it given a target label}, most first: which kinds of product
    leak into the classes (a dataset's source_category, MWPD's GS1 level 1 or WDC's category)."""
    other = list(label_names).index(other_label)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    leaked = Counter(str(sources[i]) for i in np.flatnonzero((t == other) & (p != other)))
    return dict(sorted(leaked.items(), key=lambda kv: (-kv[1], kv[0])))


def add_open_set(split_metrics: dict, y_true, y_pred, label_names, other_label: str | None, probs=None,
                 sources=None) -> dict:
    """Add the `open_set` block (with its threshold curve when `probs` is given, and with `sources`, the
    split's source categories, the out-of-scope offers given a label counted by them) to one split's metrics."""
    if other_label and other_label in label_names:
        block = open_set_metrics(y_true, y_pred, label_names, other_label)
        if sources is not None:
            block["accepted_by_source"] = accepted_by_source(y_true, y_pred, label_names, other_label, sources)
        if probs is not None:
            block["curve"] = open_set_curve(probs, y_true, label_names, other_label)
        split_metrics["open_set"] = block
    return split_metrics


def plot_open_set_curve(curve: Sequence[Mapping], path, title: str = "") -> Path:
    """Accepted precision against in-scope recall, one point per threshold on the top probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = [c["in_scope_recall"] for c in curve]
    prec = [c["accepted_precision"] for c in curve]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(rec, prec, marker=".")
    for c in curve[::6]:
        ax.annotate(f"{c['threshold']:.2f}", (c["in_scope_recall"], c["accepted_precision"]), fontsize=7)
    ax.set_xlabel("in-scope recall (target offers given their right label)")
    ax.set_ylabel("accepted precision (given labels that are right)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "open set: threshold on the top probability")
    return _save_figure(fig, path)


def format_open_set(block: Mapping) -> str:
    """One line of open-set figures (see `open_set_metrics`)."""
    return (f"open set (out of scope = {block['other_label']}): accepted_precision={block['accepted_precision']:.4f}"
            f"  in_scope_recall={block['in_scope_recall']:.4f}"
            f"  out_of_scope_accept_rate={block['out_of_scope_accept_rate']:.4f}"
            f"  target_macro_f1={block['target_macro_f1']:.4f}"
            f"  (in scope {block['n_in_scope']}, out of scope {block['n_out_of_scope']})"
            + ("\n  out-of-scope offers given a label, by source category: "
               + ", ".join(f"{k} {v}" for k, v in list(block["accepted_by_source"].items())[:12])
               + (", ..." if len(block["accepted_by_source"]) > 12 else "") if block.get("accepted_by_source") else ""))
