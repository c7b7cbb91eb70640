"""Builder throughput and peak memory on a generated LSPC-format zip.

  python bench/build_throughput.py --offers 1000000 --members 8 --read_workers 2 --labels field
  python bench/build_throughput.py --offers 1000000 --members 8 --read_workers 2 --labels map

Generates the zip once (kept in --work; offers carry WDC's `category` field, the six target classes on
--mapped_fraction of the clusters), runs build_lspc_dataset.py as a subprocess with labels from that field
or from the map, and samples the RSS of its whole process tree (main + read workers) every 50 ms.
Prints offers/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tree_rss(root_pid: int) -> int:
    """Sum of VmRSS (bytes) of root_pid and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as fh:
                rss[int(entry)] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--offers", type=int, default=2_000_000)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--mapped_fraction", type=float, default=0.1,
                   help="share of clusters in the map (LSPC: about 10M of 98M offers are mapped)")
    p.add_argument("--read_workers", type=int, default=2)
    p.add_argument("--labels", choices=["field", "map"], default="field",
                   help="labels from the offers' `category` field (no --map) or from the map")
    p.add_argument("--other_label", help="also keep the other categories as this class")
    p.add_argument("--add_language", action="store_true")
    p.add_argument("--work", default="/tmp/lspc_bench")
    args = p.parse_args()

    from category_classification.data.synthetic_lspc import OTHER_CATEGORIES, write_lspc_zip

    work = Path(args.work)
    tag = f"{args.offers}-{args.members}-{args.mapped_fraction}-category"
    zip_dir = work / tag
    if not (zip_dir / "lspcV2020.zip").exists():
        t = time.perf_counter()
        write_lspc_zip(zip_dir, n_offers=args.offers, n_members=args.members, n_clusters=args.offers // 5,
                       mapped_fraction=args.mapped_fraction, seed=1, other_categories=OTHER_CATEGORIES,
                       category_field=True)
        print(f"generated {args.offers:,} offers in {time.perf_counter() - t:.0f} s", flush=True)
    zip_path = zip_dir / "lspcV2020.zip"
    size = zip_path.stat().st_size

    cmd = [sys.executable, str(REPO / "category_classification" / "build_lspc_dataset.py"),
           "--zip", str(zip_path), "--out", str(work / "out"), "--read_workers", str(args.read_workers), "--quiet"]
    if args.labels == "map":
        cmd += ["--map", str(zip_dir / "PDC2020_map.tsv")]
    if args.other_label:
        cmd += ["--other_label", args.other_label]
    if args.add_language:
        cmd.append("--add_language")
    t = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - t
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the builder and its read workers, once reaped
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    output = proc.stdout.read()
    if proc.returncode:
        print(output)
        raise SystemExit(f"builder failed with exit code {proc.returncode}")
    report = json.loads((work / "out" / "build_report.json").read_text())
    lines = report["lines_read"]
    print(f"zip: {args.offers:,} offers in {args.members} members, {size / 2**20:.0f} MiB; "
          f"offers kept: {report['records_kept']:,}")
    print(f"labels from {args.labels}, other_label={args.other_label} read_workers={args.read_workers} "
          f"cpus={os.cpu_count()} add_language={args.add_language}")
    print(f"wall {seconds:.1f} s (builder's own clock {report['seconds']:.1f} s)")
    print(f"throughput: {lines / seconds:,.0f} offers/s; CPU {cpu:.1f} s in all processes "
          f"({lines / cpu:,.0f} offers per CPU-second; load average now {os.getloadavg()[0]:.1f})")
    print(f"peak RSS (builder + workers): {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
