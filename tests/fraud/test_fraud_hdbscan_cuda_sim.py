"""The whole clustering with every kernel on simulated CUDA (this file runs only in the
NUMBA_ENABLE_CUDASIM=1 pytest process): the tree and the labels must be identical to the
numba-cpu and reference runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpuforge.plugins.fraud.bench import blobs
from gpuforge.plugins.fraud.hdbscan import hdbscan
from gpuforge.plugins.fraud.hdbscan.knn import _blobs


def _same(a, b):
    assert all(np.array_equal(x, y) for x, y in zip(a.mst, b.mst))
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.probabilities, b.probabilities) and np.array_equal(a.outlier_scores, b.outlier_scores)


@pytest.mark.parametrize("mode,n,d", [("exact", 120, 4), ("approx", 120, 5), ("exact", 40, 64)])
def test_clustering_on_simulated_cuda_equals_cpu_and_reference(mode, n, d):
    X = _blobs(2, n, d, centres=3)  # three blobs, 10% noise
    mcs = 10 if n > 60 else 5
    runs = {b: hdbscan(X, mcs, 4, mode=mode, backend=b) for b in ("numba-cuda", "numba-cpu", "reference")}
    assert set(runs["numba-cuda"].info["kernels"].values()) == {"numba-cuda"}
    assert runs["numba-cuda"].n_clusters >= 2
    _same(runs["numba-cuda"], runs["numba-cpu"])
    _same(runs["numba-cuda"], runs["reference"])


def test_cli_backend_numba_cuda_gives_the_cpu_labels(run_cli, tmp_path):
    X, _ = blobs(100, 3, seed=4, noise=0.1)
    np.save(tmp_path / "x.npy", X)
    out = {}
    for backend in ("numba-cuda", "numba-cpu"):
        r = run_cli("--backend", backend, "fraud", "cluster", str(tmp_path / "x.npy"), "--out",
                    str(tmp_path / f"{backend}.parquet"), "--min-cluster-size", "10", "--min-samples", "4",
                    env={"NUMBA_ENABLE_CUDASIM": "1"})
        assert r.code == 0, r
        out[backend] = pd.read_parquet(tmp_path / f"{backend}.parquet")
    pd.testing.assert_frame_equal(out["numba-cuda"], out["numba-cpu"])
