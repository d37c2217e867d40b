"""HDBSCAN (Campello, Moulavi & Sander 2013) with the accelerations of McInnes & Healy
(2017), in Numba.

Pipeline (all indices below are in kd-tree order; results are mapped back):

1. kd-tree (scikit-learn's ``KDTree`` arrays: heap-ordered nodes with bounding boxes).
2. Exact k nearest neighbours of every point on that tree (Numba, parallel, self
   excluded). The core distance follows the ``hdbscan`` library: the distance to the
   ``min_samples``-th nearest OTHER point (hdbscan queries ``min_samples + 1`` with the
   point itself; scikit-learn's ``min_samples`` counts the point, so sklearn ``m + 1`` ==
   hdbscan ``m``).
3. Minimum spanning tree of the mutual-reachability graph
   ``mr(p, q) = max(core(p), core(q), d(p, q))``:

   - ``exact``: Boruvka over the complete graph. Each round, every component's lightest
     outgoing edge is found from the kNN lists first; a point whose list does not settle
     it (its lower bound ``max(core(p), d_K(p))`` is below the component's best) runs a
     kd-tree query that prunes nodes by ``max(core(p), min core in node, box distance)``
     and skips nodes wholly inside its own component. Points of a component are
     queried in increasing lower-bound order with a running bound; components run in
     parallel. The result is an exact MST (total weight equal to hdbscan's with
     ``approx_min_span_tree=False``).
   - ``exact`` above 60 columns: Prim's algorithm over the dense graph, in input row
     order, with the hdbscan library's tie rules and edge sort (it switches to Prim at
     the same width), so tied merge heights fall as in hdbscan (digits: labels ARI 1.0).
   - ``approx`` (pHDBSCAN route): minimum spanning forest of the kNN mutual-reachability
     graph (Kruskal), then the forest's components are bridged with the same exact
     component-to-rest Boruvka rounds (few, large components: cheap).
4. Single-linkage tree, condensed tree (``min_cluster_size``), stability, EOM or leaf
   selection, ``cluster_selection_epsilon``, membership probabilities and GLOSH outlier
   scores, matching the hdbscan library's definitions.

Determinism: every parallel loop writes only its own slots; ties keep the first
candidate met in a fixed traversal order; edges are sorted with a stable sort (Prim's
with numpy's default sort, as hdbscan: deterministic for a given input and numpy). A
rerun gives identical labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

LEAF_SIZE = 32
APPROX_MAX_LEAVES = 32
"""approx mode: kd-tree leaves visited per kNN search (nearest-first) at <= 8 columns;
doubled per extra column, and the exact kNN (0) from 16 columns on, where a kd-tree's
nearest-first descent finds too few true neighbours (ARI 0.82 vs exact at 50k x 32
with 32 leaves)."""


PRIM_MIN_COLUMNS = 60
"""exact mode above this many columns: Prim's O(n^2 d) MST over the dense
mutual-reachability graph instead of kd-tree Boruvka (whose pruning fails in high
dimension), as the hdbscan library's 'best' algorithm does; same threshold, same tie
order, so tied merge heights (integer data) fall as in hdbscan."""


def approx_leaves(d: int) -> int:
    if d <= 8:
        return APPROX_MAX_LEAVES
    if d >= 16:
        return 0
    return APPROX_MAX_LEAVES << (d - 8)


# --------------------------------------------------------------------------------------
# kd-tree
# --------------------------------------------------------------------------------------

@dataclass
class Tree:
    data: np.ndarray       # (n, d) float64, points in tree order
    perm: np.ndarray       # tree position -> original row
    start: np.ndarray      # per node
    end: np.ndarray
    is_leaf: np.ndarray
    lo: np.ndarray         # (nodes, d)
    hi: np.ndarray


def build_tree(X: np.ndarray, leaf_size: int = LEAF_SIZE) -> Tree:
    from sklearn.neighbors import KDTree

    kd = KDTree(X, leaf_size=leaf_size)
    data, idx, node_data, bounds = kd.get_arrays()
    idx = np.asarray(idx, np.int64)
    return Tree(
        data=np.ascontiguousarray(np.asarray(data)[idx], np.float64),
        perm=idx,
        start=np.ascontiguousarray(node_data["idx_start"], np.int64),
        end=np.ascontiguousarray(node_data["idx_end"], np.int64),
        is_leaf=np.ascontiguousarray(node_data["is_leaf"].astype(np.bool_)),
        lo=np.ascontiguousarray(bounds[0], np.float64),
        hi=np.ascontiguousarray(bounds[1], np.float64),
    )


@njit(inline="always")
def _box_d2(X, p, lo, hi, node):
    s = 0.0
    for c in range(X.shape[1]):
        v = X[p, c]
        if v < lo[node, c]:
            t = lo[node, c] - v
            s += t * t
        elif v > hi[node, c]:
            t = v - hi[node, c]
            s += t * t
    return s


@njit(inline="always")
def _d2(X, p, q):
    s = 0.0
    for c in range(X.shape[1]):
        t = X[p, c] - X[q, c]
        s += t * t
    return s


@njit(parallel=True, cache=True)
def tree_knn(X, start, end, is_leaf, lo, hi, k, max_leaves=0):
    """k nearest OTHER points of every point (squared distances, ascending; ties keep
    the smaller tree position). ``max_leaves > 0`` stops each search after that many
    leaves (nearest-first descent): an approximate kNN for approx mode."""
    n = X.shape[0]
    kd2 = np.empty((n, k), np.float64)
    ki = np.empty((n, k), np.int64)
    depth = 64
    for p in prange(n):
        bd = np.full(k, np.inf)
        bi = np.full(k, -1, np.int64)
        stack = np.empty(depth * 2, np.int64)
        sd = np.empty(depth * 2, np.float64)
        top = 0
        stack[0] = 0
        sd[0] = 0.0
        top = 1
        visited = 0
        while top > 0:
            top -= 1
            node = stack[top]
            if sd[top] >= bd[k - 1] and bi[k - 1] >= 0:
                continue
            if is_leaf[node]:
                visited += 1
                if max_leaves > 0 and visited > max_leaves and bi[k - 1] >= 0:
                    break
                for q in range(start[node], end[node]):
                    if q == p:
                        continue
                    d = _d2(X, p, q)
                    if d < bd[k - 1] or (d == bd[k - 1] and bi[k - 1] > q) or bi[k - 1] < 0:
                        j = k - 1
                        while j > 0 and (d < bd[j - 1] or (d == bd[j - 1] and q < bi[j - 1]) or bi[j - 1] < 0):
                            bd[j] = bd[j - 1]
                            bi[j] = bi[j - 1]
                            j -= 1
                        bd[j] = d
                        bi[j] = q
            else:
                a = 2 * node + 1
                b = a + 1
                da = _box_d2(X, p, lo, hi, a)
                db = _box_d2(X, p, lo, hi, b)
                if da <= db:
                    stack[top] = b
                    sd[top] = db
                    stack[top + 1] = a
                    sd[top + 1] = da
                else:
                    stack[top] = a
                    sd[top] = da
                    stack[top + 1] = b
                    sd[top + 1] = db
                top += 2
        for j in range(k):
            kd2[p, j] = bd[j]
            ki[p, j] = bi[j]
    return kd2, ki


# --------------------------------------------------------------------------------------
# union-find
# --------------------------------------------------------------------------------------

@njit(inline="always")
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def _flatten(parent, comp):
    for i in range(parent.shape[0]):
        comp[i] = _find(parent, i)


# --------------------------------------------------------------------------------------
# Boruvka (exact) over the mutual-reachability graph
# --------------------------------------------------------------------------------------

@njit(cache=True)
def _node_stats(start, end, is_leaf, comp, core2, node_comp, node_core, node_c1, node_core2):
    """Per node: its component if all its points share one (else -1); the smallest core
    distance (node_core, of component node_c1) and the smallest core distance among
    points of any OTHER component (node_core2). A query from component c bounds the
    cores it can meet in a node by node_core if c != node_c1, else node_core2."""
    nn = start.shape[0]
    for node in range(nn - 1, -1, -1):
        if is_leaf[node]:
            c = comp[start[node]]
            m1 = np.inf
            c1 = -1
            m2 = np.inf
            for q in range(start[node], end[node]):
                cq_ = comp[q]
                if cq_ != c:
                    c = -1
                v = core2[q]
                if v < m1:
                    if cq_ != c1:
                        m2 = m1
                    m1 = v
                    c1 = cq_
                elif cq_ != c1 and v < m2:
                    m2 = v
            node_comp[node] = c
            node_core[node] = m1
            node_c1[node] = c1
            node_core2[node] = m2
        else:
            a = 2 * node + 1
            b = a + 1
            ca = node_comp[a]
            node_comp[node] = ca if ca == node_comp[b] else -1
            # merge (c1, m1, m2) of both children: top-2 over distinct components
            if node_core[a] <= node_core[b]:
                x, y = a, b
            else:
                x, y = b, a
            m1 = node_core[x]
            c1 = node_c1[x]
            m2 = node_core2[x]
            if node_c1[y] != c1:
                if node_core[y] < m2:
                    m2 = node_core[y]
            else:
                if node_core2[y] < m2:
                    m2 = node_core2[y]
            node_core[node] = m1
            node_c1[node] = c1
            node_core2[node] = m2


@njit(inline="always")
def _other_core(node, c, node_core, node_c1, node_core2):
    return node_core2[node] if node_c1[node] == c else node_core[node]


@njit(parallel=True, cache=True)
def _list_best(comp, core2, kd2, ki, pw, pq, lb):
    """Per point: the lightest mutual-reachability edge to another component among its
    kNN list, and a lower bound for every edge to a point outside the list."""
    n, k = kd2.shape
    for p in prange(n):
        c = comp[p]
        best = np.inf
        bq = -1
        for j in range(k):
            q = ki[p, j]
            if comp[q] == c:
                continue
            w = max(core2[p], core2[q], kd2[p, j])
            if w < best:
                best = w
                bq = q
        pw[p] = best
        pq[p] = bq
        lb[p] = max(core2[p], kd2[p, k - 1]) if k > 0 else core2[p]


@njit(cache=True)
def _query(p, c, best, bq, X, core2, comp, start, end, is_leaf, lo, hi, node_comp, node_core, node_c1,
           node_core2, stack):
    cp = core2[p]
    top = 1
    stack[0] = 0
    while top > 0:
        top -= 1
        node = stack[top]
        if node_comp[node] == c:
            continue
        lbn = max(cp, _other_core(node, c, node_core, node_c1, node_core2))
        if lbn >= best:
            continue
        if max(lbn, _box_d2(X, p, lo, hi, node)) >= best:
            continue
        if is_leaf[node]:
            for q in range(start[node], end[node]):
                if comp[q] == c or core2[q] >= best:
                    continue
                w = max(cp, core2[q], _d2(X, p, q))
                if w < best:
                    best = w
                    bq = q
        else:
            a = 2 * node + 1
            b = a + 1
            if _box_d2(X, p, lo, hi, a) <= _box_d2(X, p, lo, hi, b):
                stack[top] = b
                stack[top + 1] = a
            else:
                stack[top] = a
                stack[top + 1] = b
            top += 2
    return best, bq


@njit(inline="always")
def _boxbox_d2(lo, hi, a, b):
    s = 0.0
    for c in range(lo.shape[1]):
        t = lo[a, c] - hi[b, c]
        u = lo[b, c] - hi[a, c]
        if u > t:
            t = u
        if t > 0.0:
            s += t * t
    return s


@njit(cache=True)
def _node_has_edge_below(N, c, best, X, core2, comp, start, end, is_leaf, lo, hi, node_comp, node_core,
                         node_c1, node_core2, stack):
    """Is there a point q outside component ``c`` that could give a point of the
    all-``c`` node ``N`` an edge lighter than ``best``? (False: no point of N needs a query.)"""
    cn = node_core[N]
    if cn >= best:
        return False
    top = 1
    stack[0] = 0
    while top > 0:
        top -= 1
        node = stack[top]
        if node_comp[node] == c:
            continue
        oc = _other_core(node, c, node_core, node_c1, node_core2)
        if max(cn, oc) >= best or max(cn, oc, _boxbox_d2(lo, hi, N, node)) >= best:
            continue
        if is_leaf[node]:
            for q in range(start[node], end[node]):
                if comp[q] == c or core2[q] >= best:
                    continue
                s = 0.0
                for d in range(lo.shape[1]):
                    v = 0.0
                    x = X[q, d]
                    if x < lo[N, d]:
                        v = lo[N, d] - x
                    elif x > hi[N, d]:
                        v = x - hi[N, d]
                    s += v * v
                if s < best:
                    return True
        else:
            stack[top] = 2 * node + 1
            stack[top + 1] = 2 * node + 2
            top += 2
    return False


@njit(parallel=True, cache=True)
def _component_search(order, seg, seg_comp, lb, cw, cp_, cq, X, core2, comp, start, end, is_leaf, lo, hi,
                      node_comp, node_core, node_c1, node_core2, leaf_of, anc, cleared, counts):
    """For each component segment of ``order`` (its candidate points sorted by lower
    bound), improve the component's best edge with kd-tree queries. A point inside a
    node that lies wholly in its component is skipped when a node-level query shows
    that nothing outside the component is close enough (cached per node)."""
    nseg = seg.shape[0] - 1
    for s in prange(nseg):
        c = seg_comp[s]
        best = cw[c]
        bp = cp_[c]
        bq = cq[c]
        stack = np.empty(256, np.int64)
        for t in range(seg[s], seg[s + 1]):
            p = order[t]
            if lb[p] >= best:
                break
            L = leaf_of[p]
            N = anc[L]
            skip = False
            while N >= 0:
                if cleared[N] >= best:
                    skip = True
                    break
                if cleared[N] >= 0.0:
                    counts[s, 0] += 1
                    if not _node_has_edge_below(N, c, best, X, core2, comp, start, end, is_leaf, lo, hi,
                                                node_comp, node_core, node_c1, node_core2, stack):
                        cleared[N] = best
                        skip = True
                        break
                    cleared[N] = -1.0
                # the top node failed: try the point's own leaf (a smaller box)
                N = L if (N != L and node_comp[L] == c) else -1
            if skip:
                continue
            counts[s, 1] += 1
            nb, nq = _query(p, c, best, -1, X, core2, comp, start, end, is_leaf, lo, hi, node_comp,
                            node_core, node_c1, node_core2, stack)
            if nq >= 0 and nb < best:
                best = nb
                bp = p
                bq = nq
        cw[c] = best
        cp_[c] = bp
        cq[c] = bq


@njit(cache=True)
def _top_all_one_component(node_comp, anc):
    """anc[node]: the highest ancestor-or-self of node lying wholly in one component, or -1."""
    for node in range(node_comp.shape[0]):
        if node == 0:
            anc[0] = 0 if node_comp[0] >= 0 else -1
            continue
        a = anc[(node - 1) // 2]
        anc[node] = a if a >= 0 else (node if node_comp[node] >= 0 else -1)


@njit(cache=True)
def _leaf_of(start, end, is_leaf, n):
    out = np.empty(n, np.int64)
    for node in range(start.shape[0]):
        if is_leaf[node]:
            for q in range(start[node], end[node]):
                out[q] = node
    return out


@njit(cache=True)
def _reduce_components(comp, pw, pq, cw, cp_, cq):
    n = comp.shape[0]
    for i in range(n):
        cw[i] = np.inf
        cp_[i] = -1
        cq[i] = -1
    for p in range(n):
        c = comp[p]
        if pq[p] >= 0 and pw[p] < cw[c]:
            cw[c] = pw[p]
            cp_[c] = p
            cq[c] = pq[p]


@njit(cache=True)
def _candidates(comp, pw, lb, cw):
    """Points whose exact best may beat their component's list-based best, grouped by
    component, ascending lower bound within a component."""
    n = comp.shape[0]
    mask = np.zeros(n, np.bool_)
    cnt = 0
    for p in range(n):
        if lb[p] < cw[comp[p]] and pw[p] > lb[p]:
            mask[p] = True
            cnt += 1
    cand = np.empty(cnt, np.int64)
    j = 0
    for p in range(n):
        if mask[p]:
            cand[j] = p
            j += 1
    return cand


@njit(cache=True)
def _merge(parent, cw, cp_, cq, comp, eu, ev, ew, ne):
    n = comp.shape[0]
    for c in range(n):
        if comp[c] != c or cq[c] < 0:
            continue
        a = _find(parent, cp_[c])
        b = _find(parent, cq[c])
        if a != b:
            parent[max(a, b)] = min(a, b)
            eu[ne] = cp_[c]
            ev[ne] = cq[c]
            ew[ne] = cw[c]
            ne += 1
    return ne


def boruvka(tree: Tree, core2: np.ndarray, kd2: np.ndarray, ki: np.ndarray, parent: np.ndarray | None = None,
            edges: tuple | None = None, log=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Boruvka rounds until one component remains; starts from the union-find
    ``parent`` (and its ``edges``) when given. Returns edges (u, v, squared weight)."""
    X = tree.data
    n = X.shape[0]
    if parent is None:
        parent = np.arange(n, dtype=np.int64)
    eu = np.empty(max(n - 1, 0), np.int64)
    ev = np.empty(max(n - 1, 0), np.int64)
    ew = np.empty(max(n - 1, 0), np.float64)
    ne = 0
    if edges is not None:
        m = len(edges[0])
        eu[:m], ev[:m], ew[:m] = edges
        ne = m
    comp = np.empty(n, np.int64)
    nn = tree.start.shape[0]
    node_comp = np.empty(nn, np.int64)
    node_core = np.empty(nn, np.float64)
    node_c1 = np.empty(nn, np.int64)
    node_core2 = np.empty(nn, np.float64)
    pw = np.empty(n, np.float64)
    pq = np.empty(n, np.int64)
    lb = np.empty(n, np.float64)
    cw = np.empty(n, np.float64)
    cp_ = np.empty(n, np.int64)
    cq = np.empty(n, np.int64)
    leaf_of = _leaf_of(tree.start, tree.end, tree.is_leaf, n)
    anc = np.empty(nn, np.int64)
    cleared = np.empty(nn, np.float64)
    rounds = 0
    while ne < n - 1:
        rounds += 1
        _flatten(parent, comp)
        _node_stats(tree.start, tree.end, tree.is_leaf, comp, core2, node_comp, node_core, node_c1, node_core2)
        _list_best(comp, core2, kd2, ki, pw, pq, lb)
        _reduce_components(comp, pw, pq, cw, cp_, cq)
        cand = _candidates(comp, pw, lb, cw)
        if cand.size:
            _top_all_one_component(node_comp, anc)
            cleared[:] = 0.0
            key = np.lexsort((cand, lb[cand], comp[cand]))
            order = cand[key]
            cc = comp[order]
            brk = np.flatnonzero(np.diff(cc)) + 1
            seg = np.concatenate(([0], brk, [order.size])).astype(np.int64)
            seg_comp = cc[seg[:-1]].astype(np.int64)
            counts = np.zeros((seg.size - 1, 2), np.int64)
            _component_search(order, seg, seg_comp, lb, cw, cp_, cq, X, core2, comp, tree.start, tree.end,
                              tree.is_leaf, tree.lo, tree.hi, node_comp, node_core, node_c1, node_core2, leaf_of, anc,
                              cleared, counts)
            nq_ = counts.sum(0)
        else:
            nq_ = (0, 0)
        before = ne
        ne = _merge(parent, cw, cp_, cq, comp, eu, ev, ew, ne)
        if log is not None:
            log(f"boruvka round {rounds}: {cand.size} candidates, {nq_[0]} node / {nq_[1]} point queries, {ne - before} edges")
        if ne == before:  # cannot happen on finite data; guards an endless loop
            raise RuntimeError("Boruvka made no progress (non-finite distances?)")
    return eu[:ne], ev[:ne], ew[:ne]


