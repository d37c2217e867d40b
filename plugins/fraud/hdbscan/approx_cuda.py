"""numba-cuda backends of ``fraud.knn_local`` and ``fraud.knn_refine`` (see approx.py):
one thread per row; candidates are ranked by (d2, row) with insertion into the row's
output, so the order they arrive in does not matter."""
from __future__ import annotations

import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.fraud.hdbscan import approx
from gpuforge.plugins.fraud.hdbscan.approx import check_local, check_refine
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch, neighbour_before, sq_dist


listed = cuda.jit(device=True, inline="always")(approx.listed.py_func)


@cuda.jit(device=True, inline="always")
def _insert(out_d2, out_i, p, k, filled, d2, q):
    """Insert (d2, q) into row p's sorted list of ``filled`` entries; returns the new fill."""
    if filled == k:
        if not neighbour_before(d2, q, out_d2[p, k - 1], out_i[p, k - 1]):
            return filled
        i = k - 1
    else:
        i = filled
        filled += 1
    while i > 0 and neighbour_before(d2, q, out_d2[p, i - 1], out_i[p, i - 1]):
        out_d2[p, i] = out_d2[p, i - 1]
        out_i[p, i] = out_i[p, i - 1]
        i -= 1
    out_d2[p, i] = d2
    out_i[p, i] = q
    return filled


@cuda_kernel("void(float64[:, ::1], int64, int64[::1], int64[:, ::1], int64[::1], int64[::1], float64[:, ::1], "
              "int64[:, ::1])")
def local_kernel(x, k, cell_of, nbr, order, start, out_d2, out_i):
    p = cuda.grid(1)
    if p >= x.shape[0] or k == 0:
        return
    filled = 0
    cl = cell_of[p]
    for t in range(nbr.shape[1]):
        j = nbr[cl, t]
        if j < 0:
            continue
        for s in range(start[j], start[j + 1]):
            q = order[s]
            if q != p:
                filled = _insert(out_d2, out_i, p, k, filled, sq_dist(x, p, x, q), q)


@cuda_kernel("void(float64[:, ::1], float64[:, ::1], int64[:, ::1], float64[:, ::1], int64[:, ::1])")
def refine_kernel(x, knn_d2, knn_i, out_d2, out_i):
    p = cuda.grid(1)
    n = knn_d2.shape[0]
    k = knn_d2.shape[1]
    if p >= n:
        return
    for j in range(k):
        out_d2[p, j] = knn_d2[p, j]
        out_i[p, j] = knn_i[p, j]
    for j in range(k):
        q = knn_i[p, j]
        for jj in range(k):
            r = knn_i[q, jj]
            if r != p and not listed(out_i[p], r):
                _insert(out_d2, out_i, p, k, k, sq_dist(x, p, x, r), r)


def knn_local_cuda(x, k, cell_of, nbr):
    place = Placement()
    x, cell_of, nbr = (place.put(a, name) for a, name in ((x, "x"), (cell_of, "cell_of"), (nbr, "nbr")))
    k = check_local(x, k, cell_of, nbr)
    n = x.shape[0]
    d2, d2_h = place.empty((n, k), np.float64)
    idx, idx_h = place.empty((n, k), np.int64)
    if n and k:
        host = cell_of if isinstance(cell_of, np.ndarray) else cell_of.copy_to_host()
        order = np.argsort(host, kind="stable").astype(np.int64)
        start = np.searchsorted(host[order], np.arange(nbr.shape[0] + 1)).astype(np.int64)
        cfg = launch("fraud.knn_local")
        place.launch(local_kernel, cfg.blocks(n), cfg.threads, place.to_device(x), k, place.to_device(cell_of), place.to_device(nbr),
                     place.to_device(order), place.to_device(start), d2, idx)
    return place.result(d2_h), place.result(idx_h)


def knn_refine_cuda(x, knn_d2, knn_i):
    place = Placement()
    x, knn_d2, knn_i = (place.put(a, name) for a, name in ((x, "x"), (knn_d2, "knn_d2"), (knn_i, "knn_i")))
    check_refine(x, knn_d2, knn_i)
    n, k = knn_d2.shape
    d2, d2_h = place.empty((n, k), np.float64)
    idx, idx_h = place.empty((n, k), np.int64)
    if n and k:
        cfg = launch("fraud.knn_refine")
        place.launch(refine_kernel, cfg.blocks(n), cfg.threads, place.to_device(x), place.to_device(knn_d2), place.to_device(knn_i),
                     d2, idx)
    return place.result(d2_h), place.result(idx_h)


knn_local_ptx = ptx_list(local_kernel)
knn_refine_ptx = ptx_list(refine_kernel)
