"""`--device cuda` under Numba's simulator: every product command of
tests/command_table.py runs end to end, its manifest says "cuda (simulated)" and names
numba-cuda for every kernel it used, and its output agrees with the CPU run's."""
from __future__ import annotations

import json
import os

import pytest

from command_table import CASES
from test_command_kernels import manifest_of


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_simulated_cuda_matches_cpu(run_cli, tmp_path, case):
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    case.make(tmp_path)
    cpu_out, cuda_out = tmp_path / ("cpu-" + case.out), tmp_path / ("cuda-" + case.out)
    r = run_cli(*case.global_args, "--device", "cpu", *case.argv(tmp_path, cpu_out))
    assert r.code == 0, r
    r = run_cli(*case.global_args, "--device", "cuda", *case.argv(tmp_path, cuda_out),
                env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert r.code == 0, r
    m = manifest_of(cuda_out)
    assert m["device"] == "cuda (simulated)"
    assert m["kernels"] == {k: "numba-cuda" for k in case.kernels}
    assert manifest_of(cpu_out)["kernels"] == {k: "numba-cpu" for k in case.kernels}
    if case.compare is not None:
        case.compare(cpu_out, cuda_out)
