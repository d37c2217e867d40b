"""Cluster selection from the condensed tree (hdbscan's ``get_clusters`` with
``allow_single_cluster=False``): stability, excess of mass (eom) or leaf selection,
``cluster_selection_epsilon``, labels and membership probabilities."""
from __future__ import annotations

import numpy as np
from numba import njit

from gpuforge.plugins.fraud.hdbscan.glosh import deaths, glosh


@njit(cache=True)
def stability(parent, child, lam, size, n, ncl):
    """Per cluster: its birth lambda and sum over its points and child clusters of
    (lambda leaving - birth lambda) * size."""
    births = np.zeros(ncl, np.float64)
    for i in range(child.shape[0]):
        if child[i] >= n:
            births[child[i] - n] = lam[i]
    stab = np.zeros(ncl, np.float64)
    for i in range(parent.shape[0]):
        stab[parent[i] - n] += (lam[i] - births[parent[i] - n]) * size[i]
    return births, stab


@njit(cache=True)
def label_points(parent, child, n, ncl, selected):
    """Each point's selected ancestor (or -1): a point belongs to the selected cluster
    above the cluster it falls out of."""
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
    for i in range(child.shape[0]):
        if child[i] < n:
            labels[child[i]] = sel_of[parent[i] - n]
    return labels


def select_clusters(ct, n: int, method: str = "eom", epsilon: float = 0.0):
    """Returns labels, probabilities, GLOSH scores and per-cluster info."""
    parent, child, lam, size = ct
    if parent.size == 0:
        return np.full(n, -1, np.int64), np.zeros(n), np.zeros(n), {"selected": [], "stability": []}
    ncl = int(parent.max()) - n + 1
    births, stab = stability(parent, child, lam, size, n, ncl)
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
    labels = label_points(parent, child, n, ncl, selected)
    top = deaths(parent, lam, n, ncl)
    # probabilities: lambda at which the point leaves, relative to its cluster's max
    prob = np.zeros(n)
    pt = child < n
    pts, plam = child[pt], lam[pt]
    lab = labels[pts]
    ok = lab >= 0
    cl_ids = np.asarray(clusters, np.int64)
    if ok.any():
        mx = top[cl_ids[lab[ok]]]
        lm = np.minimum(plam[ok], mx)
        with np.errstate(invalid="ignore", divide="ignore"):
            pr = np.where((mx == 0.0) | ~np.isfinite(plam[ok]), 1.0, lm / mx)
        prob[pts[ok]] = pr
    scores = glosh(parent, child, lam, n, ncl)
    point_lambda = np.zeros(n)
    point_lambda[pts] = plam
    info = {"selected": clusters, "stability": [float(stab[c]) for c in clusters],
            "birth_lambda": [float(birth_lam.get(c, 0.0)) for c in clusters],
            "max_lambda": [float(top[c]) for c in clusters],
            "point_lambda": point_lambda}  # lambda at which each point leaves the tree (prediction)
    return labels, prob, scores, info
