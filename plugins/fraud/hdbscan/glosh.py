"""GLOSH outlier scores (Campello et al., TKDD 2015) from the condensed tree, as the
hdbscan library computes ``outlier_scores_``."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def deaths(parent, lam, n, ncl):
    """Per cluster: the largest lambda at which anything leaves it."""
    d = np.zeros(ncl, np.float64)
    for i in range(parent.shape[0]):
        if lam[i] > d[parent[i] - n]:
            d[parent[i] - n] = lam[i]
    return d


@njit(cache=True)
def glosh(parent, child, lam, n, ncl):
    """1 - lambda(point leaves) / max lambda in the subtree of the cluster it leaves."""
    top = deaths(parent, lam, n, ncl)
    for i in range(child.shape[0] - 1, -1, -1):  # children come after parents: bottom-up
        if child[i] >= n:
            c = child[i] - n
            p = parent[i] - n
            if top[c] > top[p]:
                top[p] = top[c]
    out = np.zeros(n, np.float64)
    for i in range(child.shape[0]):
        if child[i] < n:
            lm = top[parent[i] - n]
            if lm == 0.0 or not np.isfinite(lam[i]):
                out[child[i]] = 0.0
            else:
                out[child[i]] = (lm - lam[i]) / lm
    return out
