"""``fraud.mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact) -> (u, v, w2)``:
the minimum spanning tree of the mutual-reachability graph, by Boruvka's algorithm.

- The graph is complete over the rows of ``x`` (float64 (n, d), finite); edge (p, q)
  weighs ``w2 = max(core2[p], core2[q], d2(p, q))`` (squared mutual-reachability
  distance; ``core2``: float64 (n,)). Edges are ranked by (w2, min row, max row)
  (:mod:`.edge_order`): the tree is unique.
- ``forest_u, forest_v`` (int64 (m,)): edges the tree must contain, an acyclic forest
  (approx mode's kNN forest); empty for the exact MST. The result is the lightest
  spanning tree that contains them.
- ``knn_d2, knn_i`` (float64 / int64 (n, k), k >= 0): each row's nearest other rows,
  sorted as ``fraud.knn`` returns them. They only speed the search up: their edges give
  each component an early bound, and when ``knn_exact`` is true (they are the exact kNN)
  every edge to a row outside p's list weighs at least ``max(core2[p], knn_d2[p, -1])``.
- Returns the n - 1 edges as rows ``u < v`` with ``w2``, sorted by (w2, u, v).

Backends: the reference (dense Boruvka in NumPy: for each component, the lightest
outgoing edge of the full weight matrix), numba-cpu (below), numba-cuda
(``boruvka_cuda.py``: each round one thread per row scans every other row, then
component minima with atomics and union-find linking). All three run Boruvka rounds with
the same edge order, so they return the same tree.

numba-cpu, one round:

1. components (union-find), and per cell and shell of :mod:`.cells`: the component all
   its points share (if any), the smallest core distance, and the smallest core distance
   among points of any other component (two smallest over distinct components);
2. each row's lightest edge among its kNN list, reduced per component to a bound W;
3. a component still without an outgoing edge gets one from a probe: its row with the
   smallest lower bound searches cells in order of their ball bound for the nearest
   row of another component;
4. a row p still needs a search while its lower bound ``max(core2[p], d2 of its last
   neighbour)`` (or core2[p] alone when the lists are not exact) does not exceed its
   component's W and its list gave no lighter edge. These rows are searched per shell:
   for a shell S of cell P, the rows q of other components that could be within
   sqrt(W) of some candidate of S are gathered once (bounds: component purity and
   smallest other core per cell and shell, ball and annulus distances to P's centre),
   then every candidate of S is measured against them in one vectorised run. Shells go
   in batches (in parallel), in increasing order of their smallest lower bound; after
   each batch the components' bounds tighten;
5. every component's lightest edge is merged (union-find; an edge chosen from both
   sides is added once).

Pruning only ever drops an edge that is strictly heavier than an edge already found, so
the component minima are exact whatever order threads run in.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.core.log import get_logger
from gpuforge.kernels.arguments import KernelArgumentError, check_ndim
from gpuforge.plugins.fraud.hdbscan.cells import (MARGIN, Cells, beyond, build_cells, centre_dists, centre_matrix,
                                                  longest_run, range_sq_dists, shell_run)
from gpuforge.plugins.fraud.hdbscan.edge_order import (edge_before, lighter_edge, sort_edges, sq_dist, sq_dist_matrix,
                                                       store_edge)
from gpuforge.plugins.fraud.hdbscan.knn import EPS32, blas_one_thread, centred_f32, check_finite, check_points
from gpuforge.plugins.fraud.hdbscan.union_find import flatten, union

log = get_logger("fraud.hdbscan")

NONE = np.int64(1 << 62)
"""Row sentinel of "no edge yet" (ranks after every real row)."""

SHELLS_PER_BATCH = 32
"""Query shells per parallel call: the components' bounds tighten between calls, and
Ctrl-C is seen there."""

PROBES_PER_CALL = 1024

GATHER_BLOCK = 4096
"""Gathered rows per float32 GEMM in a shell search: at most 16 KiB x the shell's candidates
of product and 4 x columns x 4096 bytes of coordinates per thread, whatever n is."""


# --- argument checks (every backend) ---------------------------------------------------------

def check_mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact) -> None:
    check_points("x", x)
    n = x.shape[0]
    if np.dtype(core2.dtype) != np.float64 or tuple(core2.shape) != (n,):
        raise KernelArgumentError(f"core2 must be float64 of shape ({n},)")
    check_ndim("knn_d2", knn_d2.shape, 2)
    if np.dtype(knn_d2.dtype) != np.float64 or np.dtype(knn_i.dtype) != np.int64:
        raise KernelArgumentError("knn_d2 must be float64 and knn_i int64")
    if tuple(knn_d2.shape) != tuple(knn_i.shape) or knn_d2.shape[0] != n:
        raise KernelArgumentError(f"knn_d2 and knn_i must both be ({n}, k)")
    for name, a in (("forest_u", forest_u), ("forest_v", forest_v)):
        if np.dtype(a.dtype) != np.int64 or len(a.shape) != 1:
            raise KernelArgumentError(f"{name} must be a 1-D int64 array")
    if forest_u.shape != forest_v.shape or forest_u.shape[0] > max(n - 1, 0):
        raise KernelArgumentError("forest_u and forest_v must have the same length, at most n - 1")
    if not isinstance(knn_exact, (bool, np.bool_)):
        raise KernelArgumentError(f"knn_exact must be a bool, got {type(knn_exact).__name__}")


def check_host_values(core2, knn_i, forest_u, forest_v) -> None:
    """Value checks on host arrays: finite cores, rows in range, an acyclic forest."""
    n = core2.shape[0]
    if isinstance(core2, np.ndarray) and core2.size and not (np.isfinite(core2).all() and (core2 >= 0).all()):
        raise KernelArgumentError("core2 must be finite and >= 0")
    if isinstance(knn_i, np.ndarray) and knn_i.size and (knn_i.min() < 0 or knn_i.max() >= n):
        raise KernelArgumentError(f"knn_i holds rows outside 0..{n - 1}")
    if isinstance(forest_u, np.ndarray) and isinstance(forest_v, np.ndarray) and forest_u.size:
        if min(forest_u.min(), forest_v.min()) < 0 or max(forest_u.max(), forest_v.max()) >= n:
            raise KernelArgumentError(f"the forest has rows outside 0..{n - 1}")
        parent = np.arange(n, dtype=np.int64)
        if _first_cycle(parent, forest_u, forest_v) >= 0:
            raise KernelArgumentError("forest_u/forest_v contain a cycle (or a self-loop)")


@njit(cache=True)
def _first_cycle(parent, u, v):
    for i in range(u.shape[0]):
        if not union(parent, u[i], v[i]):
            return i
    return -1


# --- reference --------------------------------------------------------------------------------

def mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact=True):
    x, core2, knn_d2, knn_i, forest_u, forest_v = (np.asarray(a) for a in (x, core2, knn_d2, knn_i, forest_u, forest_v))
    check_mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact)
    check_finite("x", x)
    check_host_values(core2, knn_i, forest_u, forest_v)
    n = x.shape[0]
    W = np.maximum(np.maximum(core2[:, None], core2[None, :]), sq_dist_matrix(x, x))
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    def join(a, b):
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)

    edges = list(zip(forest_u.tolist(), forest_v.tolist()))
    for a, b in edges:
        join(a, b)
    while len(edges) < n - 1:
        comp = np.array([root(i) for i in range(n)])
        chosen = set()
        for c in np.unique(comp):  # every component's lightest outgoing edge
            inside, outside = np.flatnonzero(comp == c), np.flatnonzero(comp != c)
            sub = W[np.ix_(inside, outside)]
            ii, jj = np.nonzero(sub == sub.min())
            a, b = np.minimum(inside[ii], outside[jj]), np.maximum(inside[ii], outside[jj])
            first = np.lexsort((b, a))[0]  # equal weights: the smaller (min row, max row)
            chosen.add((int(a[first]), int(b[first])))
        for a, b in sorted(chosen):
            join(a, b)
            edges.append((a, b))
    u = np.array([e[0] for e in edges], np.int64)
    v = np.array([e[1] for e in edges], np.int64)
    return sort_edges(u, v, W[u, v] if len(u) else np.zeros(0))


# --- numba-cpu: per-round statistics ----------------------------------------------------------

@njit(cache=True)
def _shell_stats(shell_start, cell_shell, comp, c2, sh_comp, sh_m1, sh_c1, sh_m2, ce_comp, ce_m1, ce_c1, ce_m2):
    """Per shell and per cell: the one component of all its points (else -1); the smallest
    core (m1, of component c1); the smallest core among components other than c1 (m2).
    A query from component c meets cores >= (m2 if c == c1 else m1) there."""
    for s in range(shell_start.shape[0] - 1):
        a, b = shell_start[s], shell_start[s + 1]
        pure = comp[a]
        m1 = np.inf
        c1 = -1
        m2 = np.inf
        for q in range(a, b):
            cq = comp[q]
            if cq != pure:
                pure = -1
            v = c2[q]
            if v < m1:
                if cq != c1:
                    m2 = m1
                m1 = v
                c1 = cq
            elif cq != c1 and v < m2:
                m2 = v
        sh_comp[s] = pure
        sh_m1[s] = m1
        sh_c1[s] = c1
        sh_m2[s] = m2
    for j in range(cell_shell.shape[0] - 1):
        s0 = cell_shell[j]
        pure = sh_comp[s0]
        m1 = sh_m1[s0]
        c1 = sh_c1[s0]
        m2 = sh_m2[s0]
        for s in range(s0 + 1, cell_shell[j + 1]):
            if sh_comp[s] != pure:
                pure = -1
            if sh_m1[s] < m1:  # the new minimum's component differs: the old m1 qualifies
                m2 = min(m1 if sh_c1[s] != c1 else m2, sh_m2[s])
                m1 = sh_m1[s]
                c1 = sh_c1[s]
            else:
                m2 = min(m2, sh_m1[s] if sh_c1[s] != c1 else sh_m2[s])
        ce_comp[j] = pure
        ce_m1[j] = m1
        ce_c1[j] = c1
        ce_m2[j] = m2


@njit(inline="always")
def _other_core(i, c, m1, c1, m2):
    return m2[i] if c1[i] == c else m1[i]


@njit(parallel=True, cache=True)
def _list_best(comp, c2, kd2, kpos, row, exact, pw, pa, pb, pq, lb):
    """Each row's lightest edge to another component among its kNN list, and the lower
    bound on every other edge of the row."""
    n, k = kd2.shape
    for p in prange(n):
        c = comp[p]
        bw = np.inf
        ba = NONE
        bb = NONE
        bq = -1
        for j in range(k):
            q = kpos[p, j]
            if comp[q] == c:
                continue
            bw, ba, bb, bq = lighter_edge(max(c2[p], c2[q], kd2[p, j]), row[p], row[q], q, bw, ba, bb, bq)
        store_edge(p, bw, ba, bb, bq, pw, pa, pb, pq)
        lb[p] = max(c2[p], kd2[p, k - 1]) if exact and k > 0 else c2[p]


@njit(cache=True)
def _component_best(comp, pw, pa, pb, pq, W, A, B, P, Q):
    for i in range(comp.shape[0]):
        W[i] = np.inf
        A[i] = NONE
        B[i] = NONE
        P[i] = -1
        Q[i] = -1
    for p in range(comp.shape[0]):
        if pq[p] >= 0:
            _absorb_point(p, comp[p], pw, pa, pb, pq, W, A, B, P, Q)


@njit(inline="always")
def _absorb_point(p, c, pw, pa, pb, pq, W, A, B, P, Q):
    if edge_before(pw[p], pa[p], pb[p], W[c], A[c], B[c]):
        W[c] = pw[p]
        A[c] = pa[p]
        B[c] = pb[p]
        P[c] = p
        Q[c] = pq[p]


@njit(cache=True)
def _absorb(points, comp, pw, pa, pb, pq, W, A, B, P, Q):
    for i in range(points.shape[0]):
        p = points[i]
        if pq[p] >= 0:
            _absorb_point(p, comp[p], pw, pa, pb, pq, W, A, B, P, Q)


@njit(cache=True)
def _needs_search(comp, pw, pq, lb, W):
    """Rows whose lightest outgoing edge may lie outside their kNN list and beat their
    component's bound."""
    n = comp.shape[0]
    out = np.empty(n, np.int64)
    m = 0
    for p in range(n):
        if lb[p] <= W[comp[p]] and not (pq[p] >= 0 and pw[p] < lb[p]):
            out[m] = p
            m += 1
    return out[:m]


