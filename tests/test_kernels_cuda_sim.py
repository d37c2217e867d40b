"""Every shipped kernel's numba-cuda backend against its reference, in Numba's CUDA
simulator (this file runs only in the NUMBA_ENABLE_CUDASIM=1 pytest process)."""
from __future__ import annotations

import pytest

from gpuforge.core.conformance import check_kernel
from kernel_params import kernel_params


@pytest.mark.parametrize("spec", kernel_params("numba-cuda"))
def test_numba_cuda_matches_reference_in_simulator(spec):
    results = check_kernel(spec, ["numba-cuda"])
    ran = [r for r in results if r.status != "skip"]
    assert ran, f"{spec.name}: no case small enough for the simulator"
    bad = [r for r in ran if r.status != "pass"]
    assert not bad, "\n".join(f"{r.case}: {r.detail}" for r in bad[:5])
