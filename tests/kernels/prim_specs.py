"""The shared kernels' specs by name and their cases, for the test_prim_* files (each
backend's tests import this after deciding whether they run at all)."""
from __future__ import annotations

from gpuforge.core.lazy import resolve
from gpuforge.kernels.specs import kernel_specs

__all__ = ["SPECS", "cases_of", "resolve"]

SPECS = {spec.name: spec for spec in kernel_specs()}


def cases_of(spec, kind: str):
    """kind "valid" or "invalid": the two halves of what ``spec.cases`` returns."""
    return resolve(spec.cases.replace("_cases", f"_{kind}_cases"))()
