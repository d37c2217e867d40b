"""LLM.int8() (Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication for
Transformers at Scale", sec. 3): vector-wise int8 quantization with mixed-precision
decomposition of outlier feature dimensions.

- ``int8_vectorwise_quant(x, threshold=0.0) -> (codes int8, row_absmax f32, outlier_cols bool)``:
  ``x`` float32 (rows, cols). With ``threshold > 0``, every column holding a value with
  ``|x| >= threshold`` is an outlier feature dimension (sec. 3.2): it is left out of the
  int8 part (code 0, not counted in the row absmax) and handled in floating point by the
  caller. Codes are ``rint(x * (127 / absmax_row))`` in float32 (round half to even), as
  bitsandbytes' ``int8_vectorwise_quant``; a row with absmax 0 gets codes 0. NaN/inf
  raise ``ValueError``.
- ``int8_matmul(a, b) -> int32``: ``a`` int8 (m, k), ``b`` int8 (n, k): ``a @ b.T`` with
  int32 accumulation (the int8 GEMM of sec. 3.1).
- The layer output is ``(a @ b.T) * sa[:, None] * sb[None, :] / 127**2 + x[:, O] @ W[:, O].T``
  (eq. 7), ``O`` the outlier columns; see :class:`.modules.Int8Linear`.

References first, Numba CPU after; CUDA in :mod:`.int8_cuda`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_float32, check_ndim


def check_vq(x, threshold):
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 2)
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise KernelArgumentError(f"threshold must be a number, got {threshold!r}") from None
    if not threshold >= 0:
        raise KernelArgumentError(f"threshold must be >= 0, got {threshold}")
    return threshold


def check_mm(a, b):
    for name, t in (("a", a), ("b", b)):
        if np.dtype(t.dtype) != np.int8:
            raise KernelArgumentError(f"{name} must be int8, got {np.dtype(t.dtype)}")
        check_ndim(name, t.shape, 2)
    if a.shape[1] != b.shape[1]:
        raise KernelArgumentError(f"a has {a.shape[1]} columns but b has {b.shape[1]}; both are (rows, k)")


def non_finite() -> KernelArgumentError:
    return KernelArgumentError("x holds NaN or inf; int8 quantization needs finite values")


# --- reference ---------------------------------------------------------------------------

def int8_vectorwise_quant(x, threshold: float = 0.0):
    x = np.asarray(x)
    threshold = check_vq(x, threshold)
    if not np.isfinite(x).all():
        raise non_finite()
    if threshold > 0 and x.size:
        outliers = (np.abs(x) >= threshold).any(axis=0)
    else:
        outliers = np.zeros(x.shape[1], bool)
    xi = np.where(outliers[None, :], np.float32(0), x)
    absmax = np.abs(xi).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(absmax > 0, np.float32(127) / absmax, np.float32(0)).astype(np.float32)
    codes = np.rint(xi * scale[:, None]).astype(np.int8)
    return codes, absmax.astype(np.float32), outliers


def int8_matmul(a, b):
    a, b = np.asarray(a), np.asarray(b)
    check_mm(a, b)
    return a.astype(np.int32) @ b.astype(np.int32).T


# --- numba-cpu ---------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _outlier_cols(x, threshold, out):
    rows, cols = x.shape
    bad = 0
    for c in prange(cols):
        o = False
        for r in range(rows):
            v = abs(x[r, c])
            if not np.isfinite(v):
                bad += 1
            if threshold > 0 and v >= threshold:
                o = True
        out[c] = o
    return bad


def row_absmax(x, outliers, r):
    """Largest ``|x[r, c]|`` over the columns that are not outliers (0 when all are).
    Plain Python: compiled inline by the CPU kernel below and as a CUDA device function
    in int8_cuda."""
    m = np.float32(0.0)
    for c in range(x.shape[1]):
        if not outliers[c]:
            v = abs(x[r, c])
            if v > m:
                m = v
    return m


_row_absmax = njit(inline="always")(row_absmax)


@njit(parallel=True, cache=True)
def _vq_rows(x, outliers, codes, absmax):
    rows, cols = x.shape
    for r in prange(rows):
        m = _row_absmax(x, outliers, r)
        absmax[r] = m
        s = np.float32(127.0) / m if m > 0 else np.float32(0.0)
        for c in range(cols):
            codes[r, c] = 0 if outliers[c] else np.int8(np.rint(x[r, c] * s))


@njit(parallel=True, cache=True)
def _mm(a, b, out):
    m, k = a.shape
    n = b.shape[0]
    for t in prange(m * n):
        i = t // n
        j = t - i * n
        acc = np.int32(0)
        for p in range(k):
            acc += np.int32(a[i, p]) * np.int32(b[j, p])
        out[i, j] = acc


def int8_vectorwise_quant_cpu(x, threshold: float = 0.0):
    x = np.asarray(x)
    threshold = check_vq(x, threshold)
    x = np.ascontiguousarray(x)
    rows, cols = x.shape
    outliers = np.zeros(cols, np.bool_)
    codes = np.zeros((rows, cols), np.int8)
    absmax = np.zeros(rows, np.float32)
    if x.size:
        if _outlier_cols(x, np.float32(threshold), outliers):
            raise non_finite()
        _vq_rows(x, outliers, codes, absmax)
    return codes, absmax, outliers


def int8_matmul_cpu(a, b):
    a, b = np.asarray(a), np.asarray(b)
    check_mm(a, b)
    out = np.zeros((a.shape[0], b.shape[0]), np.int32)
    if out.size and a.shape[1]:
        _mm(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out
