"""Device microbenchmark kernels of ``gpuforge hw bench``: STREAM copy and triad, and an
FMA chain for the FP32 rate. Reference (NumPy) and numba-cpu backends; the numba-cuda
ones are in :mod:`gpuforge.hardware.microkernels_cuda`.

- ``hardware.copy(x)``: a float32 copy of ``x`` (any shape). 2 x 4 bytes per element.
- ``hardware.triad(b, c, scalar)``: ``b + scalar * c`` in float32 (McCalpin's STREAM
  triad). 3 x 4 bytes per element.
- ``hardware.fma(x, iters, a, b)``: ``iters`` times ``y = y * a + b`` from ``y = x``
  (float32). 2 x iters FLOPs per element; the CPU backend runs 64 independent chains
  per task so that SIMD lanes and FMA pipelines stay full. Results may differ from the
  reference by rounding where the compiler fuses the multiply-add (CUDA does).

Bad arguments raise :class:`~gpuforge.kernels.arguments.KernelArgumentError` in every backend.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.core.specs import KernelCase
from gpuforge.kernels.arguments import KernelArgumentError, check_int

CHAINS = 64
"""Independent FMA chains per task in the numba-cpu backend."""


def _f32(name: str, x) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise KernelArgumentError(f"{name} must be float32, got {x.dtype}")
    return x


def _scalar(name: str, v) -> np.float32:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise KernelArgumentError(f"{name} must be a number, got {type(v).__name__}")
    return np.float32(v)


def _same_shape(b: np.ndarray, c: np.ndarray) -> None:
    if b.shape != c.shape:
        raise KernelArgumentError(f"b and c must have the same shape, got {b.shape} and {c.shape}")


# --- reference ----------------------------------------------------------------------------

def copy(x):
    x = _f32("x", x)
    return np.array(x, dtype=np.float32, copy=True, order="C")


def triad(b, c, scalar):
    b, c = _f32("b", b), _f32("c", c)
    _same_shape(b, c)
    s = _scalar("scalar", scalar)
    return np.ascontiguousarray(b + s * c)


def fma(x, iters, a, b):
    x = _f32("x", x)
    iters = check_int("iters", iters, 0)
    a32, b32 = _scalar("a", a), _scalar("b", b)
    y = np.array(x, dtype=np.float32, copy=True, order="C")
    for _ in range(iters):
        y = y * a32 + b32
    return y


# --- numba-cpu ----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _copy_cpu(src, dst):
    for i in prange(src.size):
        dst[i] = src[i]


@njit(parallel=True, cache=True)
def _triad_cpu(b, c, s, out):
    for i in prange(out.size):
        out[i] = b[i] + s * c[i]


@njit(parallel=True, cache=True)
def _fma_cpu(x, out, iters, a, b):
    n = x.size
    tasks = (n + CHAINS - 1) // CHAINS
    for t in prange(tasks):
        start = t * CHAINS
        stop = min(start + CHAINS, n)
        buf = np.zeros(CHAINS, np.float32)
        for j in range(stop - start):
            buf[j] = x[start + j]
        for _ in range(iters):
            for j in range(CHAINS):
                buf[j] = buf[j] * a + b
        for j in range(stop - start):
            out[start + j] = buf[j]


def copy_cpu(x):
    x = np.ascontiguousarray(_f32("x", x))
    out = np.empty(x.shape, np.float32)
    _copy_cpu(x.reshape(-1), out.reshape(-1))
    return out


def triad_cpu(b, c, scalar):
    b, c = _f32("b", b), _f32("c", c)
    _same_shape(b, c)
    s = _scalar("scalar", scalar)
    b, c = np.ascontiguousarray(b), np.ascontiguousarray(c)
    out = np.empty(b.shape, np.float32)
    _triad_cpu(b.reshape(-1), c.reshape(-1), s, out.reshape(-1))
    return out


def fma_cpu(x, iters, a, b):
    x = np.ascontiguousarray(_f32("x", x))
    iters = check_int("iters", iters, 0)
    a32, b32 = _scalar("a", a), _scalar("b", b)
    out = np.empty(x.shape, np.float32)
    _fma_cpu(x.reshape(-1), out.reshape(-1), iters, a32, b32)
    return out


# --- cases ---------------------------------------------------------------------------------

def _x(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _special() -> np.ndarray:
    x = _x(3, 40)
    x[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45]
    return x


# Each *_cases list ends with its *_invalid_cases: inputs every backend must reject.

def copy_cases() -> list[KernelCase]:
    return [
        KernelCase("random-1000", (_x(0, 1000),)),
        KernelCase("empty", (np.zeros(0, np.float32),)),
        KernelCase("odd-2d", (_x(1, (37, 29)),)),
        KernelCase("non-contiguous", (_x(2, (64, 48))[::2, ::3],)),
        KernelCase("nan-inf", (_special(),)),
        KernelCase("large-1M", (_x(4, 1 << 20),), simulator=False),
    ] + copy_invalid_cases()


def copy_invalid_cases() -> list[KernelCase]:
    return [KernelCase("float64", (np.zeros(8),)), KernelCase("int32", (np.zeros(8, np.int32),))]


def triad_cases() -> list[KernelCase]:
    return [
        KernelCase("random-1000", (_x(0, 1000), _x(1, 1000), 3.0)),
        KernelCase("empty", (np.zeros(0, np.float32), np.zeros(0, np.float32), 3.0)),
        KernelCase("odd-2d", (_x(2, (33, 17)), _x(3, (33, 17)), -0.5)),
        KernelCase("non-contiguous", (_x(4, (64, 64))[:, ::2], _x(5, (64, 64))[::2, :], 2.0)),
        KernelCase("nan-inf", (_special(), _x(6, 40), 1.5)),
        KernelCase("large-1M", (_x(7, 1 << 20), _x(8, 1 << 20), 3.0), simulator=False),
    ] + triad_invalid_cases()


def triad_invalid_cases() -> list[KernelCase]:
    return [
        KernelCase("shape-mismatch", (np.zeros(8, np.float32), np.zeros(9, np.float32), 1.0)),
        KernelCase("float64", (np.zeros(8), np.zeros(8), 1.0)),
        KernelCase("scalar-not-number", (np.zeros(8, np.float32), np.zeros(8, np.float32), "2")),
    ]


def fma_cases() -> list[KernelCase]:
    return [
        KernelCase("random-1000", (_x(0, 1000), 32, 0.999, 0.001)),
        KernelCase("empty", (np.zeros(0, np.float32), 8, 0.5, 1.0)),
        KernelCase("zero-iters", (_x(1, 77), 0, 0.5, 1.0)),
        KernelCase("odd-2d", (_x(2, (13, 11)), 16, -0.75, 0.25)),
        KernelCase("non-contiguous", (_x(3, (40, 40))[::3, 1::2], 8, 0.9, 0.1)),
        KernelCase("nan-inf", (_special(), 4, 0.5, 0.5)),
        KernelCase("large-256k", (_x(4, 1 << 18), 64, 0.999, 0.001), simulator=False),
    ] + fma_invalid_cases()


def fma_invalid_cases() -> list[KernelCase]:
    return [
        KernelCase("negative-iters", (np.zeros(8, np.float32), -1, 1.0, 1.0)),
        KernelCase("float64", (np.zeros(8), 1, 1.0, 1.0)),
    ]
