"""Running a child process to its end while watching it (the throughput, chaos and shard-start benches)."""

from __future__ import annotations

import subprocess
import tempfile
import time


def run_polled(cmd: list[str], tick=None, env: dict | None = None, timeout: float | None = None,
               with_stdout: bool = False, every: float = 0.05) -> tuple[int, float, str]:
    """Run `cmd` to its end, calling `tick(pid)` every `every` seconds while it runs (to sample its memory, or to
    note when an output first appears); killed after `timeout` seconds. Returns (exit code, wall seconds, the
    last 3,000 characters of its stderr, and of its stdout too `with_stdout`). The output goes to a file, not
    a pipe: a pipe read only at the end fills at 64 kB and blocks the child for ever."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:  # a child's bad bytes: U+FFFD
        proc = subprocess.Popen(cmd, env=env, stdout=out if with_stdout else subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if with_stdout else out, text=True)
        while proc.poll() is None:
            if tick is not None:
                tick(proc.pid)
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
            time.sleep(every)
        wall = time.perf_counter() - t0
        out.seek(0)
        return proc.returncode, wall, out.read()[-3000:]
