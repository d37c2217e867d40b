"""HDBSCAN end to end: the registered kernels in order, then the tree steps on the host.

1. ``fraud.knn``: exact k nearest neighbours; core distance = the min_samples-th.
   (approx mode: ``fraud.knn_local`` on a cell partition, then ``fraud.knn_refine``.)
2. the minimum spanning tree of the mutual-reachability graph:
   exact, <= 60 columns: ``fraud.mst`` (Boruvka);
   exact, > 60 columns: ``fraud.prim`` (hdbscan's own switch and tie rules);
   approx: ``fraud.knn_forest`` (the kNN graph's forest), bridged by ``fraud.mst``.
3. single linkage, condensed tree, eom/leaf selection, epsilon, probabilities and GLOSH
   (O(n) on the CPU, whatever device ran the kernels).

The kernels run through :func:`gpuforge.core.kernels.call`, so the registry picks each
one's backend (``--backend`` / ``GPUFORGE_BACKEND``, or the data's device); the
backends return identical results, hence identical labels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

PRIM_MIN_COLUMNS = 60
"""Above this many columns exact mode builds the MST with Prim, as the hdbscan library's
'best' algorithm does (same threshold, same tie rules: tied merge heights fall as in
hdbscan)."""

EXACT_MIN_KNN = 16
"""Exact mode keeps at least this many neighbours: the longer list settles more rows'
Boruvka edges without a search."""

APPROX_MIN_KNN = 10


@dataclass
class Result:
    labels: np.ndarray
    probabilities: np.ndarray
    outlier_scores: np.ndarray
    core_distances: np.ndarray
    mst: tuple  # (u, v, weight) in input rows, in the order single linkage merged them
    n_clusters: int
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def mst_weight(self) -> float:
        return float(np.sum(self.mst[2]))


def _approx_takes_exact_knn(n: int, d: int) -> bool:
    from gpuforge.plugins.fraud.hdbscan.approx import EXACT_KNN_COLUMNS, EXACT_KNN_MAX_ROWS

    return EXACT_KNN_COLUMNS[0] <= d <= EXACT_KNN_COLUMNS[1] and n <= EXACT_KNN_MAX_ROWS


def _caller(backend: str | None, used: dict):
    from gpuforge.core.kernels import call, choose_backend, get_spec

    def run(name, *args):
        used[name] = choose_backend(get_spec(name), *args, backend=backend)
        return call(name, *args, backend=used[name])

    return run


def tree_result(u, v, w, core, min_cluster_size: int, selection: str, epsilon: float, t: dict, info: dict,
                **more_info) -> Result:
    """The Result from the MST (u, v, w) in merge order and the core distances: single
    linkage, condensed tree, eom/leaf selection (step 3 above), timed into
    ``t["tree_selection"]``; ``info`` gets the selection's info, then ``more_info``."""
    from gpuforge.plugins.fraud.hdbscan.condense import condense_tree
    from gpuforge.plugins.fraud.hdbscan.linkage import single_linkage
    from gpuforge.plugins.fraud.hdbscan.selection import select_clusters

    t0 = time.perf_counter()
    Z = single_linkage(u, v, w)
    ct = condense_tree(Z, int(min_cluster_size))
    labels, prob, glosh, sel = select_clusters(ct, len(core), selection, float(epsilon))
    t["tree_selection"] = time.perf_counter() - t0
    info.update(sel)
    info.update(more_info)
    return Result(labels, prob, glosh, core, (u, v, w), len(sel["selected"]), t, info)


def hdbscan(X, min_cluster_size: int = 5, min_samples: int | None = None, selection: str = "eom",
            epsilon: float = 0.0, mode: str = "exact", knn: int | None = None, knn_cells: int | None = None,
            backend: str | None = None, recall_rows: int = 0, log=None) -> Result:
    """Cluster the rows of ``X`` (finite). ``min_samples`` defaults to
    ``min_cluster_size`` and counts neighbours excluding the point (hdbscan's
    convention). approx mode: ``knn_cells`` neighbour cells per row for the kNN graph
    (default from ``approx.CELLS``, or the exact kNN at ``approx.EXACT_KNN_COLUMNS`` up to ``EXACT_KNN_MAX_ROWS``;
    0 = the exact kNN), and the graph's recall is
    measured on ``recall_rows`` sampled rows. ``backend`` forces one kernel backend for
    every step (default: the registry's choice)."""

    X = np.ascontiguousarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError("X must be 2-D")
    n, d = X.shape
    if min_cluster_size < 2:
        raise ValueError("min_cluster_size must be >= 2")
    if min_samples is None:
        min_samples = min_cluster_size
    if min_samples < 1:
        raise ValueError("min_samples must be >= 1")
    if n < max(2, min_cluster_size):
        raise ValueError(f"{n} rows is fewer than min_cluster_size={min_cluster_size}")
    if mode not in ("exact", "approx"):
        raise ValueError(f"unknown mode {mode!r}")
    ms = min(n - 1, min_samples)
    prim = mode == "exact" and d > PRIM_MIN_COLUMNS
    if knn is None:
        knn = ms if prim else max(ms, EXACT_MIN_KNN if mode == "exact" else APPROX_MIN_KNN)
    k = min(n - 1, max(knn, ms))
    used: dict[str, str] = {}
    call = _caller(backend, used)
    t, info = {}, {}
    t0 = time.perf_counter()
    exact_knn = mode == "exact" or knn_cells == 0 or (knn_cells is None and _approx_takes_exact_knn(n, d))
    if exact_knn:
        kd2, ki = call("fraud.knn", X, k)
        if mode == "approx" and recall_rows:
            info["knn_recall"] = 1.0  # the exact kNN
    else:
        from gpuforge.plugins.fraud.hdbscan.approx import approx_knn

        kd2, ki, info["knn_recall"] = approx_knn(X, k, call, neighbours=knn_cells, recall_rows=recall_rows)
    core2 = np.ascontiguousarray(kd2[:, ms - 1])
    core = np.sqrt(core2)
    t["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    none = np.zeros(0, np.int64)
    if prim:
        u, v, w = call("fraud.prim", X, core)
        order = np.argsort(w)  # NumPy's default sort on Prim's order, exactly as hdbscan
        u, v, w = u[order], v[order], w[order]
    elif mode == "exact":
        u, v, w2 = call("fraud.mst", X, core2, kd2, ki, none, none, True)
        w = np.sqrt(w2)
    else:
        fu, fv, _ = call("fraud.knn_forest", core2, kd2, ki)
        info["knn_forest_edges"] = int(len(fu))
        if log is not None:
            log(f"kNN forest: {len(fu)} edges, {n - 1 - len(fu)} bridges needed")
        u, v, w2 = call("fraud.mst", X, core2, kd2, ki, fu, fv, exact_knn)
        w = np.sqrt(w2)
    t["mst"] = time.perf_counter() - t0
    return tree_result(u, v, w, core, min_cluster_size, selection, epsilon, t, info, min_samples_used=ms, knn=k,
                       mst_algorithm="prim" if prim else "boruvka", kernels=used)
