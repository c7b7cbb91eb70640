"""Two yardsticks for the MiniLM LoRA run (docs/lora.md), offline on CPU:

    .venv/bin/python bench/minilm_baselines.py probe --data runs/mwpd6        # frozen features + logistic regression
    .venv/bin/python bench/minilm_baselines.py step --threads 2 --lora_layers 3 --lora_dropout 0   # training-step speed

`probe` encodes train and validation once with the unchanged model and fits a logistic regression on the
[CLS] vector, the mean of the token vectors and the pooler output: what fine-tuning has to beat.
`step` times optimizer steps of the LoRA model (the trainer's add_lora) on fixed-length random batches.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import sys
import time


def probe(args) -> int:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModel, AutoTokenizer

    from bench.lora_minilm import minilm_dir
    from category_classification.data.dataset_dir import get_split, load_dataset_dir

    torch.set_num_threads(args.threads)
    path = str(minilm_dir())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    dsd = load_dataset_dir(args.data)

    def encode(split):
        texts, out = list(split["text"]), {"cls": [], "mean": [], "pooler": []}
        with torch.no_grad():
            for i in range(0, len(texts), 64):
                batch = tok(texts[i:i + 64], truncation=True, max_length=args.seq_len, padding=True,
                            return_tensors="pt")
                res = model(**batch)
                mask = batch["attention_mask"].unsqueeze(-1).float()
                out["cls"].append(res.last_hidden_state[:, 0].numpy())
                out["mean"].append(((res.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy())
                out["pooler"].append(res.pooler_output.numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    t0 = time.perf_counter()
    train, val = get_split(dsd, "train"), get_split(dsd, "validation")
    f_train, f_val = encode(train), encode(val)
    print(f"encoded {len(train)} + {len(val)} offers in {time.perf_counter() - t0:.0f}s ({args.threads} threads)")
    for name in ("cls", "mean", "pooler"):
        clf = LogisticRegression(C=10, max_iter=3000).fit(f_train[name], train["label"])
        pred = clf.predict(f_val[name])
        print(f"{name:6s} validation macro-F1 {f1_score(val['label'], pred, average='macro'):.4f} "
              f"accuracy {accuracy_score(val['label'], pred):.4f}")
    return 0


def step(args) -> int:
    import torch

    from bench.lora_minilm import minilm_dir
    from category_classification.models import lora

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    labels = ["Automotive", "Baby", "Books", "Clothing", "Jewelry", "Shoes"]
    model = lora.add_lora(lora.load_classifier(str(minilm_dir()), labels),
                          lora.LoraTrainConfig(lora_r=16, lora_alpha=32, lora_dropout=args.lora_dropout,
                                               lora_layers=args.lora_layers))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(1000, 20000, (args.batch, args.seq_len))
    y = torch.randint(0, len(labels), (args.batch,))
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = (time.perf_counter() - t0) / args.steps
    print(f"threads {args.threads} lora_layers {args.lora_layers or 'all'} dropout {args.lora_dropout}: "
          f"{seconds:.3f} s/step, {args.batch * args.seq_len / seconds:.0f} tokens/s, "
          f"{args.batch / seconds:.1f} offers/s at {args.seq_len} tokens")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("probe", help="logistic regression on frozen MiniLM features")
    a.add_argument("--data", default="runs/mwpd6")
    a.add_argument("--seq_len", type=int, default=96)
    a.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("step", help="seconds per LoRA training step")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--lora_layers", type=int, default=0)
    b.add_argument("--lora_dropout", type=float, default=0.05)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--seq_len", type=int, default=64)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    from category_classification.core.cli import check_settings
    from category_classification.core.env import stay_offline

    # --threads: 1 .. 4x the cores (torch.set_num_threads takes what it is given); --lora_layers 0: all
    check_settings(args, whole=[k for k in ("seq_len", "threads", "batch", "steps") if k in vars(args)],
                   non_negative=[k for k in ("warmup", "lora_layers") if k in vars(args)],
                   shares=[k for k in ("lora_dropout",) if k in vars(args)])
    stay_offline()
    return probe(args) if args.cmd == "probe" else step(args)


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
