"""The numba-cuda backend of every shared kernel equals the reference under Numba's CUDA
simulator, on the cases small enough for it.

Run in its own process with NUMBA_ENABLE_CUDASIM=1 set before Numba is imported:
    NUMBA_ENABLE_CUDASIM=1 pytest tests/kernels/test_cuda_sim.py
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 in its own process", allow_module_level=True)

from numba import cuda  # noqa: E402  (after the skip: only under the simulator)

from gpuforge.core.conformance import assert_same as same_as_reference  # noqa: E402
from gpuforge.kernels.arguments import KernelArgumentError  # noqa: E402
from prim_specs import SPECS, cases_of, resolve  # noqa: E402


def assert_same(spec, case, expected, actual):
    if spec.compare:
        resolve(spec.compare)(expected, actual, case)
    else:
        same_as_reference(expected, actual, spec.rtol, spec.atol)


# The simulator runs kernels on NumPy scalars, so 0 / 0 -> NaN warns (the kernel handles it).
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture(autouse=True, scope="module")
def fast_thread_switching():
    """Simulated threads are Python threads; switching often makes syncthreads 2-5x faster."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(old)


DEVICE_CASES = {
    "kernels.blockwise_absmax": "2d-33x31-block128",
    "kernels.blockwise_quantize_absmax_int8": "odd-size-1000-block64",
    "kernels.pack_bits": "odd-37-4bit",
    "kernels.unpack_bits": "odd-n-2bit",
    "kernels.pack_int32": "3d-40x3x2-3bit",
    "kernels.unpack_int32": "odd-rows-45-3bit",
    "kernels.pairwise_topk": "random-40x70-d5-k8",
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_device_arrays_in_device_arrays_out(name):
    spec = SPECS[name]
    case = next(c for c in cases_of(spec, "valid") if c.name == DEVICE_CASES[name])
    args = [cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
            for a in case.args]
    expected = resolve(spec.backends["reference"])(*case.args, **case.kwargs)
    actual = resolve(spec.backends["numba-cuda"])(*args, **case.kwargs)
    actual = actual if isinstance(actual, tuple) else (actual,)
    assert all(hasattr(a, "copy_to_host") for a in actual)
    host = tuple(a.copy_to_host() for a in actual)
    assert_same(spec, case, expected, host if len(host) > 1 else host[0])


def test_non_contiguous_device_array_is_rejected():
    x = cuda.to_device(np.zeros((8, 8), np.float32))
    with pytest.raises(KernelArgumentError, match="non-contiguous"):
        resolve(SPECS["kernels.blockwise_absmax"].backends["numba-cuda"])(x[:, ::2], 4)


def test_launch_parameters_come_from_tuning_not_arguments():
    from gpuforge.core.errors import UnsupportedError
    from gpuforge.core.tuning import override_launch

    spec = SPECS["kernels.pairwise_topk"]
    case = next(c for c in cases_of(spec, "valid") if c.name == "m-100-partial-tile")
    expected = resolve(spec.backends["reference"])(*case.args)
    with override_launch("kernels.pairwise_topk", threads_per_block=32, tile=8):
        actual = resolve(spec.backends["numba-cuda"])(*case.args)
    assert_same(spec, case, expected, actual)
    absmax = resolve(SPECS["kernels.blockwise_absmax"].backends["numba-cuda"])
    x = np.arange(-50, 50, dtype=np.float32)
    with override_launch("kernels.blockwise_absmax", threads_per_block=4):
        np.testing.assert_array_equal(absmax(x, 30), [50, 20, 39, 49])
    with override_launch("kernels.blockwise_absmax", threads_per_block=48), pytest.raises(UnsupportedError, match="power of two"):
        absmax(x, 30)  # the shared-memory tree needs a power of two
