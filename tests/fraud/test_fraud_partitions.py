"""A folder of parquet files is a valid input and output of `fraud cluster`: same rows
and labels as the one-file table, read by row group, written all or nothing."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from gpuforge.plugins.fraud.hdbscan.knn import _blobs

    d = tmp_path_factory.mktemp("parts")
    X = _blobs(3, 3000, 5)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    df.insert(0, "session_id", np.arange(3000) * 7)
    df["note"] = "x"  # not numeric: left out, and never read after the first row group
    (d / "ds").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(3000), 3)):
        df.iloc[rows].to_parquet(d / "ds" / f"p{i}.parquet", index=False, row_group_size=400)
    df.to_parquet(d / "one.parquet", index=False)
    return d


def cluster(run_cli, *args):
    return run_cli("--json", "fraud", "cluster", *map(str, args), "--mode", "approx", "--min-cluster-size", "20")


def test_folder_in_folder_out_equals_one_file(tables, tmp_path, run_cli):
    r1 = cluster(run_cli, tables / "one.parquet", "--out", tmp_path / "a.parquet")
    r2 = cluster(run_cli, tables / "ds", "--out", tmp_path / "out")
    assert r1.code == 0 and r2.code == 0, r2.stderr
    a, b = json.loads(r1.stdout), json.loads(r2.stdout)
    assert a["mst_weight"] == b["mst_weight"] and a["columns"] == b["columns"] == [f"f{i}" for i in range(5)]
    files = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))  # and the run's manifest.json
    assert files == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    sizes = [len(pd.read_parquet(tmp_path / "out" / f)) for f in files]
    assert sizes == [len(pd.read_parquet(p)) for p in sorted((tables / "ds").glob("*.parquet"))]
    whole = pd.concat([pd.read_parquet(tmp_path / "out" / f) for f in files], ignore_index=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), whole)
    assert not [p for p in tmp_path.iterdir() if ".gpuforge" in p.name or p.name.endswith(".tmp")]


@pytest.mark.dist
def test_cluster_option_gives_the_same_labels(tables, tmp_path, run_cli):
    pytest.importorskip("dask.distributed")
    r1 = cluster(run_cli, tables / "ds", "--out", tmp_path / "one.parquet")
    r2 = run_cli("--cluster", "local:2", "--json", "fraud", "cluster", str(tables / "ds"), "--out",
                 str(tmp_path / "two.parquet"), "--mode", "approx", "--min-cluster-size", "20")
    assert r1.code == 0 and r2.code == 0, r2.stderr
    assert json.loads(r2.stdout)["distributed"] is True and json.loads(r1.stdout)["distributed"] is False
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))


def test_read_numeric_by_row_group(tables):
    from gpuforge.plugins.fraud.partitions import read_numeric

    parts, used, ids, id_col, sizes = read_numeric(tables / "ds", None)
    assert len(parts) == 9 and max(len(p) for p in parts) == 400  # 3 files x 3 row groups
    assert id_col == "session_id" and np.array_equal(ids, np.arange(3000) * 7) and sizes == [1000] * 3


def test_bad_folders(tables, tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cluster(run_cli, empty, "--out", tmp_path / "o.parquet")
    assert r.code == 3 and not (tmp_path / "o.parquet").exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pd.read_parquet(tables / "ds" / "p0.parquet").to_parquet(mixed / "a.parquet")
    pd.read_parquet(tables / "ds" / "p1.parquet").drop(columns=["f2"]).to_parquet(mixed / "b.parquet")
    r = cluster(run_cli, mixed, "--out", tmp_path / "o2")
    assert r.code == 3 and "f2" in r.stderr and not (tmp_path / "o2").exists()
    (tmp_path / "taken").mkdir()
    r = cluster(run_cli, tables / "ds", "--out", tmp_path / "taken")
    assert r.code == 3 and "--force" in r.stderr


def test_simulate_and_features_per_file(tmp_path):
    from gpuforge.core.errors import BadInputError
    from gpuforge.plugins.fraud.features import compute_features
    from gpuforge.plugins.fraud.partitions import features_dataset, simulate_dataset

    s = simulate_dataset(tmp_path / "clicks", 1200, per_file=500)
    files = sorted((tmp_path / "clicks").glob("*.parquet"))
    assert s["files"] == len(files) == 3 and s["sessions"] == sum(s["sessions_by_label"].values()) == 1200
    clicks = pd.read_parquet(tmp_path / "clicks")
    assert clicks["session_id"].nunique() == 1200 and len(clicks) == s["events"]
    f = features_dataset(tmp_path / "clicks", tmp_path / "feats")
    assert f["sessions"] == 1200
    one, _, _ = compute_features(pd.read_parquet(files[1]))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "feats" / "part-00001.parquet"), one)
    split = tmp_path / "split"
    split.mkdir()
    first = pd.read_parquet(files[0])
    first.iloc[:7].to_parquet(split / "a.parquet")  # one session cut in two files
    first.iloc[7:].to_parquet(split / "b.parquet")
    with pytest.raises(BadInputError, match="span"):
        features_dataset(split, tmp_path / "f2")
    assert not (tmp_path / "f2").exists()


def test_embed_inference_per_file(tmp_path, run_cli):
    pytest.importorskip("torch")
    from gpuforge.plugins.fraud.partitions import embed_dataset, simulate_dataset

    simulate_dataset(tmp_path / "clicks", 400, per_file=200)
    files = sorted((tmp_path / "clicks").glob("*.parquet"))
    r = run_cli("fraud", "embed", str(files[0]), "--out", str(tmp_path / "e0.parquet"), "--epochs", "1", "--dim", "8")
    assert r.code == 0, r.stderr
    model = tmp_path / "e0.parquet.model.safetensors"
    r = run_cli("fraud", "embed", str(files[1]), "--out", str(tmp_path / "e1.parquet"), "--model", str(model))
    assert r.code == 0, r.stderr
    out = embed_dataset(tmp_path / "clicks", tmp_path / "emb", model)
    assert out["sessions"] == 400 and out["dim"] == 8
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "emb" / "part-00001.parquet"),
                                  pd.read_parquet(tmp_path / "e1.parquet"))


def test_matrix_held_once_same_result(tables):
    """`fraud cluster` stacks the row groups while freeing them and standardizes the
    matrix in place: the same bits as vstack + a standardized copy, the same clustering."""
    from gpuforge.plugins.fraud.cluster import cluster_matrix, stack_releasing, standardize
    from gpuforge.plugins.fraud.partitions import read_numeric

    parts = read_numeric(tables / "ds", None)[0]
    want = np.vstack(parts)
    X = stack_releasing(parts)
    assert parts == [] and np.array_equal(X, want)
    ref = standardize(X)
    Z = X.copy()
    assert standardize(Z, in_place=True) is Z and np.array_equal(Z, ref)
    assert np.array_equal(standardize(np.arange(6).reshape(3, 2)), standardize(np.arange(6.0).reshape(3, 2)))

    kw = dict(min_cluster_size=20, mode="approx")
    a, fa = cluster_matrix(X.copy(), **kw)
    Y = X.copy()
    b, fb = cluster_matrix(Y, overwrite=True, **kw)
    assert np.array_equal(Y, ref)  # overwritten by its standardized rows, not copied
    assert a.mst_weight == b.mst_weight and np.array_equal(fa, fb)
    for f in ("labels", "probabilities", "outlier_scores"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    Y = X.copy()
    Y[7, 2] = np.nan
    before = Y.copy()
    c, fc = cluster_matrix(Y, overwrite=True, **kw)  # a NaN row: the finite rows are copied
    assert np.array_equal(Y, before, equal_nan=True) and not fc[7] and fc.sum() == len(X) - 1
