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
def big(tmp_path_factory):
    X, _ = blobs(200_000, 10, seed=1)
    p = tmp_path_factory.mktemp("big") / "big.npy"
    np.save(p, X)
    return p


@pytest.fixture(scope="module")
def bigger(tmp_path_factory):
    # 1M rows keep either mode running well past the delay, however quiet the machine
    X, _ = blobs(1_000_000, 10, seed=1)
    p = tmp_path_factory.mktemp("bigger") / "bigger.npy"
    np.save(p, X)
    return p


@pytest.mark.parametrize("delay,mode", [(4.0, "exact"), (10.0, "exact"), (6.0, "approx")])
def test_ctrl_c_exits_130_fast_and_writes_nothing(big, bigger, tmp_path, isolated_env, delay, mode):
    out = tmp_path / "c.parquet"
    # 200k x 10 finishes in ~12 s exact / ~4 s approx on 2 cores: later interrupts use 1M rows
    table = big if delay < 6.0 else bigger
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