# --- numba-cpu: searches ----------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _probe(points, comp, c2, X, XT, row, r, CT, radius, cell_shell, shell_start, shell_lo, shell_hi,
           sh_comp, sh_m1, sh_c1, sh_m2, ce_comp, ce_m1, ce_c1, ce_m2, pw, pa, pb, pq):
    """For each row p given: its lightest edge to another component (over all rows),
    cells in increasing order of their ball bound."""
    m = CT.shape[1]
    longest = longest_run(shell_start)
    for t in prange(points.shape[0]):
        p = points[t]
        c = comp[p]
        cp = c2[p]
        bw, ba, bb, bq = pw[p], pa[p], pb[p], pq[p]
        dc = np.empty(m)
        acc = np.empty(longest)
        centre_dists(X, p, CT, dc)
        lbc = np.empty(m)
        for j in range(m):
            lbc[j] = np.inf if ce_comp[j] == c else dc[j] - radius[j]
        order = np.argsort(lbc)
        for t_ in range(m):
            j = order[t_]
            if lbc[j] == np.inf:
                break
            tb = np.sqrt(bw)
            if beyond(lbc[j], dc[j] + radius[j], tb):
                break
            if _other_core(j, c, ce_m1, ce_c1, ce_m2) > bw:
                continue
            D = dc[j]
            for s in range(cell_shell[j], cell_shell[j + 1]):
                if sh_comp[s] == c or _other_core(s, c, sh_m1, sh_c1, sh_m2) > bw:
                    continue
                a, b = shell_run(r, shell_start, shell_lo, shell_hi, s, D, np.sqrt(bw))
                range_sq_dists(X, p, XT, a, b, acc)
                for i in range(b - a):
                    q = a + i
                    if comp[q] == c:
                        continue
                    w = max(cp, c2[q], acc[i])
                    if w <= bw:
                        bw, ba, bb, bq = lighter_edge(w, row[p], row[q], q, bw, ba, bb, bq)
        store_edge(p, bw, ba, bb, bq, pw, pa, pb, pq)


