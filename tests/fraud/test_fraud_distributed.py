"""Approx HDBSCAN on a 2-worker Dask LocalCluster equals the one-process run: the same
MST (edges and weights, bit for bit) and labels for 1, 2, 3 and 7 partitions, and when a
worker is killed mid-run."""
from __future__ import annotations


import numpy as np
import pytest
from dask_faults import run_killing_a_busy_worker

pytestmark = pytest.mark.dist
pytest.importorskip("dask.distributed")

MCS = 25


@pytest.fixture(scope="module")
def data():
    from gpuforge.plugins.fraud.hdbscan import hdbscan
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs

    X = _blobs(7, 20_000, 8)
    return X, hdbscan(X, min_cluster_size=MCS, mode="approx")


@pytest.fixture(scope="module")
def client():
    from gpuforge.core.cluster import ClusterSpec, connect

    with connect(ClusterSpec("local", workers=2)) as c:
        yield c


def same(r, ref):
    assert r.mst_weight == ref.mst_weight
    for a, b in zip(r.mst, ref.mst):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.labels, ref.labels)
    np.testing.assert_array_equal(r.outlier_scores, ref.outlier_scores)


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_equals_one_process(data, client, parts):
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

    X, ref = data
    assert ref.n_clusters >= 2  # a tree worth comparing
    r = hdbscan_distributed(np.array_split(X, parts), client, min_cluster_size=MCS)
    same(r, ref)
    assert r.info["tasks"] == parts
    assert r.info["bytes_moved"]["knn"] > X.nbytes  # the candidate rows did travel


def test_uneven_parts_and_more_tasks_than_parts(data, client):
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

    X, ref = data
    parts = [X[:100], X[100:15_000], X[15_000:]]
    same(hdbscan_distributed(parts, client, min_cluster_size=MCS, tasks=5), ref)


def test_wide_rows_with_the_join_step(client):
    """Above approx.GEMM_MIN_COLUMNS columns the kNN runs float32-screened blocks and one
    NN-descent join step, which reads lists two hops out: still the one-process result."""
    from gpuforge.plugins.fraud.hdbscan import hdbscan
    from gpuforge.plugins.fraud.hdbscan.approx import GEMM_MIN_COLUMNS, REFINE_STEPS
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs

    from gpuforge.plugins.fraud.hdbscan.approx import EXACT_KNN_COLUMNS

    X = _blobs(8, 6000, 40)  # above the columns where approx takes the exact kNN: the cells path
    assert X.shape[1] > max(GEMM_MIN_COLUMNS, EXACT_KNN_COLUMNS[1]) and REFINE_STEPS[False] >= 1
    ref = hdbscan(X, min_cluster_size=MCS, mode="approx")
    r = hdbscan_distributed(np.array_split(X, 3), client, min_cluster_size=MCS)
    same(r, ref)
    assert r.info["bytes_moved"]["refine"] > 0


def test_merge_forests_is_the_forest_of_the_union():
    from gpuforge.plugins.fraud.hdbscan.distributed import merge_forests
    from gpuforge.plugins.fraud.hdbscan.kruskal import knn_edges, knn_forest
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs, knn

    x = np.round(_blobs(3, 300, 3))  # many tied weights: (w2, u, v) decides
    kd2, ki = knn(x, 6)
    core2 = kd2[:, 3].copy()
    whole = knn_forest(core2, kd2, ki)
    a, b, w2 = knn_edges(core2, kd2, ki)
    half = np.arange(a.size) % 2 == 0

    def forest(sel):  # Kruskal on a subset of the edges (already in (w2, a, b) order)
        parent = list(range(300))

        def root(i):
            while parent[i] != i:
                i = parent[i]
            return i
        keep = []
        for i in np.flatnonzero(sel):
            ra, rb = root(a[i]), root(b[i])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
                keep.append(i)
        return a[keep], b[keep], w2[keep]

    merged = merge_forests(forest(half), forest(~half))
    for p, q in zip(merged, whole):
        np.testing.assert_array_equal(p, q)


def test_a_killed_worker_changes_nothing(data, client):
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

    X, ref = data
    r, error, killed = run_killing_a_busy_worker(
        client, lambda: hdbscan_distributed(np.array_split(X, 4), client, min_cluster_size=MCS), wait_s=60, join_s=300)
    assert killed is not None, "no task ever ran"
    assert error is None, error
    same(r, ref)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def test_sizes_where_approx_takes_the_exact_knn_run_on_the_driver(client):
    """Up to approx.EXACT_KNN_MAX_ROWS rows at 9-32 columns one process takes the exact
    kNN; the distributed call gives that same result (it runs it on the driver)."""
    from gpuforge.plugins.fraud.hdbscan import hdbscan
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs

    X = _blobs(8, 3000, 16)
    ref = hdbscan(X, min_cluster_size=MCS, mode="approx")
    r = hdbscan_distributed(np.array_split(X, 3), client, min_cluster_size=MCS)
    same(r, ref)
    assert r.info["distributed"] is False