# --------------------------------------------------------------------------------------
# exact, many columns: Prim over the dense mutual-reachability graph
# --------------------------------------------------------------------------------------

@njit(cache=True)
def _prim(X, core):
    """Prim's MST over ``mr(p, q) = max(core p, core q, d(p, q))`` (plain distances, not
    squared), started at row 0; a point's best distance and source change only on a
    strict improvement, and the next point is the lowest row among the outside points
    of minimal best distance. These are the tie rules of the hdbscan library's
    ``mst_linkage_core_vector`` (its 'best' algorithm above 60 columns), so equal
    weights come out in the same order. O(n^2 d) time, O(n) memory.

    Serial on purpose: a parallel relaxation puts a barrier in each of the n - 1 steps,
    and on the shared 2-core machine, with another job holding a core, that took 90 s
    instead of 25 s at 30k x 64 (digits: 14 s instead of 0.04 s). The distance loop is
    written out (squares summed in column order, as hdbscan, for identical ties); via
    ``_d2`` and a 3-way ``max`` Numba made it 2x slower."""
    n, d = X.shape
    in_tree = np.zeros(n, np.bool_)
    best = np.full(n, np.inf)
    src = np.zeros(n, np.int64)
    eu = np.empty(max(n - 1, 0), np.int64)
    ev = np.empty(max(n - 1, 0), np.int64)
    ew = np.empty(max(n - 1, 0), np.float64)
    cur = 0
    for i in range(n - 1):
        in_tree[cur] = True
        cc = core[cur]
        for j in range(n):
            if in_tree[j]:
                continue
            m = max(cc, core[j])
            if m >= best[j]:  # mr >= m: no strict improvement possible
                continue
            s = 0.0
            for c in range(d):
                t = X[cur, c] - X[j, c]
                s += t * t
            w = max(m, math.sqrt(s))
            if w < best[j]:
                best[j] = w
                src[j] = cur
        nxt = -1
        bw = np.inf
        for j in range(n):
            if not in_tree[j] and (nxt < 0 or best[j] < bw):
                bw = best[j]
                nxt = j
        eu[i] = src[nxt]
        ev[i] = nxt
        ew[i] = bw
        cur = nxt
    return eu, ev, ew


