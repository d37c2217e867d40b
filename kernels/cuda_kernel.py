"""A CUDA kernel declared once, where it is written.

``@cuda_kernel(signature, ...)`` on a kernel function records the signature(s) it is
launched with and gives back a :class:`CudaKernel`: launched as Numba's dispatchers are
(``kernel[blocks, threads, stream](*args)``, or through ``Placement.launch``), compiled
by ``numba.cuda.jit`` at its first launch, not at import (compiling at import would need a
GPU driver, and under the simulator nothing is compiled at all). :func:`ptx_list` makes
the callable that a ``KernelSpec``'s ``ptx`` entry names: it returns the ``(function,
signature[, launch])`` list that the PTX tests and ``gpuforge kernels inspect`` compile
for real compute capabilities. So a kernel's launch object and its compile list cannot
drift apart: both come from the one declaration.

A signature is Numba's string form (``"void(float32[::1], int64)"``); a kernel that is
launched with several input dtypes lists one signature per dtype. ``launch`` keywords
(``threads_per_block``, ``variant``) are reported with every signature by ``kernels
inspect``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable


class CudaKernel:
    """One CUDA kernel: its Python function, its signatures and (lazily) its dispatcher."""

    def __init__(self, fn: Callable, signatures: tuple[str, ...], launch: dict[str, Any]):
        if not signatures:
            raise TypeError(f"{fn.__name__}: give the signature(s) it is launched with")
        self.py_func = fn
        self.signatures = tuple(signatures)
        self.launch = dict(launch)
        self._dispatcher = None
        functools.update_wrapper(self, fn)

    @property
    def dispatcher(self):
        """``numba.cuda.jit(py_func)``, made on first use (types inferred at launch)."""
        if self._dispatcher is None:
            from numba import cuda

            self._dispatcher = cuda.jit(self.py_func)
        return self._dispatcher

    def __getitem__(self, config):
        return self.dispatcher[config]

    def entries(self) -> list[tuple]:
        """``(function, signature)`` per signature, plus the launch keywords if any."""
        extra = (self.launch,) if self.launch else ()
        return [(self.py_func, sig, *extra) for sig in self.signatures]

    def __repr__(self) -> str:
        return f"<CUDA kernel {self.py_func.__module__}.{self.py_func.__name__}>"


def cuda_kernel(*signatures: str, **launch: Any) -> Callable[[Callable], CudaKernel]:
    """Declare the decorated function a CUDA kernel launched with ``signatures``."""
    def declare(fn: Callable) -> CudaKernel:
        return CudaKernel(fn, signatures, launch)

    return declare


def ptx_entries(*kernels: CudaKernel) -> list[tuple]:
    """The compile list of ``kernels``, in the order given."""
    return [entry for kernel in kernels for entry in kernel.entries()]


def ptx_list(*kernels: CudaKernel) -> Callable[[], list[tuple]]:
    """What a ``KernelSpec``'s ``ptx`` names: a callable giving the compile list of the raw
    ``kernels`` that one registered kernel launches (``nf4_encode_ptx = ptx_list(absmax_kernel,
    encode_kernel)``)."""
    return functools.partial(ptx_entries, *kernels)
