"""Every product command's manifest lists exactly the kernels of tests/command_table.py,
each on numba-cpu, with the device it really used (the CUDA half of this check runs in
the simulator process: tests/test_command_kernels_cuda_sim.py)."""
from __future__ import annotations

import json

import pytest

from command_table import CASES


def manifest_of(out):
    from gpuforge.core.run import manifest_path

    return json.loads(manifest_path(out).read_text())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cpu_manifest_names_every_kernel(run_cli, tmp_path, case):
    case.make(tmp_path)
    out = tmp_path / case.out
    r = run_cli(*case.global_args, "--device", "cpu", *case.argv(tmp_path, out))
    assert r.code == 0, r
    m = manifest_of(out)
    assert m["device"] == "cpu"
    assert m["kernels"] == {k: "numba-cpu" for k in case.kernels}
