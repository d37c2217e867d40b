"""numba-cuda backend of ``fraud.knn_forest`` (see kruskal.py): Boruvka rounds over the
kNN edges only. An edge may be listed by one end only (kNN is not symmetric), so the
component minima run over edges, not rows: one thread per listed edge offers it to the
components of both its ends, with the same three ``atomic.min`` passes as
``boruvka_cuda.py`` (weight, smaller row, larger row). Under the strict edge order the
spanning forest is unique, so this gives Kruskal's forest."""
from __future__ import annotations


import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.fraud.hdbscan.boruvka_cuda import _finish, boruvka_rounds, reset_kernel
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch
from gpuforge.plugins.fraud.hdbscan.kruskal import check_forest, check_forest_values
from gpuforge.plugins.fraud.hdbscan.union_find_cuda import flatten_kernel, iota_kernel, link_kernel, new_parent


_I, _F, _KNN = "int64[::1]", "float64[::1]", "float64[:, ::1], int64[:, ::1]"


@cuda.jit(device=True, inline="always")
def _edge(c2, knn_d2, knn_i, comp, e):
    """(p, q, w2, comp p, comp q) of listed edge e = p * k + j."""
    k = knn_d2.shape[1]
    p = e // k
    j = e - p * k
    q = knn_i[p, j]
    return p, q, max(c2[p], max(c2[q], knn_d2[p, j])), comp[p], comp[q]


@cuda_kernel(f"void({_F}, {_KNN}, {_I}, {_F})")
def weight_kernel(c2, knn_d2, knn_i, comp, W):
    e = cuda.grid(1)
    if e < knn_d2.shape[0] * knn_d2.shape[1]:
        p, q, w, cp, cq = _edge(c2, knn_d2, knn_i, comp, e)
        if cp != cq:
            cuda.atomic.min(W, cp, w)
            cuda.atomic.min(W, cq, w)


@cuda_kernel(f"void({_F}, {_KNN}, {_I}, {_F}, {_I})")
def first_kernel(c2, knn_d2, knn_i, comp, W, A):
    e = cuda.grid(1)
    if e < knn_d2.shape[0] * knn_d2.shape[1]:
        p, q, w, cp, cq = _edge(c2, knn_d2, knn_i, comp, e)
        if cp != cq:
            if w == W[cp]:
                cuda.atomic.min(A, cp, min(p, q))
            if w == W[cq]:
                cuda.atomic.min(A, cq, min(p, q))


@cuda_kernel(f"void({_F}, {_KNN}, {_I}, {_F}, {_I}, {_I})")
def second_kernel(c2, knn_d2, knn_i, comp, W, A, B):
    e = cuda.grid(1)
    if e < knn_d2.shape[0] * knn_d2.shape[1]:
        p, q, w, cp, cq = _edge(c2, knn_d2, knn_i, comp, e)
        if cp != cq:
            if w == W[cp] and min(p, q) == A[cp]:
                cuda.atomic.min(B, cp, max(p, q))
            if w == W[cq] and min(p, q) == A[cq]:
                cuda.atomic.min(B, cq, max(p, q))


@cuda_kernel(f"void({_F}, {_KNN}, {_I}, {_F}, {_I}, {_I}, {_I}, {_I})")
def winner_kernel(c2, knn_d2, knn_i, comp, W, A, B, P, Q):
    """The edge listed from both ends is written twice with the same values."""
    e = cuda.grid(1)
    if e < knn_d2.shape[0] * knn_d2.shape[1]:
        p, q, w, cp, cq = _edge(c2, knn_d2, knn_i, comp, e)
        if cp != cq:
            if w == W[cp] and min(p, q) == A[cp] and max(p, q) == B[cp]:
                P[cp] = p
                Q[cp] = q
            if w == W[cq] and min(p, q) == A[cq] and max(p, q) == B[cq]:
                P[cq] = q
                Q[cq] = p


def knn_forest_cuda(core2, knn_d2, knn_i):
    place = Placement()
    core2, knn_d2, knn_i = (place.put(a, name) for a, name in ((core2, "core2"), (knn_d2, "knn_d2"),
                                                                (knn_i, "knn_i")))
    check_forest(core2, knn_d2, knn_i)
    check_forest_values(core2, knn_i)
    n, k = knn_d2.shape
    u, v, w = [], [], []
    if n > 1 and k:
        c2, kd2, ki = (place.to_device(a) for a in (core2, knn_d2, knn_i))
        cfg = launch("fraud.knn_forest")
        ge, gn = cfg.blocks(n * k), cfg.blocks(n)
        W, _ = place.empty((n,), np.float64)
        A, _ = place.empty((n,), np.int64)
        B, _ = place.empty((n,), np.int64)
        P, _ = place.empty((n,), np.int64)
        Q, _ = place.empty((n,), np.int64)

        def minima(comp):
            place.launch(reset_kernel, gn, cfg.threads, W, A, B, P)
            place.launch(weight_kernel, ge, cfg.threads, c2, kd2, ki, comp, W)
            place.launch(first_kernel, ge, cfg.threads, c2, kd2, ki, comp, W, A)
            place.launch(second_kernel, ge, cfg.threads, c2, kd2, ki, comp, W, A, B)
            place.launch(winner_kernel, ge, cfg.threads, c2, kd2, ki, comp, W, A, B, P, Q)
            return (W.copy_to_host(stream=place.stream), P.copy_to_host(stream=place.stream),
                    Q.copy_to_host(stream=place.stream))

        boruvka_rounds(place, n, new_parent(place, n), minima, u, v, w)
    return _finish(place, u, v, w)


knn_forest_ptx = ptx_list(weight_kernel, first_kernel, second_kernel, winner_kernel, reset_kernel, link_kernel,
                          flatten_kernel, iota_kernel)
