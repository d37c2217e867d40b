"""``fraud.knn_forest(core2, knn_d2, knn_i) -> (u, v, w2)``: the minimum spanning forest
of the kNN mutual-reachability graph (approx mode; ``fraud.mst`` then bridges its
components).

- Edges (p, knn_i[p, j]) weigh ``max(core2[p], core2[q], knn_d2[p, j])``; an edge listed
  from both ends counts once. Ranked by (w2, min row, max row) (:mod:`.edge_order`), so
  the forest is unique.
- Returns its edges as rows ``u < v`` with ``w2``, sorted by (w2, u, v).

Backends: the reference runs Kruskal (edges sorted by the order, union-find in a Python
loop); numba-cpu (below) and numba-cuda (``kruskal_cuda.py``) run Boruvka rounds over
the kNN edges. With a strict total order the forest is unique, so all three agree.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from gpuforge.kernels.arguments import KernelArgumentError, check_ndim
from gpuforge.plugins.fraud.hdbscan.knn import _blobs, knn
from gpuforge.plugins.fraud.hdbscan.edge_order import edge_before, sort_edges
from gpuforge.plugins.fraud.hdbscan.union_find import find, union


def check_forest(core2, knn_d2, knn_i) -> None:
    if np.dtype(core2.dtype) != np.float64 or len(core2.shape) != 1:
        raise KernelArgumentError("core2 must be a 1-D float64 array")
    check_ndim("knn_d2", knn_d2.shape, 2)
    if np.dtype(knn_d2.dtype) != np.float64 or np.dtype(knn_i.dtype) != np.int64:
        raise KernelArgumentError("knn_d2 must be float64 and knn_i int64")
    if tuple(knn_d2.shape) != tuple(knn_i.shape) or knn_d2.shape[0] != core2.shape[0]:
        raise KernelArgumentError(f"knn_d2 and knn_i must both be ({core2.shape[0]}, k)")


def check_forest_values(core2, knn_i) -> None:
    n = core2.shape[0]
    if isinstance(knn_i, np.ndarray) and knn_i.size and (knn_i.min() < 0 or knn_i.max() >= n):
        raise KernelArgumentError(f"knn_i holds rows outside 0..{n - 1}")
    if isinstance(core2, np.ndarray) and core2.size and not (np.isfinite(core2).all() and (core2 >= 0).all()):
        raise KernelArgumentError("core2 must be finite and >= 0")


def knn_edges(core2, knn_d2, knn_i):
    """All list edges as (a = min row, b = max row, w2), sorted by (w2, a, b)."""
    n, k = knn_d2.shape
    p = np.repeat(np.arange(n, dtype=np.int64), k)
    q = knn_i.ravel()
    w2 = np.maximum(np.maximum(core2[p], core2[q]), knn_d2.ravel())
    a, b = np.minimum(p, q), np.maximum(p, q)
    order = np.lexsort((b, a, w2))
    return a[order], b[order], w2[order]


# --- reference --------------------------------------------------------------------------------

def knn_forest(core2, knn_d2, knn_i):
    core2, knn_d2, knn_i = (np.asarray(a) for a in (core2, knn_d2, knn_i))
    check_forest(core2, knn_d2, knn_i)
    check_forest_values(core2, knn_i)
    parent = list(range(core2.shape[0]))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    keep = []
    a, b, w2 = knn_edges(core2, knn_d2, knn_i)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
            keep.append(i)
    keep = np.array(keep, np.int64)
    return a[keep], b[keep], w2[keep]


# --- numba-cpu --------------------------------------------------------------------------------

@njit(cache=True)
def _boruvka_lists(core2, knn_d2, knn_i, parent, eu, ev, ew):
    """Boruvka over the listed edges: each round every edge (listed by either end) is
    offered to the components of both ends, and each component keeps the first in the
    edge order; no sort of the n k edges is needed."""
    n, k = knn_d2.shape
    comp = np.empty(n, np.int64)
    W = np.empty(n)
    A = np.empty(n, np.int64)
    B = np.empty(n, np.int64)
    ne = 0
    while True:
        for i in range(n):
            comp[i] = find(parent, i)
            W[i] = np.inf
            A[i] = n
            B[i] = n
        for p in range(n):
            cp = comp[p]
            for j in range(k):
                q = knn_i[p, j]
                cq = comp[q]
                if cp == cq:
                    continue
                w = max(core2[p], core2[q], knn_d2[p, j])
                a = min(p, q)
                b = max(p, q)
                if edge_before(w, a, b, W[cp], A[cp], B[cp]):
                    W[cp], A[cp], B[cp] = w, a, b
                if edge_before(w, a, b, W[cq], A[cq], B[cq]):
                    W[cq], A[cq], B[cq] = w, a, b
        before = ne
        for c in range(n):
            if comp[c] == c and A[c] < n and union(parent, A[c], B[c]):
                eu[ne] = A[c]
                ev[ne] = B[c]
                ew[ne] = W[c]
                ne += 1
        if ne == before:
            return ne


def knn_forest_cpu(core2, knn_d2, knn_i):
    core2, knn_d2, knn_i = (np.ascontiguousarray(a) for a in (core2, knn_d2, knn_i))
    check_forest(core2, knn_d2, knn_i)
    check_forest_values(core2, knn_i)
    n = core2.shape[0]
    eu, ev, ew = np.empty(max(n - 1, 0), np.int64), np.empty(max(n - 1, 0), np.int64), np.empty(max(n - 1, 0))
    ne = _boruvka_lists(core2, knn_d2, knn_i, np.arange(n, dtype=np.int64), eu, ev, ew) if n else 0
    return sort_edges(eu[:ne], ev[:ne], ew[:ne])


# --- cases ------------------------------------------------------------------------------------

def knn_forest_cases():
    from gpuforge.core.specs import KernelCase

    def case(seed, n, d, k, ms, integer=False):
        x = _blobs(seed, n, d)
        if integer:
            x = np.round(x)
        kd2, ki = knn(x, k)
        return kd2[:, ms - 1].copy(), kd2, ki

    core2, kd2, ki = case(1, 300, 4, 8, 5)
    apart = np.vstack([_blobs(5, 30, 3), _blobs(6, 30, 3) + 100.0])  # two kNN components
    kd2a, kia = knn(apart, 5)
    return [
        KernelCase("blobs_100x4_k8", case(5, 100, 4, 8, 5)),
        KernelCase("blobs_300x4_k8", (core2, kd2, ki), simulator=False),
        KernelCase("integer_ties", case(2, 80, 3, 6, 3, integer=True)),
        KernelCase("disconnected", (kd2a[:, 2].copy(), kd2a, kia)),
        KernelCase("k1", case(3, 100, 2, 1, 1)),
        KernelCase("empty", (np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3), np.int64))),
        KernelCase("big_3000x8", case(4, 3000, 8, 10, 10), simulator=False),
        KernelCase("bad_rows", (core2, kd2, np.where(np.arange(ki.size).reshape(ki.shape) == 7, 300, ki))),
        KernelCase("bad_dtype", (core2, kd2.astype(np.float32), ki)),
    ]
