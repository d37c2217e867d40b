"""CUDA backend of :mod:`gpuforge.plugins.radiance.hashgrid`: one thread per (point, level);
the backward scatters with ``cuda.atomic.add`` into the gradient table."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, int64

from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.radiance.cuda_util import as_host, put_f32, zeros
from gpuforge.plugins.radiance.hashgrid import _check, grid_index


_corner_index_dev = cuda.jit(device=True, inline="always")(grid_index)


_A3F = "float32[:, :, ::1]"


@cuda.jit(device=True, inline="always")
def _cell_dev(x, n, sc):
    """Point ``n`` (clamped to [0, 1]^3) on a level of scale ``sc``: the low corner of its
    grid cell and its trilinear fractions in the cell (gx, gy, gz, tx, ty, tz)."""
    px = min(max(x[n, 0], float32(0)), float32(1)) * sc + float32(0.5)
    py = min(max(x[n, 1], float32(0)), float32(1)) * sc + float32(0.5)
    pz = min(max(x[n, 2], float32(0)), float32(1)) * sc + float32(0.5)
    fx, fy, fz = math.floor(px), math.floor(py), math.floor(pz)
    return int64(fx), int64(fy), int64(fz), px - fx, py - fy, pz - fz


@cuda_kernel(f"void(float32[:, ::1], {_A3F}, float32[::1], int64[::1], float32[:, ::1])")
def hash_fwd_kernel(x, table, scales, resolutions, out):
    k = cuda.grid(1)
    N = x.shape[0]
    L = table.shape[0]
    T = int64(table.shape[1])
    F = table.shape[2]
    if k >= N * L:
        return
    n = k // L
    l = k - n * L
    res = int64(resolutions[l])
    gx, gy, gz, tx, ty, tz = _cell_dev(x, n, scales[l])
    for f in range(F):
        out[n, l * F + f] = 0
    for c in range(8):
        bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
        w = (tx if bx else 1 - tx) * (ty if by else 1 - ty) * (tz if bz else 1 - tz)
        i = _corner_index_dev(gx + bx, gy + by, gz + bz, res, T)
        for f in range(F):
            out[n, l * F + f] += w * table[l, i, f]


@cuda_kernel(f"void(float32[:, ::1], float32[:, ::1], float32[::1], int64[::1], {_A3F})")
def hash_bwd_kernel(x, grad, scales, resolutions, gtable):
    k = cuda.grid(1)
    N = x.shape[0]
    L = gtable.shape[0]
    T = int64(gtable.shape[1])
    F = gtable.shape[2]
    if k >= N * L:
        return
    n = k // L
    l = k - n * L
    res = int64(resolutions[l])
    gx, gy, gz, tx, ty, tz = _cell_dev(x, n, scales[l])
    for c in range(8):
        bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
        w = (tx if bx else 1 - tx) * (ty if by else 1 - ty) * (tz if bz else 1 - tz)
        i = _corner_index_dev(gx + bx, gy + by, gz + bz, res, T)
        for f in range(F):
            cuda.atomic.add(gtable, (l, i, f), w * grad[n, l * F + f])


def _threads() -> int:
    return launch_config("radiance.hash_encode").threads


def _host_common(x, scales, resolutions):
    _check(np.empty(tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape), np.float32), None,
           scales, resolutions)
    return as_host(scales, np.float32), as_host(resolutions, np.int64)


def hash_encode_cuda(x, table, scales, resolutions):
    place = Placement()
    sc, res = _host_common(x, scales, resolutions)
    x_, table_ = put_f32(place, x, "x"), put_f32(place, table, "table")
    N = x_.shape[0]
    L, T, F = table_.shape
    dout, handed = place.empty((N, L * F), np.float32)
    if N and L:
        t = _threads()
        place.launch(hash_fwd_kernel, (N * L + t - 1) // t, t, place.to_device(x_), place.to_device(table_),
                     place.to_device(sc), place.to_device(res), dout)
    return place.result(handed)


def hash_encode_bwd_cuda(x, grad_feats, scales, resolutions, T):
    place = Placement()
    sc, res = _host_common(x, scales, resolutions)
    x_, g_ = put_f32(place, x, "x"), put_f32(place, grad_feats, "grad_feats")
    N = x_.shape[0]
    L = len(sc)
    F = g_.shape[1] // max(L, 1)
    dout, handed = zeros(place, (L, int(T), F))
    if N and L:
        t = _threads()
        place.launch(hash_bwd_kernel, (N * L + t - 1) // t, t, place.to_device(x_), place.to_device(g_),
                     place.to_device(sc), place.to_device(res), dout)
    return place.result(handed)


hash_encode_ptx = ptx_list(hash_fwd_kernel)
hash_encode_bwd_ptx = ptx_list(hash_bwd_kernel)
