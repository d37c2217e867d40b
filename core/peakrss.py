"""Peak resident memory of one child process, measured so that the parent's size does not leak in.

``ru_maxrss`` from ``wait4`` is the child's high-water mark, but Linux carries it across
``execve``: a child forked from a 2 GB pytest process reports at least 2 GB whatever it then
runs (``exec_mmap`` folds the old address space's high water into the new one's). So the
command is started by a small trampoline — a fresh interpreter of ~10 MB — and the
trampoline's own ``wait4`` on its child is what is reported: the same number
``/usr/bin/time -v`` prints as "Maximum resident set size", for the same reason (``time`` is
itself a small fresh process that forks the command).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpuforge.core.safepath import python_argv

# argv: <fd to report on> <command...>; prints "<ru_maxrss KiB> <exit code>" to the fd
_TRAMPOLINE = (
    "import os, signal, subprocess, sys\n"
    "fd = int(sys.argv[1])\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "signal.signal(signal.SIGTERM, lambda *a: p.send_signal(signal.SIGTERM))\n"
    "while True:\n"
    "    try:\n"
    "        _, status, usage = os.wait4(p.pid, 0)\n"
    "        break\n"
    "    except InterruptedError:\n"
    "        continue\n"
    "os.write(fd, f'{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}'.encode())\n"
)


def run_measured(argv: list[str], *, cwd: str | Path | None = None, env: dict | None = None,
                 stdout=None, stderr=None, timeout: float | None = None) -> dict:
    """Run ``argv`` and return ``{"returncode", "seconds", "peak_rss_bytes"}``.

    ``stdout``/``stderr`` are passed to the child as in :func:`subprocess.Popen` (a file, a
    descriptor, ``subprocess.DEVNULL`` or ``None`` to inherit). On ``timeout`` the command and
    its trampoline are killed and ``returncode`` is -9; ``peak_rss_bytes`` is then ``None``.
    """
    read_fd, write_fd = os.pipe()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen([*python_argv(), "-c", _TRAMPOLINE, str(write_fd), *argv], cwd=cwd, env=env,
                                stdout=stdout, stderr=stderr, pass_fds=(write_fd,), start_new_session=True)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    try:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"returncode": -9, "seconds": time.perf_counter() - t0, "peak_rss_bytes": None}
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.perf_counter() - t0
        with os.fdopen(read_fd, "rb") as f:
            read_fd = -1
            report = f.read().decode().split()
    finally:
        if read_fd >= 0:
            os.close(read_fd)
    if len(report) != 2:  # the trampoline itself failed (could not start the command)
        return {"returncode": proc.returncode or 127, "seconds": seconds, "peak_rss_bytes": None}
    maxrss_kib, code = int(report[0]), int(report[1])
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return {"returncode": code, "seconds": seconds, "peak_rss_bytes": maxrss_kib * scale}