# --------------------------------------------------------------------------------------
# approx: Kruskal over the kNN mutual-reachability graph
# --------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def knn_mr_weights(core2, kd2, ki):
    n, k = kd2.shape
    w = np.empty((n, k), np.float64)
    for p in prange(n):
        for j in range(k):
            w[p, j] = max(core2[p], core2[ki[p, j]], kd2[p, j])
    return w


@njit(cache=True)
def _kruskal(order, k, ki, w, parent, eu, ev, ew):
    ne = 0
    n = parent.shape[0]
    for t in range(order.shape[0]):
        e = order[t]
        p = e // k
        q = ki[p, e - p * k]
        a = _find(parent, p)
        b = _find(parent, q)
        if a != b:
            parent[max(a, b)] = min(a, b)
            eu[ne] = p
            ev[ne] = q
            ew[ne] = w[p, e - p * k]
            ne += 1
            if ne == n - 1:
                break
    return ne


def knn_forest(core2, kd2, ki):
    n, k = kd2.shape
    w = knn_mr_weights(core2, kd2, ki)
    order = np.argsort(w.ravel(), kind="stable")
    parent = np.arange(n, dtype=np.int64)
    eu = np.empty(max(n - 1, 0), np.int64)
    ev = np.empty(max(n - 1, 0), np.int64)
    ew = np.empty(max(n - 1, 0), np.float64)
    ne = _kruskal(order, k, ki, w, parent, eu, ev, ew)
    return parent, (eu[:ne].copy(), ev[:ne].copy(), ew[:ne].copy())


