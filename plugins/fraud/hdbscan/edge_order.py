"""The one order in which every backend ranks neighbours and edges.

All three backends of the fraud kernels (reference, numba-cpu, numba-cuda) follow these
rules, so they return the same kNN lists and the same minimum spanning tree, bit for bit:

- **Squared distances** are the sum over columns, in column order, of the squared
  difference, in float64: ``s = 0; s += (x[p, c] - x[q, c]) ** 2`` for c = 0, 1, ...
  Nothing is fused (Numba's CPU target contracts a multiply and an add only under
  fastmath; the CUDA kernels call round-to-nearest ``dmul_rn``/``dadd_rn``), so the sum
  is the same on every backend. ``(a - b) ** 2 == (b - a) ** 2`` exactly, so
  ``d2(p, q) == d2(q, p)``.
- **Neighbours**: q comes before q' (as a neighbour of p) when ``d2(p, q) < d2(p, q')``,
  ties to the smaller row.
- **Edges**: an edge is ``(w2, a, b)`` with ``a = min(p, q)``, ``b = max(p, q)`` and
  ``w2 = max(core2[p], core2[q], d2(p, q))`` (the squared mutual-reachability distance);
  edges are compared lexicographically on ``(w2, a, b)``. That is a strict total order,
  so the minimum spanning tree is unique: Boruvka (numba-cpu, numba-cuda), Kruskal
  and the reference's dense Boruvka all find the same one. Trees are returned sorted in
  this order, so single linkage also merges equal heights in it.

Rows are always input row numbers, never positions in a tree or partition.

The comparisons are ``njit(inline="always")``: Numba inlines them at IR level for the
CPU and the CUDA target alike, and the CUDA simulator runs them as plain Python.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def neighbour_before(d2, row, held_d2, held_row):
    """Does a candidate neighbour (d2, row) rank before the held one?"""
    return d2 < held_d2 or (d2 == held_d2 and row < held_row)


@njit(inline="always")
def edge_before(w2, a, b, held_w2, held_a, held_b):
    """Does edge (w2, a, b) rank before the held edge? (a < b: rows of the endpoints)"""
    if w2 != held_w2:
        return w2 < held_w2
    if a != held_a:
        return a < held_a
    return b < held_b


@njit(inline="always")
def lighter_edge(w2, row_p, row_q, q, held_w2, held_a, held_b, held_q):
    """The lighter of edge (p, q) (rows ``row_p``, ``row_q``; weight ``w2``) and the held
    best edge of p (to ``held_q``): ``(w2, a, b, q)`` of the winner."""
    a = min(row_p, row_q)
    b = max(row_p, row_q)
    if edge_before(w2, a, b, held_w2, held_a, held_b):
        return w2, a, b, q
    return held_w2, held_a, held_b, held_q


@njit(inline="always")
def store_edge(p, w2, a, b, q, pw, pa, pb, pq):
    """Row p's best edge (w2, a, b) to q into the per-row arrays."""
    pw[p] = w2
    pa[p] = a
    pb[p] = b
    pq[p] = q


@njit(inline="always")
def sq_dist(X, p, Y, q):
    """Squared distance of row p of X and row q of Y (CPU targets)."""
    s = 0.0
    for c in range(X.shape[1]):
        t = X[p, c] - Y[q, c]
        s += t * t
    return s


def sq_dists_to(X: np.ndarray, x: np.ndarray) -> np.ndarray:
    """NumPy: squared distances of every row of X (or a block of rows) to the point x,
    summed in column order like every backend."""
    s = np.zeros(X.shape[0])
    for c in range(X.shape[1]):
        s += (X[:, c] - x[c]) ** 2
    return s


def sq_dist_matrix(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """NumPy: all squared distances between the rows of X and Y, in column order."""
    s = np.zeros((X.shape[0], Y.shape[0]))
    for c in range(X.shape[1]):
        s += (X[:, c, None] - Y[None, :, c]) ** 2
    return s


def sort_edges(u: np.ndarray, v: np.ndarray, w2: np.ndarray):
    """Edges as (a = min, b = max, w2), sorted by (w2, a, b)."""
    a, b = np.minimum(u, v), np.maximum(u, v)
    order = np.lexsort((b, a, w2))
    return a[order].astype(np.int64), b[order].astype(np.int64), np.asarray(w2, np.float64)[order]


def sq_dists_pairs(X: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """NumPy: squared distances of the row pairs (u[i], v[i]), in column order."""
    s = np.zeros(len(u))
    for c in range(X.shape[1]):
        s += (X[u, c] - X[v, c]) ** 2
    return s
