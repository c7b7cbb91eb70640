"""Load test of the HTTP service: starts serve.py on loopback, drives it with concurrent clients for a bounded
time, prints requests/s, titles/s, p50/p99 latency and errors. Asserts nothing.

    .venv/bin/python bench/load_test.py --model runs/linear --clients 8 --seconds 20
    .venv/bin/python bench/load_test.py --model runs/encoder_small_onnx --precision int8 --threads 2 --data runs/mwpd6

Each client is a thread with one keep-alive connection sending one request after the other (a closed loop):
the service sees `--clients` requests in flight, which its micro-batcher groups into model batches.
"""

if __package__ in (None, ""):
    import os, sys; sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # noqa: E401,E702

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

from category_classification.core.env import offline_env
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def offer_titles(data_dir, split: str = "test", n: int = 2000) -> list[str]:
    """Real offer texts from a built dataset, or made-up offer-like titles when none is given."""
    if data_dir:
        from category_classification.data.dataset_dir import get_split, load_dataset_dir

        texts = [t for t in get_split(load_dataset_dir(data_dir), split)["text"] if t.strip()]
        return texts[:n]
    rng = random.Random(0)
    words = ("leather sneaker women men size red blue cotton shirt silver ring baby stroller book paperback "
             "car brake pad gold necklace dress jacket boots kids edition").split()
    return [" ".join(rng.choices(words, k=rng.randint(4, 40))) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str, timeout: float = 5.0) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def start_server(args, port: int, log_file) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "category_classification" / "serve.py"), "--model", args.model,
           "--host", "127.0.0.1", "--port", str(port), "--max_batch", str(args.max_batch),
           "--max_wait_ms", str(args.max_wait_ms)]
    for flag in ("precision", "threads"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    env = offline_env()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + args.startup_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            log_file.seek(0)
            said = [x for x in log_file.read().splitlines() if x.strip()]
            why = said[-1] if said else "(nothing on its log)"
            if proc.returncode == 2:  # the service refused a flag or the model: its one line, as a user error
                from category_classification.core.cli import UserError

                raise UserError(f"serve.py refused to start: {why.removeprefix('error: ')}")
            raise SystemExit(f"serve.py exited with {proc.returncode} before it was ready: {why}")
        try:
            if get_json(port, "/health", timeout=1.0).get("status") == "ok":
                return proc
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"serve.py was not ready after {args.startup_timeout}s")


