"""``fraud.prim(x, core) -> (u, v, w)``: Prim's minimum spanning tree of the
mutual-reachability graph with the hdbscan library's tie rules (exact mode above 60
columns, where hdbscan's 'best' algorithm also switches to Prim).

- ``x``: float64 (n, d), finite; ``core``: float64 (n,) core distances (not squared).
- Edge weight ``max(core[p], core[q], d(p, q))`` with ``d = sqrt(column-order sum)``.
- The tie rules of hdbscan's ``mst_linkage_core_vector``: start at row 0; a row's best
  weight and its source change only on a strict improvement; the next row is the lowest
  row among the minimal ones. ``(u, v, w)`` come in the order Prim adds them (hdbscan
  then sorts them with NumPy's default ``argsort``; so does the driver), which makes
  equal merge heights fall as in hdbscan (digits: the same edge list, ARI 1.0).

Backends: reference (one NumPy pass over all rows per step), numba-cpu (below: the rows
not yet in the tree are kept packed and transposed, so each step's distances are one
vectorised run), numba-cuda (``prim_cuda.py``: per step one thread per row, then a
two-stage atomic minimum).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.plugins.fraud.hdbscan.edge_order import sq_dists_to
from gpuforge.plugins.fraud.hdbscan.knn import _blobs, check_finite, check_points

STEPS_PER_CALL = 2048
"""Prim steps per numba-cpu call (Ctrl-C is seen between calls)."""


def check_prim(x, core) -> None:
    check_points("x", x)
    if np.dtype(core.dtype) != np.float64 or tuple(core.shape) != (x.shape[0],):
        raise KernelArgumentError(f"core must be float64 of shape ({x.shape[0]},)")


# --- reference --------------------------------------------------------------------------------

def prim(x, core):
    x, core = np.asarray(x), np.asarray(core)
    check_prim(x, core)
    check_finite("x", x)
    n = x.shape[0]
    in_tree = np.zeros(n, bool)
    best = np.full(n, np.inf)
    src = np.zeros(n, np.int64)
    u, v, w = (np.empty(max(n - 1, 0), np.int64), np.empty(max(n - 1, 0), np.int64),
               np.empty(max(n - 1, 0)))
    cur = 0
    for i in range(n - 1):
        in_tree[cur] = True
        cand = np.maximum(np.maximum(core[cur], core), np.sqrt(sq_dists_to(x, x[cur])))
        better = ~in_tree & (cand < best)  # strict improvement only
        best[better] = cand[better]
        src[better] = cur
        nxt = int(np.argmin(np.where(in_tree, np.inf, best)))  # the lowest row among the minimal
        u[i], v[i], w[i] = src[nxt], nxt, best[nxt]
        cur = nxt
    return u, v, w


# --- numba-cpu --------------------------------------------------------------------------------

@njit(cache=True)
def _steps(XT, core, rows, RT, best, src, state, u, v, w, steps):
    """Up to ``steps`` Prim steps. Rows outside the tree are packed in positions
    0..state[1]-1 (their ids in ``rows``, coordinates in RT's columns); state[0] is the
    row added last, state[2] the number of edges so far."""
    d = XT.shape[0]
    cur = state[0]
    m = state[1]
    i = state[2]
    acc = np.empty(m)
    xc = np.empty(d)
    for c in range(d):
        xc[c] = XT[c, cur]
    for _ in range(steps):
        if m == 0:
            break
        for t in range(m):
            acc[t] = 0.0
        for c in range(d):
            x_ = xc[c]
            for t in range(m):
                s = RT[c, t] - x_
                acc[t] += s * s
        cc = core[cur]
        nt = 0
        for t in range(m):
            cand = max(max(cc, core[rows[t]]), np.sqrt(acc[t]))
            if cand < best[t]:
                best[t] = cand
                src[t] = cur
            if best[t] < best[nt] or (best[t] == best[nt] and rows[t] < rows[nt]):
                nt = t
        nxt = rows[nt]
        u[i] = src[nt]
        v[i] = nxt
        w[i] = best[nt]
        i += 1
        # remove nt: move the last packed row into its slot
        m -= 1
        for c in range(d):
            xc[c] = RT[c, nt]
            RT[c, nt] = RT[c, m]
        rows[nt] = rows[m]
        best[nt] = best[m]
        src[nt] = src[m]
        cur = nxt
    state[0] = cur
    state[1] = m
    state[2] = i


def prim_cpu(x, core):
    x, core = np.ascontiguousarray(x), np.ascontiguousarray(core)
    check_prim(x, core)
    check_finite("x", x)
    n = x.shape[0]
    u, v, w = (np.empty(max(n - 1, 0), np.int64), np.empty(max(n - 1, 0), np.int64),
               np.empty(max(n - 1, 0)))
    if n <= 1:
        return u, v, w
    XT = np.ascontiguousarray(x.T)
    rows = np.arange(1, n, dtype=np.int64)
    RT = np.ascontiguousarray(XT[:, 1:])
    best = np.full(n - 1, np.inf)
    src = np.zeros(n - 1, np.int64)
    state = np.array([0, n - 1, 0], np.int64)
    while state[1] > 0:
        _steps(XT, core, rows, RT, best, src, state, u, v, w, STEPS_PER_CALL)
    return u, v, w


# --- cases ------------------------------------------------------------------------------------

def prim_cases():
    from gpuforge.core.specs import KernelCase

    def case(seed, n, d, integer=False):
        x = _blobs(seed, n, d)
        if integer:
            x = np.round(x)
        d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        return x, np.sqrt(np.sort(d2, 1)[:, 2])

    x, core = case(1, 200, 64)
    xi, ci = case(2, 150, 8, integer=True)  # many equal weights
    return [
        KernelCase("blobs_40x64", case(4, 40, 64)),
        KernelCase("integer_ties_40x8", case(5, 40, 8, integer=True)),
        KernelCase("zero_cores", (x[:15], np.zeros(15))),
        KernelCase("blobs_200x64", (x, core), simulator=False),
        KernelCase("integer_ties_150x8", (xi, ci), simulator=False),
        KernelCase("one_row", (x[:1], core[:1])),
        KernelCase("two_rows", (x[:2], core[:2])),
        KernelCase("big_2000x64", case(3, 2000, 64), simulator=False),
        KernelCase("bad_core_shape", (x, core[:10])),
        KernelCase("bad_dtype", (x.astype(np.float32), core)),
    ]
