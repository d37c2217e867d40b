"""``fraud cluster``: HDBSCAN on any numeric table.

Rows with NaN or +-inf in a used column are reported (count and first row numbers)
and skipped: they get label -2 ("not clustered"), probability 0 and outlier score NaN
in the output, which keeps one output row per input row.
"""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

log = get_logger("fraud.cluster")

ID_COLUMNS = ("session_id", "session", "id", "user_id")


def numeric_matrix(df, columns: list[str] | None, where: str):
    """(X float64, used column names) with the id-like columns left out by default."""
    import numpy as np
    import pandas as pd

    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise BadInputError(f"{where}: column(s) {', '.join(missing)} not found; "
                                f"available: {', '.join(map(str, df.columns[:20]))}")
        bad = [c for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
        if bad:
            raise BadInputError(f"{where}: column(s) {', '.join(bad)} are not numeric; pick numeric columns with --columns")
        used = list(columns)
    else:
        used = [c for c in df.columns if (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
                and str(c) not in ID_COLUMNS and not str(c).startswith("label") and str(c) != "is_fraud"]
        if not used:
            raise BadInputError(f"{where} has no numeric columns; pass --columns")
    X = df[used].to_numpy(dtype=np.float64, copy=True)
    return X, used


def standardize(X):

    mu = X.mean(0)
    sd = X.std(0)
    sd[~(sd > 0)] = 1.0  # constant columns stay constant (zero) instead of NaN
    return (X - mu) / sd


def cluster_matrix(X, *, min_cluster_size=5, min_samples=None, selection="eom", epsilon=0.0, mode="exact",
                   knn=None, where="input", knn_leaves=None, client=None):
    """Validate, drop non-finite rows, standardize, run HDBSCAN. Returns (result, finite mask).
    With a Dask ``client`` approx mode runs on the cluster (same result,
    :mod:`.hdbscan.distributed`); exact mode runs here."""
    import numpy as np

    from gpuforge.plugins.fraud.hdbscan import hdbscan

    if selection not in ("eom", "leaf"):
        raise UsageError(f"--selection must be eom or leaf, got {selection!r}")
    if mode not in ("exact", "approx"):
        raise UsageError(f"--mode must be exact or approx, got {mode!r}")
    if min_cluster_size < 2:
        raise UsageError(f"--min-cluster-size must be >= 2, got {min_cluster_size}")
    if min_samples is not None and min_samples < 1:
        raise UsageError(f"--min-samples must be >= 1, got {min_samples}")
    if epsilon < 0:
        raise UsageError(f"--epsilon must be >= 0, got {epsilon}")
    if knn is not None and knn < 1:
        raise UsageError(f"--knn must be >= 1, got {knn}")
    if knn_leaves is not None and knn_leaves < 0:
        raise UsageError(f"--knn-leaves must be >= 0, got {knn_leaves}")
    finite = np.isfinite(X).all(1)
    nbad = int((~finite).sum())
    if nbad:
        rows = np.flatnonzero(~finite)[:5].tolist()
        log.warning("%s: %d row(s) with NaN/inf skipped (label -2), e.g. rows %s", where, nbad, rows)
    Xf = X[finite]
    if len(Xf) < max(min_cluster_size, 2):
        raise BadInputError(f"{where}: {len(Xf)} usable rows is fewer than --min-cluster-size {min_cluster_size}; "
                            "lower it or pass more rows")
    if client is not None and mode == "approx" and knn_leaves != 0:
        from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        res = hdbscan_distributed([standardize(Xf)], client, min_cluster_size=min_cluster_size,
                                  min_samples=min_samples, selection=selection, epsilon=epsilon, knn=knn,
                                  knn_cells=knn_leaves, tasks=2 * workers, log=log.debug)
        return res, finite
    if client is not None:
        log.warning("exact mode (and --knn-leaves 0) runs on this machine; approx mode uses the cluster")
    res = hdbscan(standardize(Xf), min_cluster_size=min_cluster_size, min_samples=min_samples,
                  selection=selection, epsilon=epsilon, mode=mode, knn=knn, log=log.debug, knn_cells=knn_leaves)
    return res, finite


def run_cluster(table: str, out: str, *, columns: list[str] | None = None, min_cluster_size: int = 5,
                min_samples: int | None = None, selection: str = "eom", epsilon: float = 0.0, mode: str = "exact",
                knn: int | None = None, force: bool = False, knn_leaves: int | None = None, client=None) -> dict:
    """``table``: a file or a folder of parquet files (read by row group, only the used
    columns and the id); ``out``: a .parquet/.csv file, or a folder (no suffix) written as
    one parquet file per input file."""
    import numpy as np
    import pandas as pd

    from gpuforge.core.files import Manifest, atomic_path, check_output
    from gpuforge.plugins.fraud.tables import out_suffix_ok, read_table, write_table

    from gpuforge.plugins.fraud.partitions import DatasetWriter, is_dataset, read_numeric

    out_p = Path(out)
    to_folder = out_p.suffix == ""
    if not to_folder:
        out_suffix_ok(out_p)
        check_output(out_p, force)
    elif out_p.exists() and not force:
        raise BadInputError(f"output {out_p} exists; pass --force to replace it")
    params = dict(columns=columns, min_cluster_size=min_cluster_size, min_samples=min_samples, selection=selection,
                  epsilon=epsilon, mode=mode, knn=knn, knn_leaves=knn_leaves)
    man = Manifest("fraud cluster", params)
    with man.timed("read"):
        if is_dataset(table):
            parts, used, ids, id_col, sizes = read_numeric(table, columns, str(table))
            X = np.vstack(parts)
            del parts
        else:
            df = read_table(table)
            X, used = numeric_matrix(df, columns, str(table))
            id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
            ids = df[id_col].to_numpy() if id_col else None
            sizes = [len(df)]
            del df
    if not Path(table).is_dir():
        man.add_input(table)
    with man.timed("hdbscan"):
        res, finite = cluster_matrix(X, min_cluster_size=min_cluster_size, min_samples=min_samples,
                                     selection=selection, epsilon=epsilon, mode=mode, knn=knn, where=str(table),
                                     knn_leaves=knn_leaves, client=client)
    n = len(X)
    del X
    labels = np.full(n, -2, np.int64)
    prob = np.zeros(n)
    outl = np.full(n, np.nan)
    labels[finite], prob[finite], outl[finite] = res.labels, res.probabilities, res.outlier_scores
    outdf = pd.DataFrame({"label": labels, "probability": prob, "outlier_score": outl})
    if id_col is not None:
        outdf.insert(0, id_col, ids)
    else:
        outdf.insert(0, "row", np.arange(n))
    man_path = out_p.with_name(out_p.name + ".manifest.json")
    check_output(man_path, force)
    if to_folder:
        with DatasetWriter(out_p, force) as w:
            for lo, hi in zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes)):
                w.write(outdf.iloc[lo:hi])
    else:
        with atomic_path(out_p, force=force) as tmp:
            write_table(outdf, tmp)
    sizes = np.bincount(res.labels[res.labels >= 0]) if res.n_clusters else np.zeros(0, int)
    result = {
        "output": str(out_p), "rows": n, "clustered_rows": int(finite.sum()), "skipped_nonfinite": int((~finite).sum()),
        "columns": used, "mode": mode, "n_clusters": int(res.n_clusters),
        "noise": int((res.labels == -1).sum()), "cluster_sizes": sizes.tolist()[:50],
        "min_cluster_size": min_cluster_size, "min_samples": res.info["min_samples_used"], "knn": res.info["knn"],
        "mst_weight": res.mst_weight, "timings_s": {k: round(v, 4) for k, v in res.timings.items()},
    }
    result["distributed"] = "tasks" in res.info
    if result["distributed"]:
        result["tasks"] = res.info["tasks"]
        result["bytes_moved"] = res.info["bytes_moved"]
    man.add_output(out_p)
    man.set("result", result)
    man.data["timings_s"].update({f"hdbscan_{k}": round(v, 4) for k, v in res.timings.items()})
    man.write(out_p.parent, man_path.name)
    return result
