"""numba-cuda backends of the hw bench kernels under Numba's CUDA simulator (run in the
simulator process: NUMBA_ENABLE_CUDASIM=1)."""
from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 in its own process", allow_module_level=True)

from gpuforge.core.conformance import check_kernel  # noqa: E402
from gpuforge.core.plugins import get_registry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.mark.parametrize("name", ["hardware.copy", "hardware.triad", "hardware.fma"])
def test_numba_cuda_matches_reference_in_the_simulator(name):
    results = check_kernel(get_registry().kernels[name][1], ["numba-cuda"])
    ran = [r for r in results if r.status != "skip"]
    assert ran and all(r.status == "pass" for r in ran), [r.to_dict() for r in ran if r.status != "pass"]


def test_gpu_only_microbenchmarks_run_in_the_simulator():
    from numba import cuda

    from gpuforge.hardware.microkernels_cuda import launch_empty, smem_read

    launch_empty()
    out = cuda.device_array(2 * 32, np.float32)
    smem_read(out, 4, 2, 32)
    got = out.copy_to_host()
    # thread t reads words t, t+32, t+64, t+96 whose values are their indices
    t = np.arange(32, dtype=np.float32)
    np.testing.assert_array_equal(got[:32], 4 * t + 32 * (0 + 1 + 2 + 3))