def client(port: int, titles: list[str], per_request: int, top_k: int, stop_at: float, seed: int,
           results: list) -> None:
    """One closed-loop client: (latency seconds, status or error name) per request, into `results`."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"}
    while time.perf_counter() < stop_at:
        body = json.dumps({"titles": rng.sample(titles, per_request), "top_k": top_k})
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            status = resp.status
            if status == 200 and len(json.loads(payload)["predictions"]) != per_request:
                status = "wrong answer"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status = type(exc).__name__
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        results.append((time.perf_counter() - t0, status))
    conn.close()


def drive(port: int, titles, clients: int, seconds: float, per_request: int, top_k: int) -> tuple[list, float]:
    stop_at = time.perf_counter() + seconds
    per_client = [[] for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(port, titles, per_request, top_k, stop_at, i, per_client[i]))
               for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for rs in per_client for r in rs], time.perf_counter() - t0


def summarise(results, wall: float, per_request: int) -> dict:
    lat = np.array([r[0] for r in results if r[1] == 200]) * 1000.0
    errors = {}
    for _, status in results:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
    ok = len(lat)
    pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if ok else (lambda q: None)
    return {"requests": len(results), "ok": ok, "errors": sum(errors.values()), "errors_by_kind": errors,
            "seconds": round(wall, 2), "requests_per_s": round(ok / wall, 1),
            "titles_per_s": round(ok * per_request / wall, 1),
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                           "max": round(float(lat.max()), 2) if ok else None}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained model directory")
    p.add_argument("--data", default=None, help="a built dataset directory: send its test offers")
    p.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to drive the service")
    p.add_argument("--warmup_s", type=float, default=2.0, help="driven first, not counted")
    p.add_argument("--titles_per_request", type=int, default=1)
    p.add_argument("--top_k", type=int, default=1)
    p.add_argument("--max_batch", type=int, default=64)
    p.add_argument("--max_wait_ms", type=float, default=5.0)
    p.add_argument("--precision", choices=("fp32", "int8"), default=None, help="ONNX directories only")
    p.add_argument("--threads", type=int, default=None, help="model threads in the service")
    p.add_argument("--startup_timeout", type=float, default=180.0)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def check_args(args) -> None:
    """Every impossible flag in one line before the service starts; --json only replaces an earlier one."""
    from category_classification.core.artifacts import check_file_out, json_file_with_keys, read_model_info
    from category_classification.core.cli import check_settings

    check_settings(args, whole=("clients", "titles_per_request", "top_k"), positive=("seconds", "startup_timeout"),
                   non_negative=("warmup_s",))  # and --threads; serve.py checks --max_batch and --max_wait_ms
    read_model_info(args.model)
    if args.json:
        check_file_out(args.json, [], lambda p: json_file_with_keys(p, ("requests", "latency_ms", "model")),
                       what="--json of bench/load_test.py", folders=[args.model, args.data], flag="--json")


def main(argv=None) -> int:
    from category_classification.core.artifacts import write_text_atomic
    from category_classification.core.cli import UserError

    args = build_parser().parse_args(argv)
    check_args(args)
    titles = offer_titles(args.data)
    if len(titles) < args.titles_per_request:  # each request samples that many distinct titles
        raise UserError(f"--titles_per_request {args.titles_per_request}: only {len(titles)} titles to send")
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = start_server(args, port, log)
        try:
            if args.warmup_s > 0:
                drive(port, titles, args.clients, args.warmup_s, args.titles_per_request, args.top_k)
            before, cpu0 = get_json(port, "/health"), cpu_seconds(proc.pid)
            results, wall = drive(port, titles, args.clients, args.seconds, args.titles_per_request, args.top_k)
            after, cpu1 = get_json(port, "/health"), cpu_seconds(proc.pid)
            model = get_json(port, "/model")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.seek(0)
            server_log = log.read()
    summary = summarise(results, wall, args.titles_per_request)
    batches = after["batches"] - before["batches"]
    summary.update({
        "model": args.model, "kind": model.get("kind"), "runtime": model.get("runtime"),
        "clients": args.clients, "titles_per_request": args.titles_per_request,
        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "threads": args.threads,
        "mean_model_batch": round((after["titles"] - before["titles"]) / batches, 2) if batches else None,
        "service_cpu_ms_per_request": (round(1000 * (cpu1 - cpu0) / summary["ok"], 3)
                                       if cpu0 is not None and cpu1 is not None and summary["ok"] else None),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)})
    lat = summary["latency_ms"]
    print(f"{args.model} ({summary['kind']}, {summary['runtime']}): {args.clients} clients x "
          f"{args.titles_per_request} title(s)/request for {summary['seconds']}s")
    print(f"  {summary['requests_per_s']} requests/s, {summary['titles_per_s']} titles/s, "
          f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms")
    print(f"  errors: {summary['errors']} of {summary['requests']} {summary['errors_by_kind'] or ''}".rstrip())
    print(f"  mean model batch {summary['mean_model_batch']} titles, service CPU "
          f"{summary['service_cpu_ms_per_request']} ms/request; load average {summary['load_avg_1m']} "
          f"on {summary['cpu_count']} CPUs (client and service share them)")
    if summary["errors"] and server_log.strip():
        print("service log (last lines):\n" + "\n".join(server_log.splitlines()[-20:]))
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from category_classification.core.cli import run

    sys.exit(run(main))