# --------------------------------------------------------------------------------------
# single linkage, condensed tree, selection, GLOSH
# --------------------------------------------------------------------------------------

@njit(cache=True)
def single_linkage(u, v, w):
    """Edges sorted by weight -> scipy-style linkage (left, right, distance, size)."""
    m = u.shape[0]
    n = m + 1
    parent = np.arange(2 * n - 1)
    size = np.ones(2 * n - 1, np.int64)
    Z = np.empty((m, 4), np.float64)
    for i in range(m):
        a = _find(parent, u[i])
        b = _find(parent, v[i])
        Z[i, 0] = min(a, b)
        Z[i, 1] = max(a, b)
        Z[i, 2] = w[i]
        size[n + i] = size[a] + size[b]
        Z[i, 3] = size[n + i]
        parent[a] = n + i
        parent[b] = n + i
    return Z


@njit(cache=True)
def condense_tree(Z, min_cluster_size):
    """hdbscan's condense_tree: rows (parent, child, lambda, child_size); points are
    0..n-1, clusters n, n+1, ... (root n), children numbered after their parents."""
    m = Z.shape[0]
    n = m + 1
    root = 2 * n - 2
    relabel = np.full(2 * n - 1, -1, np.int64)
    relabel[root] = n
    next_label = n + 1
    cap = 2 * n
    rp = np.empty(cap, np.int64)
    rc = np.empty(cap, np.int64)
    rl = np.empty(cap, np.float64)
    rs = np.empty(cap, np.int64)
    pos = 0
    stack = np.empty(2 * n, np.int64)
    for node in range(root, n - 1, -1):
        if relabel[node] < 0:
            continue
        row = node - n
        left = np.int64(Z[row, 0])
        right = np.int64(Z[row, 1])
        lam = 1.0 / Z[row, 2] if Z[row, 2] > 0.0 else np.inf
        lc = np.int64(Z[left - n, 3]) if left >= n else 1
        rcn = np.int64(Z[right - n, 3]) if right >= n else 1
        me = relabel[node]
        if lc >= min_cluster_size and rcn >= min_cluster_size:
            relabel[left] = next_label
            next_label += 1
            rp[pos] = me; rc[pos] = relabel[left]; rl[pos] = lam; rs[pos] = lc
            pos += 1
            relabel[right] = next_label
            next_label += 1
            rp[pos] = me; rc[pos] = relabel[right]; rl[pos] = lam; rs[pos] = rcn
            pos += 1
            continue
        for side in range(2):
            sub = left if side == 0 else right
            cnt = lc if side == 0 else rcn
            if cnt >= min_cluster_size:
                relabel[sub] = me
                continue
            top = 1
            stack[0] = sub
            while top > 0:
                top -= 1
                x = stack[top]
                if x < n:
                    rp[pos] = me; rc[pos] = x; rl[pos] = lam; rs[pos] = 1
                    pos += 1
                else:
                    stack[top] = np.int64(Z[x - n, 0])
                    stack[top + 1] = np.int64(Z[x - n, 1])
                    top += 2
    return rp[:pos].copy(), rc[:pos].copy(), rl[:pos].copy(), rs[:pos].copy()


