"""train_qwen3_lora.py under DDP: 2 CPU processes (gloo) on a tiny random Qwen3, launched with torchrun
or accelerate launch, exactly as a multi-GPU run is launched. Prints the wall time and checks the outputs.

    .venv/bin/python bench/lora_ddp.py [--launcher torchrun|accelerate] [--nproc 2] [--keep DIR]
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time

from category_classification.core.env import offline_env
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["Automotive", "Books", "Shoes"]
WORDS = {"Automotive": ["brake", "tyre", "engine", "bumper", "wiper"],
         "Books": ["novel", "paperback", "author", "chapter", "edition"],
         "Shoes": ["sneaker", "boot", "sandal", "heel", "loafer"]}


def toy_dataset(path, n_train=256, n_eval=40, seed=0):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, disable_progress_bars

    disable_progress_bars()
    rng = random.Random(seed)
    feats = Features({"text": Value("string"), "label": ClassLabel(names=LABELS), "cluster": Value("int64")})

    def rows(n, offset):
        return Dataset.from_list([{"text": " ".join(rng.sample(WORDS[LABELS[i % 3]], 3)), "label": i % 3,
                                   "cluster": offset + i} for i in range(n)], features=feats)

    DatasetDict({"train": rows(n_train, 0), "validation": rows(n_eval, 10_000),
                 "test": rows(n_eval, 20_000)}).save_to_disk(str(path))


def launcher_cmd(launcher: str, nproc: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if launcher == "torchrun":
        return [str(bin_dir / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"]
    # --multi_gpu selects accelerate's DDP launcher; --device cpu below makes each process use gloo on CPU
    return [str(bin_dir / "accelerate"), "launch", "--multi_gpu", f"--num_processes={nproc}",
            "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "--main_process_port=29533"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launcher", choices=("torchrun", "accelerate"), default="torchrun")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--keep", help="keep the run in this directory instead of a temporary one")
    args = parser.parse_args(argv)

    from tests.fixtures import save_tiny_qwen3
    from category_classification.models.tokenization import load_qwen_tokenizer

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lora_ddp_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        save_tiny_qwen3(work / "tiny_qwen3", load_qwen_tokenizer())
        toy_dataset(work / "data")
        out = work / "out"
        cmd = launcher_cmd(args.launcher, args.nproc) + [
            str(ROOT / "category_classification" / "train_qwen3_lora.py"), "--data", str(work / "data"),
            "--out", str(out), "--model", str(work / "tiny_qwen3"), "--device", "cpu", "--seq_len", "16",
            "--batch", "32", "--micro_batch", "8", "--epochs", "2", "--lr", "5e-3", "--lora_r", "4",
            "--lora_alpha", "8", "--logging_steps", "4", "--no_lang_metrics"]
        env = offline_env(OMP_NUM_THREADS="1")
        print(" ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            print(f"FAILED: {args.launcher} exited with {proc.returncode}")
            return 1
        metrics = json.loads((out / "metrics.json").read_text())
        ok = (metrics["processes"] == args.nproc and metrics["effective_batch"] == 32
              and (out / "merged" / "model.safetensors").is_file() and (out / "category_model.json").is_file())
        print(f"{args.launcher} x {args.nproc} CPU processes (gloo): {wall:.1f}s wall, "
              f"train {metrics['train_seconds']}s, micro-batch {metrics['micro_batch']} x accumulation "
              f"{metrics['grad_accum']} x {metrics['processes']} = {metrics['effective_batch']}, "
              f"validation macro_f1 {metrics['validation']['macro_f1']:.4f} (n={metrics['validation']['n']}), "
              f"test macro_f1 {metrics['test']['macro_f1']:.4f} (n={metrics['test']['n']})")
        print("OK" if ok else "FAILED: outputs incomplete")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
