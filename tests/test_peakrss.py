"""core.peakrss: a child's peak RSS is its own, not the (large) parent's carried over exec."""
from __future__ import annotations

import os
import subprocess
import sys

from gpuforge.core.peakrss import run_measured

GROW = "import sys; b = bytearray(int(sys.argv[1]) * 2**20); b[::4096] = b'x' * len(b[::4096])"


def _child(mib: int) -> list[str]:
    return [sys.executable, "-P", "-c", GROW, str(mib)]


def test_small_child_of_a_big_parent_reads_small():
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch it: 600 MB resident here
    # the naive way reads the parent's size, which is what this module exists to avoid
    proc = subprocess.Popen(_child(1))
    _, _, usage = os.wait4(proc.pid, 0)
    naive = usage.ru_maxrss * 1024
    m = run_measured(_child(1))
    del ballast
    assert m["returncode"] == 0
    assert naive > 500 * 2**20  # documents the kernel behaviour the trampoline works around
    assert m["peak_rss_bytes"] < 100 * 2**20, m


def test_growth_is_seen_and_exit_codes_pass_through(tmp_path):
    small, big = run_measured(_child(10)), run_measured(_child(210))
    assert 150 * 2**20 < big["peak_rss_bytes"] - small["peak_rss_bytes"] < 260 * 2**20, (small, big)
    bad = run_measured([sys.executable, "-P", "-c", "raise SystemExit(3)"], stderr=subprocess.DEVNULL)
    assert bad["returncode"] == 3


def test_timeout_kills_the_command():
    m = run_measured([sys.executable, "-P", "-c", "import time; time.sleep(60)"], timeout=1)
    assert m["returncode"] == -9 and m["peak_rss_bytes"] is None and m["seconds"] < 30
