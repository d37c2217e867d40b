"""numba-cuda backends of the superres kernels under Numba's CUDA simulator."""
from __future__ import annotations

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 in its own process", allow_module_level=True)

from gpuforge.core.conformance import check_kernel  # noqa: E402
from gpuforge.core.kernels import get_spec  # noqa: E402


@pytest.mark.parametrize("name", ["superres.shuffle_ycbcr_rgb", "superres.bicubic_resize",
                                  "superres.tile_split", "superres.tile_stitch"])
def test_numba_cuda_conforms_in_simulator(name):
    results = check_kernel(get_spec(name), ["numba-cuda"])
    bad = [r for r in results if r.status == "fail"]
    assert not bad, bad
    assert sum(r.status == "pass" for r in results) >= 5


def test_device_arrays_stay_on_device():
    import numpy as np
    from numba import cuda

    from gpuforge.plugins.superres.kernels import tile_split
    from gpuforge.plugins.superres.kernels_cuda import tile_split_cuda

    x = np.arange(2 * 9 * 10, dtype=np.float32).reshape(2, 9, 10)
    out = tile_split_cuda(cuda.to_device(x), 4, 2)
    assert hasattr(out, "copy_to_host")
    assert np.array_equal(out.copy_to_host(), tile_split(x, 4, 2))
