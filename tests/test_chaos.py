"""bench/chaos.py's own machinery: a kill takes the whole process group, trials are counted right, the
service figures add up. (The bench itself runs for minutes; its figures are in docs/reliability.md.)"""

import os
import random
import sys
import time

from bench import chaos


def test_kill_after_takes_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    assert chaos.kill_after([sys.executable, "-c", code], 3.0) is True
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # reaped by init shortly after the kill
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the grandchild outlived the kill")
    assert chaos.kill_after([sys.executable, "-c", "pass"], 30.0) is False


def test_kill_loop_counts_until_enough_real_kills():
    delays = []

    def trial(delay):
        delays.append(delay)
        return len(delays) % 3 != 1, True, len(delays) != 2  # every third run ends before its kill

    row = chaos.kill_loop("x", 4, random.Random(0), 10.0, trial)
    assert row["killed"] == 4 and row["trials"] == 6 and row["ended_before_kill"] == 2
    assert row["earlier_output_intact"] == 6 and row["identical_after_rerun"] == 5
    assert all(0 < d <= 10.0 for d in delays) and delays[1] <= 8.0  # sooner after a run that ended first


def test_serve_row_adds_up():
    tally = {("good", "ok", None): 97, ("good", "failed (500)", None): 1, ("poison", "blank title", 200): 2}
    samples = [(0.01, True, 100.0)] * 10 + [(0.2, False, 110.0)]
    row = chaos._serve_row(tally, samples, True, 5.0, 8)
    assert (row["requests"], row["good"], row["good_failed"], row["poison"]) == (100, 98, 1, 2)
    assert row["poison_answers"] == {"blank title": {"200": 2}}
    assert row["rss_growth_pct"] == 10.0 and row["health_failed"] == 1 and row["health_max_ms"] == 200.0
