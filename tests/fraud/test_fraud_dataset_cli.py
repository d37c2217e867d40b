"""Issue 15 item 5 on the command line: a folder of parquet files is a valid input and
output of `fraud simulate`, `features`, `embed` (inference) and `cluster`, each file
processed on its own, with the same numbers as the library's per-file maps."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as ds
import pytest


def _parts(folder):
    return sorted(p.name for p in folder.iterdir())


def test_simulate_features_embed_cluster_on_folders(run_cli, tmp_path):
    r = run_cli("--json", "fraud", "simulate", "--sessions", "1500", "--per-file", "500", "--out", "clicks",
                cwd=tmp_path)
    assert r.code == 0, r
    assert r.json()["files"] == 3
    # the manifest's leading "_" makes pandas/pyarrow/Spark read the folder as one table
    assert _parts(tmp_path / "clicks") == ["_manifest.json", *(f"part-0000{i}.parquet" for i in range(3))]
    assert json.loads((tmp_path / "clicks" / "_manifest.json").read_text())["command"] == "fraud simulate"
    # session ids stay unique across files, and each file is what `simulate` makes
    ids = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "clicks").glob("part-*.parquet"))])
    assert ids.groupby("session_id")["user_id"].nunique().max() == 1 and ids["session_id"].nunique() == 1500

    r = run_cli("--json", "fraud", "features", "clicks", "--out", "feats", cwd=tmp_path)
    assert r.code == 0, r
    feats = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "feats").glob("part-*.parquet"))])
    assert len(feats) == 1500 and r.json()["sessions"] == 1500

    # embed: train on one file, then infer over the folder with that model
    sample = tmp_path / "sample.parquet"
    pd.read_parquet(tmp_path / "clicks" / "part-00000.parquet").to_parquet(sample)
    r = run_cli("fraud", "embed", str(sample), "--out", "e.parquet", "--dim", "4", "--epochs", "1",
                "--max-train", "200", cwd=tmp_path)
    assert r.code == 0, r
    r = run_cli("--json", "fraud", "embed", "clicks", "--out", "emb", "--model", "e.parquet.model.safetensors",
                cwd=tmp_path)
    assert r.code == 0, r
    emb = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "emb").glob("part-*.parquet"))])
    assert list(emb.columns) == ["session_id", "e0", "e1", "e2", "e3"] and len(emb) == 1500
    # the file's own sessions embed the same through the folder as through the file
    one = pd.read_parquet(tmp_path / "e.parquet").set_index("session_id").sort_index()
    again = emb.set_index("session_id").loc[one.index]
    assert abs(one.to_numpy() - again.to_numpy()).max() < 1e-5

    r = run_cli("--json", "fraud", "cluster", "feats", "--out", "labels", "--mode", "approx", cwd=tmp_path)
    assert r.code == 0, r
    assert len(_parts(tmp_path / "labels")) == 4  # three part files + the manifest
    # each output folder is one table to the tools users read it with
    for folder, rows in (("clicks", None), ("feats", 1500), ("emb", 1500), ("labels", 1500)):
        whole = pd.read_parquet(tmp_path / folder)
        assert len(whole) == (rows or len(ids)) == ds.dataset(tmp_path / folder, format="parquet").count_rows()


@pytest.mark.parametrize("args, words", [
    (["features", "clicks", "--out", "f.parquet"], "--out must be a folder too"),
    (["embed", "clicks", "--out", "emb"], "inference only"),
    (["features", "clicks", "--out", "f", "--column-map", "a=session_id"], "--column-map applies to one"),
])
def test_folder_misuse_is_one_line(run_cli, tmp_path, args, words):
    r = run_cli("fraud", "simulate", "--sessions", "200", "--per-file", "100", "--out", "clicks", cwd=tmp_path)
    assert r.code == 0, r
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("fraud", *args, cwd=tmp_path)
    assert r.code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.dist
def test_features_and_embed_of_a_folder_run_on_a_local_dask_cluster_with_the_same_output(run_cli, tmp_path):
    """--cluster local:2: each click file is a Dask task writing its own part file; the
    folders equal the ones written here, file for file."""
    pytest.importorskip("dask.distributed")
    r = run_cli("fraud", "simulate", "--sessions", "900", "--per-file", "300", "--out", "clicks", cwd=tmp_path)
    assert r.code == 0, r
    pd.read_parquet(tmp_path / "clicks" / "part-00000.parquet").to_parquet(tmp_path / "sample.parquet")
    r = run_cli("fraud", "embed", "sample.parquet", "--out", "e.parquet", "--dim", "4", "--epochs", "1",
                "--max-train", "200", cwd=tmp_path)
    assert r.code == 0, r
    for where, pre in (("here", []), ("dask", ["--cluster", "local:2"])):
        r = run_cli(*pre, "--json", "fraud", "features", "clicks", "--out", f"feats-{where}", cwd=tmp_path)
        assert r.code == 0, r
        r = run_cli(*pre, "--json", "fraud", "embed", "clicks", "--out", f"emb-{where}", "--model",
                    "e.parquet.model.safetensors", cwd=tmp_path)
        assert r.code == 0, r
    for kind in ("feats", "emb"):
        here, dask = tmp_path / f"{kind}-here", tmp_path / f"{kind}-dask"
        assert _parts(here) == _parts(dask) == ["_manifest.json", *(f"part-0000{i}.parquet" for i in range(3))]
        for i in range(3):
            pd.testing.assert_frame_equal(pd.read_parquet(here / f"part-0000{i}.parquet"),
                                          pd.read_parquet(dask / f"part-0000{i}.parquet"), check_exact=False, atol=1e-6)
        assert json.loads((dask / "_manifest.json").read_text())["cluster"] == "local:2"
