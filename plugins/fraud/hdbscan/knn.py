"""``fraud.knn(x, k) -> (d2, idx)``: the exact k nearest OTHER rows of every row.

- ``x``: float64 (n, d), finite. ``k``: 0 <= k <= n - 1.
- ``d2``: float64 (n, k), squared Euclidean distances (column-order sums, see
  :mod:`.edge_order`); ``idx``: int64 (n, k), rows. Each row is sorted by (d2, row).
- The core distance of HDBSCAN is ``sqrt(d2[:, min_samples - 1])`` (the hdbscan
  library's convention: the min_samples-th nearest other point).

Backends: the reference (brute force, NumPy, blocks of rows), numba-cpu (below: a search
over :mod:`.cells` with ball, shell and annulus bounds and vectorised distance runs),
numba-cuda (``knn_cuda.py``: one thread per row, brute force). All three compute every
distance the same way and rank with the same rule, so their outputs are identical.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_int, check_ndim
from gpuforge.plugins.fraud.hdbscan.cells import (Cells, beyond, build_cells, centre_dists, chunks, longest_run,
                                                  range_sq_dists, shell_run)
from gpuforge.plugins.fraud.hdbscan.edge_order import neighbour_before, sq_dist, sq_dist_matrix

ROWS_PER_STEP = 256
"""Rows per step of the reference (bounds its (rows, n) temporaries)."""

CHUNK = 8192
"""Rows per parallel call of the per-row search (Ctrl-C is seen between calls; on a loaded
machine every parallel call can wait a scheduler slice for its second thread, so calls
must not be tiny)."""


# --- argument checks (every backend) ---------------------------------------------------------

def check_points(name: str, x) -> None:
    if np.dtype(x.dtype) != np.float64:
        raise KernelArgumentError(f"{name} must be float64, got {np.dtype(x.dtype)}")
    check_ndim(name, x.shape, 2)


def check_finite(name: str, x) -> None:
    """Host arrays only (device arrays are the caller's responsibility)."""
    if isinstance(x, np.ndarray) and x.size and not np.isfinite(x).all():
        raise KernelArgumentError(f"{name} has NaN or infinite values; drop those rows first")


def check_knn(x, k) -> int:
    check_points("x", x)
    k = check_int("k", k, 0)
    if k > max(x.shape[0] - 1, 0):
        raise KernelArgumentError(f"k={k} needs more than {x.shape[0]} rows")
    return k


# --- reference --------------------------------------------------------------------------------

def knn(x, k: int):
    x = np.asarray(x)
    k = check_knn(x, k)
    check_finite("x", x)
    n = x.shape[0]
    d2 = np.empty((n, k))
    idx = np.empty((n, k), np.int64)
    for start in range(0, n, ROWS_PER_STEP):
        block = x[start:start + ROWS_PER_STEP]
        sq = sq_dist_matrix(block, x)
        order = np.argsort(sq, axis=1, kind="stable")  # ties: the smaller row first
        rows = np.arange(start, start + len(block))[:, None]
        order = order[order != rows].reshape(len(block), n - 1)[:, :k]
        idx[start:start + len(block)] = order
        d2[start:start + len(block)] = np.take_along_axis(sq, order, axis=1)
    return d2, idx


# --- numba-cpu --------------------------------------------------------------------------------

@njit(inline="always")
def _insert(bd, bi, br, k, d2, q, rq):
    if not neighbour_before(d2, rq, bd[k - 1], br[k - 1]):
        return
    i = k - 1
    while i > 0 and neighbour_before(d2, rq, bd[i - 1], br[i - 1]):
        bd[i] = bd[i - 1]
        bi[i] = bi[i - 1]
        br[i] = br[i - 1]
        i -= 1
    bd[i] = d2
    bi[i] = q
    br[i] = rq


@njit(parallel=True, cache=True)
def _search(X, XT, row, r, CT, radius, cell_shell, shell_start, shell_lo, shell_hi, shell_of, shell_cell,
            k, points, out_d2, out_pos):
    """k nearest of each point at the given positions, one point at a time: own cell
    first, then the other cells in increasing order of their ball bound, shells pruned by
    their annulus bound, and inside a shell only the annulus range |r - D| <= the current
    k-th distance."""
    n = X.shape[0]
    m = CT.shape[1]
    longest = longest_run(shell_start)
    for t in prange(points.shape[0]):
        p = points[t]
        bd = np.full(k, np.inf)
        bi = np.full(k, -1, np.int64)
        br = np.full(k, n, np.int64)
        dc = np.empty(m)
        acc = np.empty(longest)
        centre_dists(X, p, CT, dc)
        own = shell_cell[shell_of[p]]
        lbc = np.empty(m)
        for j in range(m):
            lbc[j] = dc[j] - radius[j]
        lbc[own] = -np.inf
        order = np.argsort(lbc)
        for t_ in range(m):
            j = order[t_]
            tau = np.sqrt(bd[k - 1])
            if beyond(lbc[j], dc[j] + radius[j], tau):
                break
            D = dc[j]
            for s in range(cell_shell[j], cell_shell[j + 1]):
                a, b = shell_run(r, shell_start, shell_lo, shell_hi, s, D, np.sqrt(bd[k - 1]))
                range_sq_dists(X, p, XT, a, b, acc)
                for i in range(b - a):
                    q = a + i
                    if q != p:
                        _insert(bd, bi, br, k, acc[i], q, row[q])
        for i in range(k):
            out_d2[p, i] = bd[i]
            out_pos[p, i] = bi[i]


EPS32 = 1e-6
"""The float32 screen of ``_bulk`` is trusted to within ``EPS32 * (d + 8) * (|a|^2 + |b|^2)``
(a, b: the two points relative to the query cell's centre). Rounding the coordinates to
float32 moves a squared distance by at most 4 u (|a|^2 + |b|^2) and the float32 dot product
by d u (|a|^2 + |b|^2), u = 2^-24 = 6e-8: the slack is ~16 times that."""


@njit
def centred_f32(X, rows, centre):
    """The float32 screen's operands: the rows ``rows`` of X relative to ``centre``, rounded
    to float32, and their squared norms (float64 sums of the rounded values)."""
    d = X.shape[1]
    C = np.empty((rows.shape[0], d), np.float32)
    norms = np.empty(rows.shape[0])
    for i in range(rows.shape[0]):
        s = 0.0
        for c in range(d):
            v = np.float32(X[rows[i], c] - centre[c])
            C[i, c] = v
            s += np.float64(v) * np.float64(v)
        norms[i] = s
    return C, norms


BULK_ROWS = 8192
"""Rows (whole cells) per parallel call of the bulk search (Ctrl-C is seen between calls)."""


@njit(cache=True)
def _block(X, row, a, Q, qn, cP, b0, b1, k, bd, bi, br, slack):
    """Candidates at positions b0..b1-1 for the query points a..a+len(Q)-1: a float32
    GEMM screens every pair, and only the pairs that may enter a top-k are measured
    exactly (float64, column order) and inserted."""
    L = b1 - b0
    nq = Q.shape[0]
    C, cn = centred_f32(X, np.arange(b0, b1), cP)
    cmax = 0.0
    for j in range(L):
        cmax = max(cmax, cn[j])
    G = np.dot(Q, C.T)
    approx = np.empty(L)
    for i in range(nq):
        p = a + i
        for j in range(L):
            approx[j] = qn[i] + cn[j] - 2.0 * np.float64(G[i, j])
        thr = bd[i, k - 1]
        own = p - b0
        if thr == np.inf and L - (1 if 0 <= own < L else 0) >= k:
            # not k neighbours yet: only candidates that can be among this block's k nearest
            if 0 <= own < L:
                approx[own] = np.inf
            kth = np.partition(approx, k - 1)[k - 1]
            thr = kth + slack * (qn[i] + cmax)
            for j in range(L):  # np.partition reordered the scratch: recompute
                approx[j] = qn[i] + cn[j] - 2.0 * np.float64(G[i, j])
        for j in range(L):
            q = b0 + j
            if q == p or approx[j] - slack * (qn[i] + cn[j]) > thr:
                continue
            d2 = sq_dist(X, p, X, q)
            if neighbour_before(d2, row[q], bd[i, k - 1], br[i, k - 1]):
                _insert(bd[i], bi[i], br[i], k, d2, q, row[q])
                if bd[i, k - 1] < thr:
                    thr = bd[i, k - 1]


@njit(parallel=True, cache=True)
def _bulk(X, row, r, centre, cc_dist, radius, cell_start, halo_start, cell_shell, shell_start, shell_lo,
          shell_hi, k, todo, out_d2, out_pos):
    """k nearest of the points of the cells ``todo`` up to their halo, one cell at a time:
    its own cell first, then the other cells in increasing order of |centres| - radius;
    a shell is skipped when max(ccd - r - hi, lo - ccd - r) exceeds every query's
    k-th distance (ccd: centre distance, r: the query's radius in its cell)."""
    n, d = X.shape
    m = centre.shape[0]
    slack = EPS32 * (d + 8)
    for t in prange(todo.shape[0]):
        P = todo[t]
        a = cell_start[P]
        h = halo_start[P]
        nq = h - a
        if nq == 0:
            continue
        Q, qn = centred_f32(X, np.arange(a, h), centre[P])
        rmax = r[h - 1]
        bd = np.full((nq, k), np.inf)
        bi = np.full((nq, k), -1, np.int64)
        br = np.full((nq, k), n, np.int64)
        key = np.empty(m)
        for j in range(m):
            key[j] = cc_dist[P, j] - radius[j]
        key[P] = -np.inf
        order = np.argsort(key)
        tmax = np.inf
        for oi in range(m):
            C = order[oi]
            ccd = cc_dist[P, C]
            if beyond(key[C] - rmax, ccd + radius[C] + rmax, tmax):
                break
            s = cell_shell[C]
            while s < cell_shell[C + 1]:
                if beyond(max(ccd - rmax - shell_hi[s], shell_lo[s] - ccd - rmax), ccd + rmax + shell_hi[s], tmax):
                    s += 1
                    continue
                e = s + 1  # a run of consecutive needed shells: one GEMM
                while e < cell_shell[C + 1] and not beyond(max(ccd - rmax - shell_hi[e], shell_lo[e] - ccd - rmax),
                                                           ccd + rmax + shell_hi[e], tmax):
                    e += 1
                _block(X, row, a, Q, qn, centre[P], shell_start[s], shell_start[e], k, bd, bi, br, slack)
                s = e
            tmax = 0.0
            for i in range(nq):
                tmax = max(tmax, bd[i, k - 1])
            tmax = np.sqrt(tmax)
        for i in range(nq):
            for j in range(k):
                out_d2[a + i, j] = bd[i, j]
                out_pos[a + i, j] = bi[i, j]


def blas_one_thread():
    """numba's np.dot calls scipy's OpenBLAS; inside a parallel loop it must not start
    threads of its own (2 numba threads x 2 BLAS threads on 2 cores)."""
    try:
        from threadpoolctl import threadpool_limits  # ships with scikit-learn (fraud's extra)
    except ImportError:  # pragma: no cover
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def search_cells(cells: Cells, k: int):
    """(d2, positions) of the k nearest other points of every point, in cell order:
    the bulk of each cell through float32-screened GEMM blocks, halo points (far out in
    their cell) one at a time with annulus bounds."""
    from gpuforge.plugins.fraud.hdbscan.cells import centre_matrix

    n = cells.X.shape[0]
    d2 = np.empty((n, k))
    pos = np.empty((n, k), np.int64)
    cc = centre_matrix(cells.centre)
    m = cells.n_cells
    step = max(1, BULK_ROWS * m // max(n, 1))
    with blas_one_thread():
        for lo, hi in chunks(m, step):
            _bulk(cells.X, cells.row, cells.r, cells.centre, cc, cells.radius, cells.cell_start, cells.halo_start,
                  cells.cell_shell, cells.shell_start, cells.shell_lo, cells.shell_hi, k,
                  np.arange(lo, hi, dtype=np.int64), d2, pos)
    halo = np.concatenate([np.arange(cells.halo_start[j], cells.cell_start[j + 1]) for j in range(m)]).astype(np.int64)
    for lo, hi in chunks(halo.size, CHUNK):
        _search(cells.X, cells.XT, cells.row, cells.r, cells.centreT, cells.radius, cells.cell_shell,
                cells.shell_start, cells.shell_lo, cells.shell_hi, cells.shell_of, cells.shell_cell, k,
                halo[lo:hi], d2, pos)
    return d2, pos


def knn_cpu(x, k: int):
    x = np.ascontiguousarray(x)
    k = check_knn(x, k)
    check_finite("x", x)
    n = x.shape[0]
    if k == 0:
        return np.empty((n, 0)), np.empty((n, 0), np.int64)
    cells = build_cells(x)
    d2, pos = search_cells(cells, k)
    out_d2 = np.empty_like(d2)
    out_i = np.empty_like(pos)
    out_d2[cells.row] = d2
    out_i[cells.row] = cells.row[pos]
    return out_d2, out_i


# --- cases ------------------------------------------------------------------------------------

def _blobs(seed, n, d, centres=4, noise=0.1):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-8, 8, (centres, d))
    x = c[rng.integers(0, centres, n)] + rng.normal(size=(n, d))
    m = int(noise * n)
    x[:m] = rng.uniform(-10, 10, (m, d))
    return x


def knn_cases():
    from gpuforge.core.specs import KernelCase

    grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(5.0)), -1).reshape(-1, 2)  # ties everywhere
    dup = np.repeat(_blobs(3, 20, 3), 3, axis=0)  # every point three times: zero distances
    x = _blobs(1, 300, 5)
    return [
        KernelCase("blobs_80x5_k6", (x[:80], 6)),
        KernelCase("blobs_50x32_k8", (_blobs(2, 50, 32), 8)),
        KernelCase("blobs_300x5_k10", (x, 10), simulator=False),
        KernelCase("blobs_200x32_k16", (_blobs(2, 200, 32), 16), simulator=False),
        KernelCase("grid_ties_k6", (grid, 6)),
        KernelCase("duplicates_k5", (dup, 5)),
        KernelCase("one_row_k0", (x[:1], 0)),
        KernelCase("two_rows_k1", (x[:2], 1)),
        KernelCase("k_all", (x[:30], 29)),
        KernelCase("noncontiguous", (x[:120:2, ::2], 4)),
        KernelCase("big_3000x8", (_blobs(4, 3000, 8), 16), simulator=False),
        KernelCase("bad_k", (x[:5], 5)),
        KernelCase("bad_dtype", (x.astype(np.float32), 3)),
        KernelCase("bad_nan", (np.where(np.arange(300)[:, None] == 7, np.nan, x), 3)),
    ]