@njit(cache=True)
def _stability(parent, child, lam, size, n, ncl):
    births = np.zeros(ncl, np.float64)
    for i in range(child.shape[0]):
        if child[i] >= n:
            births[child[i] - n] = lam[i]
    stab = np.zeros(ncl, np.float64)
    for i in range(parent.shape[0]):
        stab[parent[i] - n] += (lam[i] - births[parent[i] - n]) * size[i]
    return births, stab


@njit(cache=True)
def _deaths(parent, lam, n, ncl):
    d = np.zeros(ncl, np.float64)
    for i in range(parent.shape[0]):
        if lam[i] > d[parent[i] - n]:
            d[parent[i] - n] = lam[i]
    return d


@njit(cache=True)
def _label_points(parent, child, n, ncl, selected):
    """Each point's selected ancestor (or -1): a point belongs to the selected cluster
    above the cluster it falls out of."""
    # cluster -> parent cluster
    up = np.full(ncl, -1, np.int64)
    for i in range(child.shape[0]):
        if child[i] >= n:
            up[child[i] - n] = parent[i] - n
    sel_of = np.full(ncl, -1, np.int64)
    for c in range(ncl):  # parents have smaller ids: top-down
        if selected[c] >= 0:
            sel_of[c] = selected[c]
        elif up[c] >= 0:
            sel_of[c] = sel_of[up[c]]
    labels = np.full(n, -1, np.int64)
    from_cl = np.zeros(n, np.int64)
    for i in range(child.shape[0]):
        if child[i] < n:
            labels[child[i]] = sel_of[parent[i] - n]
            from_cl[child[i]] = parent[i] - n
    return labels, from_cl


