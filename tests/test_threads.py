"""The OpenMP wait-policy default of the CLI (core/threads.py)."""
from __future__ import annotations

import json
import os
import subprocess

from gpuforge.core.safepath import python_argv
from gpuforge.core.threads import prefer_passive_openmp


def test_passive_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_process_runs_with_the_policy_set_before_torch_loads():
    code = ("import os, sys; from gpuforge.cli import main; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, 'numba' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([*python_argv(), "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False", "False"]


def test_measure_reports_both_policies(monkeypatch):
    from gpuforge.core import threads

    monkeypatch.setattr(threads, "_LOOP", "print(0.5)")
    r = threads.measure()
    assert r == {"default": 0.5, "PASSIVE": 0.5}
    json.dumps(r)
