"""numba-cuda backend of ``fraud.prim`` (see prim.py). Each of the n - 1 steps is four
launches and never leaves the device: one thread per row relaxes its best weight from
the row added last (strict improvement only); an ``atomic.min`` over the rows outside the
tree finds the smallest best weight, a second one the lowest row holding it (hdbscan's
tie rule); one thread then records the edge and adds that row."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch, sq_dist
from gpuforge.plugins.fraud.hdbscan.knn import check_finite
from gpuforge.plugins.fraud.hdbscan.prim import check_prim


_I, _F = "int64[::1]", "float64[::1]"


@cuda_kernel(f"void(float64[:, ::1], {_F}, int8[::1], {_F}, {_I}, {_I})")
def relax_kernel(x, core, in_tree, best, src, cur):
    j = cuda.grid(1)
    if j >= x.shape[0] or in_tree[j]:
        return
    c = cur[0]
    cand = max(max(core[c], core[j]), math.sqrt(sq_dist(x, c, x, j)))
    if cand < best[j]:
        best[j] = cand
        src[j] = c


@cuda_kernel(f"void(int8[::1], {_F}, {_F})")
def min_best_kernel(in_tree, best, mn):
    j = cuda.grid(1)
    if j < best.shape[0] and not in_tree[j]:
        cuda.atomic.min(mn, 0, best[j])


@cuda_kernel(f"void(int8[::1], {_F}, {_F}, {_I})")
def min_row_kernel(in_tree, best, mn, mi):
    j = cuda.grid(1)
    if j < best.shape[0] and not in_tree[j] and best[j] == mn[0]:
        cuda.atomic.min(mi, 0, j)


@cuda_kernel(f"void({_F}, {_I}, int8[::1], {_I}, {_F}, {_I}, {_I}, {_I}, {_F}, int64)")
def take_kernel(best, src, in_tree, cur, mn, mi, u, v, w, i):
    if cuda.grid(1) == 0:
        nxt = mi[0]
        u[i] = src[nxt]
        v[i] = nxt
        w[i] = best[nxt]
        in_tree[nxt] = 1
        cur[0] = nxt
        mn[0] = math.inf
        mi[0] = best.shape[0]


def prim_cuda(x, core):
    place = Placement()
    x, core = place.put(x, "x"), place.put(core, "core")
    check_prim(x, core)
    check_finite("x", x)
    n = x.shape[0]
    m = max(n - 1, 0)
    u, u_h = place.empty((m,), np.int64)
    v, v_h = place.empty((m,), np.int64)
    w, w_h = place.empty((m,), np.float64)
    if n > 1:
        xd, cd = place.to_device(x), place.to_device(core)
        first = np.zeros(n, np.int8)
        first[0] = 1
        in_tree = place.to_device(first)
        best = place.to_device(np.full(n, np.inf))
        src = place.to_device(np.zeros(n, np.int64))
        cur = place.to_device(np.zeros(1, np.int64))
        mn = place.to_device(np.full(1, np.inf))
        mi = place.to_device(np.full(1, n, np.int64))
        cfg = launch("fraud.prim")
        g = cfg.blocks(n)
        for i in range(m):
            place.launch(relax_kernel, g, cfg.threads, xd, cd, in_tree, best, src, cur)
            place.launch(min_best_kernel, g, cfg.threads, in_tree, best, mn)
            place.launch(min_row_kernel, g, cfg.threads, in_tree, best, mn, mi)
            place.launch(take_kernel, 1, 1, best, src, in_tree, cur, mn, mi, u, v, w, i)
    return place.result(u_h), place.result(v_h), place.result(w_h)


prim_ptx = ptx_list(relax_kernel, min_best_kernel, min_row_kernel, take_kernel)
