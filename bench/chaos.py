"""Chaos bench: the builder, predict.py and the encoder trainer killed with SIGKILL at random points, and the
service soaked with mixed traffic carrying poison titles. Prints a table; asserts nothing.

    .venv/bin/python bench/chaos.py                                   # 20 kills each, 20,000 requests
    .venv/bin/python bench/chaos.py --only predict,serve --kills 3 --requests 2000    # a quick run

Kills: each run starts over an earlier output and is killed (with its whole process group) at a random time
within an uninterrupted run's duration (half the trials in its write phase); then the earlier output must be whole
(or already replaced by the complete new one), and a re-run (builder) or resume (predict.py --resume,
trainer --resume auto) must end with output identical to an uninterrupted run's. Data: subsets of data/mwpd.
Serve: 8 closed-loop clients on 127.0.0.1, 1% of requests poison (lone surrogates, blank, 1 MB, wrong
types, bad UTF-8, not JSON); counts good requests that failed, the service's RSS and /health answers.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import gzip
import hashlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from category_classification.core.env import offline_env
from pathlib import Path

from bench.load_test import free_port, get_json

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "category_classification"
ENV = offline_env(PYTHONPATH=str(ROOT))
PARTS = ("builder", "predict", "train", "serve")
# The encoder at its smallest (a BPE of 300 tokens, one layer): an epoch of 2,000 offers takes under a second.
TINY_ENCODER = ["--tokenizer", "bpe:300", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "4",
                "--num_kv_heads", "2", "--ffn_size", "64", "--seq_len", "32", "--batch_size", "16",
                "--lr_warmup_steps", "5", "--eval_batch_size", "64", "--num_threads", "1", "--epochs", "8",
                "--device", "cpu", "--no_lang_metrics"]


# --- processes -----------------------------------------------------------------------------------------

def script(name: str, *args) -> list[str]:
    return [sys.executable, str(SCRIPTS / name), *map(str, args)]


def run_to_end(cmd: list[str], timeout: float = 900) -> float:
    """Run `cmd` to completion (exit 0 required); its wall time in seconds."""
    return run_watching(cmd, timeout=timeout)[0]


def run_watching(cmd: list[str], seen=None, timeout: float = 900) -> tuple[float, float | None]:
    """Run `cmd` to completion (exit 0 required): (wall seconds, seconds until `seen()` first held, if it did)."""
    from bench.child import run_polled

    t0, t_seen = time.perf_counter(), None

    def watch(_pid):
        nonlocal t_seen
        if seen is not None and t_seen is None and seen():
            t_seen = time.perf_counter() - t0

    code, wall, err = run_polled(cmd, watch, ENV, timeout)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])} failed ({code}):\n{err[-2000:]}")
    return wall, t_seen


def kill_time(rng: random.Random, trial: int, t_full: float, t_write: float | None = None) -> float:
    """When to kill: odd trials anywhere in 10-100% of an uninterrupted run; even ones in its write phase,
    from `t_write` (when its first output file appeared) to the end, or its last 40% when not watched.
    Start-up and imports take the first seconds of every run: uniform times alone would mostly hit them."""
    if trial % 2:
        return t_full * rng.uniform(0.1, 1.0)
    return rng.uniform(t_write, t_full) if t_write is not None else t_full * rng.uniform(0.6, 1.0)


def kill_after(cmd: list[str], delay: float) -> bool:
    """Start `cmd` in its own process group and SIGKILL the group after `delay` s; False if it ended first."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group: the builder's read workers die with it
        proc.wait()
        return True


# --- fingerprints of outputs ----------------------------------------------------------------------------

def dataset_digest(path: Path) -> str | None:
    """A digest of a saved dataset's content (rows, label names); None when it does not load."""
    from datasets import load_from_disk

    try:
        dsd = load_from_disk(str(path))
        h = hashlib.sha256()
        for name in sorted(dsd):
            h.update(name.encode() + repr(dsd[name].features).encode())
            h.update(json.dumps(dsd[name].to_dict(), sort_keys=True, ensure_ascii=False).encode())
        return h.hexdigest()
    except Exception:  # noqa: BLE001 (any failure to load is the finding)
        return None


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def weights_digest(model_dir: Path) -> str | None:
    """A digest of the trained weights (tensor names and values); None when absent or unreadable."""
    from safetensors.numpy import load_file

    try:
        state = load_file(str(model_dir / "model.safetensors"))
    except Exception:  # noqa: BLE001
        return None
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].tobytes())
    return h.hexdigest()


