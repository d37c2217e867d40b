"""Each CUDA kernel is declared once, with ``@cuda_kernel(signature)`` where it is written:
its launch object and its PTX compile list come from that one declaration, and no raw
kernel of a CUDA backend module is left out of the compile lists."""
from __future__ import annotations

import importlib
import os

import pytest

from gpuforge.core.kernels import kernel_specs
from gpuforge.core.lazy import resolve
from gpuforge.kernels.cuda_kernel import CudaKernel, cuda_kernel, ptx_entries, ptx_list


def test_declaration_gives_the_compile_list():
    @cuda_kernel("void(float32[::1])", "void(float64[::1])", threads_per_block=64)
    def toy_kernel(x):
        pass

    @cuda_kernel("void()")
    def empty_kernel():
        pass

    assert isinstance(toy_kernel, CudaKernel) and toy_kernel.__name__ == "toy_kernel"
    assert toy_kernel.entries() == [(toy_kernel.py_func, "void(float32[::1])", {"threads_per_block": 64}),
                                    (toy_kernel.py_func, "void(float64[::1])", {"threads_per_block": 64})]
    assert ptx_list(empty_kernel, toy_kernel)() == ptx_entries(empty_kernel, toy_kernel)
    assert ptx_entries(empty_kernel) == [(empty_kernel.py_func, "void()")]
    with pytest.raises(TypeError, match="signature"):
        cuda_kernel()(lambda x: None)


def _cuda_modules():
    mods = set()
    for spec in kernel_specs().values():
        target = spec.backends.get("numba-cuda")
        if target:
            mods.add(target.split(":")[0])
    return sorted(mods)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="imports the real numba.cuda modules")
def test_every_raw_kernel_is_in_a_compile_list():
    listed = set()
    for spec in kernel_specs().values():
        if spec.ptx:
            listed |= {e[0] for e in resolve(spec.ptx)()}
    declared = {}
    for name in _cuda_modules():
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if isinstance(obj, CudaKernel) and obj.py_func.__module__ == name:
                declared[f"{name}:{attr}"] = obj
    assert len(declared) >= 60, sorted(declared)
    missing = sorted(k for k, obj in declared.items() if obj.py_func not in listed)
    assert not missing, f"raw CUDA kernels in no KernelSpec ptx list: {missing}"