@njit(parallel=True, cache=True)
def _search_shells(qshells, cptr, cand, comp, c2, lb, X, XT, row, r, centre, cc_dist, radius, cell_shell,
                   shell_start, shell_lo, shell_hi, shell_cell, sh_comp, sh_m1, sh_c1, sh_m2, ce_comp, ce_m1,
                   ce_c1, ce_m2, W, A, B, pw, pa, pb, pq):
    """Step 4 of the module docstring for the shells ``qshells`` (their candidate rows:
    ``cand[cptr[t]:cptr[t + 1]]``, sorted by lower bound)."""
    n, d = X.shape
    m = radius.shape[0]
    slack = EPS32 * (d + 8)
    longest = longest_run(shell_start)
    for t in prange(qshells.shape[0]):
        P = shell_cell[qshells[t]]
        c0, c1_ = cptr[t], cptr[t + 1]
        # the candidates still below their component's bound
        kept = np.empty(c1_ - c0, np.int64)
        nk = 0
        Sc = -2
        WS = 0.0
        loS = np.inf
        hiS = 0.0
        for i in range(c0, c1_):
            p = cand[i]
            c = comp[p]
            if lb[p] > W[c]:
                continue
            kept[nk] = p
            nk += 1
            Sc = c if Sc == -2 or Sc == c else -1
            WS = max(WS, W[c])
            loS = min(loS, r[p])
            hiS = max(hiS, r[p])
        if nk == 0:
            continue
        tS = np.sqrt(WS)
        # gather the rows of other components that may lie within sqrt(W) of a candidate
        Q = np.empty(n, np.int64)
        nq = 0
        acc = np.empty(max(longest, 1))
        for j in range(m):
            if Sc >= 0 and ce_comp[j] == Sc:
                continue
            if (_other_core(j, Sc, ce_m1, ce_c1, ce_m2) if Sc >= 0 else ce_m1[j]) > WS:
                continue
            ccd = cc_dist[P, j]
            if beyond(ccd - radius[j] - hiS, ccd + radius[j] + hiS, tS):
                continue
            for s in range(cell_shell[j], cell_shell[j + 1]):
                if Sc >= 0 and sh_comp[s] == Sc:
                    continue
                if (_other_core(s, Sc, sh_m1, sh_c1, sh_m2) if Sc >= 0 else sh_m1[s]) > WS:
                    continue
                if beyond(max(ccd - hiS - shell_hi[s], shell_lo[s] - ccd - hiS), ccd + hiS + shell_hi[s], tS):
                    continue
                a = shell_start[s]
                b = shell_start[s + 1]
                # d(p, q) >= d(q, cP) - r_p >= ccd - r_q - r_p (and >= r_p - ccd - r_q): only rows far
                # enough out in their own cell can come within tS of a candidate
                rmin = max(ccd - hiS, loS - ccd) - tS - MARGIN * (ccd + hiS + tS)
                a += np.searchsorted(r[a:b], rmin)
                range_sq_dists(centre, P, XT, a, b, acc)
                for i in range(b - a):
                    q = a + i
                    if (Sc >= 0 and comp[q] == Sc) or c2[q] > WS:
                        continue
                    Dq = np.sqrt(acc[i])
                    if beyond(max(Dq - hiS, loS - Dq), Dq + hiS, tS):
                        continue
                    Q[nq] = q
                    nq += 1
        if nq == 0:
            continue
        # the candidates against the gathered rows, GATHER_BLOCK rows at a time, in float32
        # GEMMs (coordinates relative to P's centre); a pair is measured exactly only when the
        # screen cannot settle it (see knn.EPS32 for the slack). Blocks bound the memory: in
        # the last rounds nearly every row is gathered, and one candidates x all-rows product
        # was 4 bytes x shell size x n.
        Ck, kn = centred_f32(X, kept[:nk], centre[P])
        # in a one-component shell, each candidate's result tightens the next one's bound
        # (the component's best edge is the minimum over all pairs whatever the order: a
        # pair is dropped only when it cannot come before the bound, ties kept)
        kw, ka, kb = (W[Sc], A[Sc], B[Sc]) if Sc >= 0 else (np.inf, NONE, NONE)
        for q0 in range(0, nq, GATHER_BLOCK):
            nb = min(nq - q0, GATHER_BLOCK)
            Cq, cn = centred_f32(X, Q[q0:q0 + nb], centre[P])
            G = np.dot(Ck, Cq.T)
            for i in range(nk):
                p = kept[i]
                c = comp[p]
                if Sc < 0:
                    kw, ka, kb = W[c], A[c], B[c]
                if lb[p] > kw:
                    if Sc >= 0:
                        break
                    continue
                cp = c2[p]
                bw, ba, bb, bq = pw[p], pa[p], pb[p], pq[p]
                for j in range(nb):
                    q = Q[q0 + j]
                    if comp[q] == c:
                        continue
                    m_ = max(cp, c2[q])
                    if m_ > kw:
                        continue
                    approx = kn[i] + cn[j] - 2.0 * np.float64(G[i, j])
                    err = slack * (kn[i] + cn[j])
                    if approx - err > kw:
                        continue
                    w = m_ if approx + err <= m_ else max(m_, sq_dist(X, p, X, q))
                    if w <= kw:
                        bw, ba, bb, bq = lighter_edge(w, row[p], row[q], q, bw, ba, bb, bq)
                store_edge(p, bw, ba, bb, bq, pw, pa, pb, pq)
                if Sc >= 0 and bq >= 0 and edge_before(bw, ba, bb, kw, ka, kb):
                    kw, ka, kb = bw, ba, bb