def torn_files(model_dir: Path) -> int:
    """Checkpoints and weights in a trainer's --out that do not load (a kill must never leave one)."""
    import torch
    from safetensors.numpy import load_file

    bad = 0
    for p in model_dir.rglob("*.pt"):
        try:
            torch.load(p, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001
            bad += 1
    for p in model_dir.rglob("*.safetensors"):
        try:
            load_file(str(p))
        except Exception:  # noqa: BLE001
            bad += 1
    return bad


# --- data ------------------------------------------------------------------------------------------------

def prepare(work: Path, n_offers: int) -> dict:
    """MWPD subsets, the reference dataset built from them, a linear model, and a predict.py input."""
    lines = gzip.open(ROOT / "data" / "mwpd" / "train.json.gz", "rt", encoding="utf-8").read().splitlines()
    random.Random(0).shuffle(lines)
    ctx = {"work": work, "train": work / "mwpd_train.jsonl", "val": work / "mwpd_val.jsonl",
           "mwpd_all": [ROOT / "data" / "mwpd" / "train.json.gz", ROOT / "data" / "mwpd" / "validation.json.gz"]}
    n_val = n_offers // 5
    ctx["train"].write_text("\n".join(lines[n_val:n_offers]) + "\n", encoding="utf-8")
    ctx["val"].write_text("\n".join(lines[:n_val]) + "\n", encoding="utf-8")
    ctx["dataset"] = work / "dataset"
    run_to_end(script("build_lspc_dataset.py", "--mwpd", ctx["train"], ctx["val"], "--out", ctx["dataset"],
                      "--quiet"))
    ctx["linear"] = work / "linear"
    run_to_end(script("train_linear_baseline.py", "--data", ctx["dataset"], "--out", ctx["linear"]))
    # predict.py input: every MWPD offer (title + description), with a few bad lines among them
    offers = lines + gzip.open(ROOT / "data" / "mwpd" / "validation.json.gz", "rt",
                               encoding="utf-8").read().splitlines()
    poison = ['{"Name": "gold ring \\ud800", "Description": "x"}', "{not json", "[1, 2]", '{"Name": "  "}', ""]
    for i, bad in enumerate(poison):
        offers.insert(1000 * (i + 1), bad)
    ctx["offers"] = work / "offers.jsonl"
    ctx["offers"].write_text("\n".join(offers) + "\n", encoding="utf-8")
    ctx["titles"] = [json.loads(x)["Name"] for x in lines[:3000]]
    return ctx


# --- kill parts ------------------------------------------------------------------------------------------

def kill_loop(part: str, trials: int, rng: random.Random, t_full: float, trial, note: str = "",
              t_write: float | None = None) -> dict:
    """Run `trial(delay) -> (killed, earlier output intact, identical after re-run)` until `trials` runs were
    really killed (at most 3x as many tries); a run that ends before its kill makes later kills come sooner."""
    t0 = time.perf_counter()
    tries = kills = intact = identical = 0
    while kills < trials and tries < 3 * trials:
        killed, ok_before, ok_after = trial(kill_time(rng, tries, t_full, t_write))
        tries, kills = tries + 1, kills + killed
        intact, identical = intact + ok_before, identical + ok_after
        if not killed:  # this machine's load changes: the run was faster than the uninterrupted one
            t_full, t_write = 0.8 * t_full, t_write and 0.8 * t_write
    return {"part": part, "trials": tries, "killed": kills, "ended_before_kill": tries - kills,
            "earlier_output_intact": intact, "identical_after_rerun": identical,
            "seconds": round(time.perf_counter() - t0, 1), "note": note}


def chaos_builder(ctx: dict, trials: int, rng: random.Random) -> dict:
    work = ctx["work"] / "builder"
    work.mkdir()
    old, out = work / "old", work / "out"
    base = ["--mwpd", *ctx["mwpd_all"], "--quiet"]  # all bundled offers: a longer write phase to hit
    run_to_end(script("build_lspc_dataset.py", *base, "--seed", "7", "--out", old))
    cmd = script("build_lspc_dataset.py", *base, "--seed", "42", "--out", out)
    shutil.copytree(old, out)
    t_full = run_to_end(cmd)
    old_d, new_d = dataset_digest(old), dataset_digest(out)

    missing = []

    def trial(delay):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(old, out)  # the earlier output the new build must not destroy
        killed = kill_after(cmd, delay)
        missing.append(not out.exists())  # killed inside the swap: the builder's next run restores it
        intact = dataset_digest(out) in (old_d, new_d)
        run_to_end(cmd)
        return killed, intact, dataset_digest(out) == new_d

    row = kill_loop("builder", trials, rng, t_full, trial)
    strays = [p.name for p in work.iterdir() if p.name not in ("old", "out")]
    row["note"] = (f"{len(strays)} stray temp entries left beside --out; --out missing right after "
                   f"{sum(missing)} kills")
    return row


def chaos_predict(ctx: dict, trials: int, rng: random.Random) -> dict:
    work = ctx["work"] / "predict"
    work.mkdir()
    out, partial = work / "preds.jsonl", work / "preds.jsonl.partial"
    base = script("predict.py", "--model", ctx["linear"], "--input", ctx["offers"], "--out", out,
                  "--batch_size", "8", "--no_progress")
    run_to_end(base + ["--top_k", "2"])
    old = out.read_bytes()  # an earlier run's predictions (top 2)
    t_full, t_write = run_watching(base, partial.exists)
    ref = out.read_bytes()
    kept = []

    def trial(delay):
        out.write_bytes(old)
        partial.unlink(missing_ok=True)
        killed = kill_after(base, delay)
        intact = out.read_bytes() in (old, ref)
        kept.append(partial.read_bytes().count(b"\n") if partial.is_file() else 0)
        run_to_end(base + ["--resume"])
        return killed, intact, out.read_bytes() == ref and not partial.exists()

    row = kill_loop("predict", trials, rng, t_full, trial, t_write=t_write)
    n_lines = ref.count(b"\n")
    row["note"] = (f"{n_lines} lines; OUT.partial held {sum(kept) // max(1, len(kept))} on average "
                   f"at the kill, 0 in {kept.count(0)} kills")
    return row


def chaos_train(ctx: dict, trials: int, rng: random.Random) -> dict:
    work = ctx["work"] / "train"
    work.mkdir()
    ref_dir, out = work / "reference", work / "out"
    base = ["--data", ctx["dataset"], "--seed", "42", *TINY_ENCODER]
    t_full, t_write = run_watching(script("train_embedding_classifier.py", *base, "--out", ref_dir),
                                   lambda: any(ref_dir.rglob("*.pt")))
    ref = weights_digest(ref_dir)
    found = []

    def trial(delay):
        shutil.rmtree(out, ignore_errors=True)
        killed = kill_after(script("train_embedding_classifier.py", *base, "--out", out), delay)
        found.append(len(list(out.rglob("*.pt"))) if out.exists() else 0)
        intact = torn_files(out) == 0 if out.exists() else True
        run_to_end(script("train_embedding_classifier.py", *base, "--out", out, "--resume", "auto"))
        return killed, intact, weights_digest(out) == ref

    row = kill_loop("train", trials, rng, t_full, trial, t_write=t_write)
    row["note"] = (f"intact: every checkpoint and weights file loads; {sum(x > 0 for x in found)} kills left "
                   f"checkpoints to resume from")
    return row


# --- the service under poison traffic --------------------------------------------------------------------

# Poison request bodies: a correct service answers each with a 200 (per-title) or a 4xx, never a 5xx or a
# dropped connection, and never lets one fail the good requests batched with it.
POISON = {
    "lone surrogate": b'{"titles": ["gold ring \\ud800 pendant"]}',
    "surrogate only": b'{"titles": ["\\udfff"]}',
    "blank title": b'{"titles": ["   "]}',
    "control chars": b'{"titles": ["\\u0000\\u0001"]}',
    "1 MB title": b'{"titles": ["' + b"x" * (1 << 20) + b'"]}',
    "number title": b'{"titles": [123]}',
    "null title": b'{"titles": [null]}',
    "titles not a list": b'{"titles": "gold ring"}',
    "bad UTF-8": b'{"titles": ["gold \xff\xfe ring"]}',
    "not JSON": b'{"titles": [',
}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _post(conn, body: bytes):
    conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def _client(port, titles, labels, counter, n_requests, poison_rate, seed, tally, lock):
    """One closed-loop client; tallies good requests by outcome and poison answers by status."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while next(counter) < n_requests:
        kind = rng.choice(sorted(POISON)) if rng.random() < poison_rate else None
        sent = rng.sample(titles, rng.randint(1, 4))
        body = POISON[kind] if kind else json.dumps({"titles": sent}).encode()
        try:
            status, payload = _post(conn, body)
            preds = json.loads(payload).get("predictions") if status == 200 else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status, preds = type(exc).__name__, None
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if kind:
            key = ("poison", kind, status)
        else:
            ok = (status == 200 and len(preds) == len(sent)
                  and all(p.get("label") in labels and "error" not in p for p in preds))
            key = ("good", "ok" if ok else f"failed ({status})", None)
        with lock:
            tally[key] = tally.get(key, 0) + 1
    conn.close()


def _monitor(port, pid, stop: threading.Event, samples: list):
    """Every 0.25 s: /health on a fresh connection (ok, latency) and the service's RSS."""
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            ok = get_json(port, "/health", timeout=5.0).get("status") == "ok"
        except (OSError, ValueError, http.client.HTTPException):
            ok = False
        samples.append((time.perf_counter() - t0, ok, rss_mb(pid)))
        stop.wait(0.25)


def soak_serve(ctx: dict, n_requests: int, clients: int, poison_rate: float, seed: int) -> dict:
    port, t0 = free_port(), time.perf_counter()
    cmd = script("serve.py", "--model", ctx["linear"], "--port", port, "--threads", 1)
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):
            try:
                if get_json(port, "/health", timeout=1.0).get("status") == "ok":
                    break
            except (OSError, ValueError, http.client.HTTPException):
                time.sleep(0.2)
        labels = set(get_json(port, "/model")["labels"])
        tally, lock, stop, samples = {}, threading.Lock(), threading.Event(), []
        counter = itertools.count()
        mon = threading.Thread(target=_monitor, args=(port, proc.pid, stop, samples))
        mon.start()
        threads = [threading.Thread(target=_client, args=(port, ctx["titles"], labels, counter, n_requests,
                                                          poison_rate, seed + i, tally, lock))
                   for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        mon.join()
        alive = proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return _serve_row(tally, samples, alive, time.perf_counter() - t0, clients)


def _serve_row(tally: dict, samples: list, alive: bool, seconds: float, clients: int) -> dict:
    good = sum(v for (k, _, _), v in tally.items() if k == "good")
    good_failed = {o: v for (k, o, _), v in tally.items() if k == "good" and o != "ok"}
    poison = {}
    for (k, kind, status), v in tally.items():
        if k == "poison":
            poison.setdefault(kind, {})[str(status)] = v
    rss = [r for _, _, r in samples if r is not None]
    warm = rss[max(1, len(rss) // 10):] or rss  # after the first tenth: allocator and caches settled
    return {"part": "serve", "clients": clients, "requests": sum(tally.values()), "good": good,
            "good_failed": sum(good_failed.values()), "good_failed_by_kind": good_failed,
            "poison": sum(sum(d.values()) for d in poison.values()), "poison_answers": poison,
            "rss_mb_start": round(warm[0], 1) if warm else None, "rss_mb_end": round(rss[-1], 1) if rss else None,
            "rss_mb_max": round(max(warm), 1) if warm else None,
            "rss_growth_pct": round(100 * (max(warm) - warm[0]) / warm[0], 1) if warm else None,
            "health_checks": len(samples), "health_failed": sum(not ok for _, ok, _ in samples),
            "health_max_ms": round(1000 * max((s for s, _, _ in samples), default=0), 1),
            "server_alive_at_end": alive, "seconds": round(seconds, 1)}


# --- report ----------------------------------------------------------------------------------------------

def print_table(rows: list[dict]) -> None:
    kill_rows = [r for r in rows if r["part"] != "serve"]
    if kill_rows:
        print(f"{'part':<8} {'trials':>6} {'killed':>6} {'ended first':>11} {'earlier intact':>14} "
              f"{'identical after':>15} {'seconds':>8}  note")
        for r in kill_rows:
            print(f"{r['part']:<8} {r['trials']:>6} {r['killed']:>6} {r['ended_before_kill']:>11} "
                  f"{r['earlier_output_intact']:>9}/{r['trials']:<4} {r['identical_after_rerun']:>10}/{r['trials']:<4} "
                  f"{r['seconds']:>8}  {r['note']}")
    for r in rows:
        if r["part"] == "serve":
            print(f"serve: {r['clients']} clients, {r['requests']} requests in {r['seconds']}s: {r['good']} good, "
                  f"{r['good_failed']} good failed {r['good_failed_by_kind'] or ''}; {r['poison']} poison")
            print("  poison answers: " + "; ".join(f"{k} {v}" for k, v in sorted(r["poison_answers"].items())))
            print(f"  RSS {r['rss_mb_start']} MB after warm-up, {r['rss_mb_max']} MB max, {r['rss_mb_end']} MB at "
                  f"the end ({r['rss_growth_pct']:+}%); /health {r['health_checks'] - r['health_failed']}/"
                  f"{r['health_checks']} answered, slowest {r['health_max_ms']} ms; "
                  f"service alive at the end: {r['server_alive_at_end']}")


MIN_OFFERS = 300  # the smallest subset tried whose reference build and model train (smaller: classes missing)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    p.add_argument("--kills", type=int, default=20, help="SIGKILL trials per killed part")
    p.add_argument("--offers", type=int, default=2000,
                   help=f"MWPD offers in the builder and trainer subsets (at least {MIN_OFFERS})")
    p.add_argument("--requests", type=int, default=20000, help="requests sent to the service")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--poison_rate", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def _our_json(path: Path) -> bool:
    """An earlier --json of this script: a list of rows, each naming its part."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) and r.get("part") in PARTS for r in rows)


def main(argv=None) -> int:
    from category_classification.core.artifacts import check_file_out, write_text_atomic
    from category_classification.core.cli import UserError, check_names, check_settings, require_dir

    args = build_parser().parse_args(argv)
    parts = [x.strip() for x in args.only.split(",") if x.strip()]
    check_names("--only", parts, PARTS, "part")
    check_settings(args, whole=("kills", "offers", "requests", "clients"), non_negative=("seed",),
                   shares=("poison_rate",))  # --poison_rate: a share of the requests
    if args.offers < MIN_OFFERS:
        raise UserError(f"--offers must be at least {MIN_OFFERS} (a subset with offers of every class to train on), "
                        f"got {args.offers}")
    if args.work is not None:
        require_dir(args.work, "--work folder")
    if args.json:
        check_file_out(args.json, [ROOT / "data" / "mwpd" / "train.json.gz"], _our_json,
                       what="--json of bench/chaos.py", folders=[ROOT / "data"], flag="--json")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-", dir=args.work) as tmp:
        ctx = prepare(Path(tmp), args.offers)
        rows = []
        for part in parts:
            if part == "serve":
                rows.append(soak_serve(ctx, args.requests, args.clients, args.poison_rate, args.seed))
            else:
                rows.append({"builder": chaos_builder, "predict": chaos_predict, "train": chaos_train}[part](
                    ctx, args.kills, rng))
            print(f"[{part} done]", file=sys.stderr, flush=True)
    print(f"chaos on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"python bench/chaos.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print_table(rows)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
