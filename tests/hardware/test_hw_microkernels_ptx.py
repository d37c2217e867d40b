"""Every CUDA kernel of hw bench compiles to PTX for every compute capability in the
hardware profiles (no GPU, no simulator)."""
from __future__ import annotations

import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compile_ptx does not work under the CUDA simulator", allow_module_level=True)

from gpuforge.hardware.profiles import load_profiles  # noqa: E402

CCS = sorted({p.cc for p in load_profiles().values()})


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_hw_bench_kernels_compile_to_ptx(cc):
    pytest.importorskip("numba.cuda")
    from numba import cuda
    from numba.cuda.cudadrv.error import CCSupportError

    from gpuforge.hardware.microkernels_cuda import ptx

    for fn, sig in ptx():
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
        except CCSupportError as err:
            pytest.skip(f"installed NVRTC: {err}")
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, fn.__name__
