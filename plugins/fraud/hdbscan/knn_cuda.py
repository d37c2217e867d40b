"""numba-cuda backend of ``fraud.knn`` (see knn.py): one thread per row scans every other
row in increasing row order and keeps its k nearest in its output row (insertion;
a tie keeps the row already held, which is the smaller one)."""
from __future__ import annotations

import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch, sq_dist
from gpuforge.plugins.fraud.hdbscan.knn import check_finite, check_knn


@cuda_kernel("void(float64[:, ::1], int64, float64[:, ::1], int64[:, ::1])")
def knn_kernel(x, k, out_d2, out_i):
    p = cuda.grid(1)
    n = x.shape[0]
    if p >= n or k == 0:
        return
    filled = 0
    for q in range(n):
        if q == p:
            continue
        d2 = sq_dist(x, p, x, q)
        if filled == k:
            if not d2 < out_d2[p, k - 1]:
                continue
            i = k - 1
        else:
            i = filled
            filled += 1
        while i > 0 and d2 < out_d2[p, i - 1]:
            out_d2[p, i] = out_d2[p, i - 1]
            out_i[p, i] = out_i[p, i - 1]
            i -= 1
        out_d2[p, i] = d2
        out_i[p, i] = q


def knn_cuda(x, k: int):
    place = Placement()
    x = place.put(x, "x")
    k = check_knn(x, k)
    check_finite("x", x)
    n = x.shape[0]
    d2, d2_h = place.empty((n, k), np.float64)
    idx, idx_h = place.empty((n, k), np.int64)
    if n and k:
        cfg = launch("fraud.knn")
        place.launch(knn_kernel, cfg.blocks(n), cfg.threads, place.to_device(x), k, d2, idx)
    return place.result(d2_h), place.result(idx_h)


knn_ptx = ptx_list(knn_kernel)
