"""Cells: the points cut into k-means cells, each cell cut into radial shells. This is the
search structure of the numba-cpu kNN and Boruvka kernels (the reference and the CUDA
backends do not need one).

Why not a kd-tree or sklearn's ball tree: both split on one column at a time, and above
~16 columns a few dozen splits leave most columns unsplit, so their boxes and balls stay
as wide as the data. On 50k x 32 Gaussian blobs with 10% uniform noise, an exact 16-NN on
sklearn's ball tree visited nearly every leaf (slower than brute force), and the earlier
kd-tree Boruvka needed 180 s. k-means cells follow the data instead: a blob falls into
a few cells, and a noise point lies far from every cell's centre.

Bounds (triangle inequality). For a point p at distance D from the centre of a cell,
every point q of a shell whose distances to that centre lie in [lo, hi] has
``d(p, q) >= max(D - hi, lo - D)``; a whole cell of radius R has ``d(p, q) >= D - R``.
Inside a shell the points are sorted by their distance r to the centre, so the ones
with ``|D - r| <= t`` form one contiguous range (two binary searches). Shells matter in
high dimension: a blob's cell holds the blob's points near its centre and a few noise
points far out; cutting the cell where r jumps puts the noise in its own shell, whose
bound then prunes it for every query inside the blob.

Everything is deterministic: the initial centres are drawn with a fixed seed, ties in
the assignment go to the lower centre, and points are ordered by (cell, r, row).
Bounds carry a relative margin (``MARGIN``) so that rounding never prunes a point that
is within the bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

LLOYD_STEPS = 4
"""k-means refinements of the centres (on a sample of at most ``SAMPLE_PER_CELL`` points
per cell); cells only need to be compact, not optimal."""

SAMPLE_PER_CELL = 64

SHELL_QUANTILES = (0.5, 0.8, 0.95)
"""Shell boundaries inside a cell, as shares of its points ordered by radius ..."""

HALO = 2.0
"""... plus a cut where the radius first exceeds ``HALO`` times the cell's median radius
(points far outside the cell's bulk, such as noise, get a shell of their own)."""

MARGIN = 1e-12
"""Relative slack on every pruning bound (distances carry ~1e-16 relative error)."""

CHUNK = 16384
"""Points per parallel call in the assignment, so Ctrl-C is seen between chunks."""


@dataclass
class Cells:
    X: np.ndarray            # (n, d) points in cell order
    XT: np.ndarray           # (d, n) the same, transposed: contiguous runs for SIMD loops
    row: np.ndarray          # position -> input row
    pos: np.ndarray          # input row -> position
    r: np.ndarray            # distance of each point (by position) to its cell's centre
    centre: np.ndarray       # (m, d)
    centreT: np.ndarray      # (d, m)
    radius: np.ndarray       # (m,) largest r in the cell
    cell_shell: np.ndarray   # (m + 1,) the shells of cell j are cell_shell[j]:cell_shell[j + 1]
    shell_start: np.ndarray  # (s + 1,) positions; shell t holds shell_start[t]:shell_start[t + 1]
    shell_lo: np.ndarray     # (s,) smallest r in the shell
    shell_hi: np.ndarray     # (s,) largest r in the shell
    shell_cell: np.ndarray   # (s,) the cell of each shell
    shell_of: np.ndarray     # (n,) the shell of each position
    cell_start: np.ndarray   # (m + 1,) positions; cell j holds cell_start[j]:cell_start[j + 1]
    halo_start: np.ndarray   # (m,) the first position of cell j beyond HALO x its median radius

    @property
    def n_cells(self) -> int:
        return self.centre.shape[0]


def chunks(n: int, size: int):
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _assign_rows(X, CT, lab, dist2, lo, hi):
    """Nearest centre of each point in [lo, hi) (ties to the lower centre)."""
    m = CT.shape[1]
    d = X.shape[1]
    for p in prange(lo, hi):
        acc = np.empty(m)
        for j in range(m):
            acc[j] = 0.0
        for c in range(d):
            xc = X[p, c]
            for j in range(m):
                t = CT[c, j] - xc
                acc[j] += t * t
        b = 0
        for j in range(1, m):
            if acc[j] < acc[b]:
                b = j
        lab[p] = b
        dist2[p] = acc[b]


_assign = njit(parallel=True, cache=True)(_assign_rows)
_assign_serial = njit(cache=True)(_assign_rows)  # prange runs as range

SERIAL_WORK = 1 << 22
"""Below this many multiply-adds a call runs on one thread: on a loaded machine each
parallel region can wait a scheduler slice for its second thread, which dwarfs small
calls (two-level cells made ~300 such calls: 3.7 s parallel)."""


@njit(cache=True)
def _sums(X, lab, m):
    n, d = X.shape
    S = np.zeros((m, d))
    cnt = np.zeros(m, np.int64)
    for p in range(n):
        j = lab[p]
        cnt[j] += 1
        for c in range(d):
            S[j, c] += X[p, c]
    return S, cnt


@njit(cache=True)
def _count_below(r, a, b, limit):
    """Per range a[j]:b[j] of the sorted r, how many values are <= limit[j]."""
    out = np.empty(a.shape[0], np.int64)
    for j in range(a.shape[0]):
        out[j] = np.searchsorted(r[a[j]:b[j]], limit[j], side="right")
    return out


def _assign_all(X, C, lab, dist2):
    CT = np.ascontiguousarray(C.T)
    run = _assign_serial if X.shape[0] * C.shape[0] * X.shape[1] < SERIAL_WORK else _assign
    for lo, hi in chunks(X.shape[0], CHUNK):
        run(X, CT, lab, dist2, lo, hi)


FLAT_MAX_CELLS = 1024
"""Above this many cells, points are assigned in two levels (a coarse k-means first, then
cells inside each coarse cell): n x (m1 + m2) distances instead of n x m."""


def _kmeans(X: np.ndarray, m: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, label, squared distance) of a few Lloyd steps on a sample, then one
    assignment of every row (empty cells dropped)."""
    n = X.shape[0]
    m = max(1, min(m, n))
    C = X[np.sort(rng.choice(n, m, replace=False))].copy()
    ns = min(n, SAMPLE_PER_CELL * m)
    S_ = X if ns == n else np.ascontiguousarray(X[np.sort(rng.choice(n, ns, replace=False))])
    lab = np.empty(ns, np.int64)
    dist2 = np.empty(ns)
    for _ in range(LLOYD_STEPS):
        _assign_all(S_, C, lab, dist2)
        sums, cnt = _sums(S_, lab, C.shape[0])
        keep = cnt > 0
        C = sums[keep] / cnt[keep, None]
    lab = np.empty(n, np.int64)
    dist2 = np.empty(n)
    _assign_all(X, C, lab, dist2)
    cnt = np.bincount(lab, minlength=C.shape[0])
    keep = cnt > 0
    return np.ascontiguousarray(C[keep]), (np.cumsum(keep) - 1)[lab], dist2


def build_cells(X: np.ndarray, seed: int = 0, cell_size: int | None = None) -> Cells:
    """Cells of about ``cell_size`` points (default sqrt(n))."""
    X = np.ascontiguousarray(X, np.float64)
    n, d = X.shape
    size = cell_size or max(1, int(math.ceil(math.sqrt(n))))
    m = max(1, int(math.ceil(n / size)))
    rng = np.random.default_rng(seed)
    if m <= FLAT_MAX_CELLS:
        C, lab, dist2 = _kmeans(X, m, rng)
    else:
        top, tlab, _ = _kmeans(X, int(math.ceil(math.sqrt(m))), rng)
        parts, labs, dist2 = [], np.empty(n, np.int64), np.empty(n)
        base = 0
        for j in range(top.shape[0]):
            rows = np.flatnonzero(tlab == j)
            Cj, lj, dj = _kmeans(np.ascontiguousarray(X[rows]), int(math.ceil(rows.size / size)), rng)
            parts.append(Cj)
            labs[rows] = lj + base
            dist2[rows] = dj
            base += Cj.shape[0]
        C, lab = np.ascontiguousarray(np.vstack(parts)), labs
    m = C.shape[0]  # r is measured to these centres: keep them as they are
    r = np.sqrt(dist2)
    order = np.lexsort((np.arange(n), r, lab))
    lab_s, r_s = lab[order], r[order]
    cell_start = np.searchsorted(lab_s, np.arange(m + 1))
    a, b = cell_start[:-1].astype(np.int64), cell_start[1:].astype(np.int64)
    med = r_s[a + (b - a) // 2]
    # first position of each cell beyond HALO x its median radius (r is sorted inside a cell)
    halo = a + _count_below(r_s, a, b, HALO * med)
    # shell cuts: quantiles, the halo cut and the cell's ends; duplicates and empty shells dropped
    cuts = np.concatenate([a[:, None], a[:, None] + np.round(np.outer(b - a, SHELL_QUANTILES)).astype(np.int64),
                           halo[:, None], b[:, None]], axis=1)
    cuts.sort(axis=1)
    keep = np.diff(cuts, axis=1) > 0
    shell_start = np.append(cuts[:, :-1][keep], n).astype(np.int64)
    shell_cell = np.repeat(np.arange(m, dtype=np.int64), keep.sum(1))
    cell_shell = np.searchsorted(shell_cell, np.arange(m + 1)).astype(np.int64)
    shell_of = np.repeat(np.arange(shell_cell.size, dtype=np.int64), np.diff(shell_start))
    Xs = np.ascontiguousarray(X[order])
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    return Cells(X=Xs, XT=np.ascontiguousarray(Xs.T), row=order.astype(np.int64), pos=pos, r=r_s, centre=C,
                 centreT=np.ascontiguousarray(C.T), radius=r_s[cell_start[1:] - 1].copy(), cell_shell=cell_shell,
                 shell_start=shell_start, shell_lo=r_s[shell_start[:-1]].copy(),
                 shell_hi=r_s[shell_start[1:] - 1].copy(), shell_cell=shell_cell, shell_of=shell_of,
                 cell_start=cell_start.astype(np.int64), halo_start=halo)


@njit(inline="always")
def centre_dists(X, p, CT, out):
    """Distances of point p to every centre (vectorised over the centres)."""
    m = CT.shape[1]
    for j in range(m):
        out[j] = 0.0
    for c in range(X.shape[1]):
        xc = X[p, c]
        for j in range(m):
            t = CT[c, j] - xc
            out[j] += t * t
    for j in range(m):
        out[j] = math.sqrt(out[j])


@njit(inline="always")
def range_sq_dists(X, p, XT, a, b, out):
    """Squared distances of point p to the points at positions a..b-1, in column order
    (vectorised over the points: the same bits as the reference's column-order sum)."""
    mm = b - a
    for j in range(mm):
        out[j] = 0.0
    for c in range(X.shape[1]):
        xc = X[p, c]
        for j in range(mm):
            t = XT[c, a + j] - xc
            out[j] += t * t


@njit(inline="always")
def beyond(lb, scale, t):
    """Is the lower bound ``lb`` (computed from distances of size ~``scale``) surely
    above ``t``?"""
    return lb - MARGIN * (scale + t) > t


@njit(inline="always")
def annulus(r, a, b, D, t):
    """The positions in a..b-1 (sorted by r) with |r - D| <= t (plus margin)."""
    slack = MARGIN * (D + t)
    lo = a + np.searchsorted(r[a:b], D - t - slack)
    hi = a + np.searchsorted(r[a:b], D + t + slack, side="right")
    return lo, hi


@njit(inline="always")
def longest_run(start):
    """The longest of the runs start[j]..start[j + 1] - 1 (scratch size for range_sq_dists)."""
    longest = 0
    for j in range(start.shape[0] - 1):
        longest = max(longest, start[j + 1] - start[j])
    return longest


@njit(inline="always")
def shell_run(r, shell_start, shell_lo, shell_hi, s, D, t):
    """The positions of shell s that may lie within t of a point at distance D from the
    shell's cell centre: none when the shell's ball bound is beyond t, else the annulus
    (all of the shell while t is infinite)."""
    a = shell_start[s]
    if beyond(max(D - shell_hi[s], shell_lo[s] - D), D + shell_hi[s], t):
        return a, a
    b = shell_start[s + 1]
    if t < np.inf:
        a, b = annulus(r, a, b, D, t)
    return a, b


@njit(parallel=True, cache=True)
def centre_matrix(C):
    """Distances between all centres."""
    m, d = C.shape
    out = np.empty((m, m))
    for i in prange(m):
        for j in range(m):
            s = 0.0
            for c in range(d):
                t = C[i, c] - C[j, c]
                s += t * t
            out[i, j] = math.sqrt(s)
    return out
