"""Approx-mode HDBSCAN on a Dask cluster: the same labels and MST as one process.

The design follows MR-HDBSCAN* (dos Santos, Ghanem, Zimek et al., "Hierarchical
density-based clustering using MapReduce", IEEE TKDE 2019): the data are cut into
subsets of nearby points, each subset's local mutual-reachability graph is reduced to
a minimum spanning forest on a worker, the forests are merged, and the hierarchy is
built once from the O(n) tree. Forests merge pairwise on the workers as in distributed
Boruvka/Kruskal filtering (an edge that is the heaviest on a cycle of some subgraph is
in no MST of the whole graph, so the MST of the union of forests is the MST of the union
of their graphs). Unlike MR-HDBSCAN*'s data bubbles, nothing is summarised: every
candidate edge of the one-process run is measured, so the result is exact.

Steps (driver = the process that calls :func:`hdbscan_distributed`):

1. driver: the k-means cells and neighbour cells of ``approx.partition`` over all rows
   (the one-process run's cells exactly; O(n sqrt(n) d), the driver holds the n x d
   matrix, which is smaller than the n x k graph it holds later anyway);
2. workers, one task per cell group (the shuffle): ``fraud.knn_local`` for the group's
   rows against the rows of their neighbour cells. A row's list depends only on those
   rows, which the task holds in the same relative order, so the lists are the
   one-process lists bit for bit;
3. workers: the ``fraud.knn_refine`` join step for the group's rows, given the lists of
   their listed rows and the coordinates two hops out;
4. workers: ``fraud.knn_forest`` of the group's mutual-reachability edges (core
   distances from the gathered lists), then forests merged pairwise (Kruskal on the
   union, ranked by (w2, u, v) of :mod:`.edge_order`);
5. driver: ``fraud.mst`` bridges the forest's components by Boruvka rounds (the
   one-process kernel, on the driver: not distributed yet), then single linkage,
   condensed tree, selection and GLOSH.

Every comparison ranks by (distance, row) or (w2, u, v) with input row numbers, and each
task renumbers the rows it holds in increasing order, so nothing depends on how many
tasks or workers ran: 1, 2, 3 or 7 partitions give the one-process tree and labels.
Tasks are pure functions of their arguments (no scattered data), so a worker that dies
mid-run only costs its tasks a rerun elsewhere.
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit

from gpuforge.plugins.fraud.hdbscan.fit import APPROX_MIN_KNN, Result, tree_result
from gpuforge.plugins.fraud.hdbscan.union_find import union


@njit(cache=True)
def _kruskal(a, b, n):
    """Positions of the edges (already in (w2, u, v) order) that Kruskal keeps."""
    parent = np.arange(n, dtype=np.int64)
    keep = np.empty(max(n - 1, 0), np.int64)
    m = 0
    for i in range(a.shape[0]):
        if m == n - 1:
            break
        if union(parent, a[i], b[i]):
            keep[m] = i
            m += 1
    return keep[:m]


# --- tasks (run on the workers; module-level so Dask ships them by reference) ----------------

def knn_task(x, k, cell_of, nbr, query_cells, query_pos):
    """kNN lists of the rows at ``query_pos`` (local positions) in ``x``, whose cells are
    ``query_cells`` (local cell numbers)."""
    from gpuforge.plugins.fraud.hdbscan.approx import local_search

    d2, idx = local_search(x, k, cell_of, nbr, query_cells)
    return d2[query_pos], idx[query_pos]


def refine_task(x, kd2, ki, query_pos):
    """The join step for the rows at ``query_pos``; lists hold local positions."""
    from gpuforge.plugins.fraud.hdbscan.approx import _refine

    d2 = np.empty_like(kd2)
    idx = np.empty_like(ki)
    if query_pos.size and kd2.shape[1]:
        _refine(x, kd2, ki, query_pos, d2, idx)
    return d2[query_pos], idx[query_pos]


def forest_task(core2, kd2, ki, query_pos, rows):
    """The minimum spanning forest of the edges listed by the rows at ``query_pos``, in
    input rows (``rows``: local position -> input row). The other local rows list only
    themselves (self-loops, which no forest keeps)."""
    from gpuforge.core.kernels import call

    n, k = core2.shape[0], kd2.shape[1]
    full_d2 = np.zeros((n, k))
    full_i = np.repeat(np.arange(n, dtype=np.int64)[:, None], k, axis=1)
    full_d2[query_pos], full_i[query_pos] = kd2, ki
    a, b, w2 = call("fraud.knn_forest", core2, full_d2, full_i)
    return rows[a], rows[b], w2


def merge_forests(f, g):
    """The minimum spanning forest of the union of two forests (Kruskal on (w2, u, v))."""
    from gpuforge.plugins.fraud.hdbscan.edge_order import sort_edges

    u = np.concatenate([f[0], g[0]])
    v = np.concatenate([f[1], g[1]])
    w2 = np.concatenate([f[2], g[2]])
    a, b, w2 = sort_edges(u, v, w2)
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)  # increasing: order kept
    la, lb = inv[:a.size].astype(np.int64), inv[a.size:].astype(np.int64)
    keep = _kruskal(la, lb, nodes.size)
    return a[keep], b[keep], w2[keep]


# --- the driver ---------------------------------------------------------------------------------

def cell_groups(cell_of: np.ndarray, n_cells: int, groups: int) -> list[np.ndarray]:
    """Consecutive cells in groups of about equal row counts (one task each)."""
    size = np.bincount(cell_of, minlength=n_cells)
    cum = np.cumsum(size)
    cut = np.searchsorted(cum, np.arange(1, groups) * cum[-1] / groups)
    bounds = np.unique(np.concatenate([[0], np.minimum(cut + 1, n_cells), [n_cells]]))
    return [np.arange(lo, hi, dtype=np.int64) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _local(rows_sorted: np.ndarray, glob: np.ndarray) -> np.ndarray:
    """Local positions of input rows ``glob`` among ``rows_sorted``."""
    return np.searchsorted(rows_sorted, glob).astype(np.int64)


def _nbytes(*arrays) -> int:
    return int(sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)))


def hdbscan_distributed(parts, client, *args, **kwargs) -> Result:
    """Approx-mode HDBSCAN of the rows of ``parts`` (float64 arrays, same columns, rows
    in order: together the matrix ``hdbscan(np.vstack(parts), mode="approx")`` gets) on
    the Dask ``client``; see :func:`_run` for the options."""
    import warnings

    with warnings.catch_warnings():
        # each task's rows travel inside the task on purpose: data scattered to a worker
        # dies with it, while a task's own arguments let the scheduler rerun it elsewhere
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return _run(parts, client, *args, **kwargs)


def _run(parts, client, min_cluster_size: int = 5, min_samples: int | None = None,
                        selection: str = "eom", epsilon: float = 0.0, knn: int | None = None,
                        knn_cells: int | None = None, tasks: int | None = None, log=None) -> Result:
    """Approx-mode HDBSCAN of the rows of ``parts`` (float64 arrays, same columns, rows
    in order: together the matrix ``hdbscan(np.vstack(parts), mode="approx")`` gets) on
    the Dask ``client``. ``tasks``: cell groups per step (default: the number of parts).
    ``info["bytes_moved"]`` counts the arrays sent to and from the workers."""
    from gpuforge.core.kernels import call
    from gpuforge.plugins.fraud.hdbscan.approx import GEMM_MIN_COLUMNS, REFINE_STEPS, partition

    if knn_cells == 0:
        raise ValueError("the distributed run is approx mode: knn_cells must be >= 1")
    t, moved = {}, {}
    t0 = time.perf_counter()
    X = np.ascontiguousarray(np.vstack([np.asarray(p, np.float64) for p in parts]))
    n = X.shape[0]
    if min_cluster_size < 2:
        raise ValueError("min_cluster_size must be >= 2")
    if n < max(2, min_cluster_size):
        raise ValueError(f"{n} rows is fewer than min_cluster_size={min_cluster_size}")
    ms = min(n - 1, min_samples if min_samples is not None else min_cluster_size)
    if ms < 1:
        raise ValueError("min_samples must be >= 1")
    from gpuforge.plugins.fraud.hdbscan.fit import _approx_takes_exact_knn

    if knn_cells is None and _approx_takes_exact_knn(n, X.shape[1]):
        # one process takes the exact kNN here (up to approx.EXACT_KNN_MAX_ROWS rows): the
        # same result comes from the same algorithm, so this size runs on the driver
        from gpuforge.plugins.fraud.hdbscan import hdbscan

        if log is not None:
            log.info(f"{n} rows x {X.shape[1]} columns: approx mode takes the exact kNN at this size; "
                     "clustered on this machine, not on the cluster")
        res = hdbscan(X, min_cluster_size=min_cluster_size, min_samples=min_samples, selection=selection,
                      epsilon=epsilon, mode="approx", knn=knn)
        res.info.update(tasks=0, bytes_moved={}, distributed=False)
        return res
    k = min(n - 1, max(knn if knn is not None else max(ms, APPROX_MIN_KNN), ms))
    cell_of, nbr = partition(X, k, knn_cells)
    m = nbr.shape[0]
    groups = cell_groups(cell_of, m, tasks or len(parts))
    # rows of each cell, ascending
    by_cell = np.argsort(cell_of, kind="stable")
    start = np.searchsorted(cell_of[by_cell], np.arange(m + 1))
    t["cells"] = time.perf_counter() - t0

    # 2. kNN per cell group
    t0 = time.perf_counter()
    futs, qrows_of = [], []
    bytes_out = 0
    for g in groups:
        cand_cells = np.unique(nbr[g][nbr[g] >= 0])
        rows = np.sort(np.concatenate([by_cell[start[c]:start[c + 1]] for c in cand_cells]))
        qrows = np.sort(np.concatenate([by_cell[start[c]:start[c + 1]] for c in g]))
        remap = np.full(m, -1, np.int64)
        remap[cand_cells] = np.arange(cand_cells.size)
        lnbr = np.where(nbr[cand_cells] >= 0, remap[np.maximum(nbr[cand_cells], 0)], -1)
        # a candidate-only cell's neighbours may lie outside the task: never searched
        lnbr = np.ascontiguousarray(lnbr)
        args = (np.ascontiguousarray(X[rows]), k, remap[cell_of[rows]], lnbr, remap[g], _local(rows, qrows))
        bytes_out += _nbytes(*args)
        futs.append(client.submit(knn_task, *args, pure=False))
        qrows_of.append((qrows, rows))
    kd2 = np.empty((n, k))
    ki = np.empty((n, k), np.int64)
    bytes_in = 0
    for f, (qrows, rows) in zip(futs, qrows_of):
        d2, li = f.result()
        kd2[qrows], ki[qrows] = d2, rows[li]
        bytes_in += _nbytes(d2, li)
    moved["knn"] = bytes_out + bytes_in
    t["knn_local"] = time.perf_counter() - t0

    # 3. the join step(s)
    t0 = time.perf_counter()
    bytes_out = bytes_in = 0
    for _ in range(REFINE_STEPS[X.shape[1] <= GEMM_MIN_COLUMNS]):
        futs, held = [], []
        for qrows, _rows in qrows_of:
            one = np.unique(ki[qrows])
            two = np.unique(ki[one])
            rows = np.unique(np.concatenate([qrows, one, two]))
            lists = np.unique(np.concatenate([qrows, one]))
            lkd2 = np.zeros((rows.size, k))
            lki = np.zeros((rows.size, k), np.int64)  # rows two hops out: lists never read
            pos = _local(rows, lists)
            lkd2[pos], lki[pos] = kd2[lists], _local(rows, ki[lists])
            args = (np.ascontiguousarray(X[rows]), lkd2, lki, _local(rows, qrows))
            bytes_out += _nbytes(*args)
            futs.append(client.submit(refine_task, *args, pure=False))
            held.append(rows)
        nd2, ni = np.empty_like(kd2), np.empty_like(ki)
        for f, (qrows, _rows), rows in zip(futs, qrows_of, held):
            d2, li = f.result()
            nd2[qrows], ni[qrows] = d2, rows[li]
            bytes_in += _nbytes(d2, li)
        kd2, ki = nd2, ni
    moved["refine"] = bytes_out + bytes_in
    core2 = np.ascontiguousarray(kd2[:, ms - 1])
    t["knn_refine"] = time.perf_counter() - t0

    # 4. forests per group, merged pairwise on the workers
    t0 = time.perf_counter()
    bytes_out = 0
    futs = []
    for qrows, _rows in qrows_of:
        rows = np.unique(np.concatenate([qrows, ki[qrows].ravel()]))
        args = (np.ascontiguousarray(core2[rows]), np.ascontiguousarray(kd2[qrows]), _local(rows, ki[qrows]),
                _local(rows, qrows), rows)
        bytes_out += _nbytes(*args)
        futs.append(client.submit(forest_task, *args, pure=False))
    while len(futs) > 1:
        nxt = [client.submit(merge_forests, futs[i], futs[i + 1], pure=False) for i in range(0, len(futs) - 1, 2)]
        if len(futs) % 2:
            nxt.append(futs[-1])
        futs = nxt
    fu, fv, _fw2 = futs[0].result()
    moved["forest"] = bytes_out + _nbytes(fu, fv, _fw2)
    t["forest"] = time.perf_counter() - t0
    if log is not None:
        log(f"kNN forest: {len(fu)} edges, {n - 1 - len(fu)} bridges needed")

    # 5. bridges and the tree on the driver
    t0 = time.perf_counter()
    u, v, w2 = call("fraud.mst", X, core2, kd2, ki, fu, fv, False)
    w = np.sqrt(w2)
    t["bridge"] = time.perf_counter() - t0
    return tree_result(u, v, w, np.sqrt(core2), min_cluster_size, selection, epsilon, t, {}, min_samples_used=ms,
                       knn=k, mst_algorithm="boruvka", tasks=len(groups), knn_forest_edges=int(len(fu)),
                       bytes_moved=moved)
