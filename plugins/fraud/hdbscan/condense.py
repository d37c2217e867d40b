"""The condensed tree (hdbscan's ``condense_tree``) of a single-linkage tree."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def condense_tree(Z, min_cluster_size):
    """Rows (parent, child, lambda, child_size): points are 0..n-1, clusters n, n+1, ...
    (root n), children numbered after their parents. Walking the merges from the top, a
    split where both sides have at least ``min_cluster_size`` points makes two new
    clusters; otherwise the small side's points fall out of the cluster at
    lambda = 1 / distance and the large side keeps the cluster's label."""
    m = Z.shape[0]
    n = m + 1
    root = 2 * n - 2
    relabel = np.full(2 * n - 1, -1, np.int64)
    relabel[root] = n
    next_label = n + 1
    cap = 2 * n
    rp = np.empty(cap, np.int64)
    rc = np.empty(cap, np.int64)
    rl = np.empty(cap, np.float64)
    rs = np.empty(cap, np.int64)
    pos = 0
    stack = np.empty(2 * n, np.int64)
    for node in range(root, n - 1, -1):
        if relabel[node] < 0:
            continue
        row = node - n
        left = np.int64(Z[row, 0])
        right = np.int64(Z[row, 1])
        lam = 1.0 / Z[row, 2] if Z[row, 2] > 0.0 else np.inf
        lc = np.int64(Z[left - n, 3]) if left >= n else 1
        rcn = np.int64(Z[right - n, 3]) if right >= n else 1
        me = relabel[node]
        if lc >= min_cluster_size and rcn >= min_cluster_size:  # a true split: two new clusters
            for side in range(2):
                sub = left if side == 0 else right
                relabel[sub] = next_label
                next_label += 1
                rp[pos] = me
                rc[pos] = relabel[sub]
                rl[pos] = lam
                rs[pos] = lc if side == 0 else rcn
                pos += 1
            continue
        for side in range(2):
            sub = left if side == 0 else right
            cnt = lc if side == 0 else rcn
            if cnt >= min_cluster_size:
                relabel[sub] = me
                continue
            top = 1
            stack[0] = sub
            while top > 0:
                top -= 1
                x = stack[top]
                if x < n:
                    rp[pos] = me
                    rc[pos] = x
                    rl[pos] = lam
                    rs[pos] = 1
                    pos += 1
                else:
                    stack[top] = np.int64(Z[x - n, 0])
                    stack[top + 1] = np.int64(Z[x - n, 1])
                    top += 2
    return rp[:pos].copy(), rc[:pos].copy(), rl[:pos].copy(), rs[:pos].copy()
