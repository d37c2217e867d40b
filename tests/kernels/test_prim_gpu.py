"""On a real NVIDIA GPU: every numba-cuda backend on every case (the large ones too), fed
with NumPy arrays, Numba device arrays and CUDA torch tensors (zero copy). Marked ``gpu``:
skipped without a GPU and under the simulator; ``make gpu-check`` runs it."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("needs a real GPU, not the simulator", allow_module_level=True)

from numba import cuda  # noqa: E402

if not cuda.is_available():
    pytest.skip("needs a real NVIDIA GPU", allow_module_level=True)

from gpuforge.kernels.arguments import KernelArgumentError  # noqa: E402
from prim_specs import SPECS, cases_of, resolve  # noqa: E402


def host(a):
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def assert_same(spec, case, expected, actual):
    actual = tuple(host(a) for a in actual) if isinstance(actual, tuple) else host(actual)
    if spec.compare:
        resolve(spec.compare)(expected, actual, case)
        return
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = actual if isinstance(actual, tuple) else (actual,)
    for e, a in zip(expected, actual, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, (a.dtype, a.shape, e.dtype, e.shape)
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(a, e, rtol=spec.rtol, atol=spec.atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(a, e)


def params(kind: str):
    return [pytest.param(spec, case, id=f"{spec.name}[{case.name}]")
            for spec in SPECS.values() for case in cases_of(spec, kind)]


@pytest.mark.parametrize("spec, case", params("valid"))
def test_numba_cuda_matches_reference_on_gpu(spec, case):
    expected = resolve(spec.backends["reference"])(*case.args, **case.kwargs)
    run = resolve(spec.backends["numba-cuda"])
    assert_same(spec, case, expected, run(*case.args, **case.kwargs))
    device_args = [cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
                   for a in case.args]
    assert_same(spec, case, expected, run(*device_args, **case.kwargs))


@pytest.mark.parametrize("spec, case", params("invalid"))
def test_numba_cuda_rejects_invalid_inputs_on_gpu(spec, case):
    with pytest.raises(KernelArgumentError):
        resolve(spec.backends["numba-cuda"])(*case.args, **case.kwargs)


@pytest.mark.parametrize("spec, case", params("valid"))
def test_cuda_torch_tensors_in_torch_tensors_out(spec, case):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    args = [torch.from_numpy(np.array(a)).cuda() if isinstance(a, np.ndarray) else a
            for a in case.args]
    if isinstance(case.args[0], np.ndarray) and case.args[0].ndim == 2:
        args[0] = args[0].t().contiguous().t()  # non-contiguous on the device
    expected = resolve(spec.backends["reference"])(*case.args, **case.kwargs)
    actual = resolve(spec.backends["numba-cuda"])(*args, **case.kwargs)
    for a in actual if isinstance(actual, tuple) else (actual,):
        assert isinstance(a, torch.Tensor) and a.is_cuda
    torch.cuda.synchronize()
    assert_same(spec, case, expected, actual)
