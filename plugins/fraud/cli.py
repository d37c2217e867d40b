"""``gpuforge fraud ...``: FinDeepBehaviorCluster (behavioural sequence clustering for
fraud) with a fast HDBSCAN. Each command runs on the runtime (:mod:`gpuforge.core.run`:
``--json``, ``--force``, ``--seed``, the device, outputs and manifests); heavy imports
happen inside the commands."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gpuforge.core.errors import UsageError
from gpuforge.core.run import Run, command

app = typer.Typer(help="Behavioural sequence clustering for fraud (FinDeepBehaviorCluster) with a fast HDBSCAN.",
                  no_args_is_help=True)

OBJECTIVES = ("reconstruct", "next-event")


def _split_columns(columns: Optional[List[str]]) -> Optional[list[str]]:
    if not columns:
        return None
    out = []
    for c in columns:
        out += [x.strip() for x in c.split(",") if x.strip()]
    return out or None


def _event_map_option():
    return typer.Option(None, "--event-map", help="JSON or CSV (event,group) sending your event names to gpuforge's "
                                                  "page groups (browse, search, product, cart, checkout, payment, "
                                                  "account_change, auth, service; see the README).")


def _column_map_option():
    return typer.Option(None, "--column-map", help="Your column names: OURS=THEIRS (repeat or comma-separate), e.g. "
                                                   "session_id=visit,timestamp=ts,event=page.")


def _read_clicks(run: Run, clicks: Path, column_map: Optional[List[str]]):
    """The click table, its columns renamed by --column-map (checked before any work)."""
    from gpuforge.plugins.fraud.features import apply_column_map, parse_column_map
    from gpuforge.plugins.fraud.tables import read_table

    mapping = parse_column_map(column_map)
    if mapping:
        run.note("column_map", mapping)
    return apply_column_map(read_table(clicks, "click table"), mapping, str(clicks))


def _dataset_out(out: Path, column_map) -> None:
    """A folder of click files gives a folder: ``--out`` without a suffix."""
    if out.suffix != "":
        raise UsageError(f"the input is a folder of parquet files: --out must be a folder too (no suffix), not {out}")
    if column_map:
        raise UsageError("--column-map applies to one click table; rename the columns of a folder's files first")


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective must be reconstruct or next-event, got {objective!r}")


@command(app, "simulate", outputs=True, seeded=True, device=False)
def simulate_cmd(
    run: Run,
    sessions: int = typer.Option(10000, "--sessions", help="Number of sessions."),
    fraud_rate: float = typer.Option(0.02, "--fraud-rate", help="Share of fraud sessions (bot rings 40%, account takeover 30%, card testing 30%)."),
    out: Path = typer.Option(..., "--out", help="Output click table (.parquet or .csv), or a folder (no suffix): "
                             "parquet files of --per-file sessions each, one file in memory at a time."),
    per_file: int = typer.Option(100_000, "--per-file", min=1, help="Folder output: sessions per file."),
) -> None:
    """Generate a labelled click stream (one row per event; see the plugin README)."""
    from gpuforge.plugins.fraud.simulate import check_size, simulate
    from gpuforge.plugins.fraud.tables import out_suffix_ok, write_table

    if sessions < 1:
        raise UsageError(f"--sessions must be >= 1, got {sessions}")
    if not 0.0 <= fraud_rate < 1.0:
        raise UsageError(f"--fraud-rate must be in [0, 1), got {fraud_rate}")
    if out.suffix == "":  # a partitioned dataset: memory bounded by one file
        from gpuforge.plugins.fraud.partitions import simulate_dataset

        check_size(min(sessions, per_file))
        dst = run.output(out, kind="dataset")
        with run.timed("simulate"):
            res = simulate_dataset(dst.tmp, sessions, fraud_rate, run.seed_or(0), per_file=per_file, force=True)
        res["output"] = str(out)
        run.result(res, f"wrote {res['events']:,} events of {sessions:,} sessions to {out}/ in {res['files']} "
                        f"files ({res['sessions_by_label']})")
        return
    out_suffix_ok(out)
    check_size(sessions)
    dst = run.output(out)
    with run.timed("simulate"):
        df = simulate(sessions, fraud_rate, run.seed_or(0))
    write_table(df, dst.tmp)
    counts = df.groupby("label")["session_id"].nunique().to_dict()
    res = {"output": str(out), "sessions": sessions, "events": int(len(df)),
           "sessions_by_label": {k: int(v) for k, v in counts.items()}}
    run.result(res, f"wrote {len(df):,} events of {sessions:,} sessions to {out} ({res['sessions_by_label']})")


def _per_file(run: Run, stage: str, clicks: Path, out: Path, column_map, dataset_fn, **kw) -> dict:
    """``dataset_fn`` (a per-file map of :mod:`.partitions`) from the folder ``clicks`` into
    the folder ``out``: here, or one Dask task per file with --cluster/--scheduler; a
    progress bar counts the files."""
    from gpuforge.plugins.fraud.partitions import files

    _dataset_out(out, column_map)
    dst = run.output(out, kind="dataset")
    with run.timed(stage), run.cluster() as client, \
            run.progress(f"{stage} (files)", total=len(files(clicks, "click dataset"))) as bar:
        res = dataset_fn(clicks, dst.tmp, force=True, client=client, on_done=bar.advance, **kw)
    res["output"] = str(out)
    return res


def _runs_here(run: Run, clicks: Path) -> None:
    if run.cluster_spec is not None:
        from gpuforge.core.log import get_logger

        get_logger("gpuforge.fraud").warning(f"{clicks} is one file: it is processed on this machine; a folder of "
                                             "parquet files is what runs on the cluster, one task per file")


@command(app, "features", outputs=True, device=False, distributed=True)
def features_cmd(
    run: Run,
    clicks: Path = typer.Argument(..., help="Click table (.parquet/.csv): session_id, timestamp, event[, user_id, device, ip, amount]."),
    out: Path = typer.Option(..., "--out", help="Output feature table (.parquet or .csv); a folder (no suffix) "
                             "when CLICKS is a folder of parquet files."),
    event_map: Optional[Path] = _event_map_option(),
    column_map: Optional[List[str]] = _column_map_option(),
) -> None:
    """Expert features per session (unsorted events are sorted; duplicate timestamps keep file order).

    CLICKS may be a folder of parquet files (each session within one file, as `fraud
    simulate --out FOLDER` writes them): features are computed file by file into the
    folder --out, with memory bounded by one file; with --cluster/--scheduler each file is a
    Dask task (the paths must be the same on the workers)."""
    from gpuforge.plugins.fraud.features import compute_features, read_event_map
    from gpuforge.plugins.fraud.tables import out_suffix_ok, write_table

    run.input(clicks, "click table")
    if event_map is not None:
        run.input(event_map, "--event-map file")
    if clicks.is_dir():
        from gpuforge.plugins.fraud.partitions import features_dataset

        res = _per_file(run, "features", clicks, out, column_map, features_dataset, event_map=read_event_map(event_map))
        run.result(res, f"wrote {len(res['features'])} features for {res['sessions']:,} sessions to {out}/")
        return
    _runs_here(run, clicks)
    out_suffix_ok(out)
    dst = run.output(out)
    emap = read_event_map(event_map)
    df = _read_clicks(run, clicks, column_map)
    with run.timed("features"):
        feats, info, _ = compute_features(df, str(clicks), event_map=emap)
    write_table(feats, dst.tmp)
    res = {"output": str(out), **info, "features": [c for c in feats.columns if c != "session_id"]}
    run.result(res, f"wrote {len(res['features'])} features for {info['sessions']:,} sessions to {out} "
                    f"({info['unsorted_sessions']} unsorted sessions sorted, "
                    f"{info['sessions_with_duplicate_timestamps']} with duplicate timestamps kept in file order)")


@command(app, "embed", outputs=True, seeded=True, distributed=True)
def embed_cmd(
    run: Run,
    clicks: Path = typer.Argument(..., help="Click table (.parquet/.csv)."),
    out: Path = typer.Option(..., "--out", help="Output embedding table (.parquet or .csv)."),
    dim: int = typer.Option(64, "--dim", help="Embedding size."),
    epochs: int = typer.Option(3, "--epochs", help="Training epochs (over at most --max-train sessions)."),
    objective: str = typer.Option("reconstruct", "--objective", help="reconstruct | next-event"),
    model: Optional[Path] = typer.Option(None, "--model", help="Reuse this saved model (no training). Default: train and save to OUT.model.safetensors."),
    max_train: int = typer.Option(20000, "--max-train", help="Sessions sampled for training."),
    column_map: Optional[List[str]] = _column_map_option(),
) -> None:
    """Time-attention Bi-LSTM embedding of each session, trained without labels (on --device)."""
    import pandas as pd

    from gpuforge.plugins.fraud.embed import model_path_for, train_and_embed
    from gpuforge.plugins.fraud.features import check_clicks, sort_events
    from gpuforge.plugins.fraud.tables import out_suffix_ok, write_table

    _check_objective(objective)
    if dim < 1 or epochs < 0 or max_train < 1:
        raise UsageError("--dim and --max-train must be >= 1 and --epochs >= 0")
    run.input(clicks, "click table")
    if model is not None:
        run.input(model, "model")
    if clicks.is_dir():
        from gpuforge.plugins.fraud.partitions import embed_dataset

        if model is None:
            raise UsageError(f"{clicks} is a folder: embedding a partitioned dataset is inference only; train on a "
                             "sample first (`fraud embed SAMPLE.parquet --out e.parquet`) and pass --model "
                             "e.parquet.model.safetensors")
        res = _per_file(run, "embed", clicks, out, column_map, embed_dataset, model=model, device=run.torch_device)
        run.result(res, f"wrote {res['dim']}-d embeddings of {res['sessions']:,} sessions to {out}/; model {model}")
        return
    _runs_here(run, clicks)
    out_suffix_ok(out)
    dst = run.output(out)
    model_out = run.output(model_path_for(out)) if model is None else None
    df = check_clicks(_read_clicks(run, clicks, column_map), str(clicks))
    df, _, _ = sort_events(df)
    with run.timed("embed"):
        sids, Z, info = train_and_embed(df, dim=dim, epochs=epochs, objective=objective,
                                        model_path=model_out.tmp if model_out else None, reuse=model,
                                        max_train=max_train, seed=run.seed_or(0), device=run.torch_device)
    emb = pd.DataFrame(Z, columns=[f"e{i}" for i in range(Z.shape[1])])
    emb.insert(0, "session_id", sids)
    write_table(emb, dst.tmp)
    res = {"output": str(out), "sessions": int(len(sids)), "dim": int(Z.shape[1]),
           "model": str(model or model_out.path), **{k: v for k, v in info.items() if k != "reused"}}
    run.result(res, f"wrote {Z.shape[1]}-d embeddings of {len(sids):,} sessions to {out}; model {res['model']}")


@command(app, "cluster", outputs=True, distributed=True)
def cluster_cmd(
    run: Run,
    table: Path = typer.Argument(..., help="Numeric table: .parquet, .csv or .npy."),
    out: Path = typer.Option(..., "--out", help="Output table (.parquet or .csv): id, label (-1 noise, -2 skipped), probability, outlier_score."),
    columns: Optional[List[str]] = typer.Option(None, "--columns", help="Columns to use (repeat or comma-separate). Default: every numeric column except ids (columns named like ids, with a warning) and labels."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column carried to the output as each row's id (never clustered). Default: session_id/session/id/user_id, else the first column named like an id, else a `row` number."),
    min_cluster_size: int = typer.Option(5, "--min-cluster-size", help="Smallest cluster."),
    min_samples: Optional[int] = typer.Option(None, "--min-samples", help="Neighbours for the core distance, NOT counting the point (hdbscan library convention; sklearn's is this + 1). Default: min-cluster-size."),
    selection: str = typer.Option("eom", "--selection", help="eom | leaf"),
    epsilon: float = typer.Option(0.0, "--epsilon", help="cluster_selection_epsilon (distance, in standardized units)."),
    mode: str = typer.Option("exact", "--mode", help="exact (full mutual-reachability MST) | approx (kNN-graph MST, components bridged)."),
    knn: Optional[int] = typer.Option(None, "--knn", help="Neighbours per point in the kNN graph (default: exact 16, approx 10; at least min-samples)."),
    knn_leaves: Optional[int] = typer.Option(None, "--knn-leaves", help="approx: neighbour cells searched per row for the kNN graph (0 = exact kNN; default by column count)."),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Also write the fitted model to this new folder (safetensors), to label new rows with `fraud score`."),
) -> None:
    """HDBSCAN on a numeric table (standardized columns); NaN/inf rows are reported and skipped (label -2).

    The kNN and minimum-spanning-tree steps run on --device (numba-cpu or numba-cuda)."""
    from gpuforge.plugins.fraud.cluster import run_cluster

    with run.cluster() as client:  # --cluster/--scheduler: approx mode runs on Dask, same labels
        res = run_cluster(run, table, out, columns=_split_columns(columns), min_cluster_size=min_cluster_size,
                          min_samples=min_samples, selection=selection, epsilon=epsilon, mode=mode, knn=knn,
                          knn_leaves=knn_leaves, id_column=id_column, save_model=save_model,
                          client=client)
    cols = res["columns"]
    shown = ", ".join(map(str, cols[:12])) + (f" and {len(cols) - 12} more" if len(cols) > 12 else "")
    run.result(res, f"{res['n_clusters']} clusters, {res['noise']:,} noise of {res['clustered_rows']:,} rows "
                    f"({res['skipped_nonfinite']} NaN/inf rows skipped) in {sum(res['timings_s'].values()):.2f} s "
                    f"({mode}); columns used: {shown}; id: {res['id_column'] or 'row'}; wrote {res['output']}")


@command(app, "score", outputs=True, device=False)
def score_cmd(
    run: Run,
    table: Path = typer.Argument(..., help="New rows holding the model's columns: .parquet, .csv or .npy."),
    model: Path = typer.Option(..., "--model", help="Folder written by `fraud cluster --save-model`."),
    out: Path = typer.Option(..., "--out", help="Output table (.parquet or .csv): id, label (-1 noise, -2 NaN/inf), probability."),
) -> None:
    """Label new rows with a fitted clustering (hdbscan's approximate_predict rule), without refitting."""
    from gpuforge.plugins.fraud.api import score
    from gpuforge.plugins.fraud.tables import out_suffix_ok, write_table

    out_suffix_ok(out)
    run.input(table, "table")
    run.input(model, "model folder")
    dst = run.output(out)
    with run.timed("score"):
        res = score(table, model)
    write_table(res, dst.tmp)
    counts = res["label"].value_counts().to_dict()
    summary = {"output": str(out), "rows": int(len(res)), "noise": int(counts.get(-1, 0)),
               "skipped_nonfinite": int(counts.get(-2, 0)),
               "per_cluster": {int(k): int(v) for k, v in sorted(counts.items()) if k >= 0}}
    run.result(summary, f"scored {len(res):,} rows: {summary['noise']:,} noise, {len(summary['per_cluster'])} "
                        f"clusters hit; wrote {out}")


@command(app, "explain", outputs=True, seeded=True, device=False)
def explain_cmd(
    run: Run,
    clusters: Path = typer.Argument(..., help="Output of `fraud cluster` (with session_id)."),
    features: Path = typer.Option(..., "--features", help="Output of `fraud features`."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Click table with is_fraud/label columns (optional)."),
    out: Path = typer.Option(..., "--out", help="Report folder."),
    min_lower_bound: float = typer.Option(0.5, "--min-lower-bound", help="Flag clusters whose 95% Wilson lower bound of the fraud rate reaches this."),
    rule_depth: int = typer.Option(3, "--rule-depth", help="Starting depth of the cluster-vs-rest trees (deepened by up to 3 while no rule reaches precision 0.8 and cover 0.3)."),
) -> None:
    """Per-cluster risk, rules (precision/recall/support), narratives and plots."""
    from gpuforge.plugins.fraud.explain import run_explain

    rep = run_explain(run, clusters, features, labels, out, min_lower_bound=min_lower_bound, rule_depth=rule_depth)
    human = f"{rep['clusters']} clusters; report in {out}/report.md"
    if rep["has_labels"]:
        ho = rep["held_out"]
        human += (f"; risky clusters {rep['risky_clusters']}: held-out recall {ho['recall']:.3f}, precision "
                  f"{ho['precision']:.3f}, PR-AUC {ho['pr_auc_cluster_risk']:.3f}")
    run.result({"output": str(out), **rep}, human)


@command(app, "pipeline", outputs=True, seeded=True, distributed=True)
def pipeline_cmd(
    run: Run,
    clicks: Path = typer.Argument(..., help="Click table (.parquet/.csv)."),
    out: Path = typer.Option(..., "--out", help="Report folder."),
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
    event_map: Optional[Path] = _event_map_option(),
    column_map: Optional[List[str]] = _column_map_option(),
) -> None:
    """features -> embed -> cluster -> explain in one run (also clusters the features alone for comparison)."""
    from gpuforge.plugins.fraud.pipeline import run_pipeline

    _check_objective(objective)
    if dim < 1 or epochs < 0 or max_train < 1 or pca_dims < 1:
        raise UsageError("--dim, --pca and --max-train must be >= 1 and --epochs >= 0")
    from gpuforge.plugins.fraud.features import parse_column_map, read_event_map

    if event_map is not None:
        run.input(event_map, "--event-map file")
    with run.cluster() as client:  # --cluster/--scheduler: approx clustering runs on Dask
        res, _ = run_pipeline(run, clicks, out, event_map=read_event_map(event_map),
                              column_map=parse_column_map(column_map), dim=dim, epochs=epochs, objective=objective,
                              min_cluster_size=min_cluster_size, min_samples=min_samples, mode=mode, knn=knn,
                              dims=pca_dims, embed_weight=embed_weight, embed=embed, max_train=max_train, client=client)
    lines = [f"report in {out}/report.md"]
    for name, s in res["comparison"].items():
        if s.get("recall") is not None:
            lines.append(f"{name}: {s['clusters']} clusters, recall {s['recall']:.3f}, precision {s['precision']:.3f}, "
                         f"PR-AUC {s['pr_auc_cluster_risk']:.3f}")
        else:
            lines.append(f"{name}: {s['clusters']} clusters")
    run.result(res, "\n".join(lines))
