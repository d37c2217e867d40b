"""Single linkage: the minimum spanning tree, sorted, as a scipy-style linkage matrix."""
from __future__ import annotations

import numpy as np
from numba import njit

from gpuforge.plugins.fraud.hdbscan.union_find import find


@njit(cache=True)
def single_linkage(u, v, w):
    """Edges sorted by weight -> rows (left, right, distance, size); clusters are numbered
    n, n+1, ... in merge order (as scipy and hdbscan's ``label``)."""
    m = u.shape[0]
    n = m + 1
    parent = np.arange(2 * n - 1)
    size = np.ones(2 * n - 1, np.int64)
    Z = np.empty((m, 4), np.float64)
    for i in range(m):
        a = find(parent, u[i])
        b = find(parent, v[i])
        Z[i, 0] = min(a, b)
        Z[i, 1] = max(a, b)
        Z[i, 2] = w[i]
        size[n + i] = size[a] + size[b]
        Z[i, 3] = size[n + i]
        parent[a] = n + i
        parent[b] = n + i
    return Z
