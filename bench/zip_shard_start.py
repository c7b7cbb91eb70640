"""Time to first prediction of each rank of `torchrun predict.py --zip` on a generated LSPC-format zip.

    python bench/zip_shard_start.py --offers 400000 --members 16 --nproc 2 [--code /other/checkout]

`--code` runs another checkout's predict.py (e.g. one from before member sharding) on the same zip and model.
A rank's first prediction is the moment its part file gets its first chunk of lines.
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_model(path: Path) -> Path:
    """A small hashed-feature linear model on synthetic titles (its speed, not its quality, matters here)."""
    import random

    from category_classification.data.synthetic_lspc import CATEGORIES, offer_pool
    from category_classification.models.linear import LinearConfig, LinearTextClassifier

    rng = random.Random(0)
    texts, labels = [], []
    for i, cat in enumerate(CATEGORIES):
        for title, _ in offer_pool(rng, cat):
            texts.append(title)
            labels.append(i)
    LinearTextClassifier(list(CATEGORIES), LinearConfig(features="hashed", hash_bits=16)).fit(texts, labels).save(path)
    return path


def watch_ranks(cmd: list[str], env: dict, parts: list[Path]) -> tuple[int, float, list, str]:
    """Run `cmd` to its end, noting when each rank's part file first gets lines: (exit code, wall seconds,
    seconds to each rank's first lines or None, the last 3,000 characters of its stderr)."""
    from bench.child import run_polled

    first = [None] * len(parts)
    t0 = time.perf_counter()

    def tick(_pid):
        for r, part in enumerate(parts):
            partial = part.with_name(part.name + ".partial")
            if first[r] is None and ((partial.exists() and partial.stat().st_size) or part.exists()):
                first[r] = time.perf_counter() - t0

    code, wall, err = run_polled(cmd, tick, env)
    return code, wall, first, err


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--offers", type=int, default=400_000)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--code", default=str(REPO), help="the checkout whose predict.py runs")
    p.add_argument("--work", default="/tmp/zip_shard_bench")
    args = p.parse_args(argv)
    from bench.build_throughput import check_counts, generated_zip
    from category_classification.core.cli import require_file

    check_counts(args, whole=("offers", "members", "nproc"))
    require_file(Path(args.code) / "category_classification" / "predict.py", "--code: predict.py")

    work = Path(args.work) / f"{args.offers}-{args.members}"
    zip_path = generated_zip(work, n_offers=args.offers, n_members=args.members, seed=1)
    model = work / "linear"
    if not (model / "category_model.json").is_file():  # a save killed midway is made again
        make_model(model)
    out = work / "preds.jsonl"
    out.unlink(missing_ok=True)
    parts = [out.with_name(f"{out.name}.shards") / f"part-{r:05d}-of-{args.nproc:05d}.jsonl" for r in range(args.nproc)]
    env = dict(os.environ, PYTHONPATH=args.code, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
           str(Path(args.code) / "category_classification" / "predict.py"), "--model", str(model), "--zip",
           str(zip_path), "--out", str(out), "--no_progress", "--threads", "1"]
    code, wall, first, err = watch_ranks(cmd, env, parts)
    if code:
        print(err, file=sys.stderr)
        return code
    print(f"zip: {args.offers:,} offers in {args.members} members, {zip_path.stat().st_size / 2**20:.0f} MiB; "
          f"code {args.code}; {args.nproc} processes; load average {os.getloadavg()[0]:.1f}")
    print("first prediction per rank (s from launch): "
          + ", ".join(f"rank {r} {t:.1f}" if t is not None else f"rank {r} -" for r, t in enumerate(first)))
    print(f"wall {wall:.1f} s, {args.offers / wall:,.0f} offers/s overall")
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
