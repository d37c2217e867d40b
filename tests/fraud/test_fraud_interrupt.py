"""Ctrl-C during `fraud cluster` (issue 18, Faults): the long Numba stages run in chunks,
so the interrupt is seen between chunks; the command exits 130 within seconds and
writes nothing. (Before: the same command on 60k x 10 ended with SIGSEGV, exit 139, or
ran on for 20-50 s inside one Numba call.)"""
from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

from gpuforge.core.safepath import python_argv
from gpuforge.plugins.fraud.bench import blobs


@pytest.fixture(scope="module")
def blobs_table(tmp_path_factory):
    """rows -> a saved ``blobs(rows, 10)`` table, written once per size."""
    made = {}

    def table(rows: int):
        if rows not in made:
            X, _ = blobs(rows, 10, seed=1)
            made[rows] = tmp_path_factory.mktemp(f"blobs{rows}") / "x.npy"
            np.save(made[rows], X)
        return made[rows]

    return table


# 200k x 10 finishes in ~12 s exact / ~4 s approx on 2 cores: later interrupts use 1M rows,
# which keep either mode running well past the delay, however quiet the machine
@pytest.mark.parametrize("delay,mode,rows", [(4.0, "exact", 200_000), (10.0, "exact", 1_000_000),
                                            (6.0, "approx", 1_000_000)])
def test_ctrl_c_exits_130_fast_and_writes_nothing(blobs_table, tmp_path, isolated_env, delay, mode, rows):
    out = tmp_path / "c.parquet"
    table = blobs_table(rows)
    proc = subprocess.Popen([*python_argv(), "-m", "gpuforge.cli", "fraud", "cluster", str(table), "--out", str(out),
                             "--mode", mode], env=isolated_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(delay)
    assert proc.poll() is None, "finished before the interrupt: make the input bigger"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    waited = time.monotonic() - sent
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert waited < 10.0, f"took {waited:.1f} s to stop"
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]
