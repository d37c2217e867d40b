"""CUDA backend of :mod:`gpuforge.kernels.pairwise`.

One thread per row of ``x``. A thread block walks ``y`` in tiles of ``tile`` rows x
``TILE_D`` columns staged in shared memory (every thread of a warp reads the same
element: a broadcast, no bank conflicts); each thread accumulates the squared distances
of its row to the tile's rows in column order, then inserts them into its own
insertion-sorted top-k list in local memory. ``y`` rows arrive in increasing index
order, which is what makes ties go to the smaller index.

Local and shared array sizes must be compile-time constants, so kernels are built per
(k bucket, tile) by :func:`topk_kernel` and cached; k above the largest bucket is not
supported on this backend.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float32, int64

from gpuforge.core.errors import UnsupportedError
from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.pairwise import check_topk, insert

K_BUCKETS = (8, 16, 32, 64, 128, 256)
"""Capacities of the per-thread top-k lists; a call uses the smallest that holds k."""
TILE_D = 32
"""Columns of y per shared-memory tile; any number of columns is walked in such steps."""
MAX_TILE = 256

_insert = cuda.jit(device=True, inline="always")(insert)


@functools.lru_cache(maxsize=None)
def topk_kernel(kmax: int, tile: int):
    """The raw kernel (a Python function) for top-k lists of ``kmax`` and ``tile`` rows."""

    def pairwise_topk_kernel(x, y, k, exclude_self, dist, idx):
        y_tile = cuda.shared.array((tile, TILE_D), float32)
        acc = cuda.local.array(tile, float32)
        top_d = cuda.local.array(kmax, float32)
        top_i = cuda.local.array(kmax, int64)
        i = cuda.grid(1)
        t = cuda.threadIdx.x
        n, d = x.shape
        m = y.shape[0]
        filled = 0
        for j0 in range(0, m, tile):
            for jj in range(tile):
                acc[jj] = float32(0.0)
            for c0 in range(0, d, TILE_D):
                for e in range(t, tile * TILE_D, cuda.blockDim.x):
                    r = e // TILE_D
                    c = e - r * TILE_D
                    if j0 + r < m and c0 + c < d:
                        y_tile[r, c] = y[j0 + r, c0 + c]
                    else:
                        y_tile[r, c] = float32(0.0)
                cuda.syncthreads()
                if i < n:
                    for c in range(min(TILE_D, d - c0)):
                        xv = x[i, c0 + c]
                        for jj in range(tile):
                            diff = xv - y_tile[jj, c]
                            acc[jj] += diff * diff
                cuda.syncthreads()
            if i < n:
                for jj in range(min(tile, m - j0)):
                    j = j0 + jj
                    if not (exclude_self and j == i):
                        filled = _insert(top_d, top_i, filled, k, acc[jj], j)
        if i < n:
            for s in range(k):
                dist[i, s] = math.sqrt(top_d[s])
                idx[i, s] = top_i[s]

    return pairwise_topk_kernel


@functools.lru_cache(maxsize=None)
def _compiled(kmax: int, tile: int):
    return cuda.jit(topk_kernel(kmax, tile))


def pairwise_topk_cuda(x, y, k: int, exclude_self: bool = False):
    place = Placement()
    x, y = place.put(x, "x"), place.put(y, "y")
    k, exclude_self = check_topk(x, y, k, exclude_self)
    cfg = launch_config("kernels.pairwise_topk", {"threads_per_block": 128, "tile": 32})
    threads, tile = cfg.threads, cfg.get("tile")
    if not isinstance(tile, int) or not 1 <= tile <= MAX_TILE:
        raise UnsupportedError(f"kernels.pairwise_topk: tile must be an integer in 1..{MAX_TILE}, got {tile!r}")
    if k > K_BUCKETS[-1]:
        raise UnsupportedError(
            f"pairwise_topk on numba-cuda supports k <= {K_BUCKETS[-1]}, got k={k}; "
            "use --backend numba-cpu")
    kmax = next(b for b in K_BUCKETS if b >= k)
    n = x.shape[0]
    dist, dist_handed = place.empty((n, k), np.float32)
    idx, idx_handed = place.empty((n, k), np.int64)
    if n and k:
        threads = min(threads, -(-n // 32) * 32)  # no block of idle rows for small n
        place.launch(_compiled(kmax, tile), -(-n // threads), threads, place.to_device(x),
                     place.to_device(y), k, exclude_self, dist, idx)
    return place.result(dist_handed), place.result(idx_handed)


def pairwise_topk_ptx():
    sig = "void(float32[:, ::1], float32[:, ::1], int64, boolean, float32[:, ::1], int64[:, ::1])"
    return [(topk_kernel(16, 32), sig, {"variant": "k<=16, tile 32"}),
            (topk_kernel(K_BUCKETS[-1], MAX_TILE), sig, {"variant": f"k<={K_BUCKETS[-1]}, tile {MAX_TILE}"})]
