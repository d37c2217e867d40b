"""One test (or a few) per step of the HDBSCAN in plugins/fraud/hdbscan/: the search
structure, union-find, each registered kernel against an independent computation, and
the host steps (linkage, condensed tree, selection, GLOSH) against the hdbscan library's
own functions on the same input. The kernels' backends are checked against each other by
tests/test_kernels_conformance.py (and the simulator suite)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.plugins.fraud.bench import blobs


@pytest.fixture(scope="module")
def data():
    X, _ = blobs(1500, 12, seed=7, noise=0.1)
    return X


def _knn_mr(X, k, ms):
    from gpuforge.plugins.fraud.hdbscan.knn import knn_cpu

    kd2, ki = knn_cpu(X, k)
    return kd2[:, ms - 1].copy(), kd2, ki


# --- search structure and union-find --------------------------------------------------------

def test_cells_partition_the_points_and_bound_them(data):
    from gpuforge.plugins.fraud.hdbscan.cells import build_cells

    c = build_cells(data)
    n = len(data)
    assert np.array_equal(np.sort(c.row), np.arange(n)) and np.array_equal(c.pos[c.row], np.arange(n))
    assert np.array_equal(c.X, data[c.row])
    assert c.cell_start[0] == 0 and c.cell_start[-1] == n and c.shell_start[-1] == n
    cell_of = c.shell_cell[c.shell_of]
    r = np.sqrt(((c.X - c.centre[cell_of]) ** 2).sum(1))
    np.testing.assert_allclose(r, c.r, rtol=1e-12)
    for j in range(c.n_cells):
        a, b = c.cell_start[j], c.cell_start[j + 1]
        assert np.all(np.diff(c.r[a:b]) >= 0) and np.all(cell_of[a:b] == j)
        assert a <= c.halo_start[j] <= b and c.radius[j] == c.r[b - 1]
    for s in range(len(c.shell_lo)):
        a, b = c.shell_start[s], c.shell_start[s + 1]
        assert b > a and c.shell_lo[s] == c.r[a] and c.shell_hi[s] == c.r[b - 1]
    again = build_cells(data)
    assert np.array_equal(again.row, c.row)  # deterministic


def test_union_find_matches_a_plain_one():
    from gpuforge.plugins.fraud.hdbscan.union_find import flatten, union

    rng = np.random.default_rng(0)
    n = 400
    parent = np.arange(n, dtype=np.int64)
    ref = list(range(n))

    def root(i):
        while ref[i] != i:
            i = ref[i]
        return i

    for a, b in rng.integers(0, n, (300, 2)).tolist():
        joined = union(parent, a, b)
        assert joined == (root(a) != root(b))
        ra, rb = root(a), root(b)
        ref[max(ra, rb)] = min(ra, rb)
    comp = np.empty(n, np.int64)
    flatten(parent, comp)
    assert comp.tolist() == [root(i) for i in range(n)]


# --- kernels against independent computations -----------------------------------------------

def test_knn_against_sklearn(data):
    from sklearn.neighbors import NearestNeighbors

    from gpuforge.plugins.fraud.hdbscan.knn import knn_cpu

    kd2, ki = knn_cpu(data, 16)
    dist, _ = NearestNeighbors(n_neighbors=17).fit(data).kneighbors(data)
    np.testing.assert_allclose(np.sqrt(kd2), dist[:, 1:], rtol=1e-12)
    assert (ki != np.arange(len(data))[:, None]).all()


def test_approx_graph_recall_grows_with_the_refine_step(data):
    from gpuforge.plugins.fraud.hdbscan import approx as A

    cell_of, nbr = A.partition(data, 10, neighbours=2)
    d2, idx = A.knn_local_cpu(data, 10, cell_of, nbr)
    rows = np.arange(0, len(data), 7)
    before = A.recall(data, idx, rows)
    d2r, idxr = A.knn_refine_cpu(data, d2, idx)
    after = A.recall(data, idxr, rows)
    assert after > before and after > 0.8
    assert (d2r <= d2).all()  # a join never loses a nearer neighbour


def test_knn_forest_weight_equals_scipys(data):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    from gpuforge.plugins.fraud.hdbscan.kruskal import knn_forest_cpu

    core2, kd2, ki = _knn_mr(data, 8, 5)
    u, v, w2 = knn_forest_cpu(core2, kd2, ki)
    n = len(data)
    p = np.repeat(np.arange(n), 8)
    w = np.sqrt(np.maximum(np.maximum(core2[p], core2[ki.ravel()]), kd2.ravel()))
    g = coo_matrix((w, (p, ki.ravel())), shape=(n, n)).tocsr()
    g = g.maximum(g.T)
    ncomp, _ = connected_components(g, directed=False)
    assert len(u) == n - ncomp
    assert np.sqrt(w2).sum() == pytest.approx(minimum_spanning_tree(g).sum(), rel=1e-12)
    assert np.all(np.diff(w2) >= 0) and (u < v).all()


def test_boruvka_tree_weight_equals_scipys_on_the_dense_graph(data):
    from scipy.sparse.csgraph import minimum_spanning_tree

    from gpuforge.plugins.fraud.hdbscan.boruvka import mst_cpu
    from gpuforge.plugins.fraud.hdbscan.edge_order import sq_dist_matrix

    X = data[:600]
    core2, kd2, ki = _knn_mr(X, 16, 10)
    e = np.zeros(0, np.int64)
    u, v, w2 = mst_cpu(X, core2, kd2, ki, e, e, True)
    W = np.sqrt(np.maximum(np.maximum(core2[:, None], core2[None, :]), sq_dist_matrix(X, X)))
    assert len(u) == len(X) - 1
    assert np.sqrt(w2).sum() == pytest.approx(minimum_spanning_tree(W).sum(), rel=1e-12)
    # the same tree whether or not the kNN lists help, and when it must contain a forest
    assert all(np.array_equal(a, b) for a, b in zip((u, v, w2), mst_cpu(X, core2, kd2[:, :0], ki[:, :0], e, e, False)))
    sub = slice(0, len(u), 3)
    forced = mst_cpu(X, core2, kd2, ki, u[sub].copy(), v[sub].copy(), True)
    assert all(np.array_equal(a, b) for a, b in zip((u, v, w2), forced))


def test_prim_matches_hdbscans_own_prim(data):
    from hdbscan._hdbscan_linkage import mst_linkage_core_vector
    from hdbscan.dist_metrics import DistanceMetric

    from gpuforge.plugins.fraud.hdbscan.prim import prim_cpu

    X = np.round(data[:500] * 2)  # integer grid: many equal weights
    core = np.sqrt(_knn_mr(X, 5, 5)[0])
    u, v, w = prim_cpu(X, core)
    ref = mst_linkage_core_vector(X, core, DistanceMetric.get_metric("euclidean"), 1.0)
    assert np.array_equal(ref[:, 0].astype(np.int64), u) and np.array_equal(ref[:, 1].astype(np.int64), v)
    assert np.array_equal(ref[:, 2], w)


# --- host steps against the hdbscan library's functions --------------------------------------

@pytest.fixture(scope="module")
def tree(data):
    from gpuforge.plugins.fraud.hdbscan import hdbscan

    res = hdbscan(data, 30, 10)
    return res.mst


def test_single_linkage_matches_hdbscans_label(tree):
    from hdbscan._hdbscan_linkage import label

    from gpuforge.plugins.fraud.hdbscan.linkage import single_linkage

    u, v, w = tree
    Z = single_linkage(u, v, w)
    ref = label(np.column_stack([u, v, w]).astype(np.float64))
    np.testing.assert_array_equal(Z[:, 2:], ref[:, 2:])  # heights and sizes
    np.testing.assert_array_equal(Z[:, :2], np.sort(ref[:, :2], axis=1))  # the same pair merges (ours: smaller first)


def _condensed(tree, mcs):
    from gpuforge.plugins.fraud.hdbscan.condense import condense_tree
    from gpuforge.plugins.fraud.hdbscan.linkage import single_linkage

    Z = single_linkage(*tree)
    from hdbscan._hdbscan_tree import condense_tree as ref_condense

    return Z, condense_tree(Z, mcs), ref_condense(Z, mcs)


def test_condensed_tree_matches_hdbscans(tree):
    """Cluster ids differ (hdbscan numbers them breadth-first, we in merge order), so
    compare what ids do not change: where each point falls out, and at what lambda."""
    n = len(tree[0]) + 1
    _, (parent, child, lam, size), ref = _condensed(tree, 30)
    pts = child < n
    ours = np.full(n, np.nan)
    ours[child[pts]] = lam[pts]
    theirs = np.full(n, np.nan)
    rp = ref["child"] < n
    theirs[ref["child"][rp]] = ref["lambda_val"][rp]
    np.testing.assert_array_equal(ours, theirs)
    assert sorted(zip(lam[~pts].tolist(), size[~pts].tolist())) == \
        sorted(zip(ref["lambda_val"][~rp].tolist(), ref["child_size"][~rp].tolist()))


@pytest.mark.parametrize("method,epsilon", [("eom", 0.0), ("leaf", 0.0), ("eom", 2.0), ("leaf", 1.5)])
def test_selection_and_glosh_match_hdbscans(tree, method, epsilon):
    from hdbscan._hdbscan_tree import compute_stability, get_clusters, outlier_scores
    from sklearn.metrics import adjusted_rand_score

    from gpuforge.plugins.fraud.hdbscan.selection import select_clusters

    n = len(tree[0]) + 1
    _, ct, ref = _condensed(tree, 30)
    labels, prob, glosh, _ = select_clusters(ct, n, method, epsilon)
    rl, rprob, _ = get_clusters(ref, compute_stability(ref), method, False, False, epsilon)
    assert adjusted_rand_score(rl, labels) == 1.0 and ((rl == -1) == (labels == -1)).all()
    np.testing.assert_array_equal(prob, rprob)
    np.testing.assert_array_equal(glosh, outlier_scores(ref))