@njit(cache=True)
def _glosh(parent, child, lam, n, ncl):
    deaths = _deaths(parent, lam, n, ncl)
    # propagate the max lambda of descendants to ancestors (children after parents)
    for i in range(child.shape[0] - 1, -1, -1):
        if child[i] >= n:
            c = child[i] - n
            p = parent[i] - n
            if deaths[c] > deaths[p]:
                deaths[p] = deaths[c]
    out = np.zeros(n, np.float64)
    for i in range(child.shape[0]):
        if child[i] < n:
            lm = deaths[parent[i] - n]
            if lm == 0.0 or not np.isfinite(lam[i]):
                out[child[i]] = 0.0
            else:
                out[child[i]] = (lm - lam[i]) / lm
    return out


def select_clusters(ct, n: int, method: str = "eom", epsilon: float = 0.0):
    """EOM / leaf selection plus cluster_selection_epsilon, as hdbscan's get_clusters
    with allow_single_cluster=False. Returns labels, probabilities, per-cluster info."""
    parent, child, lam, size = ct
    if parent.size == 0:
        return np.full(n, -1, np.int64), np.zeros(n), np.zeros(n), {"selected": [], "stability": []}
    ncl = int(parent.max()) - n + 1
    births, stab = _stability(parent, child, lam, size, n, ncl)
    is_cl_edge = child >= n
    cparent = parent[is_cl_edge] - n
    cchild = child[is_cl_edge] - n
    clam = lam[is_cl_edge]
    children: dict[int, list[int]] = {}
    for p_, c_ in zip(cparent.tolist(), cchild.tolist()):
        children.setdefault(p_, []).append(c_)
    birth_lam = {c_: l_ for c_, l_ in zip(cchild.tolist(), clam.tolist())}
    upmap = {c_: p_ for p_, c_ in zip(cparent.tolist(), cchild.tolist())}
    nodes = list(range(ncl - 1, 0, -1))  # all but the root, children before parents
    is_cluster = {c: True for c in nodes}
    stab_l = stab.tolist()

    def subtree(c):
        out, todo = [], [c]
        while todo:
            x = todo.pop()
            out.append(x)
            todo.extend(children.get(x, []))
        return out

    def eps_search(leaves):
        sel, processed = [], set()
        for leaf in sorted(leaves):
            eps = 1.0 / birth_lam[leaf]
            if eps < epsilon:
                if leaf in processed:
                    continue
                cur = leaf
                while True:
                    par = upmap[cur]
                    if par == 0:
                        break
                    if 1.0 / birth_lam[par] > epsilon:
                        cur = par
                        break
                    cur = par
                sel.append(cur)
                for s in subtree(cur):
                    if s != cur:
                        processed.add(s)
            else:
                sel.append(leaf)
        return set(sel)

    if method == "eom":
        for c in nodes:
            sub = sum(stab_l[ch] for ch in children.get(c, []))
            if sub > stab_l[c]:
                is_cluster[c] = False
                stab_l[c] = sub
            else:
                for s in subtree(c):
                    if s != c:
                        is_cluster[s] = False
        if epsilon != 0.0 and len(nodes):
            chosen = eps_search([c for c in nodes if is_cluster[c]])
            is_cluster = {c: c in chosen for c in nodes}
    elif method == "leaf":
        leaves = [c for c in nodes if c not in children]
        chosen = eps_search(leaves) if epsilon != 0.0 else set(leaves)
        is_cluster = {c: c in chosen for c in nodes}
    else:
        raise ValueError(f"unknown selection method {method!r}")
    clusters = sorted(c for c in nodes if is_cluster[c])
    selected = np.full(ncl, -1, np.int64)
    for i, c in enumerate(clusters):
        selected[c] = i
    labels, from_cl = _label_points(parent, child, n, ncl, selected)
    deaths = _deaths(parent, lam, n, ncl)
    # probabilities: lambda at which the point leaves, relative to its cluster's max
    prob = np.zeros(n)
    pt = child < n
    pts, plam = child[pt], lam[pt]
    lab = labels[pts]
    ok = lab >= 0
    cl_ids = np.asarray(clusters, np.int64)
    if ok.any():
        mx = deaths[cl_ids[lab[ok]]]
        lm = np.minimum(plam[ok], mx)
        with np.errstate(invalid="ignore", divide="ignore"):
            pr = np.where((mx == 0.0) | ~np.isfinite(plam[ok]), 1.0, lm / mx)
        prob[pts[ok]] = pr
    glosh = _glosh(parent, child, lam, n, ncl)
    info = {"selected": clusters, "stability": [float(stab[c]) for c in clusters],
            "birth_lambda": [float(birth_lam.get(c, 0.0)) for c in clusters]}
    return labels, prob, glosh, info


