"""Every CUDA kernel compiles to PTX for every compute capability in the hardware
profiles (needs numba-cuda[cu13]'s NVRTC/NVVM, no GPU, no simulator)."""
from __future__ import annotations

import os

import pytest

from gpuforge.core.lazy import resolve
from kernel_params import kernel_params

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="compile_ptx does not work in the simulator")


def profile_ccs() -> list[tuple[int, int]]:
    from gpuforge.hardware.profiles import load_profiles

    return sorted({p.cc for p in load_profiles().values()})


def toolkit_ccs() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Profile compute capabilities this CUDA toolkit's NVRTC can target, and those it
    cannot (CUDA 13 dropped Volta, cc 7.0: the V100 needs a CUDA 12 toolkit)."""
    from numba.cuda.cudadrv.nvrtc import get_supported_ccs

    supported = set(get_supported_ccs())
    ok = [cc for cc in profile_ccs() if cc in supported or cc > max(supported)]
    return ok, [cc for cc in profile_ccs() if cc not in ok]


def test_profiles_span_the_architectures():
    assert {(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0)} <= set(profile_ccs())


def test_only_volta_is_beyond_this_toolkit():
    ok, unsupported = toolkit_ccs()
    assert set(unsupported) <= {(7, 0)}, unsupported
    assert {(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)} <= set(ok)


def assemble(ptx: str, cc: tuple[int, int]) -> bytes:
    """PTX -> cubin with nvJitLink: catches what PTX generation alone lets through
    (register or shared-memory limits, bad PTX)."""
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(1, [f"-arch=sm_{cc[0]}{cc[1]}"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel")
        nvjitlink.complete(handle)
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        return bytes(cubin)
    finally:
        nvjitlink.destroy(handle)


@pytest.mark.parametrize("spec", kernel_params("numba-cuda"))
def test_cuda_kernels_compile_to_ptx_for_every_profile(spec):
    from numba import cuda

    assert spec.ptx, f"{spec.name} has a numba-cuda backend but no ptx() list"
    entries = resolve(spec.ptx)()
    assert entries, f"{spec.name}: ptx() is empty"
    for cc in toolkit_ccs()[0]:
        for fn, sig, *_launch in entries:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
            assert f".target sm_{cc[0]}{cc[1]}" in ptx, (spec.name, fn.__name__, cc)
            assert assemble(ptx, cc), (spec.name, fn.__name__, cc)
