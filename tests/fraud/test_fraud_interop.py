"""Issue 17 items 5, 6 and 10 for fraud (the user's own event and column names, id
columns, scoring new rows against a fitted model) and issue 13's seed rule."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def clicks():
    from gpuforge.plugins.fraud.simulate import simulate

    return simulate(120, 0.1, seed=5)


def _renamed(df):
    """The same clicks as a shop with its own event names ("p:checkout" ...)."""
    return df.assign(event="p:" + df["event"].astype(str))


def test_event_map_restores_the_group_features(clicks, tmp_path, run_cli):
    from gpuforge.plugins.fraud.features import compute_features, read_event_map
    from gpuforge.plugins.fraud.simulate import GROUPS, PAGES

    ref, _, _ = compute_features(clicks)
    bare, info, _ = compute_features(_renamed(clicks))
    groups = [f"n_{g}_pages" for g in GROUPS] + ["n_payment_failed"]
    assert (bare[groups].to_numpy() == 0).all() and info["groups_never_seen"] == list(GROUPS)
    # half the map names pages, half names groups directly
    emap = {f"p:{p}": (p if i % 2 else next(g for g, ps in GROUPS.items() if p in ps)) for i, p in enumerate(PAGES)}
    emap["p:payment_failed"] = "payment_failed"
    (tmp_path / "map.json").write_text(json.dumps(emap))
    mapped, info, _ = compute_features(_renamed(clicks), event_map=read_event_map(tmp_path / "map.json"))
    pd.testing.assert_frame_equal(mapped, ref)
    assert info["groups_never_seen"] == []
    # the CLI warns once, naming --event-map, when groups never occur
    _renamed(clicks).to_parquet(tmp_path / "c.parquet", index=False)
    r = run_cli("fraud", "features", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "f.parquet"))
    assert r.code == 0 and "--event-map" in r.stderr and "never occur" in r.stderr, r
    pd.DataFrame({"event": list(emap), "group": list(emap.values())}).to_csv(tmp_path / "map.csv", index=False)
    r = run_cli("fraud", "features", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "g.parquet"),
                "--event-map", str(tmp_path / "map.csv"))
    assert r.code == 0 and "never occur" not in r.stderr, r
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "g.parquet"), ref)


def test_event_map_with_an_unknown_group_is_refused(tmp_path, clicks, run_cli):
    clicks.to_parquet(tmp_path / "c.parquet", index=False)
    (tmp_path / "map.json").write_text(json.dumps({"buy": "purchase"}))
    r = run_cli("fraud", "features", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "f.parquet"),
                "--event-map", str(tmp_path / "map.json"))
    assert r.code == 3 and "unknown group(s) purchase" in r.stderr and not (tmp_path / "f.parquet").exists()


def test_column_map_reads_the_users_column_names(clicks, tmp_path, run_cli):
    from gpuforge.plugins.fraud.features import compute_features

    ref, _, _ = compute_features(clicks)
    clicks.rename(columns={"session_id": "visit", "timestamp": "ts", "event": "page"}).to_csv(
        tmp_path / "c.csv", index=False)
    r = run_cli("fraud", "features", str(tmp_path / "c.csv"), "--out", str(tmp_path / "f.parquet"),
                "--column-map", "session_id=visit,timestamp=ts", "--column-map", "event=page")
    assert r.code == 0, r
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "f.parquet").drop(columns="session_id").to_numpy(),
                               ref.drop(columns="session_id").to_numpy())
    r = run_cli("fraud", "features", str(tmp_path / "c.csv"), "--out", str(tmp_path / "g.parquet"),
                "--column-map", "sessionid=visit")
    assert r.code == 2 and "--column-map" in r.stderr


def _customers(n=1200, seed=0):
    from gpuforge.plugins.fraud.bench import blobs

    X, _ = blobs(n, 3, seed=seed, noise=0.02)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(X, columns=["a", "b", "c"]).assign(customer_id=rng.permutation(n) * 1000)


def test_id_like_columns_are_carried_not_clustered(tmp_path, run_cli):
    df = _customers()
    df.to_csv(tmp_path / "mine.csv", index=False)
    r = run_cli("fraud", "cluster", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "c.csv"),
                "--min-cluster-size", "30")
    assert r.code == 0, r
    assert "column customer_id looks like an id" in r.stderr  # the notice
    assert "columns used: a, b, c; id: customer_id" in r.stdout  # printed without --json
    out = pd.read_csv(tmp_path / "c.csv")
    assert list(out.columns) == ["customer_id", "label", "probability", "outlier_score"]
    assert (out["customer_id"] == df["customer_id"]).all()
    # the same clustering as on the three feature columns alone
    r2 = run_cli("fraud", "cluster", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "d.csv"),
                 "--columns", "a,b,c", "--min-cluster-size", "30", "--id-column", "customer_id")
    assert r2.code == 0, r2
    assert (pd.read_csv(tmp_path / "d.csv")["label"] == out["label"]).all()
    r3 = run_cli("fraud", "cluster", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "e.csv"),
                 "--id-column", "nope")
    assert r3.code == 3 and "--id-column nope" in r3.stderr


def test_score_new_rows_like_hdbscan_approximate_predict(tmp_path, run_cli):
    """Fit with --save-model, score new rows of the same blobs: the labels agree with the
    hdbscan library's approximate_predict on the same fit (ARI), and the Python API
    gives what `fraud score` writes."""
    hdbscan = pytest.importorskip("hdbscan")
    from sklearn.metrics import adjusted_rand_score

    from gpuforge.plugins.fraud import api
    from gpuforge.plugins.fraud.cluster import standard_scale

    train, new = _customers(1200, 0), _customers(300, 0).assign(customer_id=np.arange(300) + 7)
    new[["a", "b", "c"]] += np.random.default_rng(9).normal(0, 0.05, size=(300, 3))
    train.to_parquet(tmp_path / "t.parquet", index=False)
    new.to_parquet(tmp_path / "n.parquet", index=False)
    r = run_cli("fraud", "cluster", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "c.parquet"),
                "--min-cluster-size", "30", "--min-samples", "5", "--save-model", str(tmp_path / "model"))
    assert r.code == 0, r
    r = run_cli("fraud", "score", str(tmp_path / "n.parquet"), "--model", str(tmp_path / "model"),
                "--out", str(tmp_path / "s.parquet"), "--json")
    assert r.code == 0, r
    ours = pd.read_parquet(tmp_path / "s.parquet")
    assert list(ours.columns) == ["customer_id", "label", "probability"]
    pd.testing.assert_frame_equal(ours, api.score(tmp_path / "n.parquet", tmp_path / "model"))
    # the training rows score as their own labels (up to the ones on a cluster's edge)
    fitted = pd.read_parquet(tmp_path / "c.parquet")
    again = api.score(train, tmp_path / "model")
    assert (again["label"] == fitted["label"]).mean() >= 0.97
    mu, sd = standard_scale(train[["a", "b", "c"]].to_numpy())
    ref = hdbscan.HDBSCAN(min_cluster_size=30, min_samples=5, prediction_data=True).fit(
        (train[["a", "b", "c"]].to_numpy() - mu) / sd)
    ref_labels, ref_prob = hdbscan.approximate_predict(ref, (new[["a", "b", "c"]].to_numpy() - mu) / sd)
    assert adjusted_rand_score(ref_labels, ours["label"]) >= 0.95
    assert ((ref_labels == -1) == (ours["label"] == -1)).mean() >= 0.95


def test_score_refuses_a_model_that_is_not_one(tmp_path, run_cli):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x80\x04junk")
    _customers(50).to_csv(tmp_path / "n.csv", index=False)
    r = run_cli("fraud", "score", str(tmp_path / "n.csv"), "--model", str(tmp_path / "m"),
                "--out", str(tmp_path / "s.csv"))
    assert r.code == 3 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.csv").exists(), r


def test_global_and_command_seed_are_one_and_default_stays_0(tmp_path, run_cli):
    def sim(*args, name):
        r = run_cli(*args, "--sessions", "30", "--out", str(tmp_path / name))
        assert r.code == 0, r
        return pd.read_parquet(tmp_path / name)

    default = sim("fraud", "simulate", name="a.parquet")
    zero = sim("fraud", "simulate", "--seed", "0", name="b.parquet")
    glob = sim("--seed", "5", "fraud", "simulate", name="c.parquet")
    local = sim("fraud", "simulate", "--seed", "5", name="d.parquet")
    pd.testing.assert_frame_equal(default, zero)
    pd.testing.assert_frame_equal(glob, local)
    assert not default.equals(glob)
    man = json.loads((tmp_path / "c.parquet.manifest.json").read_text())
    assert man["seed"] == 5 and man["command"] == "fraud simulate"


def test_renamed_events_are_not_silently_zero(clicks, tmp_path, run_cli):
    """The issue's symptom through the CLI alone (no helper that came with the fix): a
    shop's own event names made 10 of 31 features all zero without a word. Now the
    command says which page groups never occur and names --event-map."""
    from gpuforge.plugins.fraud.simulate import GROUPS

    _renamed(clicks).to_parquet(tmp_path / "c.parquet", index=False)
    r = run_cli("fraud", "features", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "f.parquet"))
    assert r.code == 0, r
    feats = pd.read_parquet(tmp_path / "f.parquet")
    groups = [f"n_{g}_pages" for g in GROUPS]
    assert (feats[groups].to_numpy() == 0).all()  # the situation: these features are all zero ...
    assert "never occur" in r.stderr and "--event-map" in r.stderr, r  # ... and the user is told
    assert all(g in r.stderr for g in GROUPS), r.stderr


def test_a_numeric_customer_id_does_not_change_the_clusters(tmp_path, run_cli):
    """The issue's symptom through the CLI alone: `fraud cluster mine.csv` used a numeric
    customer_id as a feature (other clusters than on the feature columns). Now the
    default run finds the clusters of the feature columns alone and says what it used."""
    df = _customers()
    df.to_csv(tmp_path / "mine.csv", index=False)
    r = run_cli("fraud", "cluster", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "c.csv"),
                "--min-cluster-size", "30")
    assert r.code == 0, r
    r2 = run_cli("fraud", "cluster", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "d.csv"),
                 "--columns", "a,b,c", "--min-cluster-size", "30")
    assert r2.code == 0, r2
    default, features_only = pd.read_csv(tmp_path / "c.csv"), pd.read_csv(tmp_path / "d.csv")
    assert (default["label"].to_numpy() == features_only["label"].to_numpy()).all(), (
        default["label"].nunique(), features_only["label"].nunique(), r.stdout)
    assert "columns used: a, b, c" in r.stdout, r.stdout
