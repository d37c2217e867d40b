"""The kernel registry: pick a kernel's backend from the data's device and
``--backend`` / ``GPUFORGE_BACKEND``, and say so whenever a slower path is taken.

    from gpuforge.core.kernels import call
    codes, absmax = call("kernels.blockwise_quantize_absmax_int8", x, 64)
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from gpuforge.core.context import get_context
from gpuforge.core.errors import BackendUnavailableError, UsageError
from gpuforge.core.lazy import resolve
from gpuforge.core.specs import BackendSpec, KernelSpec


def kernel_specs() -> dict[str, KernelSpec]:
    from gpuforge.core.plugins import get_registry

    return {name: spec for name, (_plugin, spec) in get_registry().kernels.items()}


def get_spec(name: str) -> KernelSpec:
    specs = kernel_specs()
    if name not in specs:
        import difflib

        close = difflib.get_close_matches(name, list(specs), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else "; `gpuforge kernels list` shows them"
        raise UsageError(f"unknown kernel {name!r}{hint}")
    return specs[name]


def known_backends() -> dict[str, BackendSpec]:
    """Every backend name: the built-in ones and those plugins registered."""
    from gpuforge.core.plugins import get_registry

    return {name: spec for name, (_plugin, spec) in get_registry().backends.items()}


def check_backend_name(backend: str, option: str = "--backend") -> str:
    known = known_backends()
    if backend not in known:
        raise UsageError(f"{option} {backend!r} is not one of {', '.join(known)}")
    return backend


@lru_cache(maxsize=None)
def backend_available(backend: str) -> tuple[bool, str]:
    """Whether a backend can run in this process, and why not."""
    if backend == "reference":
        return True, ""
    if backend == "numba-cpu":
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            return False, f"numba is not importable ({exc})"
        return True, ""
    if backend == "numba-cuda":
        try:
            from numba import cuda
        except ImportError as exc:
            return False, f"numba-cuda is not importable ({exc})"
        if cuda.is_available():
            return True, ""
        return False, "no CUDA GPU/driver (set NUMBA_ENABLE_CUDASIM=1 to run CUDA kernels in Numba's simulator)"
    spec = known_backends().get(backend)
    if spec is None:
        return False, f"unknown backend {backend!r} (known: {', '.join(known_backends())})"
    if spec.available is None:
        return True, ""
    try:
        ok, why = resolve(spec.available)()
    except Exception as exc:  # a plugin's check that breaks means "not here"
        return False, f"its availability check failed ({type(exc).__name__}: {exc})"
    return bool(ok), str(why or "")


def data_on_cuda(*args: Any) -> bool:
    """True when any argument lives on a CUDA device (torch tensor or CUDA array interface)."""
    for a in args:
        if hasattr(a, "__cuda_array_interface__"):
            return True
        is_cuda = getattr(a, "is_cuda", None)
        if isinstance(is_cuda, bool) and is_cuda:
            return True
    return False


def choose_backend(spec: KernelSpec, *args: Any, backend: str | None = None) -> str:
    """The backend to run ``spec`` on for these arguments. Explicit requests never
    fall back; automatic choice logs a warning when it has to take a slower path.

    Automatic choice: data on a CUDA device goes to numba-cuda; otherwise the device of
    the running command decides (:mod:`gpuforge.core.run`: numba-cuda on a CUDA run,
    real or simulated, numba-cpu on a CPU run); outside a command, numba-cpu."""
    from gpuforge.core.run import active_run

    run = active_run()
    requested = backend or (run.backend if run is not None else get_context().backend)
    if requested:
        check_backend_name(requested)
        if requested not in spec.backends:
            raise BackendUnavailableError(
                f"kernel {spec.name} has no {requested} backend (it has: {', '.join(spec.backends)})"
            )
        ok, why = backend_available(requested)
        if not ok:
            raise BackendUnavailableError(f"backend {requested} cannot run here: {why}")
        return requested
    on_cuda = data_on_cuda(*args) or (run is not None and run._device is not None and run._device.is_cuda)
    device = "cuda" if on_cuda else "cpu"
    known = known_backends()
    candidates = [b for b in spec.backends
                  if b != "reference" and b in known and known[b].device in (device, "any")]
    # highest priority first; on a tie the built-in backend
    candidates.sort(key=lambda b: (known[b].priority, b in ("numba-cpu", "numba-cuda")), reverse=True)
    for b in candidates:
        if backend_available(b)[0]:
            return b
    from gpuforge.core.log import get_logger

    wanted = "numba-cuda" if on_cuda else "numba-cpu"
    why = "not provided" if not candidates else backend_available(candidates[0])[1]
    fallback = "numba-cpu" if on_cuda and not data_on_cuda(*args) and "numba-cpu" in spec.backends \
        and backend_available("numba-cpu")[0] else "reference"
    get_logger("gpuforge.kernels").warning(
        f"using the slower {fallback} backend", kernel=spec.name, wanted=wanted, reason=why
    )
    return fallback


@lru_cache(maxsize=None)
def _impl(name: str, backend: str) -> Callable[..., Any]:
    return resolve(get_spec(name).backends[backend])


def get_impl(name: str, backend: str) -> Callable[..., Any]:
    spec = get_spec(name)
    if backend not in spec.backends:
        raise BackendUnavailableError(f"kernel {name} has no {backend} backend (it has: {', '.join(spec.backends)})")
    return _impl(name, backend)


def call(name: str, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
    """Run kernel ``name`` on the backend chosen for ``args``; the running command's
    manifest records which backend that was."""
    from gpuforge.core.run import active_run

    spec = get_spec(name)
    chosen = choose_backend(spec, *args, backend=backend)
    run = active_run()
    if run is not None:
        run.record_kernel(name, chosen)
    return get_impl(name, chosen)(*args, **kwargs)
