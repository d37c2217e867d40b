"""CUDA backend of :mod:`.int8`: one thread per column finds outlier columns (and
NaN/inf), one thread per row its absmax, one thread per element its code; the int8
matmul runs one thread per output element with int32 accumulation (a plain kernel: the
tensor-core int8 GEMM belongs to cuBLAS through torch, DESIGN.md "Kernels")."""
from __future__ import annotations

import numpy as np
import math

from numba import cuda, float32, float64, int32

from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.quantize.int8 import check_mm, check_vq, non_finite, row_absmax
from gpuforge.core.tuning import launch_config


def rint_half_even(v):
    """np.rint of a float32, exactly (float64 holds every float32 and its halves)."""
    v64 = float64(v)
    f = math.floor(v64)
    d = v64 - f
    if d > 0.5 or (d == 0.5 and int32(f) % 2 != 0):
        f += 1.0
    return int32(f)


_rint = cuda.jit(device=True, inline="always")(rint_half_even)
_row_absmax = cuda.jit(device=True, inline="always")(row_absmax)


@cuda_kernel("void(float32[:, ::1], float32, boolean[::1], int32[::1])")
def outlier_kernel(x, threshold, out, bad):
    rows, cols = x.shape
    for c in range(cuda.grid(1), cols, cuda.gridsize(1)):
        o = False
        for r in range(rows):
            v = abs(x[r, c])
            if not (v <= float32(3.4028234663852886e38)):
                bad[0] = 1
            if threshold > 0 and v >= threshold:
                o = True
        out[c] = o


@cuda_kernel("void(float32[:, ::1], boolean[::1], float32[::1])")
def row_absmax_kernel(x, outliers, absmax):
    for r in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        absmax[r] = _row_absmax(x, outliers, r)


@cuda_kernel("void(float32[:, ::1], boolean[::1], float32[::1], int8[:, ::1])")
def codes_kernel(x, outliers, absmax, codes):
    rows, cols = x.shape
    for t in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = t // cols
        c = t - r * cols
        m = absmax[r]
        s = float32(127.0) / m if m > 0 else float32(0.0)
        if outliers[c]:
            codes[r, c] = 0
        else:
            codes[r, c] = _rint(x[r, c] * s)


@cuda_kernel("void(int8[:, ::1], int8[:, ::1], int32[:, ::1])")
def mm_kernel(a, b, out):
    m, k = a.shape
    n = b.shape[0]
    for t in range(cuda.grid(1), m * n, cuda.gridsize(1)):
        i = t // n
        j = t - i * n
        acc = int32(0)
        for p in range(k):
            acc += int32(a[i, p]) * int32(b[j, p])
        out[i, j] = acc


def int8_vectorwise_quant_cuda(x, threshold: float = 0.0):
    place = Placement()
    x = place.put(x, "x")
    threshold = check_vq(x, threshold)
    rows, cols = x.shape
    codes, h_codes = place.empty((rows, cols), np.int8)
    absmax, h_absmax = place.empty((rows,), np.float32)
    outl, h_outl = place.empty((cols,), np.bool_)
    if rows * cols:
        d = place.to_device(x)
        cfg = launch_config("quantize.int8_vectorwise_quant")
        bad = zeros_flag(place)
        place.launch(outlier_kernel, cfg.stride_blocks(cols), cfg.threads, d, np.float32(threshold), outl, bad)
        if place.read_flag(bad):
            raise non_finite()
        place.launch(row_absmax_kernel, cfg.stride_blocks(rows), cfg.threads, d, outl, absmax)
        place.launch(codes_kernel, cfg.stride_blocks(rows * cols), cfg.threads, d, outl, absmax, codes)
    else:
        if cols:
            place.launch(outlier_kernel, 1, 1, place.to_device(x), np.float32(threshold), outl, zeros_flag(place))
        if rows:
            place.launch(row_absmax_kernel, 1, 1, place.to_device(x), outl, absmax)
    return place.result(h_codes), place.result(h_absmax), place.result(h_outl)


def int8_matmul_cuda(a, b):
    place = Placement()
    a = place.put(a, "a")
    b = place.put(b, "b")
    check_mm(a, b)
    m, n = a.shape[0], b.shape[0]
    out, handed = place.empty((m, n), np.int32)
    if m * n:
        cfg = launch_config("quantize.int8_matmul")
        place.launch(mm_kernel, cfg.stride_blocks(m * n), cfg.threads, place.to_device(a), place.to_device(b), out)
    return place.result(handed)


int8_vectorwise_quant_ptx = ptx_list(outlier_kernel, row_absmax_kernel, codes_kernel)
int8_matmul_ptx = ptx_list(mm_kernel)
