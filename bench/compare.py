"""Every trained model and runtime side by side on one split: quality, speed, memory and size. Prints figures,
writes a Markdown table and a quality-against-throughput plot; asserts nothing.

    .venv/bin/python bench/compare.py --runs runs          # what `make bench` runs

Models are the directories under --runs that hold category_model.json: the linear default, encoders, LoRA
models (their merged model) and ONNX exports. An encoder or LoRA model without an ONNX export gets one
(runs/<name>_onnx, fp32 and int8, with the parity check on the split) unless --no_export. Each model and
runtime is measured in a fresh process, so peak RSS is that model's alone:

- quality: macro-F1 and accuracy on the whole split;
- batch 64: titles/s as predict.py runs (chunks of 1,024 offers sorted by length, batches of 64), and in
  arrival order (batches of 64 consecutive offers, each padded to its own longest, as the service sees them),
  and on bare product names (no description) as a title-only feed sends them;
- batch 1: one offer per call for --seconds; titles/s and p50/p99 latency per call;
- peak RSS of the process (Python, libraries, dataset and model), model size on disk (the files its
  predictor loads: weights and tokenizer), training time from the model directory's metrics.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from category_classification.core.env import stay_offline
from category_classification.inference.ensemble import member_dirs
from category_classification.models.registry import KINDS

ROOT = Path(__file__).resolve().parent.parent
# Files of a model directory that no predictor loads: reports, plots, checkpoints, the LoRA adapter.
NOT_MODEL = {"metrics.json", "results_category.txt", "parity.json", "train_info.json", "training_log.jsonl"}
NOT_MODEL_DIRS = {"checkpoints", "checkpoint", "adapter", "logs"}
TARGETS = {  # model kind, or "<source kind>_small:<runtime>" -> the targets on a 2-core CPU
    "linear": {"batch64_titles_per_s": 20000},
    "encoder_small:onnxruntime-int8": {"batch64_titles_per_s": 1000, "batch1_p50_ms": 10.0},
}


# ---- one measurement, in its own process ----

def model_files(model_dir: Path, info: dict, precision: str | None) -> list[Path]:
    """The files the predictor of this directory reads (an ensemble: its members')."""
    members = member_dirs(model_dir, info)
    if members:
        return [f for m in members
                for f in model_files(m, json.loads((m / "category_model.json").read_text(encoding="utf-8")),
                                     precision)]
    model_dir = model_dir / info.get("path", ".")  # a LoRA trainer's folder: its merged model
    skip_onnx = set()
    if info.get("files"):  # an ONNX export: only the chosen precision's file
        chosen = info["files"].get(precision or info.get("default_precision", "fp32"))
        # a graph over 2 GiB keeps its weights in FILE.data beside it (inference/onnx_export.gather_weights)
        skip_onnx = {name for f in info["files"].values() if f != chosen for name in (f, f + ".data")}
    files = []
    for root, dirs, names in os.walk(model_dir):
        dirs[:] = [d for d in dirs if d not in NOT_MODEL_DIRS and not d.startswith("checkpoint")]
        for name in names:
            if name in NOT_MODEL or name in skip_onnx or name.endswith((".png", ".log")) or name.startswith("results"):
                continue
            files.append(Path(root) / name)
    return files


def product_names(path, n: int) -> list[str]:
    """The first `n` non-empty product names (Name field) of an MWPD JSON-lines file; [] when it is absent."""
    import gzip

    if not path or not Path(path).is_file():
        return []
    names = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            name = json.loads(line).get("Name")
            if isinstance(name, str) and name.strip():
                names.append(name)
                if len(names) == n:
                    break
    return names


def measure(args) -> dict:
    """Quality, throughput, latency, memory of one model directory (and precision), as a dict."""
    import numpy as np

    from category_classification.core.artifacts import read_model_info
    from category_classification.data.dataset_dir import get_split, label_names, load_dataset_dir
    from category_classification.evaluation.metrics import compute_metrics
    from category_classification.inference.predictors import load_predictor, model_size_bytes

    dsd = load_dataset_dir(args.data)
    split = get_split(dsd, args.split)
    texts, y = list(split["text"]), list(split["label"])
    rss_before_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    predictor = load_predictor(args.measure, batch_size=64, precision=args.precision, threads=args.threads)
    load_s = time.perf_counter() - t0
    if predictor.labels != label_names(dsd):
        raise SystemExit(f"{args.measure}: labels {predictor.labels} differ from the dataset's")
    for i in range(3):  # warm-up: first calls allocate and pick kernels
        predictor.predict_proba(texts[i * 64:(i + 1) * 64])

    def timed_passes(chunk: int, texts=texts) -> tuple[np.ndarray, int, list]:
        """Predict `texts` `chunk` offers per call, passes repeating until --seconds have gone by."""
        first, call_s, titles = [], [], 0
        stop = time.perf_counter() + args.seconds
        while not call_s or time.perf_counter() < stop:
            for i in range(0, len(texts), chunk):
                t = time.perf_counter()
                p = predictor.predict_proba(texts[i:i + chunk])
                call_s.append(time.perf_counter() - t)
                titles += len(p)
                if sum(len(x) for x in first) < len(texts):
                    first.append(p)
        return np.concatenate(first), titles, call_s

    # bulk, as predict.py runs: chunks of 1,024 offers, sorted by length inside, batches of 64
    probs, bulk_titles, bulk_s = timed_passes(1024)
    preds = probs.argmax(axis=1)
    m = compute_metrics(y, preds.tolist(), predictor.labels)
    # batch 64 in arrival order, as the service's micro-batches come: each padded to its own longest offer
    _, b64_titles, b64_s = timed_passes(64)
    # bare product names (no description), bulk as above: what "titles/s" means for a title-only feed
    names = product_names(args.names, len(texts))
    names_rate = None
    if names:
        _, names_titles, names_s = timed_passes(1024, names)
        names_rate = names_titles / sum(names_s)

    # batch 1: one offer per call, cycling through the split, for a bounded time
    lat = []
    stop = time.perf_counter() + args.seconds
    i = 0
    while time.perf_counter() < stop or len(lat) < 20:
        t = time.perf_counter()
        predictor.predict_proba([texts[i % len(texts)]])
        lat.append(time.perf_counter() - t)
        i += 1
    lat_ms = np.array(lat) * 1000.0

    info = read_model_info(args.measure)
    desc = predictor.describe()
    return {
        "model_dir": str(args.measure), "kind": desc["kind"], "runtime": predictor.runtime,
        "source_kind": info.get("source_kind"), "source_dir": info.get("source_dir"),
        "n": len(texts), "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
        "batch64_titles_per_s": bulk_titles / sum(bulk_s),
        "batch64_arrival_titles_per_s": b64_titles / sum(b64_s),
        "batch64_names_titles_per_s": names_rate, "names_mean_chars": (
            float(np.mean([len(t) for t in names])) if names else None),
        "mean_chars": float(np.mean([len(t) for t in texts])),
        "batch64_arrival_p50_ms": float(np.percentile(np.array(b64_s) * 1000, 50)),
        "batch64_arrival_p99_ms": float(np.percentile(np.array(b64_s) * 1000, 99)),
        "batch1_titles_per_s": len(lat) / (lat_ms.sum() / 1000.0),
        "batch1_p50_ms": float(np.percentile(lat_ms, 50)), "batch1_p99_ms": float(np.percentile(lat_ms, 99)),
        "batch1_calls": len(lat),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_model_mb": rss_before_model / 1024.0,
        "load_s": load_s,
        "size_mb": model_size_bytes(model_files(Path(args.measure), info, args.precision)) / 1e6,
        "preds": preds.tolist(),
    }


# ---- the comparison ----

def discover(runs: Path) -> list[Path]:
    """Top-level directories under `runs` that hold a trained model."""
    return sorted(d for d in runs.iterdir() if (d / "category_model.json").is_file()) if runs.is_dir() else []


def training_seconds(model_dir: Path) -> float | None:
    from category_classification.inference.predictors import training_figures

    info = json.loads((model_dir / "category_model.json").read_text(encoding="utf-8"))
    members = member_dirs(model_dir, info)
    if members:  # an ensemble: the members' training, one after the other
        parts = []
        for m in members:
            m_info = json.loads((m / "category_model.json").read_text(encoding="utf-8"))
            src = Path(m_info["source_dir"]) if m_info.get("source_dir") else m
            parts.append(training_seconds(src) if src.is_dir() else None)
        return sum(parts) if parts and None not in parts else None
    secs = training_figures(model_dir).get("train_seconds") or info.get("train_seconds")
    if secs is None and (model_dir / "train_info.json").is_file():
        ti = json.loads((model_dir / "train_info.json").read_text(encoding="utf-8"))
        secs = ti.get("train_seconds") or ti.get("training_seconds")
    return float(secs) if secs is not None else None


def ensure_exports(models: list[Path], runs: Path, data: str, split: str, log) -> list[Path]:
    """An ONNX export (fp32 + int8, parity checked on the split) for every encoder/LoRA model lacking one."""
    exported_from = set()
    for d in models:
        info = json.loads((d / "category_model.json").read_text(encoding="utf-8"))
        if info.get("source_dir"):  # an export
            exported_from.add(Path(info["source_dir"]).resolve())
    added = []
    for d in models:
        info = json.loads((d / "category_model.json").read_text(encoding="utf-8"))
        kind = KINDS.get(info.get("kind"))
        if kind is None or not kind.onnx_export or d.resolve() in exported_from:
            continue
        out = runs / f"{d.name}_onnx"
        log(f"exporting {d} to {out} (fp32 + int8, parity on {split})")
        cmd = [sys.executable, str(ROOT / "category_classification" / "export_onnx.py"), "--model", str(d),
               "--out", str(out), "--quantize", "int8", "--check_data", data, "--check_split", split]
        r = subprocess.run(cmd, capture_output=True, text=True)
        log(r.stdout.strip())
        if r.returncode != 0:  # a failed parity check writes nothing: an export already there is an older one's
            log(f"export of {d} failed (not measured):\n{r.stderr[-2000:]}")
            continue
        added.append(out)
    return sorted(set(models) | set(added))


def run_one(model_dir: Path, precision: str | None, args) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(model_dir), "--data", args.data,
           "--split", args.split, "--seconds", str(args.seconds), "--names", args.names]
    if precision:
        cmd += ["--precision", precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  {model_dir} ({precision or 'default'}) failed:\n{r.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def row_name(r: dict, runs: Path) -> str:
    name = Path(r["model_dir"]).name
    if r.get("source_dir"):  # an export is named for the model it came from
        name = Path(r["source_dir"]).name
    return name


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Benchmarks: every model and runtime on the same split",
        "",
        f"Written by `bench/compare.py` on {meta['date']}: {meta['n']} offers of the `{meta['split']}` split of "
        f"`{meta['data']}`; {meta['cpu']} ({meta['cpus']} CPUs), {meta['threads_note']}; load average "
        f"{meta['load_start']:.2f} at the start and {meta['load_end']:.2f} at the end (above 1, other jobs shared "
        f"the CPU with the measurement, and the speed figures are pessimistic).",
        "",
        "Batch 64: as predict.py runs (chunks of 1,024 offers sorted by length, batches of 64); arrival: "
        "batches of 64 consecutive offers, each padded to its own longest, as the service's micro-batches come; "
        f"names: bare product names (MWPD Name field, {meta['names_chars']} characters on average, where the "
        f"split's texts are name + description, {meta['text_chars']} characters), as predict.py runs. "
        "Batch 1: one offer per call; latency per call. Peak RSS: the whole measuring process (Python, "
        "libraries, dataset, model). Size: the files the predictor loads (weights and tokenizer). "
        "Agreement: share of offers where the ONNX model predicts what the torch model predicts.",
        "",
        "| model | runtime | macro-F1 | accuracy | train time | titles/s b64 | titles/s b64 arrival | "
        "titles/s b64 names | titles/s b1 | p50 ms b1 | p99 ms b1 | peak RSS MB | size MB | agreement |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        train = r.get("train_seconds")
        lines.append(
            f"| {r['name']} | {r['runtime']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | "
            f"{fmt(train, '.0f') + ' s' if train is not None else 'n/a'} | {r['batch64_titles_per_s']:,.0f} | "
            f"{r['batch64_arrival_titles_per_s']:,.0f} | {fmt(r.get('batch64_names_titles_per_s'), ',.0f')} | "
            f"{r['batch1_titles_per_s']:,.0f} | {r['batch1_p50_ms']:.2f} | {r['batch1_p99_ms']:.2f} | "
            f"{r['peak_rss_mb']:,.0f} | {r['size_mb']:,.1f} | "
            f"{fmt(r.get('agreement'), '.2%') if r.get('agreement') is not None else '-'} |")
    if meta.get("targets"):
        lines += ["", "Targets (2-core CPU):", ""]
        lines += [f"- {t}" for t in meta["targets"]]
    lines += ["", f"![quality against throughput]({meta['plot_rel']})", "",
              f"Command: `{meta['command']}`. Raw figures: `{meta['json']}`.", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    markers = {"numpy": "s", "torch": "o", "onnxruntime-fp32": "^", "onnxruntime-int8": "v"}
    fig, ax = plt.subplots(figsize=(8, 4.6))
    names = list(dict.fromkeys(r["name"] for r in rows))
    colors = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for r in rows:
        ax.scatter(r["batch64_titles_per_s"], r["macro_f1"], s=80, marker=markers.get(r["runtime"], "o"),
                   color=colors[r["name"]], label=f"{r['name']}, {r['runtime']}", zorder=3, alpha=0.85)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo = min(r["batch64_titles_per_s"] for r in rows)
    hi = max(r["batch64_titles_per_s"] for r in rows)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.margins(y=0.15)
    ax.set_xlabel("titles/s at batch 64 (2-core CPU, log scale)")
    ax.set_ylabel("macro-F1 on the test split")
    ax.set_title("Quality against throughput")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    from category_classification.core.artifacts import written_whole

    try:
        with written_whole(path) as tmp:  # a reader (the docs) sees the old plot or the new one whole
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def check_targets(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        key = r["kind"]
        if r.get("source_kind") and "small" in r["name"]:
            key = f"{r['source_kind']}_small:{r['runtime']}"
        for metric, goal in TARGETS.get(key, {}).items():
            v = r[metric]
            ok = v <= goal if metric.endswith("_ms") else v >= goal
            sign = "<=" if metric.endswith("_ms") else ">="
            line = f"{r['name']} {r['runtime']}: {metric} {v:,.1f} (target {sign} {goal:,}): {'met' if ok else 'MISSED'}"
            names = r.get("batch64_names_titles_per_s")
            if metric == "batch64_titles_per_s" and names:
                line += f"; on bare product names {names:,.0f} ({'met' if names >= goal else 'MISSED'})"
            out.append(line)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="runs", help="folder holding the trained model directories")
    p.add_argument("--data", default=None, help="dataset directory (default: RUNS/mwpd6)")
    p.add_argument("--split", default="test")
    p.add_argument("--seconds", type=float, default=5.0, help="timing per model, runtime and batch size")
    # 1 thread: on this 2-core box shared with other jobs, a second torch thread made batch-1 calls of the
    # small encoder 40x slower (threads waiting for a busy core); see docs/serving.md.
    p.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (0: library default)")
    p.add_argument("--names", default=str(ROOT / "data" / "mwpd" / "validation.json.gz"),
                   help="MWPD file whose product names (no description) give the names-only throughput")
    p.add_argument("--no_export", action="store_true", help="do not export models lacking an ONNX export")
    p.add_argument("--only", nargs="*", default=None, help="only these model directory names")
    p.add_argument("--md", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "compare.png"))
    p.add_argument("--json", default=None, help="raw figures (default: RUNS/compare.json)")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one model, one process
    p.add_argument("--precision", default=None, help=argparse.SUPPRESS)
    return p


KEEP_MARK = "<!-- kept by bench/compare.py -->"
WRITTEN_BY = "Written by `bench/compare.py`"


def _our_markdown(path: Path) -> bool:
    """A table this script wrote (its own sentence, or the mark of the sections it keeps): the only Markdown
    it replaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return WRITTEN_BY in text or KEEP_MARK in text


def _our_plot(path: Path) -> bool:
    """A PNG matplotlib wrote (its Software field), as this script's plot is."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


def check_outputs(args, runs: Path, models: list[Path]) -> None:
    """Refuse, before any measurement, an output that is an input, lies inside the dataset or a model, or is a
    file this script did not write (a user's notes, JSON or picture)."""
    from category_classification.core.artifacts import check_file_out, json_file_with_keys

    folders = [args.data, *models]
    table = "benchmark table of bench/compare.py"
    check_file_out(args.md, [], _our_markdown, what=table, folders=folders, flag="--md")
    if Path(runs / "compare.md").resolve() != Path(args.md).resolve():  # --md RUNS/compare.md: written once
        check_file_out(runs / "compare.md", [args.md], _our_markdown, what=table, folders=folders, flag="--runs: its")
    check_file_out(args.json or runs / "compare.json", [args.md], lambda p: json_file_with_keys(p, ("meta", "rows")),
                   what="compare.json of bench/compare.py", folders=folders, flag="--json")
    check_file_out(args.plot, [args.md, args.json], _our_plot, what="plot of bench/compare.py", folders=folders,
                   flag="--plot")


def main(argv=None) -> int:
    from category_classification.core.artifacts import write_text_atomic
    from category_classification.core.cli import UserError, check_settings

    args = build_parser().parse_args(argv)
    check_settings(args, positive=("seconds",))  # and --threads: 0 (the libraries' default) .. 4x the cores
    stay_offline()  # the measuring processes inherit it
    runs = Path(args.runs)
    args.data = args.data or str(runs / "mwpd6")
    if args.measure:
        result = measure(args)
        print(json.dumps(result))
        return 0
    if not (Path(args.data) / "dataset_dict.json").is_file():
        raise UserError(f"no dataset at {args.data}: run `make demo` first (it builds {runs}/mwpd6 and trains models)")
    try:
        splits = json.loads((Path(args.data) / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        splits = None
    if isinstance(splits, list) and args.split not in splits:
        raise UserError(f"--split {args.split}: {args.data} has the splits {', '.join(map(str, splits))}")
    check_outputs(args, runs, discover(runs))
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    load_start = os.getloadavg()[0]
    models = discover(runs)
    if args.only:
        models = [d for d in models if d.name in args.only or d.name.removesuffix("_onnx") in args.only]
    if not args.no_export:
        models = ensure_exports(models, runs, args.data, args.split, log)
        if args.only:
            models = [d for d in models if d.name in args.only or d.name.removesuffix("_onnx") in args.only]
    if not models:
        raise UserError(f"no trained model directories under {runs}" + (" named by --only" if args.only else "")
                        + ": run `make demo` first")
    jobs = []
    for d in models:
        info = json.loads((d / "category_model.json").read_text(encoding="utf-8"))
        precisions = list(info.get("files") or {}) or [None]  # an ONNX export: each of its precisions
        jobs += [(d, p) for p in precisions]
    rows = []
    for d, precision in jobs:
        log(f"measuring {d}{' ' + precision if precision else ''} ...")
        r = run_one(d, precision, args)
        if r is None:
            continue
        r["name"] = row_name(r, runs)
        src = Path(r["source_dir"]) if r.get("source_dir") else Path(r["model_dir"])
        r["train_seconds"] = training_seconds(src) if src.is_dir() else None
        log(f"  {r['name']} {r['runtime']}: macro-F1 {r['macro_f1']:.4f}, {r['batch64_titles_per_s']:,.0f} titles/s "
            f"at b64, {r['batch1_titles_per_s']:,.0f} at b1 (p50 {r['batch1_p50_ms']:.2f} ms, p99 "
            f"{r['batch1_p99_ms']:.2f} ms), peak RSS {r['peak_rss_mb']:,.0f} MB, {r['size_mb']:,.1f} MB on disk")
        rows.append(r)
    if not rows:  # the earlier table, JSON and plot stay as they are
        print(f"error: none of the {len(jobs)} measurements succeeded (see above); nothing written", file=sys.stderr)
        return 1
    # Agreement of each ONNX runtime with the torch model it was exported from, on this split.
    torch_preds = {str(Path(r["model_dir"]).resolve()): r["preds"] for r in rows if r["runtime"] == "torch"}
    for r in rows:
        ref = torch_preds.get(str(Path(r["source_dir"]).resolve())) if r.get("source_dir") else None
        if ref is not None:
            r["agreement"] = sum(a == b for a, b in zip(ref, r["preds"])) / len(ref)
            ref_f1 = next(x["macro_f1"] for x in rows if x["runtime"] == "torch"
                          and Path(x["model_dir"]).resolve() == Path(r["source_dir"]).resolve())
            r["macro_f1_delta_vs_torch"] = r["macro_f1"] - ref_f1
    order = {"numpy": 0, "torch": 1, "onnxruntime-fp32": 2, "onnxruntime-int8": 3}
    rows.sort(key=lambda r: (r["name"] != "linear", r["name"], order.get(r["runtime"], 9)))

    json_path = Path(args.json or runs / "compare.json")
    md_path, plot_path = Path(args.md), Path(args.plot)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "split": args.split, "data": args.data,
            "n": rows[0]["n"] if rows else 0, "cpu": cpu_name(), "cpus": os.cpu_count(),
            "threads_note": (f"{args.threads} torch/onnxruntime thread{'s' if args.threads > 1 else ''}"
                             if args.threads else "library thread defaults"),
            "names_chars": f"{rows[0]['names_mean_chars']:.0f}" if rows and rows[0].get("names_mean_chars") else "n/a",
            "text_chars": f"{rows[0]['mean_chars']:.0f}" if rows else "n/a",
            "load_start": load_start, "load_end": os.getloadavg()[0], "targets": check_targets(rows),
            "plot_rel": os.path.relpath(plot_path, md_path.parent), "json": str(json_path),
            "command": "python bench/compare.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_text_atomic(json_path, json.dumps({"meta": meta, "rows": [{k: v for k, v in r.items() if k != "preds"}
                                                                     for r in rows]}, indent=2) + "\n")
    plot(rows, plot_path)
    md = markdown(rows, meta)
    # sections written by hand (the MWPD benchmark) follow KEEP_MARK and survive a rerun
    old = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    kept = old[old.index(KEEP_MARK):] if KEEP_MARK in old else ""
    write_text_atomic(md_path, md.rstrip("\n") + "\n\n" + kept if kept else md)
    if (runs / "compare.md").resolve() != md_path.resolve():
        copy = markdown(rows, {**meta, "plot_rel": os.path.relpath(plot_path.resolve(), runs.resolve())})
        write_text_atomic(runs / "compare.md", copy)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
