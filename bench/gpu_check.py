"""The headline models on one GPU in one command: the 80M encoder in bf16 (with and without torch.compile),
LoRA on the Qwen3-Embedding-0.6B architecture (random weights), inference titles/s; a table and one JSON file.

    bash bench/gpu_check.sh --out runs/gpu_check.json   # on the GPU machine: installs the carried wheels first
    python bench/gpu_check.py --tiny                    # the same code on CPU with tiny sizes, under a minute

Every figure is measured in this run; the `projections` block (LSPC epochs, the whole corpus) is arithmetic
on those figures and says so. See docs/benchmarks.md, "GPU check".
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("encoder", "lora", "inference", "compile")
# Qwen3-Embedding-0.6B's published sizes: 595,776,512 parameters with this vocabulary.
QWEN3_EMBEDDING_06B = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                           num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                           max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                           tie_word_embeddings=True)
QWEN3_EMBEDDING_06B_PARAMETERS = 595_776_512
# Sizes of the two modes. "full" fits in about 8 minutes on one H100; "tiny" runs on a CPU in under a minute.
SIZES = {
    "full": dict(encoder_flags=[], encoder_s=150, compile_s=80, max_epochs=40, lora_s=130, infer_s=40,
                 lora_layers=None, micro_batches=[32, 64, 16], lora_offers=2048, eval_offers=64,
                 batch1_titles=200, batch256_titles=8192, compile_backend="inductor", subset=None, probe=True,
                 checkpointing=(False, True)),
    "tiny": dict(encoder_flags=["--hidden_size", "32", "--num_layers", "1", "--num_heads", "2", "--num_kv_heads",
                                "1", "--ffn_size", "64"],
                 encoder_s=20, compile_s=20, max_epochs=2, lora_s=30, infer_s=10, lora_layers=2,
                 micro_batches=[4], lora_offers=16, eval_offers=8, batch1_titles=8, batch256_titles=64,
                 compile_backend="eager", subset=(64, 32), probe=False, checkpointing=(True,)),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes on CPU: proves the script before a GPU run")
    p.add_argument("--data", default=None, help="built 6-class dataset (default: build it from data/mwpd)")
    p.add_argument("--work", default="runs/gpu_check", help="folder for the models this check trains")
    p.add_argument("--out", default=None, help="JSON file to write (default: WORK/gpu_check.json)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--seq_len", type=int, default=128)
    p.add_argument("--budget_s", type=float, default=450, help="stop starting new runs after this many seconds")
    p.add_argument("--parts", default=",".join(PARTS),
                   help="comma list of the parts to run (a rerun of one part after a failure, in the time left)")
    p.add_argument("--extra_model", action="append", default=[], metavar="NAME=DIR",
                   help="another trained model directory to time at inference (the small encoder, MiniLM)")
    p.add_argument("--lspc_train_offers", type=int, default=2_700_000,
                   help="train offers of the LSPC 6-class dataset for the projected epoch times (an estimate: "
                        "10M mapped offers x 32%% in the six classes x 85%% train; see docs/benchmarks.md)")
    p.add_argument("--corpus_offers", type=int, default=98_000_000,
                   help="offers in the whole LSPC V2020 zip, for the projected prediction hours")
    return p


class Clock:
    """Seconds since the start, and what is left of the budget."""

    def __init__(self, budget_s: float):
        self.t0, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()


@contextlib.contextmanager
def peak_memory(device, into: dict):
    """Peak GPU memory allocated by torch inside the block (CUDA), or the process's peak RSS so far (CPU)."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        into["gpu_allocated_before_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into["wall_s"] = round(time.perf_counter() - t0, 1)
        if device.type == "cuda":
            into["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        else:
            into["peak_rss_gib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def environment(device) -> dict:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": str(device), "cpu_count": os.cpu_count(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                        time.gmtime())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return env


# Data


def prepare_data(args, work: Path) -> Path:
    """The bundled 6-class dataset as `make demo` builds it (without language tags), unless --data names one."""
    if args.data:
        return Path(args.data)
    from category_classification import build_lspc_dataset

    out = work / "mwpd6"
    if not (out / "dataset_dict.json").is_file():
        mwpd = REPO / "data" / "mwpd"
        code = build_lspc_dataset.main(["--mwpd", str(mwpd / "train.json.gz"), str(mwpd / "validation.json.gz"),
                                        "--out", str(out), "--val_size", "0.10", "--test_size", "0.15"])
        if code:
            raise RuntimeError(f"building the dataset failed ({code})")
    return out


def subset(data: Path, out: Path, n_train: int, n_eval: int) -> Path:
    """The first offers of each split, saved as a dataset folder: fixed sizes for the speed runs."""
    from category_classification.data.dataset_dir import load_dataset_dir
    from datasets import DatasetDict

    dsd = load_dataset_dir(data)
    sizes = {"train": n_train, "validation": n_eval, "test": n_eval}
    DatasetDict({k: dsd[k].select(range(min(n, len(dsd[k])))) for k, n in sizes.items()}).save_to_disk(str(out))
    return out


def token_counts(data: Path, seq_len: int) -> dict:
    """Qwen3 tokens per offer of each split, truncated to seq_len as the trainers do."""
    from category_classification.data.dataset_dir import load_dataset_dir
    from category_classification.models.tokenization import load_qwen_tokenizer

    tok = load_qwen_tokenizer()
    dsd = load_dataset_dir(data)
    out = {}
    for name in ("train", "validation", "test"):
        ids = tok(list(dsd[name]["text"]), truncation=True, max_length=seq_len)["input_ids"]
        out[name] = {"offers": len(ids), "tokens": sum(map(len, ids))}
    return out


def test_texts(data: Path) -> list[str]:
    from category_classification.data.dataset_dir import load_dataset_dir

    return list(load_dataset_dir(data)["test"]["text"])


# 1. The 80M encoder through train_embedding_classifier.py


@contextlib.contextmanager
def compiled_encoder(backend: str | None):
    """Hand the encoder trainer a model class that compiles itself (nn.Module.compile keeps the state_dict keys).

    The trainer has no --compile flag; it builds its model from models.encoder.EmbeddingClassifier when main()
    runs, so swapping that name for the duration of one run compiles exactly the model it trains.
    """
    import category_classification.models.encoder as encoder_module

    made = []
    if backend is None:
        yield made
        return
    base = encoder_module.EmbeddingClassifier

    class CompiledEmbeddingClassifier(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.compile(backend=backend)
            made.append(self)

    encoder_module.EmbeddingClassifier = CompiledEmbeddingClassifier
    try:
        yield made
    finally:
        encoder_module.EmbeddingClassifier = base
    if not made:
        raise RuntimeError("the encoder trainer no longer builds models.encoder.EmbeddingClassifier in main(); "
                           "update compiled_encoder() in bench/gpu_check.py")


def train_encoder(data: Path, out: Path, epochs: int, flags: list, device, compile_backend=None) -> dict:
    """One run of train_embedding_classifier.main; figures from its train_info.json and metrics.json."""
    from category_classification import train_embedding_classifier

    argv = ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--seed", "0", "--save_every", "0",
            "--no_lang_metrics", "--amp", "bf16", "--device", str(device.type), *flags]
    rec = {"epochs": epochs, "torch_compile": compile_backend or "off"}
    with peak_memory(device, rec), compiled_encoder(compile_backend):
        code = train_embedding_classifier.main(argv)
    if code:
        raise RuntimeError(f"train_embedding_classifier.py exited {code}")
    info = json.loads((out / "train_info.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rec.update(parameters=info["parameters"]["total"], best_epoch=metrics.get("best_epoch"),
               train_seconds=info["train_seconds"],
               test_macro_f1_best_epoch=round(metrics["test"]["macro_f1"], 4),
               test_offers=metrics["test"]["n"],
               per_epoch=[{"epoch": h["epoch"], "seconds": h["seconds"], "tokens_per_s": h["train_tokens_per_s"],
                           "val_macro_f1": round(h.get("val_macro_f1", float("nan")), 4)}
                          for h in info["history"]])
    steady = [h["tokens_per_s"] for h in rec["per_epoch"][1:]] or [rec["per_epoch"][0]["tokens_per_s"]]
    rec["tokens_per_s_after_epoch_1"] = round(sum(steady) / len(steady))
    return rec


def encoder_phase(data: Path, work: Path, size: dict, device) -> dict:
    """A 1-epoch probe sizes the run; then as many epochs as fit in encoder_s."""
    result, epochs = {}, size["max_epochs"]
    if size["probe"]:
        probe = result["probe_1_epoch"] = train_encoder(data, work / "encoder_probe", 1, size["encoder_flags"], device)
        epoch_s = max(probe["per_epoch"][0]["seconds"], 1e-3)
        overhead = max(probe["wall_s"] - epoch_s, 0.0)  # tokenizer, tokenization, final evaluation, saving
        epochs = int(max(1, min(epochs, (size["encoder_s"] - probe["wall_s"] - overhead) / (1.15 * epoch_s))))
    result["eager"] = train_encoder(data, work / "encoder", epochs, size["encoder_flags"], device)
    return result


def compile_phase(eager_epochs: int, data: Path, work: Path, size: dict, device, clock: Clock) -> dict:
    """The eager run again under torch.compile, last and only if it fits: epoch 1 holds the compilation,
    epochs 2 and 3 the compiled speed; more would only repeat them."""
    import torch

    if clock.left() < size["compile_s"]:
        return {"skipped": f"does not fit: {clock.left():.0f} s of the budget left, {size['compile_s']} s needed"}
    epochs = min(eager_epochs, 3)
    try:
        return train_encoder(data, work / "encoder_compiled", epochs, size["encoder_flags"], device,
                             compile_backend=size["compile_backend"])
    finally:
        torch._dynamo.reset()  # drop the compiled graphs and the model they hold


# 2. LoRA on the Qwen3-Embedding-0.6B architecture through train_qwen3_lora.py


def save_random_qwen3(path: Path, device, tiny: bool) -> dict:
    """A Qwen3 base model of Qwen3-Embedding-0.6B's sizes with random weights (bf16 on CUDA), saved like the hub
    checkpoint with the offline Qwen3 tokenizer: speed and memory do not depend on the weights' values."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from tests.fixtures import save_tiny_qwen3  # the repository root is on sys.path (top of this file)
    from category_classification.models.tokenization import load_qwen_tokenizer

    tok = load_qwen_tokenizer()
    if tiny:
        save_tiny_qwen3(path, tok)
        return {"architecture": "tiny Qwen3 (hidden 32, 2 layers) standing in for Qwen3-Embedding-0.6B"}
    torch.manual_seed(0)
    config = Qwen3Config(**QWEN3_EMBEDDING_06B, pad_token_id=tok.pad_token_id)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):  # initialising 0.6B parameters on the GPU takes a second, on the CPU a minute
        model = Qwen3Model(config).to(dtype)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    del model
    return {"architecture": "Qwen3-Embedding-0.6B sizes, random weights", "parameters": n,
            "parameters_match_published": n == QWEN3_EMBEDDING_06B_PARAMETERS}


@contextlib.contextmanager
def gradient_checkpointing(enabled: bool):
    """Turn on gradient checkpointing in the TrainingArguments the LoRA trainer builds (it has no flag for it).

    lora.training_arguments() imports transformers.TrainingArguments when it runs, so the name is swapped for a
    factory that adds the two settings for the duration of one run.
    """
    from transformers import TrainingArguments as original

    transformers = sys.modules["transformers"]  # transformers swaps its module object on first use: take the live one
    calls = []
    if not enabled:
        yield calls
        return

    # transformers 5.2x renamed the two settings (the old names still work, with a warning)
    name = "activation_checkpointing" if "activation_checkpointing" in original.__dataclass_fields__ \
        else "gradient_checkpointing"

    def with_checkpointing(**kwargs):
        calls.append(1)
        kwargs.update({name: True, f"{name}_kwargs": {"use_reentrant": False}})
        return original(**kwargs)

    transformers.TrainingArguments = with_checkpointing
    try:
        yield calls
    finally:
        transformers.TrainingArguments = original
    if not calls:
        raise RuntimeError("the LoRA trainer no longer builds transformers.TrainingArguments at run time; "
                           "update gradient_checkpointing() in bench/gpu_check.py")


def train_lora(data: Path, model_dir: Path, out: Path, micro: int, checkpointing: bool, seq_len: int,
               train_tokens: int, device, lora_layers) -> dict:
    """One epoch of train_qwen3_lora.main at micro-batch `micro` (no accumulation); tokens/s over the epoch."""
    from category_classification import train_qwen3_lora

    parser = train_qwen3_lora.build_parser()
    argv = ["--data", str(data), "--out", str(out), "--model", str(model_dir),
            known_flag(parser, "--batch_size", "--batch"), str(micro),
            known_flag(parser, "--micro_batch_size", "--micro_batch"), str(micro),
            "--epochs", "1", "--seq_len", str(seq_len), "--seed", "0",
            "--no_lang_metrics", "--logging_steps", "50", "--device", device.type]
    if lora_layers:
        argv += ["--lora_layers", str(lora_layers)]
    rec = {"micro_batch": micro, "gradient_checkpointing": checkpointing, "seq_len": seq_len}
    with peak_memory(device, rec), gradient_checkpointing(checkpointing):
        code = train_qwen3_lora.main(argv)
    if code:
        raise RuntimeError(f"train_qwen3_lora.py exited {code}")
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    rec.update(train_seconds=m["train_seconds"], precision=m.get("precision"),
               trainable_parameters=m.get("trainable_parameters"), total_parameters=m.get("total_parameters"),
               train_tokens=train_tokens, tokens_per_s=round(train_tokens / max(m["train_seconds"], 1e-9)))
    return rec


def known_flag(parser, *names) -> str:
    """The first of `names` that a trainer accepts: the scripts' flag names are being unified (--batch_size)."""
    for name in names:
        if name in parser._option_string_actions:
            return name
    raise RuntimeError(f"the trainer accepts none of {', '.join(names)}; update bench/gpu_check.py")


def lora_phase(data: Path, work: Path, size: dict, device, clock: Clock, seq_len: int) -> dict:
    """Micro-batch 32 (the target), 64 and 16, each without and with gradient checkpointing, while the LoRA time
    budget lasts."""
    lora_data = subset(data, work / "lora_data", size["lora_offers"], size["eval_offers"])
    tokens = token_counts(lora_data, seq_len)["train"]["tokens"]
    model_dir = work / "qwen3_random"
    result = {"model": save_random_qwen3(model_dir, device, size["lora_layers"] is not None),
              "train_offers": size["lora_offers"], "train_tokens": tokens, "runs": []}
    t0, last = clock.elapsed(), 0.0
    # Each size without and with checkpointing before the next size: a short budget still gives both kinds.
    for micro in size["micro_batches"]:
        for checkpointing in size["checkpointing"]:
            spent = clock.elapsed() - t0
            if spent + 1.2 * last > size["lora_s"] or clock.left() < size["infer_s"] + 1.2 * last:
                result["runs"].append({"micro_batch": micro, "gradient_checkpointing": checkpointing,
                                       "skipped": f"LoRA time budget ({size['lora_s']}s) spent"})
                continue
            t1 = clock.elapsed()
            out = work / f"lora_mb{micro}{'_gc' if checkpointing else ''}"
            try:
                result["runs"].append(train_lora(lora_data, model_dir, out, micro, checkpointing, seq_len,
                                                 tokens, device, size["lora_layers"]))
                if result.get("model_dir"):  # keep one trained folder (for inference), not 1.2 GB per run
                    shutil.rmtree(result["model_dir"], ignore_errors=True)
                result["model_dir"] = str(out)
            except Exception as exc:  # out of memory at one size must not hide the others
                result["runs"].append({"micro_batch": micro, "gradient_checkpointing": checkpointing,
                                       "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            last = clock.elapsed() - t1
    return result


# 3. Inference through the predictor predict.py and serve.py use


def time_predictor(model_dir: Path, texts: list, device, size: dict) -> dict:
    """Titles/s at batch 1 (one title per call, as a request) and batch 256 (a batch job), after a warm-up."""
    from category_classification.inference.predictors import load_predictor

    rec = {}
    predictor = load_predictor(model_dir, device=str(device))
    for batch, n in ((1, size["batch1_titles"]), (256, size["batch256_titles"])):
        chunk = (texts * (n // max(len(texts), 1) + 1))[:n]
        predictor.batch_size = batch
        predictor.predict(chunk[:batch])  # warm-up: kernels, allocator
        t0 = time.perf_counter()
        if batch == 1:
            lat = []
            for t in chunk:
                t1 = time.perf_counter()
                predictor.predict([t])
                lat.append(time.perf_counter() - t1)
            rec["batch1_p50_ms"] = round(sorted(lat)[len(lat) // 2] * 1e3, 2)
        else:
            predictor.predict(chunk)
        rec[f"batch{batch}_titles_per_s"] = round(n / (time.perf_counter() - t0), 1)
        rec[f"batch{batch}_titles"] = n
    rec["runtime"] = predictor.describe().get("runtime")
    return rec


def inference_phase(models: dict, texts: list, device, size: dict) -> dict:
    out = {}
    for name, model_dir in models.items():
        rec = {"model_dir": str(model_dir)}
        try:
            with peak_memory(device, rec):
                rec.update(time_predictor(Path(model_dir), texts, device, size))
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        out[name] = rec
    return out


# Projections: arithmetic on the measured figures, labelled as such


def projections(result: dict, args) -> dict:
    tokens = result.get("tokens", {}).get("train")
    per_offer = tokens["tokens"] / tokens["offers"] if tokens else None
    out = {"note": "projections, not measurements: arithmetic on this run's figures",
           "lspc_train_offers": args.lspc_train_offers, "corpus_offers": args.corpus_offers,
           "tokens_per_offer_bundled_train": round(per_offer, 1) if per_offer else None}

    def epoch(tokens_per_s):
        secs = args.lspc_train_offers * per_offer / tokens_per_s
        return {"seconds": round(secs), "arithmetic": f"{args.lspc_train_offers:,} offers x {per_offer:.1f} "
                f"tokens/offer / {tokens_per_s:,.0f} tokens/s = {secs:,.0f} s ({secs / 3600:.2f} h)"}

    enc = result.get("encoder", {}).get("eager", {})
    if per_offer and enc.get("tokens_per_s_after_epoch_1"):
        out["encoder_lspc_epoch"] = epoch(enc["tokens_per_s_after_epoch_1"])
    for run in result.get("lora", {}).get("runs", []):
        if per_offer and run.get("tokens_per_s"):
            key = f"lora_lspc_epoch_mb{run['micro_batch']}{'_gc' if run['gradient_checkpointing'] else ''}"
            out[key] = epoch(run["tokens_per_s"])
    env = result["environment"]
    where = env.get("gpu") or f"{env['device']} process"
    for name, rec in result.get("inference", {}).items():
        rate = rec.get("batch256_titles_per_s")
        if rate:
            hours = args.corpus_offers / rate / 3600
            out[f"predict_corpus_{name}"] = {"hours_one_device": round(hours, 2), "arithmetic":
                                             f"{args.corpus_offers:,} offers / {rate:,.0f} titles/s = {hours:.2f} h "
                                             f"on one {where}; N of them under torchrun: about {hours:.2f}/N h"}
    return out


# Report


def targets(result: dict) -> list:
    """Issue 16's targets for one H100, each with the measured figure it is judged on."""
    out = []
    if result["mode"] == "tiny":  # tiny models on a subset: nothing to judge
        return out
    eager = result.get("encoder", {}).get("eager", {})
    if eager.get("per_epoch"):
        rate = eager["tokens_per_s_after_epoch_1"]
        fastest = min(e["seconds"] for e in eager["per_epoch"])
        out.append(f"encoder bf16 >= 150,000 training tokens/s: {'met' if rate >= 150_000 else 'MISSED'} "
                   f"({rate:,} after epoch 1)")
        out.append(f"encoder epoch of the bundled data < 10 s: {'met' if fastest < 10 else 'MISSED'} "
                   f"(fastest {fastest:.2f} s)")
    for run in result.get("lora", {}).get("runs", []):
        if run.get("micro_batch") == 32 and not run.get("gradient_checkpointing") and "skipped" not in run:
            fits = "tokens_per_s" in run and run.get("peak_gpu_gib", 1e9) <= 78
            out.append(f"LoRA step at micro-batch 32 x up to 128 tokens fits in 78 GiB: {'met' if fits else 'MISSED'} "
                       f"({run.get('peak_gpu_gib', run.get('error', 'no GPU figure'))})")
    return out



def table(result: dict) -> str:
    """The measured figures as plain-text rows; projections follow, marked as such."""
    rows = [f"GPU check on {result['environment'].get('gpu', result['environment']['device'])} "
            f"({result['mode']} sizes, {result['total_wall_s']:.0f} s)"]
    if result["mode"] == "tiny":
        rows.append("TINY SIZES: these figures prove that the code runs; they say nothing about any model's speed")
    enc = dict(result.get("encoder", {}), compiled=result.get("encoder_compiled"))
    for key in ("probe_1_epoch", "eager", "compiled"):
        r = enc.get(key)
        if not r or "per_epoch" not in r:
            rows.append(f"encoder {key}: {(r or {}).get('skipped') or (r or {}).get('error') or 'not run'}")
            continue
        mem = r.get("peak_gpu_gib", r.get("peak_rss_gib_process"))
        rows.append(f"encoder {key} (compile {r['torch_compile']}, {r['parameters']:,} parameters): {r['epochs']} "
                    f"epochs, peak memory {mem} GiB, test macro-F1 {r['test_macro_f1_best_epoch']} at best epoch "
                    f"{r['best_epoch']} ({r['test_offers']} test offers)")
        rows += [f"  epoch {e['epoch']:>2}: {e['seconds']:>7.2f} s  {e['tokens_per_s']:>10,.0f} tokens/s  "
                 f"val macro-F1 {e['val_macro_f1']}" for e in r["per_epoch"]]
    lora = result.get("lora", {})
    if lora:
        rows.append(f"LoRA: {lora.get('model', {}).get('architecture', '?')}, {lora.get('train_offers')} train "
                    f"offers ({lora.get('train_tokens')} tokens) per run")
    for r in lora.get("runs", []):
        what = f"  micro-batch {r['micro_batch']:>3} checkpointing {'on ' if r['gradient_checkpointing'] else 'off'}"
        if "tokens_per_s" in r:
            mem = r.get("peak_gpu_gib", r.get("peak_rss_gib_process"))
            rows.append(f"{what}: {r['tokens_per_s']:>9,} tokens/s, {r['train_seconds']:.1f} s, peak {mem} GiB")
        else:
            rows.append(f"{what}: {r.get('skipped') or r.get('error')}")
    for name, r in result.get("inference", {}).items():
        if "error" in r:
            rows.append(f"inference {name}: {r['error']}")
            continue
        rows.append(f"inference {name} ({r.get('runtime')}): batch 1 {r['batch1_titles_per_s']:,} titles/s "
                    f"(p50 {r['batch1_p50_ms']} ms), batch 256 {r['batch256_titles_per_s']:,} titles/s")
    rows += [f"TARGET {t}" for t in targets(result)]
    for key, p in result.get("projections", {}).items():
        if isinstance(p, dict) and "arithmetic" in p:
            rows.append(f"PROJECTION {key}: {p['arithmetic']}")
    for key, err in result.get("errors", {}).items():
        rows.append(f"FAILED {key}: {err.splitlines()[-1]}")
    return "\n".join(rows)


def phase(result: dict, out: Path, name: str, fn, *a):
    """Run one part; a failure is recorded with its traceback and the next part still runs. The JSON file is
    rewritten after every part, so a run stopped by its time limit still leaves what it measured."""
    print(f"\n== gpu_check: {name}", flush=True)
    try:
        result[name] = fn(*a)
    except Exception:
        result.setdefault("errors", {})[name] = traceback.format_exc()[-3000:]
        print(result["errors"][name], file=sys.stderr, flush=True)
    write_json(result, out)


def write_json(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        raise SystemExit(f"error: --parts takes {', '.join(PARTS)}")
    from category_classification.core.env import stay_offline

    stay_offline()
    from category_classification.core.devices import pick_device

    device = pick_device("cpu" if args.tiny else args.device)
    import torch

    if not args.tiny and (device.type != "cuda" or not torch.cuda.is_available()):
        # fail in a second rather than spend the whole budget on full sizes without a GPU
        print(f"error: the full check needs a CUDA GPU (torch {torch.__version__} sees none); --tiny runs on a CPU",
              file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(1)  # tiny matrices: thread hand-offs cost more than they save
    size = SIZES["tiny" if args.tiny else "full"]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_s)
    result = {"mode": "tiny" if args.tiny else "full", "environment": environment(device),
              "flags": vars(args)}
    out = Path(args.out) if args.out else work / "gpu_check.json"
    data = prepare_data(args, work)
    if size["subset"]:
        data = subset(data, work / "mwpd6_tiny", *size["subset"])
    result["data"] = str(data)
    # Most wanted first: torch.compile comes last, where a slow compilation can only cost itself.
    phase(result, out, "tokens", token_counts, data, args.seq_len)
    if "encoder" in parts:
        phase(result, out, "encoder", encoder_phase, data, work, size, device)
    if "lora" in parts:
        phase(result, out, "lora", lora_phase, data, work, size, device, clock, args.seq_len)
    if "inference" in parts:
        phase(result, out, "inference", inference_phase, trained_models(result, work, args), test_texts(data),
              device, size)
    report(result, out, clock, args)
    if "compile" in parts:
        epochs = result.get("encoder", {}).get("eager", {}).get("epochs", 3)
        phase(result, out, "encoder_compiled", compile_phase, epochs, data, work, size, device, clock)
        report(result, out, clock, args)
    return 1 if result.get("errors") else 0


def trained_models(result: dict, work: Path, args) -> dict:
    """The model folders to time: this run's (or an earlier run's in --work) and any --extra_model."""
    models = {"encoder_80m": work / "encoder",
              "qwen3_0.6b_lora": Path(result.get("lora", {}).get("model_dir") or work / "lora_mb32")}
    models = {name: d for name, d in models.items() if (d / "category_model.json").is_file()}
    models.update(dict(spec.split("=", 1) for spec in args.extra_model))
    return models


def report(result: dict, out: Path, clock: Clock, args) -> None:
    """Projections, the JSON file and the table; called before the optional compiled run and after it."""
    result["total_wall_s"] = round(clock.elapsed(), 1)
    result["projections"] = projections(result, args)
    write_json(result, out)
    print("\n" + table(result) + f"\n\nwritten: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
