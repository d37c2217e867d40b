"""Union-find on the GPU: lock-free linking and flattening (used by the CUDA Boruvka
kernels of ``fraud.mst`` and ``fraud.knn_forest``).

``link``: one thread per edge hangs the larger root under the smaller one with
``atomic.cas`` and retries when another thread moved the root first. Roots only ever
point to smaller indices, so no cycle can form and the final sets do not depend on the
order threads run in. ``flatten``: one thread per point follows its parents to the root.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from gpuforge.kernels.cuda_kernel import cuda_kernel
from gpuforge.plugins.fraud.hdbscan.cuda_launch import launch


@cuda_kernel("void(int64[::1], int64[::1], int64[::1])")
def link_kernel(parent, u, v):
    i = cuda.grid(1)
    if i >= u.shape[0]:
        return
    a = u[i]
    b = v[i]
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


@cuda_kernel("void(int64[::1], int64[::1])")
def flatten_kernel(parent, out):
    i = cuda.grid(1)
    if i < parent.shape[0]:
        r = i
        while parent[r] != r:
            r = parent[r]
        out[i] = r


@cuda_kernel("void(int64[::1])")
def iota_kernel(out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = i


def new_parent(place, n: int):
    parent, _ = place.empty((n,), np.int64)
    cfg = launch("fraud.union_find")
    place.launch(iota_kernel, cfg.blocks(n), cfg.threads, parent)
    return parent


def link(place, parent, u, v) -> None:
    """Join the sets of the edges (u[i], v[i]) (host or device int64 arrays)."""
    m = u.shape[0]
    if m:
        cfg = launch("fraud.union_find")
        place.launch(link_kernel, cfg.blocks(m), cfg.threads, parent, place.to_device(u), place.to_device(v))


def components(place, parent, comp) -> None:
    n = parent.shape[0]
    cfg = launch("fraud.union_find")
    place.launch(flatten_kernel, cfg.blocks(n), cfg.threads, parent, comp)

