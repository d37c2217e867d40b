"""``gpuforge fraud ...``: FinDeepBehaviorCluster (behavioural sequence clustering for
fraud) with a fast HDBSCAN. Heavy imports happen inside the commands."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gpuforge.core.context import get_context
from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.output import emit

app = typer.Typer(help="Behavioural sequence clustering for fraud (FinDeepBehaviorCluster) with a fast HDBSCAN.",
                  no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print the result as JSON.")
FORCE = typer.Option(False, "--force", help="Overwrite an existing output.")


def _json(flag: bool) -> bool:
    return flag or get_context().json


def _split_columns(columns: Optional[List[str]]) -> Optional[list[str]]:
    if not columns:
        return None
    out = []
    for c in columns:
        out += [x.strip() for x in c.split(",") if x.strip()]
    return out or None


@app.command("simulate")
def simulate_cmd(
    sessions: int = typer.Option(10000, "--sessions", help="Number of sessions."),
    fraud_rate: float = typer.Option(0.02, "--fraud-rate", help="Share of fraud sessions (bot rings 40%, account takeover 30%, card testing 30%)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: str = typer.Option(..., "--out", help="Output click table (.parquet or .csv)."),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate a labelled click stream (one row per event; see the plugin README)."""
    from gpuforge.core.files import Manifest, atomic_path, check_output
    from gpuforge.plugins.fraud.simulate import simulate
    from gpuforge.plugins.fraud.tables import out_suffix_ok, write_table

    if sessions < 1:
        raise UsageError(f"--sessions must be >= 1, got {sessions}")
    if not 0.0 <= fraud_rate < 1.0:
        raise UsageError(f"--fraud-rate must be in [0, 1), got {fraud_rate}")
    out_p = Path(out)
    out_suffix_ok(out_p)
    check_output(out_p, force)
    man = Manifest("fraud simulate", {"sessions": sessions, "fraud_rate": fraud_rate, "seed": seed})
    with man.timed("simulate"):
        df = simulate(sessions, fraud_rate, seed)
    with atomic_path(out_p, force=force) as tmp:
        write_table(df, tmp)
    counts = df.groupby("label")["session_id"].nunique().to_dict()
    res = {"output": str(out_p), "sessions": sessions, "events": int(len(df)),
           "sessions_by_label": {k: int(v) for k, v in counts.items()}}
    man.add_output(out_p)
    man.set("result", res)
    man.write(out_p.parent, out_p.name + ".manifest.json")
    emit(res, f"wrote {len(df):,} events of {sessions:,} sessions to {out_p} ({res['sessions_by_label']})",
         as_json=_json(json_out))


