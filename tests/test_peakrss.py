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


def test_freed_blocks_unmapped_gives_freed_blocks_back_to_the_os():
    """Inside the context every block of 128 KiB and up is its own mapping: allocating and
    freeing 8 MiB blocks between small ones that stay leaves the data segment as it was.
    The control runs after the context, at the thresholds it leaves (glibc's steady 32 MiB,
    set explicitly, so the control does not depend on glibc's dynamic history): the same
    pattern grows the heap."""
    import subprocess

    from gpuforge.core.safepath import python_argv

    code = (
        "import sys, numpy as np\n"
        "from gpuforge.core.memory import freed_blocks_unmapped, proc_kb\n"
        "def holes():\n"
        "    base = proc_kb('/proc/self/status', 'VmData')\n"
        "    keep = []\n"
        "    for i in range(16):\n"
        "        a = np.ones(2**20 + i * 512); keep.append(np.ones(512)); del a\n"
        "    return (proc_kb('/proc/self/status', 'VmData') - base) // 2**20\n"
        "with freed_blocks_unmapped() as ok:\n"
        "    assert ok\n"
        "    inside = holes() if sys.argv[1] == 'fixed' else None\n"
        "print(inside if inside is not None else holes())\n")
    grown = {}
    for kind in ("steady", "fixed"):
        r = subprocess.run([*python_argv(), "-c", code, kind], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        grown[kind] = int(r.stdout.split()[-1])
    assert grown["fixed"] < 4 <= grown["steady"], grown
