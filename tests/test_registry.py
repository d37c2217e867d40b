"""Kernel selection and the conformance harness, on small kernels defined here."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.core import kernels as K
from gpuforge.core.conformance import assert_same, check_kernel
from gpuforge.core.context import get_context, set_context, update_context
from gpuforge.core.errors import BackendUnavailableError, UsageError
from gpuforge.core.specs import KernelCase, KernelSpec


def ref_double(x):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError("1-D only")
    return x * 2


def cpu_double(x):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError("1-D only")
    return (x + x).astype(np.float32)


def wrong_double(x):
    return (ref_double(x) + (np.arange(len(x)) == 3)).astype(np.float32)


def wrong_error(x):
    return np.asarray(x, dtype=np.float32).ravel() * 2


def cases():
    return [
        KernelCase("small", (np.arange(8, dtype=np.float32),)),
        KernelCase("nan", (np.array([np.nan, 1], dtype=np.float32),)),
        KernelCase("2d-rejected", (np.zeros((2, 2), np.float32),)),
    ]


def spec(cpu=f"{__name__}:cpu_double", **kw):
    return KernelSpec("test.double", "x*2", {"reference": f"{__name__}:ref_double", "numba-cpu": cpu}, cases=f"{__name__}:cases", **kw)


@pytest.fixture(autouse=True)
def restore_context():
    saved = get_context()
    yield
    set_context(saved)


def test_conformance_passes_for_a_correct_backend(monkeypatch):
    monkeypatch.setattr(K, "get_spec", lambda name: spec())
    K._impl.cache_clear()
    results = check_kernel(spec(), ["numba-cpu"])
    assert [r.status for r in results] == ["pass", "pass", "pass"]


def test_conformance_catches_wrong_values_and_missing_errors(monkeypatch):
    for impl, failing in (("wrong_double", {"small"}), ("wrong_error", {"2d-rejected"})):
        s = spec(cpu=f"{__name__}:{impl}")
        monkeypatch.setattr(K, "get_spec", lambda name, s=s: s)
        K._impl.cache_clear()
        results = check_kernel(s, ["numba-cpu"])
        assert {r.case for r in results if r.status == "fail"} == failing, results
    K._impl.cache_clear()


def test_assert_same_is_strict_about_dtype_shape_and_ints():
    with pytest.raises(AssertionError, match="dtype"):
        assert_same(np.zeros(2, np.float32), np.zeros(2, np.float64), 1e-6, 1e-6)
    with pytest.raises(AssertionError, match="shape"):
        assert_same(np.zeros(2, np.int8), np.zeros(3, np.int8), 0, 0)
    with pytest.raises(AssertionError, match="differ"):
        assert_same(np.array([1, 2], np.int8), np.array([1, 3], np.int8), 1, 1)
    assert_same((np.array([np.nan], np.float32), 3), (np.array([np.nan], np.float32), 3), 0, 0)


def test_explicit_backend_never_falls_back():
    s = spec()
    with pytest.raises(BackendUnavailableError, match="no numba-cuda backend"):
        K.choose_backend(s, np.zeros(3), backend="numba-cuda")
    with pytest.raises(UsageError):
        K.choose_backend(s, np.zeros(3), backend="fast")
    update_context(backend="reference")
    assert K.choose_backend(s, np.zeros(3)) == "reference"


def test_automatic_choice_prefers_numba_cpu_and_warns_on_fallback(capsys):
    s = spec()
    assert K.choose_backend(s, np.zeros(3)) == "numba-cpu"
    only_ref = KernelSpec("test.ref_only", "", {"reference": f"{__name__}:ref_double"})
    assert K.choose_backend(only_ref, np.zeros(3)) == "reference"
    assert "slower reference" in capsys.readouterr().err


def test_cuda_data_wants_the_cuda_backend():
    class FakeCudaArray:
        __cuda_array_interface__ = {}

    assert K.data_on_cuda(FakeCudaArray())
    assert not K.data_on_cuda(np.zeros(2))
    s = spec()
    # No numba-cuda backend registered: a warning and the reference (torch-capable).
    assert K.choose_backend(s, FakeCudaArray()) == "reference"