@app.command("features")
def features_cmd(
    clicks: str = typer.Argument(..., help="Click table (.parquet/.csv): session_id, timestamp, event[, user_id, device, ip, amount]."),
    out: str = typer.Option(..., "--out", help="Output feature table (.parquet or .csv)."),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Expert features per session (unsorted events are sorted; duplicate timestamps keep file order)."""
    from gpuforge.core.files import Manifest, atomic_path, check_output
    from gpuforge.plugins.fraud.features import compute_features
    from gpuforge.plugins.fraud.tables import out_suffix_ok, read_table, write_table

    out_p = Path(out)
    out_suffix_ok(out_p)
    check_output(out_p, force)
    man = Manifest("fraud features", {})
    df = read_table(clicks, "click table")
    man.add_input(clicks)
    with man.timed("features"):
        feats, info, _ = compute_features(df, str(clicks))
    with atomic_path(out_p, force=force) as tmp:
        write_table(feats, tmp)
    res = {"output": str(out_p), **info, "features": [c for c in feats.columns if c != "session_id"]}
    man.add_output(out_p)
    man.set("result", res)
    man.write(out_p.parent, out_p.name + ".manifest.json")
    emit(res, f"wrote {len(res['features'])} features for {info['sessions']:,} sessions to {out_p} "
              f"({info['unsorted_sessions']} unsorted sessions sorted, {info['sessions_with_duplicate_timestamps']} "
              "with duplicate timestamps kept in file order)", as_json=_json(json_out))


@app.command("embed")
def embed_cmd(
    clicks: str = typer.Argument(..., help="Click table (.parquet/.csv)."),
    out: str = typer.Option(..., "--out", help="Output embedding table (.parquet or .csv)."),
    dim: int = typer.Option(64, "--dim", help="Embedding size."),
    epochs: int = typer.Option(3, "--epochs", help="Training epochs (over at most --max-train sessions)."),
    objective: str = typer.Option("reconstruct", "--objective", help="reconstruct | next-event"),
    model: Optional[str] = typer.Option(None, "--model", help="Reuse this saved model (no training). Default: train and save to OUT.model.pt."),
    max_train: int = typer.Option(20000, "--max-train", help="Sessions sampled for training."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Time-attention Bi-LSTM embedding of each session, trained without labels."""
    import pandas as pd

    from gpuforge.core.files import Manifest, atomic_path, check_output
    from gpuforge.plugins.fraud.embed import train_and_embed
    from gpuforge.plugins.fraud.features import check_clicks, sort_events
    from gpuforge.plugins.fraud.tables import out_suffix_ok, read_table, write_table

    if objective not in ("reconstruct", "next-event"):
        raise UsageError(f"--objective must be reconstruct or next-event, got {objective!r}")
    if dim < 1 or epochs < 0 or max_train < 1:
        raise UsageError("--dim and --max-train must be >= 1 and --epochs >= 0")
    out_p = Path(out)
    out_suffix_ok(out_p)
    check_output(out_p, force)
    model_out = out_p.with_name(out_p.name + ".model.pt")
    reuse = None
    if model:
        reuse = Path(model)
        if not reuse.exists():
            raise BadInputError(f"model not found: {model}; run `fraud embed` without --model to train one")
    else:
        check_output(model_out, force)
    man = Manifest("fraud embed", {"dim": dim, "epochs": epochs, "objective": objective, "model": model, "seed": seed})
    df = check_clicks(read_table(clicks, "click table"), str(clicks))
    man.add_input(clicks)
    df, _, _ = sort_events(df)
    with atomic_path(model_out, force=force) if reuse is None else _nullpath() as mtmp:
        with man.timed("embed"):
            sids, Z, info = train_and_embed(df, dim=dim, epochs=epochs, objective=objective, model_path=mtmp,
                                            reuse=reuse, max_train=max_train, seed=seed)
        emb = pd.DataFrame(Z, columns=[f"e{i}" for i in range(Z.shape[1])])
        emb.insert(0, "session_id", sids)
        with atomic_path(out_p, force=force) as tmp:
            write_table(emb, tmp)
    res = {"output": str(out_p), "sessions": int(len(sids)), "dim": int(Z.shape[1]),
           "model": str(reuse or model_out), **{k: v for k, v in info.items() if k != "reused"}}
    man.add_output(out_p)
    man.set("result", res)
    man.write(out_p.parent, out_p.name + ".manifest.json")
    emit(res, f"wrote {Z.shape[1]}-d embeddings of {len(sids):,} sessions to {out_p}; model {res['model']}",
         as_json=_json(json_out))


class _nullpath:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@app.command("cluster")
def cluster_cmd(
    table: str = typer.Argument(..., help="Numeric table: .parquet, .csv or .npy."),
    out: str = typer.Option(..., "--out", help="Output table (.parquet or .csv): id, label (-1 noise, -2 skipped), probability, outlier_score."),
    columns: Optional[List[str]] = typer.Option(None, "--columns", help="Columns to use (repeat or comma-separate). Default: every numeric column except ids/labels."),
    min_cluster_size: int = typer.Option(5, "--min-cluster-size", help="Smallest cluster."),
    min_samples: Optional[int] = typer.Option(None, "--min-samples", help="Neighbours for the core distance, NOT counting the point (hdbscan library convention; sklearn's is this + 1). Default: min-cluster-size."),
    selection: str = typer.Option("eom", "--selection", help="eom | leaf"),
    epsilon: float = typer.Option(0.0, "--epsilon", help="cluster_selection_epsilon (distance, in standardized units)."),
    mode: str = typer.Option("exact", "--mode", help="exact (full mutual-reachability MST) | approx (kNN-graph MST, components bridged)."),
    knn: Optional[int] = typer.Option(None, "--knn", help="Neighbours per point in the kNN graph (default: exact 16, approx 10; at least min-samples)."),
    knn_leaves: Optional[int] = typer.Option(None, "--knn-leaves", help="approx: neighbour cells searched per row for the kNN graph (0 = exact kNN; default 8)."),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """HDBSCAN on a numeric table (standardized columns); NaN/inf rows are reported and skipped (label -2)."""
    from gpuforge.plugins.fraud.cluster import run_cluster

    res = run_cluster(table, out, columns=_split_columns(columns), min_cluster_size=min_cluster_size,
                      min_samples=min_samples, selection=selection, epsilon=epsilon, mode=mode, knn=knn, force=force,
                      knn_leaves=knn_leaves)
    emit(res, f"{res['n_clusters']} clusters, {res['noise']:,} noise of {res['clustered_rows']:,} rows "
              f"({res['skipped_nonfinite']} NaN/inf rows skipped) in {sum(res['timings_s'].values()):.2f} s "
              f"({mode}); wrote {res['output']}", as_json=_json(json_out))


@app.command("explain")
def explain_cmd(
    clusters: str = typer.Argument(..., help="Output of `fraud cluster` (with session_id)."),
    features: str = typer.Option(..., "--features", help="Output of `fraud features`."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Click table with is_fraud/label columns (optional)."),
    out: str = typer.Option(..., "--out", help="Report folder."),
    min_lower_bound: float = typer.Option(0.5, "--min-lower-bound", help="Flag clusters whose 95% Wilson lower bound of the fraud rate reaches this."),
    rule_depth: int = typer.Option(3, "--rule-depth", help="Starting depth of the cluster-vs-rest trees (deepened by up to 3 while no rule reaches precision 0.8 and cover 0.3)."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Per-cluster risk, rules (precision/recall/support), narratives and plots."""
    from gpuforge.core.files import Manifest, atomic_dir
    from gpuforge.core.output import to_json
    from gpuforge.plugins.fraud.explain import explain
    from gpuforge.plugins.fraud.features import session_labels
    from gpuforge.plugins.fraud.pipeline import clustering_input
    from gpuforge.plugins.fraud.tables import read_table

    cl = read_table(clusters, "cluster table")
    ft = read_table(features, "feature table")
    for name, df, need in (("cluster table", cl, ("session_id", "label", "outlier_score")),
                           ("feature table", ft, ("session_id",))):
        miss = [c for c in need if c not in df.columns]
        if miss:
            raise BadInputError(f"{name}: column(s) {', '.join(miss)} missing; pass the outputs of `fraud cluster` "
                                "and `fraud features`")
    import pandas as pd

    bad = [c for c in ft.columns if c != "session_id" and not pd.api.types.is_numeric_dtype(ft[c])]
    if bad or ft["session_id"].duplicated().any():
        raise BadInputError(f"feature table {features}: " + (f"non-numeric column(s) {', '.join(map(str, bad[:5]))}"
                            if bad else "repeated session_id") + "; pass the output of `fraud features`")
    lab = None
    if labels:
        lab = session_labels(read_table(labels, "label table"))
        if lab is None:
            raise BadInputError(f"{labels} has no is_fraud or label column")
    man = Manifest("fraud explain", {"min_lower_bound": min_lower_bound, "rule_depth": rule_depth})
    for p in (clusters, features) + ((labels,) if labels else ()):
        man.add_input(p)
    with atomic_dir(out, force=force) as tmp:
        merged = cl[["session_id"]].merge(ft, on="session_id", how="inner")
        proj = clustering_input(merged[[c for c in ft.columns]], None, dims=2) if len(merged) else None
        ordered = cl.merge(merged[["session_id"]], on="session_id", how="inner")
        rep, md = explain(ordered, ft, lab, min_lower_bound=min_lower_bound, rule_depth=rule_depth, seed=seed,
                          out_dir=tmp, projection=proj)
        (tmp / "report.md").write_text(md)
        (tmp / "report.json").write_text(to_json(rep) + "\n")
        man.set("result", {k: v for k, v in rep.items() if k != "cluster_table"})
        man.write(tmp)
    res = {"output": str(out), **{k: v for k, v in rep.items() if k != "cluster_table"}}
    human = f"{rep['clusters']} clusters; report in {out}/report.md"
    if rep["has_labels"]:
        ho = rep["held_out"]
        human += (f"; risky clusters {rep['risky_clusters']}: held-out recall {ho['recall']:.3f}, precision "
                  f"{ho['precision']:.3f}, PR-AUC {ho['pr_auc_cluster_risk']:.3f}")
    emit(res, human, as_json=_json(json_out))


@app.command("pipeline")
def pipeline_cmd(
    clicks: str = typer.Argument(..., help="Click table (.parquet/.csv)."),
    out: str = typer.Option(..., "--out", help="Report folder."),
    dim: int = typer.Option(32, "--dim", help="Embedding size."),
    epochs: int = typer.Option(3, "--epochs"),
    objective: str = typer.Option("reconstruct", "--objective", help="reconstruct | next-event"),
    embed: bool = typer.Option(True, "--embed/--no-embed", help="Train the Bi-LSTM and cluster features + embedding too."),
    min_cluster_size: int = typer.Option(20, "--min-cluster-size"),
    min_samples: int = typer.Option(10, "--min-samples"),
    mode: str = typer.Option("approx", "--mode", help="exact | approx"),
    knn: Optional[int] = typer.Option(None, "--knn"),
    pca_dims: int = typer.Option(12, "--pca", help="PCA dimensions of the clustering input."),
    embed_weight: float = typer.Option(1.0, "--embed-weight", help="Scale of the embedding block before PCA."),
    max_train: int = typer.Option(20000, "--max-train"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """features -> embed -> cluster -> explain in one run (also clusters the features alone for comparison)."""
    from gpuforge.plugins.fraud.pipeline import run_pipeline

    if objective not in ("reconstruct", "next-event"):
        raise UsageError(f"--objective must be reconstruct or next-event, got {objective!r}")
    res, _ = run_pipeline(clicks, out, dim=dim, epochs=epochs, objective=objective, min_cluster_size=min_cluster_size,
                          min_samples=min_samples, mode=mode, knn=knn, dims=pca_dims, embed_weight=embed_weight,
                          embed=embed, max_train=max_train, force=force, seed=seed)
    lines = [f"report in {out}/report.md"]
    for name, s in res["comparison"].items():
        if s.get("recall") is not None:
            lines.append(f"{name}: {s['clusters']} clusters, recall {s['recall']:.3f}, precision {s['precision']:.3f}, "
                         f"PR-AUC {s['pr_auc_cluster_risk']:.3f}")
        else:
            lines.append(f"{name}: {s['clusters']} clusters")
    emit(res, "\n".join(lines), as_json=_json(json_out))
