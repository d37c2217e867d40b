"""The hw bench kernels (hardware.copy, hardware.triad, hardware.fma): numba-cpu against
the NumPy reference on every case, and metadata the central kernel tests rely on."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.core.conformance import check_kernel
from gpuforge.core.lazy import resolve
from gpuforge.core.plugins import get_registry
from gpuforge.kernels.arguments import KernelArgumentError

NAMES = ["hardware.copy", "hardware.triad", "hardware.fma"]


def spec(name):
    return get_registry().kernels[name][1]


@pytest.mark.parametrize("name", NAMES)
def test_numba_cpu_matches_reference(name):
    results = check_kernel(spec(name), ["numba-cpu"])
    assert results and all(r.status == "pass" for r in results), [r.to_dict() for r in results if r.status != "pass"]


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_complete(name):
    s = spec(name)
    assert set(s.backends) == {"reference", "numba-cpu", "numba-cuda"}
    assert s.cases and s.ptx
    assert callable(resolve(s.cases.replace("_cases", "_invalid_cases")))
    assert any(c.name == "empty" for c in resolve(s.cases)())


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_values(backend):
    copy = resolve(spec("hardware.copy").backends[backend])
    triad = resolve(spec("hardware.triad").backends[backend])
    fma = resolve(spec("hardware.fma").backends[backend])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = copy(x)
    assert out is not x and out.shape == (2, 3) and (out == x).all()
    np.testing.assert_array_equal(triad(np.ones(4, np.float32), np.arange(4, dtype=np.float32), 3.0), [1, 4, 7, 10])
    np.testing.assert_array_equal(fma(np.zeros(3, np.float32), 3, 2.0, 1.0), [7, 7, 7])  # 0 -> 1 -> 3 -> 7
    with pytest.raises(KernelArgumentError):
        triad(np.ones(4, np.float32), np.ones(5, np.float32), 1.0)
