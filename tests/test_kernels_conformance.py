"""Every shipped kernel's numba-cpu backend against its reference, on every case."""
from __future__ import annotations

import pytest

from gpuforge.core.conformance import cases_for, check_kernel
from kernel_params import kernel_params, registered_kernels


def test_every_kernel_has_a_reference_cases_and_a_fast_backend():
    kernels = registered_kernels()
    assert len(kernels) >= 3
    for name, spec in kernels:
        assert "reference" in spec.backends, name
        assert cases_for(spec), f"{name} registers no conformance cases"
        assert {"numba-cpu", "numba-cuda"} & set(spec.backends), f"{name} has only a reference"


@pytest.mark.parametrize("spec", kernel_params("numba-cpu"))
def test_numba_cpu_matches_reference(spec):
    results = check_kernel(spec, ["numba-cpu"])
    bad = [r for r in results if r.status != "pass"]
    assert not bad, "\n".join(f"{r.case}: {r.detail}" for r in bad[:5])
