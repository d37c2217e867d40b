"""Union-find (disjoint sets) for the numba-cpu steps: Boruvka, Kruskal, single linkage.

The CUDA version (lock-free linking with ``atomic.cas``) is in ``union_find_cuda.py``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def find(parent, x):
    """Root of x, halving the path on the way."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(inline="always")
def union(parent, a, b):
    """Join the sets of a and b (the larger root goes under the smaller); False if they
    were one set already."""
    ra = find(parent, a)
    rb = find(parent, b)
    if ra == rb:
        return False
    if ra < rb:
        parent[rb] = ra
    else:
        parent[ra] = rb
    return True


@njit(parallel=True, cache=True)
def flatten(parent, comp):
    """comp[i] = root of i, without writing to parent (safe in parallel)."""
    for i in prange(parent.shape[0]):
        r = np.int64(i)  # the prange index may be unsigned; a mixed-sign loop variable never settles
        while parent[r] != r:
            r = parent[r]
        comp[i] = r
