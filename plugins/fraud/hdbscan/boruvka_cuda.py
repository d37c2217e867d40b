"""numba-cuda backend of ``fraud.mst`` (see boruvka.py): Boruvka rounds on the GPU.

Each round: (1) one thread per row scans every row of another component and keeps its
lightest edge in the order of :mod:`.edge_order` (w2, min row, max row); (2) each
component's minimum of those, with three ``atomic.min`` passes (the weight, then the
smaller row among rows that reached it, then the larger row), and one thread per row
writes the winning edge of its component (exactly one row holds it); (3) the chosen
edges are linked with the lock-free union-find of ``union_find_cuda.py``. The forest
edges are linked first. The kNN lists are not needed: the scan is exhaustive.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.fraud.hdbscan.boruvka import NONE, check_host_values, check_mst
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch, lighter_edge, sq_dist, store_edge
from gpuforge.plugins.fraud.hdbscan.edge_order import sort_edges
from gpuforge.plugins.fraud.hdbscan.knn import check_finite
from gpuforge.plugins.fraud.hdbscan.union_find_cuda import (components, flatten_kernel, iota_kernel, link,
                                                             link_kernel, new_parent)


_I, _F = "int64[::1]", "float64[::1]"


@cuda_kernel(f"void(float64[:, ::1], {_I}, {_F}, {_F}, {_I}, {_I}, {_I})")
def point_best_kernel(x, comp, c2, pw, pa, pb, pq):
    p = cuda.grid(1)
    n = x.shape[0]
    if p >= n:
        return
    c = comp[p]
    bw, ba, bb, bq = math.inf, NONE, NONE, -1
    for q in range(n):
        if comp[q] != c:
            bw, ba, bb, bq = lighter_edge(max(c2[p], max(c2[q], sq_dist(x, p, x, q))), p, q, q, bw, ba, bb, bq)
    store_edge(p, bw, ba, bb, bq, pw, pa, pb, pq)


@cuda_kernel(f"void({_F}, {_I}, {_I}, {_I})")
def reset_kernel(W, A, B, P):
    c = cuda.grid(1)
    if c < W.shape[0]:
        W[c] = math.inf
        A[c] = NONE
        B[c] = NONE
        P[c] = -1


@cuda_kernel(f"void({_I}, {_F}, {_I}, {_F})")
def min_weight_kernel(comp, pw, pq, W):
    p = cuda.grid(1)
    if p < comp.shape[0] and pq[p] >= 0:
        cuda.atomic.min(W, comp[p], pw[p])


@cuda_kernel(f"void({_I}, {_F}, {_I}, {_I}, {_F}, {_I})")
def min_first_kernel(comp, pw, pa, pq, W, A):
    p = cuda.grid(1)
    if p < comp.shape[0] and pq[p] >= 0 and pw[p] == W[comp[p]]:
        cuda.atomic.min(A, comp[p], pa[p])


@cuda_kernel(f"void({_I}, {_F}, {_I}, {_I}, {_I}, {_F}, {_I}, {_I})")
def min_second_kernel(comp, pw, pa, pb, pq, W, A, B):
    p = cuda.grid(1)
    if p < comp.shape[0] and pq[p] >= 0 and pw[p] == W[comp[p]] and pa[p] == A[comp[p]]:
        cuda.atomic.min(B, comp[p], pb[p])


@cuda_kernel(f"void({_I}, {_F}, {_I}, {_I}, {_I}, {_F}, {_I}, {_I}, {_I}, {_I})")
def winner_kernel(comp, pw, pa, pb, pq, W, A, B, P, Q):
    p = cuda.grid(1)
    if p < comp.shape[0] and pq[p] >= 0:
        c = comp[p]
        if pw[p] == W[c] and pa[p] == A[c] and pb[p] == B[c]:
            P[c] = p
            Q[c] = pq[p]


def component_minima(place, comp, pw, pa, pb, pq):
    """Per component root: (W, P, Q) of its lightest edge (P = -1: none). Host arrays."""
    n = comp.shape[0]
    cfg = launch("fraud.mst")
    g = cfg.blocks(n)
    W, _ = place.empty((n,), np.float64)
    A, _ = place.empty((n,), np.int64)
    B, _ = place.empty((n,), np.int64)
    P, _ = place.empty((n,), np.int64)
    Q, _ = place.empty((n,), np.int64)
    place.launch(reset_kernel, g, cfg.threads, W, A, B, P)
    place.launch(min_weight_kernel, g, cfg.threads, comp, pw, pq, W)
    place.launch(min_first_kernel, g, cfg.threads, comp, pw, pa, pq, W, A)
    place.launch(min_second_kernel, g, cfg.threads, comp, pw, pa, pb, pq, W, A, B)
    place.launch(winner_kernel, g, cfg.threads, comp, pw, pa, pb, pq, W, A, B, P, Q)
    return (W.copy_to_host(stream=place.stream), P.copy_to_host(stream=place.stream),
            Q.copy_to_host(stream=place.stream))


def boruvka_rounds(place, n, parent, minima, edges_u, edges_v, edges_w):
    """Rounds until no component finds an edge; ``minima(comp)`` gives each component
    root's lightest edge as host arrays (W, P, Q) (P = -1: none). Appends to the edge
    lists."""
    comp, _ = place.empty((n,), np.int64)
    while len(edges_u) < n - 1:
        components(place, parent, comp)
        W, P, Q = minima(comp)
        roots = np.flatnonzero(P >= 0)
        if roots.size == 0:
            break
        a, b = np.minimum(P[roots], Q[roots]), np.maximum(P[roots], Q[roots])
        _, first = np.unique(a * n + b, return_index=True)  # an edge chosen from both sides counts once
        a, b, w = a[first], b[first], W[roots][first]
        link(place, parent, a, b)
        edges_u.extend(a.tolist())
        edges_v.extend(b.tolist())
        edges_w.extend(w.tolist())


def _finish(place, u, v, w):
    u, v, w = sort_edges(np.array(u, np.int64), np.array(v, np.int64), np.array(w, np.float64))
    if place.kind == "host":
        return u, v, w
    return tuple(cuda.to_device(a, stream=place.stream) for a in (u, v, w))


def mst_cuda(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact=True):
    place = Placement()
    x, core2, knn_d2, knn_i, forest_u, forest_v = (
        place.put(a, name) for a, name in ((x, "x"), (core2, "core2"), (knn_d2, "knn_d2"), (knn_i, "knn_i"),
                                            (forest_u, "forest_u"), (forest_v, "forest_v")))
    check_mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact)
    check_finite("x", x)
    check_host_values(core2, knn_i, forest_u, forest_v)
    n = x.shape[0]
    fu = forest_u if isinstance(forest_u, np.ndarray) else forest_u.copy_to_host()
    fv = forest_v if isinstance(forest_v, np.ndarray) else forest_v.copy_to_host()
    xd, c2 = place.to_device(x), place.to_device(core2)
    u, v, w = [], [], []
    if n > 1:
        parent = new_parent(place, n)
        if fu.size:
            link(place, parent, fu, fv)
            u, v = fu.tolist(), fv.tolist()
            xh = x if isinstance(x, np.ndarray) else x.copy_to_host()
            ch = core2 if isinstance(core2, np.ndarray) else core2.copy_to_host()
            w = np.maximum(np.maximum(ch[fu], ch[fv]), _host_sq_dists(xh, fu, fv)).tolist()
        cfg = launch("fraud.mst")
        pw, _ = place.empty((n,), np.float64)
        pa, _ = place.empty((n,), np.int64)
        pb, _ = place.empty((n,), np.int64)
        pq, _ = place.empty((n,), np.int64)

        def minima(comp):
            place.launch(point_best_kernel, cfg.blocks(n), cfg.threads, xd, comp, c2, pw, pa, pb, pq)
            return component_minima(place, comp, pw, pa, pb, pq)

        boruvka_rounds(place, n, parent, minima, u, v, w)
    return _finish(place, u, v, w)


def _host_sq_dists(x, u, v):
    from gpuforge.plugins.fraud.hdbscan.edge_order import sq_dists_pairs

    return sq_dists_pairs(x, u, v)


mst_ptx = ptx_list(point_best_kernel, reset_kernel, min_weight_kernel, min_first_kernel, min_second_kernel,
                   winner_kernel, link_kernel, flatten_kernel, iota_kernel)
