"""``fraud pipeline``: features -> Bi-LSTM embedding -> HDBSCAN -> explain, in one run.

The clustering matrix: expert features, ``log1p`` on the non-negative heavy-tailed ones,
standardized; with ``--embed`` the embedding (standardized, weighted by
``--embed-weight``) is appended; the result is projected by PCA to ``--pca`` dimensions
(kd-trees need few dimensions), then clustered. The same run also clusters the
features alone, so the report compares both (PR-AUC of the cluster risk score on the
held-out half).
"""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.log import get_logger

log = get_logger("fraud.pipeline")


def feature_matrix(features):
    import numpy as np

    names = [c for c in features.columns if c != "session_id"]
    F = features[names].to_numpy(np.float64)
    F = np.nan_to_num(F, nan=0.0, posinf=0.0, neginf=0.0)
    nonneg = (F >= 0).all(0)
    F[:, nonneg] = np.log1p(F[:, nonneg])
    return F


def pca(X, k, seed=0):
    import numpy as np

    X = X - X.mean(0)
    k = min(k, X.shape[1], X.shape[0])
    # randomized range finder is plenty here; exact SVD on the small covariance
    C = (X.T @ X) / max(len(X) - 1, 1)
    w, V = np.linalg.eigh(C)
    V = V[:, ::-1][:, :k]
    # fix the sign of each axis for reproducibility
    V *= np.sign(V[np.abs(V).argmax(0), range(V.shape[1])])
    return X @ V, w[::-1][:k]


def clustering_input(features, Z=None, *, embed_weight=1.0, dims=12):
    import numpy as np

    from gpuforge.plugins.fraud.cluster import standardize

    A = standardize(feature_matrix(features))
    if Z is not None:
        E = standardize(np.asarray(Z, np.float64))
        E, _ = pca(E, min(8, E.shape[1]))
        E = standardize(E) * embed_weight
        A = np.hstack([A, E])
    P, _ = pca(A, dims)
    return P


def run_pipeline(run, clicks_path, out, *, event_map=None, column_map=None, dim=32, epochs=3,
                 objective="reconstruct", min_cluster_size=20, min_samples=10, mode="approx", knn=None, dims=12,
                 embed_weight=1.0, embed=True, max_train=20000, client=None) -> tuple[dict, str]:
    """``fraud pipeline`` inside ``run`` (:class:`gpuforge.core.run.Run`): the report folder
    ``out``; the embedding trains on the run's torch device, the HDBSCAN kernels run on its
    device. Returns (result, report markdown)."""
    import pandas as pd

    from gpuforge.core.output import to_json
    from gpuforge.plugins.fraud.cluster import cluster_matrix
    from gpuforge.plugins.fraud.embed import train_and_embed
    from gpuforge.plugins.fraud.explain import explain
    from gpuforge.plugins.fraud.features import apply_column_map, compute_features, session_labels
    from gpuforge.plugins.fraud.tables import read_table

    seed = run.seed_or(0)
    run.input(clicks_path, "click table")
    dst = run.output(out, kind="dir")
    with run.timed("read"):
        clicks = apply_column_map(read_table(clicks_path, "click table"), column_map, str(clicks_path))
    tmp = dst.tmp
    with run.timed("features"):
        feats, finfo, sorted_clicks = compute_features(clicks, str(clicks_path), event_map=event_map)
    labels = session_labels(clicks)
    feats.to_parquet(tmp / "features.parquet", index=False)
    result: dict = {"features": finfo}
    Z = None
    if embed:
        with run.timed("embed"):
            sids, Z, einfo = train_and_embed(sorted_clicks, dim=dim, epochs=epochs, objective=objective,
                                             model_path=tmp / "model.safetensors", max_train=max_train, seed=seed,
                                             device=run.torch_device)
        assert (sids == feats["session_id"].to_numpy()).all()
        emb = pd.DataFrame(Z, columns=[f"e{i}" for i in range(Z.shape[1])])
        emb.insert(0, "session_id", sids)
        emb.to_parquet(tmp / "embeddings.parquet", index=False)
        result["embed"] = {k: v for k, v in einfo.items() if k != "loss_per_epoch"} | {
            "final_loss": einfo.get("loss_per_epoch", [None])[-1]}
    variants = [("features", None)] + ([("features+embedding", Z)] if embed else [])
    reports = {}
    md_parts = []
    for name, Zv in variants:
        with run.timed(f"cluster[{name}]"):
            A = clustering_input(feats, Zv, embed_weight=embed_weight, dims=dims)
            res, finite = cluster_matrix(A, min_cluster_size=min_cluster_size, min_samples=min_samples,
                                         mode=mode, knn=knn, where=name, client=client)
        cl = pd.DataFrame({"session_id": feats["session_id"].to_numpy(), "label": res.labels,
                           "probability": res.probabilities, "outlier_score": res.outlier_scores})
        fname = "clusters.parquet" if name != "features" or not embed else "clusters_features_only.parquet"
        cl.to_parquet(tmp / fname, index=False)
        with run.timed(f"explain[{name}]"):
            plot_dir = tmp if Zv is not None or not embed else None
            rep, md = explain(cl, feats, labels, out_dir=plot_dir, projection=A[:, :2], seed=seed,
                              title=f"clusters on {name}")
        rep["hdbscan"] = {"n_clusters": res.n_clusters, "timings_s": res.timings, "mode": mode}
        reports[name] = rep
        md_parts.append(md)
    summary = {}
    for name, rep in reports.items():
        ho = rep.get("held_out", {})
        summary[name] = {"clusters": rep["clusters"], "noise": rep["noise"], **{
            k: ho.get(k) for k in ("recall", "precision", "pr_auc_cluster_risk", "flagged")}}
    result["comparison"] = summary
    head = ["# fraud pipeline report", "", f"input: `{Path(clicks_path).name}`; {finfo['sessions']:,} sessions, "
            f"{finfo['events']:,} events ({finfo['unsorted_sessions']} sessions arrived unsorted, "
            f"{finfo['sessions_with_duplicate_timestamps']} had duplicate timestamps).", ""]
    if labels is not None:
        head += ["| clustering input | clusters | recall | precision | PR-AUC |", "|---|---|---|---|---|"]
        for name, s in summary.items():
            head.append(f"| {name} | {s['clusters']} | {s['recall']:.3f} | {s['precision']:.3f} | "
                        f"{s['pr_auc_cluster_risk']:.3f} |")
    md = "\n".join(head) + "\n\n" + "\n".join(md_parts[::-1])
    (tmp / "report.md").write_text(md)
    (tmp / "report.json").write_text(to_json({"result": result, "reports": reports}) + "\n")
    result["output"] = str(out)
    return result, md
