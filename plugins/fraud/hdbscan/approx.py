"""Approx mode's kNN graph, in two registered kernels, and the driver step that runs them.

1. The rows are cut into k-means cells (:mod:`.cells`, on the host) and each cell is
   given its nearest cells (by centre distance, itself first; sizes in ``CELLS``).
2. ``fraud.knn_local(x, k, cell_of, nbr) -> (d2, idx)``: each row's k nearest among the
   rows of the cells ``nbr[cell_of[row]]`` (entries -1 are padding). Every row needs at
   least k other candidate rows.
3. ``fraud.knn_refine(x, knn_d2, knn_i) -> (d2, idx)``: one join step of NN-descent
   (Dong, Charikar & Li, WWW 2011): each row's k nearest among its list and the lists of
   the rows on it. Run ``REFINE_STEPS`` times.

Both rank by (d2, row) with the distances of :mod:`.edge_order` (the listed d2 values
are taken as given), so every backend returns the same graph. The recall (share of the
true k nearest found) is measured on a sample of rows when asked.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_int, check_ndim
from gpuforge.plugins.fraud.hdbscan.cells import build_cells, longest_run, range_sq_dists
from gpuforge.plugins.fraud.hdbscan.edge_order import neighbour_before, sq_dist, sq_dist_matrix
from gpuforge.plugins.fraud.hdbscan.knn import (EPS32, _blobs, _block, _insert, centred_f32, check_finite, check_points,
                                                knn)

CELLS = {False: (256, 8), True: (32, 32)}
"""(rows per cell, neighbour cells) above / at or below ``GEMM_MIN_COLUMNS`` columns.
Measured (ARI of approx vs exact labels): 50k x 32 blobs + 10% noise, 128 x 8 cells
(1k candidates) 0.988, ~224 x 8 (1.8k) 0.994; 100k x 8, 128 x 8 with a refine step
0.994 (recall 0.72), 32 x 32 0.997 (recall 0.85): small cells follow each row's
surroundings closely, and in high dimension more candidates are needed. The earlier
kd-tree approx kNN visited 32 leaves of 32 rows."""
REFINE_STEPS = {False: 1, True: 0}
"""NN-descent join steps above / at or below ``GEMM_MIN_COLUMNS`` columns: at 50k x 32 one
step lifts the recall from 0.55 to 0.80 (128-row cells); at 100k x 8 it changed the ARI
by 1e-4 for a third more time."""
EXACT_KNN_COLUMNS = (9, 32)
EXACT_KNN_MAX_ROWS = 50_000
"""Approx mode takes the exact kNN (``fraud.knn``, recall 1.0) from 9 to 32 columns up to
50k rows: there, on clustered data, its cell search is both faster and closer than the
cell-limited graph. It scales worse with the rows: at 100k rows (blobs + 10% noise,
load 5, same process) approx took 12.1 / 15.1 / 21.3 s with the exact kNN against
4.7 / 6.1 / 12.4 s with the cells at 12 / 16 / 32 columns, and at 200k x 10 31 s
against 8.8 s; so above 50k rows the cells stay (their agreement at 16-32 columns and
> 50k rows is not measured; at 20k-50k rows it is below).
Measured (load 14-19, one process per shape, ARI of approx vs exact labels):
20k x 16 blobs + 10% noise, seeds 0-2: exact kNN 2.5-4.5 s, ARI 0.9959-0.9974; cells
32 x 32 (the <= 16-column default) 4.8-9.5 s, ARI 0.9856-0.9912 (recall 0.95); 64 x 32
4.1-8.5 s, 0.9913-0.9951 (recall 0.965); 256 x 8 + one refine step 4.1-7.3 s,
0.9848-0.9919. 50k x 32, seeds 0-2: exact kNN ARI 0.9986 / 0.9975 / 0.9979 (seed 1:
17.4 s against 19.8 s for 256 x 8 cells + one refine step, same process); the cells
0.9912 / 0.9893 / 0.9909 (recall 0.86 / 0.83 / 0.84). At 20k x 128 the cells stay:
the exact kNN ran 5.8 s against ~40-120 s but gave ARI 0.9924 against the cells' 0.9983.
(Even with an exact kNN the approx MST is approximate: the kNN graph's spanning forest
is bridged, and that forest need not lie in the full graph's MST.) At <= 8 columns the
cells stay too: 100k x 8 0.74 s against the exact mode's 2.69 s."""
CHUNK = 16384
ROWS_PER_CALL = 16384
"""Query rows per parallel call (whole cells): big enough that a loaded machine's wait for
the second thread does not dominate, small enough that Ctrl-C is seen within ~0.1 s."""


# --- argument checks ---------------------------------------------------------------------------

def check_local(x, k, cell_of, nbr) -> int:
    """Every backend's checks of ``fraud.knn_local``'s arguments; returns k."""
    check_points("x", x)
    k = check_int("k", k, 0)
    if np.dtype(cell_of.dtype) != np.int64 or tuple(cell_of.shape) != (x.shape[0],):
        raise KernelArgumentError(f"cell_of must be int64 of shape ({x.shape[0]},)")
    check_ndim("nbr", nbr.shape, 2)
    if np.dtype(nbr.dtype) != np.int64:
        raise KernelArgumentError("nbr must be int64")
    check_finite("x", x)
    _check_local_values(k, cell_of, nbr)
    return k


def _check_local_values(k, cell_of, nbr) -> None:
    """Host arrays: cells in range, and at least k other candidates for every row."""
    if not isinstance(cell_of, np.ndarray) or not isinstance(nbr, np.ndarray) or cell_of.size == 0:
        return
    m = nbr.shape[0]
    if cell_of.min() < 0 or cell_of.max() >= m or nbr.min() < -1 or nbr.max() >= m:
        raise KernelArgumentError(f"cell_of and nbr must name cells 0..{m - 1} (nbr may hold -1)")
    size = np.bincount(cell_of, minlength=m)
    reach = np.where(nbr >= 0, size[np.maximum(nbr, 0)], 0).sum(1)
    if (reach[cell_of] - 1 < k).any():
        raise KernelArgumentError(f"some rows have fewer than k={k} other rows in their neighbour cells")


def check_refine(x, knn_d2, knn_i) -> None:
    """Every backend's checks of ``fraud.knn_refine``'s arguments."""
    check_points("x", x)
    check_ndim("knn_d2", knn_d2.shape, 2)
    if np.dtype(knn_d2.dtype) != np.float64 or np.dtype(knn_i.dtype) != np.int64:
        raise KernelArgumentError("knn_d2 must be float64 and knn_i int64")
    if tuple(knn_d2.shape) != tuple(knn_i.shape) or knn_d2.shape[0] != x.shape[0]:
        raise KernelArgumentError(f"knn_d2 and knn_i must both be ({x.shape[0]}, k)")
    check_finite("x", x)
    _check_refine_values(knn_i)


def refine_on_host(x, knn_d2, knn_i):
    """The host backends' start of ``fraud.knn_refine``: the checked arguments as C-contiguous
    arrays, then the (n, k) distances and rows to fill."""
    x, knn_d2, knn_i = (np.ascontiguousarray(a) for a in (x, knn_d2, knn_i))
    check_refine(x, knn_d2, knn_i)
    n, k = knn_d2.shape
    return x, knn_d2, knn_i, np.empty((n, k)), np.empty((n, k), np.int64)


def _check_refine_values(knn_i) -> None:
    if isinstance(knn_i, np.ndarray) and knn_i.size:
        n = knn_i.shape[0]
        if knn_i.min() < 0 or knn_i.max() >= n or (knn_i == np.arange(n)[:, None]).any():
            raise KernelArgumentError(f"knn_i must hold other rows in 0..{n - 1}")


# --- references --------------------------------------------------------------------------------

def knn_local(x, k, cell_of, nbr):
    x, cell_of, nbr = (np.asarray(a) for a in (x, cell_of, nbr))
    k = check_local(x, k, cell_of, nbr)
    n = x.shape[0]
    d2 = np.empty((n, k))
    idx = np.empty((n, k), np.int64)
    for c in np.unique(cell_of):
        rows = np.flatnonzero(cell_of == c)
        cand = np.flatnonzero(np.isin(cell_of, nbr[c][nbr[c] >= 0]))  # ascending rows
        sq = sq_dist_matrix(x[rows], x[cand])
        sq[cand[None, :] == rows[:, None]] = np.inf
        order = np.argsort(sq, axis=1, kind="stable")[:, :k]  # ties: the smaller row
        idx[rows] = cand[order]
        d2[rows] = np.take_along_axis(sq, order, axis=1)
    return d2, idx


def knn_refine(x, knn_d2, knn_i):
    x, knn_d2, knn_i, d2, idx = refine_on_host(x, knn_d2, knn_i)
    n, k = knn_d2.shape
    for p in range(n):
        have = dict(zip(knn_i[p].tolist(), knn_d2[p].tolist()))  # listed distances as given
        more = np.setdiff1d(knn_i[knn_i[p]].ravel(), np.append(knn_i[p], p))
        rows = np.concatenate([knn_i[p], more])
        dist = np.concatenate([[have[r] for r in knn_i[p].tolist()], sq_dist_matrix(x[p:p + 1], x[more])[0]])
        order = np.lexsort((rows, dist))[:k]
        idx[p], d2[p] = rows[order], dist[order]
    return d2, idx


# --- numba-cpu ---------------------------------------------------------------------------------

GEMM_MIN_COLUMNS = 16
"""Above this many columns a cell's rows meet each neighbour cell in one float32 GEMM
block; at fewer columns the product is too thin to pay, and each row runs exact
vectorised distances over each neighbour cell."""


@njit(parallel=True, cache=True)
def _local(X, XT, row, start, nbr, k, todo, out_d2, out_i):
    """Rows in cell order (cell j at start[j]:start[j+1]); one cell of queries per task."""
    n, d = X.shape
    slack = EPS32 * (d + 8)
    longest = longest_run(start)
    for t in prange(todo.shape[0]):
        P = todo[t]
        a, e = start[P], start[P + 1]
        nq = e - a
        if nq == 0:
            continue
        bd = np.full((nq, k), np.inf)
        bi = np.full((nq, k), -1, np.int64)
        br = np.full((nq, k), n, np.int64)
        if d <= GEMM_MIN_COLUMNS:
            acc = np.empty(longest)
            for i in range(nq):
                p = a + i
                bdi, bii, bri = bd[i], bi[i], br[i]
                for j in range(nbr.shape[1]):
                    C = nbr[P, j]
                    if C < 0:
                        continue
                    range_sq_dists(X, p, XT, start[C], start[C + 1], acc)
                    for s in range(start[C + 1] - start[C]):
                        q = start[C] + s
                        if q != p and neighbour_before(acc[s], row[q], bdi[k - 1], bri[k - 1]):
                            _insert(bdi, bii, bri, k, acc[s], q, row[q])
        else:
            cP = np.zeros(d)  # the cell's mean: centring keeps the float32 screen tight
            for i in range(a, e):
                for c in range(d):
                    cP[c] += X[i, c]
            cP /= nq
            Q, qn = centred_f32(X, np.arange(a, e), cP)
            for j in range(nbr.shape[1]):
                C = nbr[P, j]
                if C >= 0 and start[C + 1] > start[C]:
                    _block(X, row, a, Q, qn, cP, start[C], start[C + 1], k, bd, bi, br, slack)
        for i in range(nq):
            for j in range(k):
                out_d2[a + i, j] = bd[i, j]
                out_i[a + i, j] = br[i, j]


def local_search(x, k, cell_of, nbr, query_cells=None):
    """numba-cpu search of ``fraud.knn_local`` for the rows of ``query_cells`` (default:
    every cell; the other rows' outputs are left unset). A row's result depends only on
    the rows of its neighbour cells, so a worker holding those rows (in the same relative
    order) computes exactly what one process computes (:mod:`.distributed`)."""
    from gpuforge.plugins.fraud.hdbscan.knn import blas_one_thread

    n = x.shape[0]
    m = nbr.shape[0]
    order = np.argsort(cell_of, kind="stable").astype(np.int64)
    start = np.searchsorted(cell_of[order], np.arange(m + 1)).astype(np.int64)
    Xs = np.ascontiguousarray(x[order])
    d2 = np.empty((n, k))
    idx = np.empty((n, k), np.int64)
    todo = np.arange(m, dtype=np.int64) if query_cells is None else np.asarray(query_cells, np.int64)
    if n and k:
        step = max(1, ROWS_PER_CALL * m // n)
        # the transposed copy serves the exact loops only (<= GEMM_MIN_COLUMNS columns)
        XT = np.ascontiguousarray(Xs.T) if x.shape[1] <= GEMM_MIN_COLUMNS else np.empty((0, 0))
        with blas_one_thread():
            for lo in range(0, todo.size, step):
                _local(Xs, XT, order, start, nbr, k, todo[lo:lo + step], d2, idx)
        del XT
    del Xs   # the sorted copy of the rows goes before the outputs are scattered back
    out_d2, out_i = np.empty_like(d2), np.empty_like(idx)
    out_d2[order], out_i[order] = d2, idx
    return out_d2, out_i


def knn_local_cpu(x, k, cell_of, nbr):
    x, cell_of, nbr = (np.ascontiguousarray(a) for a in (x, cell_of, nbr))
    k = check_local(x, k, cell_of, nbr)
    return local_search(x, k, cell_of, nbr)


@njit(inline="always")
def listed(ids, r):
    """Does the neighbour list ``ids`` (as it stands in the join) hold row r? (every backend)"""
    for t in range(ids.shape[0]):
        if ids[t] == r:
            return True
    return False


@njit(parallel=True, cache=True)
def _refine(X, kd2, ki, rows, out_d2, out_i):
    """The join step for the given rows (reads the lists of their listed rows only)."""
    k = kd2.shape[1]
    for i in prange(rows.shape[0]):
        p = rows[i]
        bd = kd2[p].copy()
        br = ki[p].copy()
        bi = ki[p].copy()
        for j in range(k):
            q = ki[p, j]
            for jj in range(k):
                r = ki[q, jj]
                if r == p or listed(br, r):
                    continue
                d2 = sq_dist(X, p, X, r)
                if neighbour_before(d2, r, bd[k - 1], br[k - 1]):
                    _insert(bd, bi, br, k, d2, r, r)
        for t in range(k):
            out_d2[p, t] = bd[t]
            out_i[p, t] = br[t]


def knn_refine_cpu(x, knn_d2, knn_i):
    x, knn_d2, knn_i, d2, idx = refine_on_host(x, knn_d2, knn_i)
    n, k = knn_d2.shape
    if k:
        for lo in range(0, n, CHUNK):
            _refine(x, knn_d2, knn_i, np.arange(lo, min(n, lo + CHUNK), dtype=np.int64), d2, idx)
    return d2, idx


# --- the driver step ---------------------------------------------------------------------------

def nearest_cells(C: np.ndarray, r: int) -> np.ndarray:
    """Each centre's r nearest centres: itself, then its r - 1 nearest others by
    (squared distance, index) (the exact kNN of the centres)."""
    from gpuforge.plugins.fraud.hdbscan.knn import knn_cpu

    m = C.shape[0]
    r = min(r, m)
    _, near = knn_cpu(np.ascontiguousarray(C), r - 1)
    return np.ascontiguousarray(np.column_stack([np.arange(m, dtype=np.int64), near]))


def partition(X: np.ndarray, k: int, neighbours: int | None = None):
    """(cell_of, nbr): k-means cells and each cell's ``neighbours`` nearest cells (itself
    included; default and cell size from ``CELLS``), more where a row would have fewer
    than k other candidates."""
    size, default = CELLS[X.shape[1] <= GEMM_MIN_COLUMNS]
    cells = build_cells(X, cell_size=size)
    m = cells.n_cells
    cell_of = np.empty(X.shape[0], np.int64)
    cell_of[cells.row] = cells.shell_cell[cells.shell_of]
    size = np.bincount(cell_of, minlength=m)
    r = min(m, neighbours or default)
    while True:
        nbr = nearest_cells(cells.centre, r)
        if r == m or (size[nbr].sum(1) - 1 >= k).all():
            return cell_of, nbr
        r = min(m, 2 * r)


def recall(X: np.ndarray, knn_i: np.ndarray, rows: np.ndarray) -> float:
    """Share of the true k nearest neighbours of ``rows`` that ``knn_i`` holds. The true
    ones: a float64 matrix-product screen keeps the 4k + 16 nearest candidates, which are
    then measured exactly and ranked by (d2, row) like every kernel."""
    k = knn_i.shape[1]
    Xc = X - X.mean(0)
    n2 = (Xc ** 2).sum(1)
    approx = n2[rows, None] + n2[None, :] - 2.0 * (Xc[rows] @ Xc.T)
    approx[np.arange(len(rows)), rows] = np.inf
    keep = min(X.shape[0] - 1, 4 * k + 16)
    cand = np.argpartition(approx, keep - 1, axis=1)[:, :keep]
    hits = 0
    for p, c in zip(rows, cand):
        c = c[c != p]
        d2 = sq_dist_matrix(X[p:p + 1], X[c])[0]
        true = c[np.lexsort((c, d2))[:k]]
        hits += len(np.intersect1d(true, knn_i[p]))
    return hits / (len(rows) * k)


def approx_knn(X, k, call, neighbours: int | None = None, recall_rows: int = 0, seed: int = 0):
    """The approximate kNN graph; its recall on ``recall_rows`` sampled rows (or None)."""
    cell_of, nbr = partition(X, k, neighbours)
    d2, idx = call("fraud.knn_local", X, k, cell_of, nbr)
    for _ in range(REFINE_STEPS[X.shape[1] <= GEMM_MIN_COLUMNS]):
        d2, idx = call("fraud.knn_refine", X, d2, idx)
    rec = None
    if recall_rows:
        rows = np.random.default_rng(seed).choice(X.shape[0], min(recall_rows, X.shape[0]), replace=False)
        rec = recall(X, idx, rows)
    return d2, idx, rec


# --- cases -------------------------------------------------------------------------------------

def _partition_case(seed, n, d, k):
    x = _blobs(seed, n, d)
    cell_of, nbr = partition(x, k)
    return x, cell_of, nbr


def knn_local_cases():
    from gpuforge.core.specs import KernelCase

    x, cell_of, nbr = _partition_case(1, 400, 6, 8)
    grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), -1).reshape(-1, 2)
    gcell = (np.arange(64) // 16).astype(np.int64)
    gnbr = np.array([[0, 1, -1], [1, 0, 2], [2, 3, -1], [3, 2, -1]], np.int64)
    xb, cb, nb = _partition_case(2, 3000, 16, 10)
    return [
        KernelCase("blobs_120x6_k6", (*_partition_case(5, 120, 6, 6)[:1], 6, *_partition_case(5, 120, 6, 6)[1:])),
        KernelCase("blobs_400x6_k8", (x, 8, cell_of, nbr), simulator=False),
        KernelCase("grid_ties_padding", (grid, 5, gcell, gnbr)),
        KernelCase("one_cell", (x[:50], 6, np.zeros(50, np.int64), np.zeros((1, 1), np.int64))),
        KernelCase("big_3000x16", (xb, 10, cb, nb), simulator=False),
        KernelCase("too_few_candidates", (grid, 20, gcell, np.array([[0], [1], [2], [3]], np.int64))),
        KernelCase("bad_cell", (x, 8, np.full(400, 99, np.int64), nbr)),
    ]


def knn_refine_cases():
    from gpuforge.core.specs import KernelCase

    x, cell_of, nbr = _partition_case(3, 120, 8, 6)
    d2, idx = knn_local(x, 6, cell_of, nbr)
    xg = np.round(_blobs(4, 80, 2))  # many equal distances
    gd2, gi = knn(xg, 4)
    return [
        KernelCase("local_120x8_k6", (x, d2, idx)),
        KernelCase("exact_is_fixed_point", (xg, gd2, gi)),
        KernelCase("k1", (x, d2[:, :1].copy(), idx[:, :1].copy())),
        KernelCase("self_in_list", (x, d2, np.where(np.arange(120)[:, None] == 5, 5, idx))),
        KernelCase("bad_shape", (x, d2[:, :3], idx)),
    ]
