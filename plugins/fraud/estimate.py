"""Resource estimate of ``fraud cluster`` for ``gpuforge plan fraud cluster``.

    gpuforge plan fraud cluster --rows N --cols D [--mode exact|approx] [--knn K]

Memory is O(n*k): the data and its cell-sorted copy (2 n d float64; ``cells.py``), the
kNN lists (n k float64 distances + int64 indices), core distances, Boruvka/union-find
state (~10 arrays of n) and the MST (3 (n-1)). Work: the CPU kNN and Boruvka search
k-means cells with distance bounds, far fewer than n^2 distances on clustered data
(towards n^2 d on structureless data); the brute-force tiled pairwise top-k (the GPU
route) is n^2 d multiply-adds. Exact mode above 60 columns uses Prim's MST: another
n^2 d, still O(n) memory. Approx mode at 9-32 columns and <= 50k rows uses the exact
kNN (``approx.EXACT_KNN_COLUMNS``, ``EXACT_KNN_MAX_ROWS``).
"""
from __future__ import annotations

import argparse
import math

from gpuforge.core.errors import UsageError
from gpuforge.hardware.estimates import Estimate


def estimate_cluster(args: list[str]) -> Estimate:
    p = argparse.ArgumentParser(prog="gpuforge plan fraud cluster", add_help=False)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--mode", choices=["exact", "approx"], default="approx")
    p.add_argument("--knn", type=int, default=None)
    p.add_argument("--min-samples", type=int, default=10)
    ns, extra = p.parse_known_args(args)
    if extra:
        raise UsageError(f"plan fraud cluster: unknown arguments {' '.join(extra)}; use --rows N --cols D "
                         "[--mode exact|approx] [--knn K] [--min-samples M]")
    n, d = ns.rows, ns.cols
    if n < 2 or d < 1:
        raise UsageError("--rows must be >= 2 and --cols >= 1")
    prim = ns.mode == "exact" and d > 60  # fit.PRIM_MIN_COLUMNS
    k = ns.knn or (ns.min_samples if prim else max(ns.min_samples, 16 if ns.mode == "exact" else 10))
    parts = {
        "data + cell-sorted copy": 2.0 * n * d * 8,
        "kNN lists": n * k * 16.0,
        "core distances + Boruvka state": n * 8.0 * 10,
        "MST + linkage": n * 8.0 * 7,
    }
    if ns.mode == "approx":
        parts["kNN edge weights + sort order"] = n * k * 16.0
    brute = 2.0 * n * n * d
    if prim:
        brute += 1.5 * n * n * d  # Prim: n^2 / 2 distances of ~3d flops
    return Estimate(
        what=f"HDBSCAN ({ns.mode}) of {n:,} x {d} with k={k}",
        memory_bytes=sum(parts.values()),
        flops=brute,
        bytes_moved=n * d * 8.0 * max(1.0, math.log2(max(n, 2))),
        dtype="fp32",
        breakdown=parts,
        notes=["flops: the brute-force tiled pairwise top-k (GPU route); on the CPU the kNN and Boruvka search "
               "k-means cells with distance bounds and do far fewer on clustered data",
               "memory grows as n*k: no n^2 distance matrix is ever built"]
        + (["approx mode's kNN graph: the exact kNN at 9-32 columns up to 50k rows, else each row's nearest among its "
            "cell's nearest cells (32 x 32 at <= 8 columns, 256 x 8 + one NN-descent join above 32)"]
           if ns.mode == "approx" else [])
        + (["exact mode above 60 columns builds the MST with Prim over all n^2 pairs (hdbscan's switch and "
            "tie rules): ~n^2 d more work"]
           if prim else []),
    )