@njit(cache=True)
def _merge(parent, comp, W, P, Q, eu, ev, ew, ne):
    for c in range(comp.shape[0]):
        if comp[c] != c or Q[c] < 0:
            continue
        if union(parent, P[c], Q[c]):
            eu[ne] = P[c]
            ev[ne] = Q[c]
            ew[ne] = W[c]
            ne += 1
    return ne


@njit(cache=True)
def _forest_weights(X, c2, u, v, out):
    for i in range(u.shape[0]):
        out[i] = max(c2[u[i]], c2[v[i]], sq_dist(X, u[i], X, v[i]))


def _candidates_by_shell(need, lb, shell_of, row):
    """Candidate rows grouped by shell, each group by (lower bound, row); groups in
    increasing order of their smallest lower bound."""
    order = np.lexsort((row[need], lb[need], shell_of[need]))
    cand = need[order]
    sh = shell_of[cand]
    brk = np.flatnonzero(np.diff(sh)) + 1
    starts = np.concatenate(([0], brk)).astype(np.int64)
    ends = np.concatenate((brk, [cand.size])).astype(np.int64)
    first_lb = lb[cand[starts]]
    go = np.lexsort((sh[starts], first_lb))
    qshells = sh[starts][go]
    sizes = (ends - starts)[go]
    cand = np.concatenate([cand[starts[g]:ends[g]] for g in go]) if go.size else cand
    cptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return qshells.astype(np.int64), cptr, cand


