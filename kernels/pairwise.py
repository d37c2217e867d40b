"""k nearest rows of ``y`` for every row of ``x`` (exact, brute force, tiled).

``pairwise_topk(x, y, k, exclude_self=False) -> (dist, idx)``:

- ``dist`` is the EUCLIDEAN distance (float32, (n, k)), ``idx`` the row of ``y``
  (int64, (n, k)); each row sorted ascending.
- The squared distance is the direct sum of squared differences over the columns,
  accumulated in float32 in column order (not ``|x|^2 - 2 x.y + |y|^2``, which cancels
  badly), and the order is decided on it; ``dist`` is its square root.
- Ties go to the smaller index; NaN distances sort after every number (as in
  ``np.argsort``), so +-inf inputs give inf or NaN distances that sort last.
- ``exclude_self=True`` (``x`` and ``y`` hold the same points) skips ``j == i`` and
  needs ``n == m``; then ``k <= m - 1``, otherwise ``k <= m``. ``k = 0`` gives empty rows.

The CUDA backend may fuse multiply-adds (NVVM contracts ``a + d * d`` by default), so
its distances can differ from these by an ulp, and near-equal neighbours may swap;
``compare_topk`` accepts exactly that.

The reference comes first; the Numba CPU backend (``pairwise_topk_cpu``) follows. CUDA
is in :mod:`gpuforge.kernels.pairwise_cuda`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import (KernelArgumentError, check_float32, check_int,
                                        check_ndim)


def check_topk(x, y, k, exclude_self):
    check_float32("x", x.dtype)
    check_float32("y", y.dtype)
    check_ndim("x", x.shape, 2)
    check_ndim("y", y.shape, 2)
    if x.shape[1] != y.shape[1]:
        raise KernelArgumentError(
            f"x and y need the same number of columns, got {x.shape[1]} and {y.shape[1]}")
    k = check_int("k", k, 0)
    exclude_self = bool(exclude_self)
    n, m = x.shape[0], y.shape[0]
    if exclude_self and n != m:
        raise KernelArgumentError(
            f"exclude_self needs x and y with the same rows, got {n} and {m}")
    available = m - 1 if exclude_self and m else m
    if k > available:
        raise KernelArgumentError(f"k={k} exceeds the {available} candidate rows of y")
    return k, exclude_self


# --- reference -------------------------------------------------------------------------

ROWS_PER_STEP = 256
"""Rows of x per step of the reference, to bound its (rows, m) temporaries."""


def pairwise_topk(x, y, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    k, exclude_self = check_topk(x, y, k, exclude_self)
    n, m = x.shape[0], y.shape[0]
    dist = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    for start in range(0, n, ROWS_PER_STEP):
        xs = x[start:start + ROWS_PER_STEP]
        sq = np.zeros((len(xs), m), np.float32)
        for c in range(x.shape[1]):  # column order, float32, as every backend sums
            sq += (xs[:, c, None] - y[None, :, c]) ** 2
        order = np.argsort(sq, axis=1, kind="stable")  # ties: smaller index; NaN last
        if exclude_self:
            rows = np.arange(start, start + len(xs))[:, None]
            order = order[order != rows].reshape(len(xs), m - 1)
        order = order[:, :k]
        idx[start:start + len(xs)] = order
        dist[start:start + len(xs)] = np.sqrt(np.take_along_axis(sq, order, axis=1))
    return dist, idx


# --- shared by the Numba CPU and CUDA kernels ------------------------------------------

@njit(inline="always")
def precedes(d, held):
    """Does a new candidate at squared distance ``d`` go before a held one at ``held``?

    Candidates arrive in increasing index order, so a tie keeps the held one (smaller
    index first); NaN goes after every number and never before another NaN.

    An ``njit(inline="always")`` function is inlined at Numba-IR level by the CPU and the
    CUDA targets alike, and runs as is under the CUDA simulator."""
    return d == d and (held != held or d < held)


def insert(top_d, top_i, filled, k, d, j):
    """Insert candidate (d, j) into the sorted top-k lists; returns the new fill count."""
    if filled == k:
        if k == 0 or not precedes(d, top_d[k - 1]):
            return filled
        p = k - 1
    else:
        p = filled
        filled += 1
    while p > 0 and precedes(d, top_d[p - 1]):
        top_d[p] = top_d[p - 1]
        top_i[p] = top_i[p - 1]
        p -= 1
    top_d[p] = d
    top_i[p] = j
    return filled


# --- numba-cpu -------------------------------------------------------------------------

ROW_BLOCK = 32
"""Rows of x that share one pass over y: each y row is loaded once per block."""

_insert_cpu = njit(inline="always")(insert)


@njit(parallel=True, cache=True)
def _topk_rows(x, y, k, exclude_self, dist, idx):
    n, d = x.shape
    m = y.shape[0]
    nblocks = (n + ROW_BLOCK - 1) // ROW_BLOCK
    for b in prange(nblocks):
        r0 = b * ROW_BLOCK
        nr = min(ROW_BLOCK, n - r0)
        # the block transposed and flat (x[r0 + r, c] at c * ROW_BLOCK + r): a flat index
        # compiles to tighter code than a 2-D one here; rows past nr stay 0, never inserted
        xt = np.zeros(d * ROW_BLOCK, np.float32)
        for r in range(nr):
            for c in range(d):
                xt[c * ROW_BLOCK + r] = x[r0 + r, c]
        top_d = np.empty((ROW_BLOCK, k), np.float32)
        top_i = np.empty((ROW_BLOCK, k), np.int64)
        filled = np.zeros(ROW_BLOCK, np.int64)
        acc = np.empty(ROW_BLOCK, np.float32)
        for j in range(m):
            for r in range(ROW_BLOCK):
                acc[r] = 0.0
            for c in range(d):  # column order per row, as the reference sums
                yv = y[j, c]
                base = c * ROW_BLOCK
                for r in range(ROW_BLOCK):
                    diff = xt[base + r] - yv
                    acc[r] += diff * diff
            for r in range(nr):
                if exclude_self and j == r0 + r:
                    continue
                if filled[r] == k and not precedes(acc[r], top_d[r, k - 1]):
                    continue  # the common case once the lists are full
                filled[r] = _insert_cpu(top_d[r], top_i[r], filled[r], k, acc[r], j)
        for r in range(nr):
            for s in range(k):
                dist[r0 + r, s] = math.sqrt(top_d[r, s])
                idx[r0 + r, s] = top_i[r, s]


def pairwise_topk_cpu(x, y, k: int, exclude_self: bool = False):
    x, y = np.asarray(x), np.asarray(y)
    k, exclude_self = check_topk(x, y, k, exclude_self)
    n = x.shape[0]
    dist = np.empty((n, k), np.float32)
    idx = np.empty((n, k), np.int64)
    if n and k:
        _topk_rows(np.ascontiguousarray(x), np.ascontiguousarray(y), k, exclude_self,
                   dist, idx)
    return dist, idx


# --- comparison for the conformance harness ----------------------------------------------

def _host(a) -> np.ndarray:
    if hasattr(a, "copy_to_host"):  # Numba device array
        return a.copy_to_host()
    if hasattr(a, "detach"):  # torch tensor
        return a.detach().cpu().numpy()
    return np.asarray(a)


def compare_topk(expected, actual, case) -> None:
    """``dist`` within tolerance; ``idx`` equal except where the two picks are near-equal
    neighbours (a fused multiply-add can reorder them), each checked against a float64
    recomputation of its distance."""
    (ed, ei), (ad, ai) = expected, (_host(actual[0]), _host(actual[1]))
    assert ad.shape == ed.shape and ai.shape == ei.shape, (ad.shape, ai.shape, ed.shape)
    assert ad.dtype == np.float32 and ai.dtype == np.int64, (ad.dtype, ai.dtype)
    np.testing.assert_allclose(ad, ed, rtol=1e-5, atol=1e-5, equal_nan=True)
    rows, cols = np.nonzero(ai != ei)
    if rows.size == 0:
        return
    x, y = (np.asarray(a, np.float64) for a in case.args[:2])
    for r, s in zip(rows, cols):
        got = np.sqrt(((x[r] - y[ai[r, s]]) ** 2).sum())
        want = np.sqrt(((x[r] - y[ei[r, s]]) ** 2).sum())
        assert np.isclose(got, want, rtol=1e-5, atol=1e-5), (
            f"row {r} rank {s}: index {ai[r, s]} (distance {got}) instead of "
            f"{ei[r, s]} (distance {want})")
    for r in np.unique(rows):
        assert len(set(ai[r].tolist())) == ai.shape[1], f"row {r} repeats an index"
