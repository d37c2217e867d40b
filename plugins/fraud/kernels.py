"""Registered kernels of the fraud plugin (reference + numba-cpu here; CUDA in
:mod:`gpuforge.plugins.fraud.kernels_cuda`).

- ``fraud.core_distances(x, min_samples) -> core`` (float32, (n,)): the distance of each
  row to its ``min_samples``-th nearest OTHER row (the hdbscan library's convention),
  from the shared tiled pairwise top-k primitive (``kernels.pairwise_topk``).
- ``fraud.knn_min_edge(core, knn_d, knn_i, comp) -> (w, p, q)``: one Boruvka step over
  the kNN mutual-reachability graph. For every component id ``c`` (``comp[c] == c``),
  the lightest edge ``max(core[p], core[q], knn_d[p, j])`` with ``q = knn_i[p, j]`` and
  ``comp[p] == c != comp[q]``; ties go to the smaller ``p``, then to the smaller ``j``.
  Rows ``c`` that are not component ids, or have no outgoing kNN edge, get
  ``(inf, -1, -1)``. ``knn_i`` entries < 0 are skipped (padding).
- ``fraud.union_find_merge(comp, u, v) -> comp2``: merge the components joined by
  edges ``(u[i], v[i])``; every point's new label is the smallest representative among
  the components merged into its own (which makes the result independent of the order
  edges are applied in).
  ``comp`` must hold component representatives (``comp[comp[i]] == comp[i]``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_int


# --- argument checks (shared by all backends) ----------------------------------------------

def check_core(x, min_samples):
    if np.dtype(x.dtype) != np.float32:
        raise KernelArgumentError(f"x must be float32, got {x.dtype}")
    if len(x.shape) != 2:
        raise KernelArgumentError(f"x must be 2-D, got {len(x.shape)}-D")
    ms = check_int("min_samples", min_samples, 1)
    if ms > x.shape[0] - 1:
        raise KernelArgumentError(f"min_samples={ms} needs more than {x.shape[0]} rows")
    return ms


def check_min_edge(core, knn_d, knn_i, comp):
    if len(core.shape) != 1 or len(knn_d.shape) != 2 or knn_i.shape != knn_d.shape or comp.shape != core.shape:
        raise KernelArgumentError("core (n,), knn_d (n, k), knn_i (n, k) and comp (n,) must agree in shape")
    if knn_d.shape[0] != core.shape[0]:
        raise KernelArgumentError("knn_d needs one row per point")
    if np.dtype(core.dtype) != np.float64 or np.dtype(knn_d.dtype) != np.float64:
        raise KernelArgumentError("core and knn_d must be float64")
    if np.dtype(knn_i.dtype) != np.int64 or np.dtype(comp.dtype) != np.int64:
        raise KernelArgumentError("knn_i and comp must be int64")


def check_merge(comp, u, v):
    if len(comp.shape) != 1 or len(u.shape) != 1 or u.shape != v.shape:
        raise KernelArgumentError("comp (n,), u (m,), v (m,) expected")
    for name, a in (("comp", comp), ("u", u), ("v", v)):
        if np.dtype(a.dtype) != np.int64:
            raise KernelArgumentError(f"{name} must be int64, got {a.dtype}")


# --- reference ---------------------------------------------------------------------------

def core_distances(x, min_samples: int) -> np.ndarray:
    x = np.asarray(x)
    ms = check_core(x, min_samples)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.sort(d2, axis=1)[:, ms - 1]).astype(np.float32)


def knn_min_edge(core, knn_d, knn_i, comp):
    core, knn_d, knn_i, comp = (np.asarray(a) for a in (core, knn_d, knn_i, comp))
    check_min_edge(core, knn_d, knn_i, comp)
    n = core.shape[0]
    w = np.full(n, np.inf)
    bp = np.full(n, -1, np.int64)
    bq = np.full(n, -1, np.int64)
    for p in range(n):  # p ascending, j ascending, strict < : ties keep the first
        c = comp[p]
        for j in range(knn_d.shape[1]):
            q = knn_i[p, j]
            if q < 0 or comp[q] == c:
                continue
            e = max(core[p], core[q], knn_d[p, j])
            if e < w[c]:
                w[c], bp[c], bq[c] = e, p, q
    return w, bp, bq


def union_find_merge(comp, u, v):
    comp, u, v = (np.asarray(a) for a in (comp, u, v))
    check_merge(comp, u, v)
    n = comp.shape[0]
    parent = comp.copy()
    for a, b in zip(u.tolist(), v.tolist()):
        if not (0 <= a < n and 0 <= b < n):
            raise KernelArgumentError(f"edge ({a}, {b}) outside 0..{n - 1}")
        ra, rb = parent[a], parent[b]
        while parent[ra] != ra:
            ra = parent[ra]
        while parent[rb] != rb:
            rb = parent[rb]
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out = parent.copy()
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        out[i] = r
    return out


# --- numba-cpu ---------------------------------------------------------------------------

def core_distances_cpu(x, min_samples: int) -> np.ndarray:
    from gpuforge.kernels.pairwise import pairwise_topk_cpu

    x = np.asarray(x)
    ms = check_core(x, min_samples)
    d, _ = pairwise_topk_cpu(x, x, ms, exclude_self=True)
    return np.ascontiguousarray(d[:, ms - 1])


@njit(parallel=True, cache=True)
def _point_best(core, knn_d, knn_i, comp, pw, pj):
    n, k = knn_d.shape
    for p in prange(n):
        c = comp[p]
        best = np.inf
        bj = -1
        for j in range(k):
            q = knn_i[p, j]
            if q < 0 or comp[q] == c:
                continue
            e = max(core[p], core[q], knn_d[p, j])
            if e < best:
                best = e
                bj = j
        pw[p] = best
        pj[p] = bj


@njit(cache=True)
def _component_best(comp, knn_i, pw, pj, w, bp, bq):
    for p in range(comp.shape[0]):
        if pj[p] < 0:
            continue
        c = comp[p]
        if pw[p] < w[c]:
            w[c] = pw[p]
            bp[c] = p
            bq[c] = knn_i[p, pj[p]]


def knn_min_edge_cpu(core, knn_d, knn_i, comp):
    core, knn_d, knn_i, comp = (np.ascontiguousarray(a) for a in (core, knn_d, knn_i, comp))
    check_min_edge(core, knn_d, knn_i, comp)
    n = core.shape[0]
    w = np.full(n, np.inf)
    bp = np.full(n, -1, np.int64)
    bq = np.full(n, -1, np.int64)
    if n:
        pw = np.empty(n)
        pj = np.empty(n, np.int64)
        _point_best(core, knn_d, knn_i, comp, pw, pj)
        _component_best(comp, knn_i, pw, pj, w, bp, bq)
    return w, bp, bq


@njit(cache=True)
def _merge_edges(parent, u, v):
    n = parent.shape[0]
    for i in range(u.shape[0]):
        a = u[i]
        b = v[i]
        if a < 0 or a >= n or b < 0 or b >= n:
            return i
        while parent[a] != a:
            a = parent[a]
        while parent[b] != b:
            b = parent[b]
        if a != b:
            if a < b:
                parent[b] = a
            else:
                parent[a] = b
    return -1


@njit(parallel=True, cache=True)
def _flatten_all(parent, out):
    for i in prange(parent.shape[0]):
        r = np.int64(i)
        while parent[r] != r:
            r = parent[r]
        out[i] = r


def union_find_merge_cpu(comp, u, v):
    comp, u, v = (np.ascontiguousarray(a) for a in (comp, u, v))
    check_merge(comp, u, v)
    parent = comp.copy()
    bad = _merge_edges(parent, u, v)
    if bad >= 0:
        raise KernelArgumentError(f"edge ({u[bad]}, {v[bad]}) outside 0..{comp.shape[0] - 1}")
    out = np.empty_like(parent)
    _flatten_all(parent, out)
    return out


# --- cases ---------------------------------------------------------------------------------

def _points(seed, n, d):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def core_cases():
    from gpuforge.core.specs import KernelCase

    x = _points(1, 300, 5)
    grid = np.repeat(np.arange(40, dtype=np.float32)[:, None], 3, axis=1)  # ties
    return [
        KernelCase("random_300x5_ms5", (x, 5)),
        KernelCase("odd_97x3_ms1", (_points(2, 97, 3), 1)),
        KernelCase("grid_ties_ms3", (grid, 3)),
        KernelCase("noncontig", (x[::2, ::2], 4)),
        KernelCase("duplicates", (np.zeros((20, 2), np.float32), 4)),
        KernelCase("big_1500x8", (_points(3, 1500, 8), 10), simulator=False),
        KernelCase("bad_min_samples", (x[:5], 5)),
        KernelCase("bad_dtype", (x.astype(np.float64), 5)),
    ]


def _knn_graph(seed, n, d, k):
    x = np.random.default_rng(seed).normal(size=(n, d))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    dist = np.sqrt(np.take_along_axis(d2, idx, 1))
    core = dist[:, min(3, k - 1)].copy()
    return core, np.ascontiguousarray(dist), np.ascontiguousarray(idx.astype(np.int64))


def min_edge_cases():
    from gpuforge.core.specs import KernelCase

    core, kd, ki = _knn_graph(5, 400, 3, 8)
    singletons = np.arange(400, dtype=np.int64)
    blocks = (np.arange(400, dtype=np.int64) // 50) * 50
    rng = np.random.default_rng(7)
    roots = np.sort(rng.choice(400, 7, replace=False))
    rnd = roots[rng.integers(0, 7, 400)].astype(np.int64)
    rnd[roots] = roots
    tied = (np.round(kd * 2) / 2).astype(np.float64)  # many equal weights
    padded = ki.copy()
    padded[::3, -2:] = -1
    one = np.zeros(400, np.int64)
    core2, kd2, ki2 = _knn_graph(9, 3000, 4, 16)
    return [
        KernelCase("singletons", (core, kd, ki, singletons)),
        KernelCase("blocks", (core, kd, ki, blocks)),
        KernelCase("random_components", (core, kd, ki, rnd)),
        KernelCase("ties", (np.round(core * 2) / 2, tied, ki, singletons)),
        KernelCase("padding", (core, kd, padded, blocks)),
        KernelCase("one_component", (core, kd, ki, one)),
        KernelCase("empty", (np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4), np.int64), np.zeros(0, np.int64))),
        KernelCase("big", (core2, kd2, ki2, (np.arange(3000, dtype=np.int64) // 7) * 7), simulator=False),
        KernelCase("bad_shape", (core, kd[:, :3], ki, singletons)),
        KernelCase("bad_dtype", (core.astype(np.float32), kd, ki, singletons)),
    ]


def merge_cases():
    from gpuforge.core.specs import KernelCase

    rng = np.random.default_rng(11)
    n = 500
    comp = np.arange(n, dtype=np.int64)
    u = rng.integers(0, n, 300).astype(np.int64)
    v = rng.integers(0, n, 300).astype(np.int64)
    chain_u = np.arange(n - 1, 0, -1, dtype=np.int64)
    chain_v = chain_u - 1
    blocks = (np.arange(n, dtype=np.int64) // 10) * 10
    bu = rng.integers(0, n, 40).astype(np.int64)
    bv = rng.integers(0, n, 40).astype(np.int64)
    bigu = rng.integers(0, 20000, 15000).astype(np.int64)
    bigv = rng.integers(0, 20000, 15000).astype(np.int64)
    return [
        KernelCase("random_edges", (comp, u, v)),
        KernelCase("chain_reversed", (comp, chain_u, chain_v)),
        KernelCase("self_loops", (comp, u[:20], u[:20])),
        KernelCase("existing_components", (blocks, bu, bv)),
        KernelCase("no_edges", (comp, np.zeros(0, np.int64), np.zeros(0, np.int64))),
        KernelCase("empty", (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))),
        KernelCase("big", (np.arange(20000, dtype=np.int64), bigu, bigv), simulator=False),
        KernelCase("bad_edge", (comp, np.array([0, n], np.int64), np.array([1, 2], np.int64))),
        KernelCase("bad_dtype", (comp.astype(np.int32), u, v)),
    ]