def boruvka_cells(cells: Cells, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact, log=None):
    """Edges (positions u, v; w2) of the tree, in merge order."""
    X = cells.X
    n = X.shape[0]
    pos, row = cells.pos, cells.row
    c2 = np.ascontiguousarray(core2[row])
    kd2 = np.ascontiguousarray(knn_d2[row])
    kpos = np.ascontiguousarray(pos[knn_i[row]]) if knn_i.size else np.zeros((n, 0), np.int64)
    parent = np.arange(n, dtype=np.int64)
    eu = np.empty(max(n - 1, 0), np.int64)
    ev = np.empty(max(n - 1, 0), np.int64)
    ew = np.empty(max(n - 1, 0))
    ne = len(forest_u)
    if ne:
        fu, fv = pos[forest_u], pos[forest_v]
        _first_cycle(parent, fu, fv)
        eu[:ne], ev[:ne] = fu, fv
        _forest_weights(X, c2, fu, fv, ew[:ne])
    ns, m = cells.shell_lo.shape[0], cells.n_cells
    comp = np.empty(n, np.int64)
    sh = [np.empty(ns, np.int64), np.empty(ns), np.empty(ns, np.int64), np.empty(ns)]
    ce = [np.empty(m, np.int64), np.empty(m), np.empty(m, np.int64), np.empty(m)]
    pw, pa, pb, pq, lb = (np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                          np.empty(n))
    W, A, B, P, Q = np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), \
        np.empty(n, np.int64)
    cc_dist = centre_matrix(cells.centre)
    cellsargs = (cells.X, cells.XT, row, cells.r)
    rounds = 0
    while ne < n - 1:
        rounds += 1
        flatten(parent, comp)
        _shell_stats(cells.shell_start, cells.cell_shell, comp, c2, *sh, *ce)
        _list_best(comp, c2, kd2, kpos, row, bool(knn_exact), pw, pa, pb, pq, lb)
        _component_best(comp, pw, pa, pb, pq, W, A, B, P, Q)
        roots = np.flatnonzero(comp == np.arange(n))
        lonely = roots[W[roots] == np.inf]  # no outgoing edge from the lists: probe once
        probes = 0
        if lonely.size:
            first = np.full(n, -1, np.int64)  # per component, its row with the smallest lower bound
            order = np.lexsort((row, lb))
            seen = comp[order]
            _, at = np.unique(seen, return_index=True)
            first[seen[at]] = order[at]
            points = first[lonely]
            for lo in range(0, points.size, PROBES_PER_CALL):
                chunk = points[lo:lo + PROBES_PER_CALL]
                _probe(chunk, comp, c2, *cellsargs, cells.centreT, cells.radius, cells.cell_shell, cells.shell_start,
                       cells.shell_lo, cells.shell_hi, *sh, *ce, pw, pa, pb, pq)
                _absorb(chunk, comp, pw, pa, pb, pq, W, A, B, P, Q)
            probes = points.size
        need = _needs_search(comp, pw, pq, lb, W)
        if need.size:
            qshells, cptr, cand = _candidates_by_shell(need, lb, cells.shell_of, row)
        else:
            qshells, cptr, cand = need, np.zeros(1, np.int64), need
        with blas_one_thread():
            for g in range(0, qshells.size, SHELLS_PER_BATCH):
                sl = slice(g, g + SHELLS_PER_BATCH)
                lo_, hi_ = cptr[g], cptr[min(g + SHELLS_PER_BATCH, qshells.size)]
                _search_shells(qshells[sl], cptr[g:g + SHELLS_PER_BATCH + 1] - lo_, cand[lo_:hi_], comp, c2, lb,
                               *cellsargs, cells.centre, cc_dist, cells.radius, cells.cell_shell, cells.shell_start,
                               cells.shell_lo, cells.shell_hi, cells.shell_cell, *sh, *ce, W, A, B, pw, pa, pb, pq)
                _absorb(cand[lo_:hi_], comp, pw, pa, pb, pq, W, A, B, P, Q)
        before = ne
        ne = _merge(parent, comp, W, P, Q, eu, ev, ew, ne)
        if log is not None:
            log(f"boruvka round {rounds}: {roots.size} components, {probes} probes, {need.size} searched rows "
                f"in {qshells.size} shells, {ne - before} edges")
        if ne == before:
            raise RuntimeError("Boruvka made no progress")
    return eu[:ne], ev[:ne], ew[:ne]


