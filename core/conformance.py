"""``gpuforge kernels check``: every backend against the reference on every case.

A case passes when the backend returns what the reference returns (same shapes
and dtypes; integers and booleans exactly, floats within the spec's tolerance,
NaN where the reference has NaN), or raises the same exception type as the
reference does for an invalid input.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from gpuforge.core.kernels import backend_available, get_impl
from gpuforge.core.lazy import resolve
from gpuforge.core.specs import KernelCase, KernelSpec


@dataclass
class CaseResult:
    kernel: str
    backend: str
    case: str
    status: str
    """``pass``, ``fail`` or ``skip``."""
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulator_active() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _to_numpy(x: Any) -> Any:
    import numpy as np

    if isinstance(x, (tuple, list)):
        return type(x)(_to_numpy(v) for v in x)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "copy_to_host"):  # numba device array
        return x.copy_to_host()
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    return x


def assert_same(expected: Any, actual: Any, rtol: float, atol: float, where: str = "output") -> None:
    import numpy as np

    expected, actual = _to_numpy(expected), _to_numpy(actual)
    if isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            raise AssertionError(f"{where}: expected a sequence of {len(expected)} results, got {type(actual).__name__}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, rtol, atol, f"{where}[{i}]")
        return
    if isinstance(expected, np.ndarray):
        if not isinstance(actual, np.ndarray):
            raise AssertionError(f"{where}: expected an array, got {type(actual).__name__}")
        if expected.shape != actual.shape:
            raise AssertionError(f"{where}: shape {actual.shape} != reference {expected.shape}")
        if expected.dtype != actual.dtype:
            raise AssertionError(f"{where}: dtype {actual.dtype} != reference {expected.dtype}")
        if expected.dtype.kind in "iub":
            bad = np.flatnonzero(expected.ravel() != actual.ravel())
            if bad.size:
                i = bad[0]
                raise AssertionError(
                    f"{where}: {bad.size} of {expected.size} values differ; first at flat index {i}: "
                    f"{actual.ravel()[i]} != reference {expected.ravel()[i]}"
                )
        else:
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
        return
    if isinstance(expected, float) or isinstance(actual, float):
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
        return
    if expected != actual:
        raise AssertionError(f"{where}: {actual!r} != reference {expected!r}")


def _run(fn, case: KernelCase):
    try:
        return fn(*case.args, **dict(case.kwargs)), None
    except Exception as exc:  # an error case: the backend must raise the same kind
        return None, exc


def check_case(spec: KernelSpec, backend: str, case: KernelCase, reference_result=None) -> CaseResult:
    ref_out, ref_exc = reference_result if reference_result is not None else _run(get_impl(spec.name, "reference"), case)
    t0 = time.perf_counter()
    out, exc = _run(get_impl(spec.name, backend), case)
    seconds = time.perf_counter() - t0
    result = CaseResult(spec.name, backend, case.name, "pass", seconds=round(seconds, 4))
    if ref_exc is not None:
        if exc is None:
            result.status, result.detail = "fail", f"reference raised {type(ref_exc).__name__}, backend returned normally"
        elif not isinstance(exc, type(ref_exc)):
            result.status, result.detail = "fail", f"raised {type(exc).__name__}: {exc}; reference raised {type(ref_exc).__name__}"
        return result
    if exc is not None:
        result.status, result.detail = "fail", f"raised {type(exc).__name__}: {exc}"
        return result
    try:
        if spec.compare:
            resolve(spec.compare)(ref_out, out, case)
        else:
            assert_same(ref_out, out, spec.rtol, spec.atol)
    except AssertionError as err:
        result.status, result.detail = "fail", str(err).strip().splitlines()[0][:300]
    return result


def cases_for(spec: KernelSpec) -> list[KernelCase]:
    if not spec.cases:
        return []
    return list(resolve(spec.cases)())


def check_kernel(spec: KernelSpec, backends: Iterable[str] | None = None) -> list[CaseResult]:
    """Run every requested (or available) non-reference backend on every case."""
    wanted = [b for b in (backends or list(spec.backends)) if b != "reference"]
    if "numba-cuda" in wanted and simulator_active():
        from gpuforge.core.cudasim import patch_shared_array_race

        patch_shared_array_race()
    results: list[CaseResult] = []
    cases = cases_for(spec)
    if not cases:
        return [CaseResult(spec.name, "-", "-", "fail", "the kernel registers no conformance cases")]
    ref = get_impl(spec.name, "reference")
    ref_results = {c.name: _run(ref, c) for c in cases}
    for backend in wanted:
        if backend not in spec.backends:
            continue
        ok, why = backend_available(backend)
        if not ok:
            results.append(CaseResult(spec.name, backend, "*", "skip", why))
            continue
        for case in cases:
            if backend == "numba-cuda" and simulator_active() and not case.simulator:
                results.append(CaseResult(spec.name, backend, case.name, "skip", "too large for the CUDA simulator"))
                continue
            results.append(check_case(spec, backend, case, ref_results[case.name]))
    return results


def summarize(results: list[CaseResult]) -> dict[str, int]:
    out = {"pass": 0, "fail": 0, "skip": 0}
    for r in results:
        out[r.status] += 1
    return out
