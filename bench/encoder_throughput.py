"""Encoder speed: tokenizer conversion and encoding, training and inference titles/s and peak memory,
for the default (80M, Qwen3 vocabulary) and the small preset. Prints figures; asserts nothing.

    .venv/bin/python bench/encoder_throughput.py --data runs/mwpd6
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def offers(data_dir, n):
    """Real offer texts from a built dataset, or plausible made-up ones when none is given."""
    if data_dir:
        from category_classification.data.dataset_dir import load_dataset_dir

        texts = list(load_dataset_dir(data_dir)["train"]["text"])
    else:
        import random

        rng = random.Random(0)
        words = ("leather sneaker women men size red blue cotton shirt silver ring baby stroller book paperback "
                 "car brake pad gold necklace dress jacket boots kids edition").split()
        texts = [" ".join(rng.choices(words, k=rng.randint(8, 60))) for _ in range(n)]
    return (texts * (n // len(texts) + 1))[:n]


def bench_tokenizers(texts):
    from category_classification.models.tokenization import load_qwen_tokenizer, train_bpe_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CATEGORY_CLASSIFICATION_CACHE"] = tmp
        t0 = time.perf_counter()
        load_qwen_tokenizer()
        convert = time.perf_counter() - t0
        t0 = time.perf_counter()
        qwen = load_qwen_tokenizer()
        cached = time.perf_counter() - t0
    del os.environ["CATEGORY_CLASSIFICATION_CACHE"]
    t0 = time.perf_counter()
    bpe = train_bpe_tokenizer(texts, 8000)
    bpe_train = time.perf_counter() - t0
    rows = {"qwen_convert_s": round(convert, 2), "qwen_cached_load_s": round(cached, 2),
            "bpe8000_train_s": round(bpe_train, 2)}
    for name, tok in (("qwen", qwen), ("bpe8000", bpe)):
        t0 = time.perf_counter()
        ids = tok(texts, truncation=True, max_length=128)["input_ids"]
        dt = time.perf_counter() - t0
        rows[f"{name}_titles_per_s"] = round(len(texts) / dt)
        rows[f"{name}_tokens_per_offer"] = round(sum(map(len, ids)) / len(ids), 1)
    return rows


def bench_model(preset, texts, steps, threads, device="cpu"):
    """One preset in this process: train steps and inference passes on real-length batches (bf16 autocast on
    CUDA, as the trainer runs; fp32 on CPU)."""
    import torch

    from category_classification.core.devices import autocast_dtype, pick_device

    from category_classification.models.encoder import EmbeddingClassifier, EmbeddingClassifierConfig
    from category_classification.models.tokenization import load_qwen_tokenizer, train_bpe_tokenizer
    from category_classification.train_embedding_classifier import PRESETS, build_parser
    from category_classification.training.loop import pad_batch

    if threads:
        torch.set_num_threads(threads)
    parser = build_parser()
    parser.set_defaults(**PRESETS[preset])
    a = parser.parse_args(["--data", "-", "--out", "-"])
    tok = load_qwen_tokenizer() if a.tokenizer == "qwen" else train_bpe_tokenizer(texts, int(a.tokenizer[4:]))
    ids = tok(texts, truncation=True, max_length=a.seq_len)["input_ids"]
    cfg = EmbeddingClassifierConfig(vocab_size=len(tok), num_labels=6, hidden_size=a.hidden_size,
                                    num_layers=a.num_layers, num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                                    ffn_size=a.ffn_size, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    dev = pick_device(device)
    amp = autocast_dtype(dev)
    model = EmbeddingClassifier(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bs = a.batch_size
    batches = [ids[i:i + bs] for i in range(0, len(ids) - bs + 1, bs)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def forward(batch, **kw):
        x, m = pad_batch(batch, cfg.pad_token_id)
        with torch.autocast(device_type=dev.type, dtype=amp, enabled=amp is not None):
            return model(x.to(dev), m.to(dev), **kw), int(m.sum())

    def train_step(batch):
        out, tokens = forward(batch, labels=torch.zeros(len(batch), dtype=torch.long, device=dev))
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return tokens

    model.train()
    train_step(batches[0])  # warm-up: allocator, optimizer state
    sync()
    t0, n, tokens = time.perf_counter(), 0, 0
    for b in batches[1:steps + 1]:
        tokens += train_step(b)
        n += len(b)
    sync()
    train_s = time.perf_counter() - t0
    model.eval()
    t1, m_n = time.perf_counter(), 0
    with torch.no_grad():
        for b in batches[:steps * 2]:
            forward(sorted(b, key=len))
            m_n += len(b)
    sync()
    infer_s = time.perf_counter() - t1
    return {"preset": preset, "parameters": model.parameter_counts(), "vocab": len(tok), "seq_len": a.seq_len,
            "batch_size": bs, "threads": torch.get_num_threads(), "device": str(dev),
            "precision": str(amp or torch.float32).removeprefix("torch."),
            **({"peak_gpu_mib": round(torch.cuda.max_memory_allocated(dev) / 2**20)} if dev.type == "cuda" else {}),
            "train_titles_per_s": round(n / train_s, 1), "train_tokens_per_s": round(tokens / train_s),
            "infer_titles_per_s": round(m_n / infer_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_model_mib": round(rss0 / 1024)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="built dataset (real offer lengths); default: made-up offers")
    p.add_argument("--n", type=int, default=4000, help="offers to tokenize")
    p.add_argument("--steps", type=int, default=10, help="training steps per preset")
    p.add_argument("--presets", nargs="+", default=["small", "default"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA runs bf16 autocast, as the trainer)")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one preset, in a child process
    args = p.parse_args(argv)
    from category_classification.core.cli import check_names, check_settings
    from category_classification.core.env import stay_offline
    from category_classification.train_embedding_classifier import PRESETS

    check_settings(args, whole=("n", "steps"))  # and --threads (0: torch's default), --device
    check_names("--presets", [*args.presets, *([args.only] if args.only else [])], PRESETS, "preset")
    stay_offline()
    texts = offers(args.data, args.n)
    if args.only:
        print(json.dumps(bench_model(args.only, texts, args.steps, args.threads, args.device)))
        return 0
    print("tokenizers:", json.dumps(bench_tokenizers(texts)))
    failed = 0
    for preset in args.presets:
        # A child process per preset, so peak RSS is that preset's alone.
        cmd = [sys.executable, os.path.abspath(__file__), "--only", preset, "--n", str(args.n), "--steps",
               str(args.steps), "--threads", str(args.threads), "--device", args.device] + \
            (["--data", args.data] if args.data else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{preset}: failed\n{out.stderr[-2000:]}")
            failed += 1
            continue
        print(f"{preset}:", out.stdout.strip().splitlines()[-1])
    return 1 if failed else 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
