"""Every registered kernel, as pytest parameters (collected from the live registry)."""
from __future__ import annotations

import pytest


def registered_kernels():
    from gpuforge.core.kernels import kernel_specs

    return sorted(kernel_specs().items())


def kernel_params(backend: str):
    return [pytest.param(spec, id=name) for name, spec in registered_kernels() if backend in spec.backends]