# --------------------------------------------------------------------------------------
# the whole thing
# --------------------------------------------------------------------------------------

@dataclass
class Result:
    labels: np.ndarray
    probabilities: np.ndarray
    outlier_scores: np.ndarray
    core_distances: np.ndarray
    mst: tuple  # (u, v, weight) in original row indices, sorted by weight
    n_clusters: int
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def mst_weight(self) -> float:
        return float(np.sum(self.mst[2]))


def hdbscan(X, min_cluster_size: int = 5, min_samples: int | None = None, selection: str = "eom",
            epsilon: float = 0.0, mode: str = "exact", knn: int | None = None, log=None,
            max_leaves: int | None = None) -> Result:
    """Cluster the rows of ``X`` (float, finite). ``min_samples`` defaults to
    ``min_cluster_size`` and counts neighbours excluding the point (hdbscan's
    convention)."""
    import time

    X = np.ascontiguousarray(X, np.float64)
    n = X.shape[0]
    if X.ndim != 2:
        raise ValueError("X must be 2-D")
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
    if knn is None:
        if mode == "exact" and X.shape[1] > PRIM_MIN_COLUMNS:
            knn = ms  # Prim needs the core distances only
        else:
            knn = max(ms, 16) if mode == "exact" else max(ms, 10)
    k = min(n - 1, max(knn, ms))
    t = {}
    t0 = time.perf_counter()
    tree = build_tree(X)
    t["tree"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if max_leaves is None:
        max_leaves = 0 if mode == "exact" else approx_leaves(X.shape[1])
    kd2, ki = tree_knn(tree.data, tree.start, tree.end, tree.is_leaf, tree.lo, tree.hi, k,
                       max_leaves if mode == "approx" else 0)
    core2 = np.ascontiguousarray(kd2[:, ms - 1])
    t["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    perm = tree.perm
    core = np.empty(n)
    core[perm] = np.sqrt(core2)
    prim = mode == "exact" and X.shape[1] > PRIM_MIN_COLUMNS
    if prim:
        # rows in input order, as hdbscan's Prim: its start point and tie rules refer to them
        u, v, w = _prim(X, core)
        perm = np.arange(n, dtype=np.int64)
    elif mode == "exact":
        u, v, w2 = boruvka(tree, core2, kd2, ki, log=log)
    else:
        parent, edges = knn_forest(core2, kd2, ki)
        if log is not None:
            log(f"kNN forest: {len(edges[0])} edges, {n - 1 - len(edges[0])} bridges needed")
        u, v, w2 = boruvka(tree, core2, kd2, ki, parent=parent, edges=edges, log=log)
    t["mst"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if prim:
        # numpy's default (unstable) argsort on Prim's edge order, exactly as hdbscan's
        # _hdbscan_prims_kdtree sorts: equal weights then merge in hdbscan's order
        order = np.argsort(w)
    else:
        w = np.sqrt(w2)
        order = np.argsort(w, kind="stable")
    u, v, w = u[order], v[order], w[order]
    Z = single_linkage(u, v, w)
    ct = condense_tree(Z, int(min_cluster_size))
    labels_t, prob_t, glosh_t, info = select_clusters(ct, n, selection, float(epsilon))
    t["tree_selection"] = time.perf_counter() - t0
    labels = np.empty(n, np.int64)
    labels[perm] = labels_t
    prob = np.empty(n)
    prob[perm] = prob_t
    glosh = np.empty(n)
    glosh[perm] = glosh_t
    info["min_samples_used"] = ms
    info["knn"] = k
    info["mst_algorithm"] = "prim" if prim else "boruvka"
    return Result(labels, prob, glosh, core, (perm[u], perm[v], w), len(info["selected"]), t, info)
