"""CUDA backends of :mod:`gpuforge.plugins.fraud.kernels` (same signatures).

- core distances: the shared tiled pairwise top-k kernel (``kernels.pairwise_topk``,
  self excluded), then one thread per row copies the ``min_samples``-th distance.
- kNN Boruvka step: one thread per point finds its lightest kNN edge to another
  component; ``atomic.min`` on the float64 weight per component, then ``atomic.min`` on
  the point index among the points that reached that weight (ties to the smaller
  point, as the reference), then one thread per component writes the edge.
- union-find merge: one thread per edge links the larger root under the smaller one
  with ``atomic.cas`` (retrying when another thread moved the root), then one thread per
  point follows its parents to the root. Roots only ever point to smaller indices, so
  there are no cycles and the result does not depend on the order threads run in.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.plugins.fraud.kernels import check_core, check_merge, check_min_edge

def _threads(kernel: str) -> int:
    from gpuforge.core.tuning import launch_config

    return launch_config(kernel).threads


# --- core distances ---------------------------------------------------------------------------

def take_column_kernel(d, col, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = d[i, col]


_take_column = cuda.jit(take_column_kernel)


def core_distances_cuda(x, min_samples: int):
    from gpuforge.kernels.pairwise_cuda import pairwise_topk_cuda

    place = Placement()
    x = place.put(x, "x")
    ms = check_core(x, min_samples)
    threads = _threads("fraud.core_distances")
    n = x.shape[0]
    out, handed = place.empty((n,), np.float32)
    if n:
        xd = place.to_device(x)
        d, _ = pairwise_topk_cuda(xd, xd, ms, exclude_self=True)
        place.launch(_take_column, -(-n // threads), threads, d, ms - 1, out)
    return place.result(handed)


# --- kNN Boruvka step -------------------------------------------------------------------------

def point_best_kernel(core, knn_d, knn_i, comp, pw, pj):
    p = cuda.grid(1)
    n = knn_d.shape[0]
    if p >= n:
        return
    c = comp[p]
    best = math.inf
    bj = -1
    for j in range(knn_d.shape[1]):
        q = knn_i[p, j]
        if q < 0 or comp[q] == c:
            continue
        e = max(core[p], max(core[q], knn_d[p, j]))
        if e < best:
            best = e
            bj = j
    pw[p] = best
    pj[p] = bj


def component_weight_kernel(comp, pw, pj, w):
    p = cuda.grid(1)
    if p < comp.shape[0] and pj[p] >= 0:
        cuda.atomic.min(w, comp[p], pw[p])


def component_point_kernel(comp, pw, pj, w, bp):
    p = cuda.grid(1)
    if p < comp.shape[0] and pj[p] >= 0 and pw[p] == w[comp[p]]:
        cuda.atomic.min(bp, comp[p], p)


def component_edge_kernel(knn_i, pj, bp, bq):
    c = cuda.grid(1)
    n = bp.shape[0]
    if c < n:
        p = bp[c]
        if p >= n:
            bp[c] = -1
            bq[c] = -1
        else:
            bq[c] = knn_i[p, pj[p]]


def init_kernel(w, bp, n):
    c = cuda.grid(1)
    if c < w.shape[0]:
        w[c] = math.inf
        bp[c] = n


_point_best = cuda.jit(point_best_kernel)
_component_weight = cuda.jit(component_weight_kernel)
_component_point = cuda.jit(component_point_kernel)
_component_edge = cuda.jit(component_edge_kernel)
_init = cuda.jit(init_kernel)


def knn_min_edge_cuda(core, knn_d, knn_i, comp):
    place = Placement()
    core, knn_d, knn_i, comp = (place.put(a, name) for a, name in
                                ((core, "core"), (knn_d, "knn_d"), (knn_i, "knn_i"), (comp, "comp")))
    check_min_edge(core, knn_d, knn_i, comp)
    threads = _threads("fraud.knn_min_edge")
    n = core.shape[0]
    w, w_h = place.empty((n,), np.float64)
    bp, bp_h = place.empty((n,), np.int64)
    bq, bq_h = place.empty((n,), np.int64)
    if n:
        core, knn_d, knn_i, comp = (place.to_device(a) for a in (core, knn_d, knn_i, comp))
        pw, _ = place.empty((n,), np.float64)
        pj, _ = place.empty((n,), np.int64)
        blocks = -(-n // threads)
        place.launch(_init, blocks, threads, w, bp, n)
        place.launch(_point_best, blocks, threads, core, knn_d, knn_i, comp, pw, pj)
        place.launch(_component_weight, blocks, threads, comp, pw, pj, w)
        place.launch(_component_point, blocks, threads, comp, pw, pj, w, bp)
        place.launch(_component_edge, blocks, threads, knn_i, pj, bp, bq)
    return place.result(w_h), place.result(bp_h), place.result(bq_h)


# --- union-find merge --------------------------------------------------------------------------

def link_kernel(parent, u, v, flag):
    i = cuda.grid(1)
    n = parent.shape[0]
    if i >= u.shape[0]:
        return
    a = u[i]
    b = v[i]
    if a < 0 or a >= n or b < 0 or b >= n:
        flag[0] = 1
        return
    while True:
        while parent[a] != a:
            a = parent[a]
        while parent[b] != b:
            b = parent[b]
        if a == b:
            return
        if a < b:
            t = a
            a = b
            b = t
        old = cuda.atomic.cas(parent, a, a, b)  # a is the larger root: hang it under b
        if old == a:
            return


def flatten_kernel(parent, out):
    i = cuda.grid(1)
    if i < parent.shape[0]:
        r = i
        while parent[r] != r:
            r = parent[r]
        out[i] = r


def copy_kernel(src, dst):
    i = cuda.grid(1)
    if i < src.shape[0]:
        dst[i] = src[i]


_link = cuda.jit(link_kernel)
_flatten = cuda.jit(flatten_kernel)
_copy = cuda.jit(copy_kernel)


def union_find_merge_cuda(comp, u, v):
    place = Placement()
    comp, u, v = (place.put(a, name) for a, name in ((comp, "comp"), (u, "u"), (v, "v")))
    check_merge(comp, u, v)
    threads = _threads("fraud.union_find_merge")
    n, m = comp.shape[0], u.shape[0]
    out, out_h = place.empty((n,), np.int64)
    if n:
        comp_d = place.to_device(comp)
        parent, _ = place.empty((n,), np.int64)
        place.launch(_copy, -(-n // threads), threads, comp_d, parent)
        if m:
            flag = zeros_flag(place)
            place.launch(_link, -(-m // threads), threads, parent, place.to_device(u), place.to_device(v), flag)
            if place.read_flag(flag):
                raise KernelArgumentError(f"an edge lies outside 0..{n - 1}")
        place.launch(_flatten, -(-n // threads), threads, parent, out)
    elif m:
        raise KernelArgumentError("an edge lies outside 0..-1")
    return place.result(out_h)


# --- PTX ------------------------------------------------------------------------------------------

def core_distances_ptx():
    return [(take_column_kernel, "void(float32[:, ::1], int64, float32[::1])")]


def knn_min_edge_ptx():
    return [
        (point_best_kernel, "void(float64[::1], float64[:, ::1], int64[:, ::1], int64[::1], float64[::1], int64[::1])"),
        (component_weight_kernel, "void(int64[::1], float64[::1], int64[::1], float64[::1])"),
        (component_point_kernel, "void(int64[::1], float64[::1], int64[::1], float64[::1], int64[::1])"),
        (component_edge_kernel, "void(int64[:, ::1], int64[::1], int64[::1], int64[::1])"),
        (init_kernel, "void(float64[::1], int64[::1], int64)"),
    ]


def union_find_merge_ptx():
    return [
        (link_kernel, "void(int64[::1], int64[::1], int64[::1], int32[::1])"),
        (flatten_kernel, "void(int64[::1], int64[::1])"),
        (copy_kernel, "void(int64[::1], int64[::1])"),
    ]