def mst_cpu(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact=True):
    x, core2, knn_d2, knn_i, forest_u, forest_v = (np.ascontiguousarray(a) for a in
                                                   (x, core2, knn_d2, knn_i, forest_u, forest_v))
    check_mst(x, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact)
    check_finite("x", x)
    check_host_values(core2, knn_i, forest_u, forest_v)
    n = x.shape[0]
    if n <= 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    if forest_u.size == n - 1:  # the forest spans already: nothing to search
        w2 = np.empty(n - 1)
        _forest_weights(x, core2, forest_u, forest_v, w2)
        return sort_edges(forest_u, forest_v, w2)
    cells = build_cells(x)
    u, v, w2 = boruvka_cells(cells, core2, knn_d2, knn_i, forest_u, forest_v, knn_exact, log=log.debug)
    return sort_edges(cells.row[u], cells.row[v], w2)


# --- cases ------------------------------------------------------------------------------------

def mst_cases():
    from gpuforge.core.specs import KernelCase
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs, knn
    from gpuforge.plugins.fraud.hdbscan.kruskal import knn_forest

    def case(seed, n, d, k, ms, integer=False, exact=True, forest=False, lists=True):
        x = _blobs(seed, n, d)
        if integer:
            x = np.round(x)
        kd2, ki = knn(x, k)
        core2 = kd2[:, ms - 1].copy()
        fu = fv = np.zeros(0, np.int64)
        if forest:
            fu, fv, _ = knn_forest(core2, kd2, ki)
        if not lists:
            kd2, ki = kd2[:, :0].copy(), ki[:, :0].copy()
        return x, core2, kd2, ki, fu, fv, exact

    x, core2, kd2, ki, e, _, _ = case(1, 300, 5, 10, 5)
    two = np.vstack([_blobs(7, 30, 3), _blobs(8, 30, 3) + 60.0])  # far apart: one long bridge
    k2, i2 = knn(two, 5)
    return [
        KernelCase("blobs_70x5", case(9, 70, 5, 8, 5)),
        KernelCase("blobs_40x32", case(2, 40, 32, 8, 5)),
        KernelCase("integer_ties", case(3, 70, 3, 6, 3, integer=True)),
        KernelCase("bridge_knn_forest", case(4, 80, 4, 6, 4, exact=False, forest=True)),
        KernelCase("no_lists", case(5, 50, 6, 4, 4, lists=False, exact=False)),
        KernelCase("blobs_300x5", (x, core2, kd2, ki, e, e, True), simulator=False),
        KernelCase("blobs_200x32", case(2, 200, 32, 16, 10), simulator=False),
        KernelCase("integer_ties_250", case(3, 250, 3, 6, 3, integer=True), simulator=False),
        KernelCase("bridge_knn_forest_300", case(4, 300, 4, 8, 5, exact=False, forest=True), simulator=False),
        KernelCase("two_far_groups", (two, k2[:, 2].copy(), k2, i2, e, e, True)),
        KernelCase("zero_cores", (x[:30], np.zeros(30), kd2[:30, :0].copy(), ki[:30, :0].copy(), e, e, False)),
        KernelCase("one_row", (x[:1], core2[:1], kd2[:1, :0].copy(), ki[:1, :0].copy(), e, e, True)),
        KernelCase("big_3000x16", case(6, 3000, 16, 16, 10), simulator=False),
        KernelCase("forest_cycle", (x, core2, kd2, ki, np.array([0, 1, 2], np.int64), np.array([1, 2, 0], np.int64),
                                    True)),
        KernelCase("bad_core", (x, core2[:5], kd2, ki, e, e, True)),
    ]
